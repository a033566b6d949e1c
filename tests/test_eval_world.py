"""The world benchmark evaluator and the auditor validity checks."""

import random

import pytest

from auditdm_jax.data import world_tfds
from auditdm_jax.eval import world_bench as wb
from auditdm_jax.world import editor
from auditdm_jax.world import questions
from auditdm_jax.world import scene as scene_lib


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
  return wb.bench_sources(tmp_path_factory.mktemp("bench"),
                          examples_per_split=6)


def test_normalise_and_score():
  assert wb.normalise("  Purple. ") == "purple"
  assert wb.score(["Yes", "no ", "3"], ["yes", "yes", "3"]) == pytest.approx(
      2 / 3)
  assert wb.score([], []) == 0.0
  with pytest.raises(ValueError):
    wb.score(["a"], [])


def test_oracle_stub_scores_one_on_all_16_splits(bench):
  acc = wb.bench_accuracy(wb.oracle_answer_fn, bench)
  assert set(acc) == set(world_tfds.BENCH_SPLITS)
  assert all(v == 1.0 for v in acc.values())
  const = wb.bench_accuracy(lambda exs: ["yes"] * len(exs), bench, limit=3)
  assert all(0 <= v <= 1 for v in const.values())
  assert const["count"] == 0.0


def test_question_skill_recovers_the_generators_skill():
  for i in range(400):
    ex = questions.sample_example(random.Random(i))
    assert wb.question_skill(ex["scene"], ex["question"]) == ex["skill"], ex


def _scene():
  return scene_lib.Scene((scene_lib.Obj("circle", "red", "large", 0, 0),
                          scene_lib.Obj("square", "blue", "small", 3, 3)))


def test_validity_counts_known_strings():
  s = _scene()
  edit, _ = editor.sample_edit(s, 0)
  samples = {
      "question": [("how many objects are there?", s),
                   ("what colour is the circle?", s),
                   ("what colour is the banana?", s),
                   ("is the circle", s)],
      "edit": [(edit, s), ("paint everything gold", s)],
      "caption": [("a red circle", s), ("a scene with two blue squares", s),
                  ("zzz", s), ("", s)],
  }
  v = wb.validity(samples)
  assert v["question"] == 0.5
  assert v["edit"] == 0.5
  assert v["caption"] == 0.5
  assert v["skills"]["count"] == 1 and v["skills"]["colour"] == 1
  assert "binding" in v["missing_skills"]
  assert wb.check_sample("question", "is there a red circle?", s) == (
      True, "existence")
  with pytest.raises(ValueError):
    wb.check_sample("poem", "x", s)


def test_eval_fn_on_a_random_model(bench):
  import jax
  from auditdm_jax.models.vlm import Model
  from auditdm_jax.models import arch as arch_lib
  cfg = arch_lib.get("paligemma2_world_s")
  params = Model(cfg).init(jax.random.key(0))
  acc = wb.make_eval_fn(cfg, bench, limit=2)(params)
  assert set(acc) == set(world_tfds.BENCH_SPLITS) | {"mean"}
  assert all(0 <= v <= 1 for v in acc.values())

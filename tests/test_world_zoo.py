"""The world model zoo: config, auditor data, quick end-to-end training."""

import json

import pytest

from auditdm_jax.data import world_tfds
from auditdm_jax.data.world_tokenizer import world_tokenizer
from auditdm_jax.models import arch as arch_lib
from auditdm_jax.world import editor
from auditdm_jax.world import generator
from auditdm_jax.world import oracle
from auditdm_jax.world import prompts
from auditdm_jax.world import questions
from auditdm_jax.world import scene as scene_lib
from auditdm_jax.world import zoo

CONFIG = "configs/world/zoo.py"


@pytest.fixture(scope="module")
def full():
  return zoo.load_config(CONFIG)


@pytest.fixture(scope="module")
def quick():
  return zoo.load_config(CONFIG + ":quick")


def test_config_plants_three_gaps_on_benchmark_slices(full):
  target = full.models.target
  assert target.role == "target" and target.arch == "paligemma2_world_s"
  gaps = dict(target.slice_weights)
  assert len(gaps) >= 3
  for key, weight in gaps.items():
    assert 0 <= weight < 0.1
    split = target.gap_splits[key]
    assert split in world_tfds.BENCH_SPLITS
    # A gap is a combination of known words: every tag is one the generator
    # emits on its own, in examples outside the gap.
    assert "&" in key


def test_config_references_and_auditor(full):
  refs = [m for m in full.models.values() if m.role == "reference"]
  assert len(refs) >= 3
  families = {arch_lib.get(m.arch).family for m in refs}
  assert families == {"paligemma2", "gemma3"}
  assert len({(m.arch, m.seed) for m in refs}) == len(refs)
  assert all(not dict(m.slice_weights) for m in refs)
  auditor = [m for m in full.models.values() if m.role == "auditor"]
  assert [m.arch for m in auditor] == ["gemma3_world_m"]
  for name in full.models:
    zoo.train_config(full, name)  # Valid TrainConfigs.


def test_quick_variant_is_small(quick, full):
  assert set(quick.models) == set(full.models)
  assert all(m.total_steps <= 5 for m in quick.models.values())
  with pytest.raises(ValueError):
    zoo.load_config(CONFIG + ":nope")


def test_prompts_are_in_the_world_vocabulary():
  tok = world_tokenizer()
  assert len(set(prompts.PROMPTS.values())) == 3
  for kind, text in prompts.PROMPTS.items():
    ids = tok.encode(text)
    assert tok.unk_id not in ids, (kind, text)
    assert tok.decode(ids) == text
    assert prompts.kind_of(" " + text) == kind


def test_auditor_source_writes_valid_text_over_all_skills():
  src = zoo.AuditorSource(3 * 28, seed=0)
  skills, ops = set(), set()
  for i in range(len(src)):
    ex = src.example(i)
    scene = ex["scene"]
    assert not world_tfds.is_bench_scene(scene)
    assert ex["prefix"] == prompts.PROMPTS[ex["kind"]]
    if ex["kind"] == "question":
      assert not isinstance(oracle.answer(scene, ex["suffix"]),
                            oracle.OracleError)
      skills.add(ex["skill"])
    elif ex["kind"] == "edit":
      assert isinstance(editor.apply_edit(scene, ex["suffix"]),
                        scene_lib.Scene)
      ops.add(ex["op"])
    else:
      assert isinstance(generator.parse_caption(ex["suffix"]),
                        scene_lib.Scene)
  assert skills == set(questions.SKILLS)
  assert len(ops) >= 4
  item = src[0]
  assert item["image"].shape == (64, 64, 3)
  assert src.example(5) == src.example(5)


# Compiling a train step costs 10-40 s per model on 2 CPU cores, so the test
# trains the gapped PaliGemma-2 target (VQA data) and the Gemma-3 auditor
# (auditor data); the references differ from these only in arch and seed.
# AUDITDM_ZOO_TEST_ALL=1 trains every model of the quick zoo.
_QUICK_MODELS = ("target", "auditor")


def test_quick_zoo_trains_exports_and_evaluates(quick, tmp_path):
  """Models a few steps each, exported; the evaluator runs on the exports."""
  import os
  from auditdm_jax import main as main_lib
  from auditdm_jax.convert import orbax_io
  from auditdm_jax.eval import world_bench
  only = None if os.environ.get("AUDITDM_ZOO_TEST_ALL") else _QUICK_MODELS
  infos = zoo.train_zoo(quick, tmp_path, only=only)
  assert list(infos) == [n for n in quick.order if not only or n in only]
  for name, info in infos.items():
    out = tmp_path / "export" / name
    cfg, params = orbax_io.load_checkpoint(out)
    assert cfg.name == quick.models[name].arch
    assert str(jax_dtype(params)) == "bfloat16"
    assert info["steps"] == quick.models[name].total_steps
    assert json.loads((tmp_path / "export" / f"{name}.json").read_text()
                      )["role"] == quick.models[name].role
  # Resumable: a second run (through the entry point) skips finished models.
  main_lib.run(quick, str(tmp_path), only=only)
  result = world_bench.evaluate_zoo(
      tmp_path, limit=4, n_per_kind=4, bench_config={"examples_per_split": 4})
  assert set(result["models"]) == {n for n in infos if n != "auditor"}
  for acc in result["models"].values():
    assert set(acc) == set(world_tfds.BENCH_SPLITS) | {"mean"}
    assert all(0 <= v <= 1 for v in acc.values())
  assert set(result["auditor"]) >= set(prompts.KINDS)
  table = world_bench.format_table(result)
  assert "target" in table and "auditor" in table


def jax_dtype(params):
  import jax
  return jax.tree.leaves(params)[0].dtype


def test_zoo_resumes_time_capped_exports_and_skips_finished(quick, tmp_path,
                                                            monkeypatch):
  """An export short of total_steps (its max_minutes ran out) trains on."""
  out = tmp_path / "export"
  out.mkdir()
  total = quick.models["target"].total_steps
  (out / "target.json").write_text(json.dumps({"steps": total - 1}))
  (out / "auditor.json").write_text(json.dumps(
      {"steps": quick.models["auditor"].total_steps, "role": "auditor"}))
  trained = []
  monkeypatch.setattr(zoo, "train_model", lambda config, name, workdir:
                      trained.append(name) or {"steps": total})
  infos = zoo.train_zoo(quick, tmp_path, only=["target", "auditor"])
  assert trained == ["target"]
  assert infos["auditor"]["role"] == "auditor"
  assert infos["target"]["steps"] == total

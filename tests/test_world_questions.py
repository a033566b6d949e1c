"""Question skills, slice tags and the ground-truth oracle of the world."""

import collections
import random
import re

import pytest
from hypothesis import given, settings, strategies as st

from auditdm_jax.world import oracle
from auditdm_jax.world import questions
from auditdm_jax.world import refs
from auditdm_jax.world import scene as scene_lib
from text_mutation import mutated

Obj = scene_lib.Obj
Scene = scene_lib.Scene
OracleError = oracle.OracleError

# red circle (large, top left), blue square (small, bottom right),
# blue circle (small, top right), green triangle (large, row 3 col 2).
SCENE = Scene((Obj("circle", "red", "large", 0, 0),
               Obj("square", "blue", "small", 3, 3),
               Obj("circle", "blue", "small", 0, 3),
               Obj("triangle", "green", "large", 2, 1)))


@pytest.fixture(scope="module")
def examples():
  """14 skills x 260 seeds on the default 4x4 world, plus odd grids."""
  out = []
  for skill in questions.SKILLS:
    for seed in range(260):
      out.append(questions.sample_example(seed * 31 + 7, skill))
    for seed in range(25):
      out.append(questions.sample_example(seed, skill, grid=3, image_size=48))
      out.append(questions.sample_example(seed, skill, grid=5, image_size=80))
  return out


def test_every_skill_is_producible(examples):
  assert len(questions.SKILLS) >= 13
  seen = collections.Counter(ex["skill"] for ex in examples)
  assert set(seen) == set(questions.SKILLS)
  for ex in examples:
    assert set(ex) == {"scene", "question", "answer", "skill", "tags"}
    assert ex["question"].endswith("?") and ex["question"] == ex[
        "question"].lower()
    assert ex["answer"] in questions.ANSWER_WORDS


def test_oracle_agrees_with_generator(examples):
  bad = [(ex["question"], ex["answer"], oracle.answer(ex["scene"],
                                                      ex["question"]))
         for ex in examples
         if oracle.answer(ex["scene"], ex["question"]) != ex["answer"]]
  assert not bad, bad[:5]


def test_slice_tags_present(examples):
  for ex in examples:
    tags = ex["tags"]
    assert tags[0] == f"skill:{ex['skill']}"
    assert f"answer:{ex['answer']}" in tags
    assert f"n_objects:{len(ex['scene'].objects)}" in tags
    assert any(t.startswith("phrasing:") for t in tags)
    a = ex["answer"]
    if a.isdigit():
      assert ("count>=5" if int(a) >= 5 else "count<=4") in tags
    if a in scene_lib.COLOURS:
      assert f"colour:{a}" in tags
    if a in scene_lib.SHAPES:
      assert f"shape:{a}" in tags
    if ex["skill"] in ("left_right", "above_below"):
      assert f"relation:{a}" in tags
    if ex["skill"] in ("extremes", "occupancy"):
      assert any(t.startswith("place:") for t in tags)
    if ex["skill"] == "count_attr":
      assert any(t.startswith("by:") for t in tags)


def test_answer_balance(examples):
  """No skill's answers are dominated by one value, except by design."""
  by_skill = collections.defaultdict(collections.Counter)
  for ex in examples:
    by_skill[ex["skill"]][ex["answer"]] += 1
  for skill, counts in by_skill.items():
    top, n = counts.most_common(1)[0]
    share = n / sum(counts.values())
    if skill == "hallucination":  # Always "none", by construction.
      assert set(counts) == {"none"}
    else:
      assert share <= 0.7, (skill, counts)
      assert len(counts) >= 2, skill


def test_every_phrasing_is_generated_and_parses():
  seen = collections.defaultdict(set)
  for seed in range(3000):
    ex = questions.sample_example(seed, questions.SKILLS[seed % 14])
    kind = next(t[5:] for t in ex["tags"] if t.startswith("kind:"))
    seen[kind].add(int(next(t[9:] for t in ex["tags"]
                            if t.startswith("phrasing:"))))
  for kind, templates in oracle.QUESTION_TEMPLATES.items():
    assert seen[kind] == set(range(len(templates))), kind


_SLOTS = {"ref": "the red circle", "ref2": "the blue square",
          "indef": "a red circle", "plural": "red circles",
          "plural2": "blue squares"}


@pytest.mark.parametrize("kind, template", [
    (k, t) for table in (oracle.QUESTION_TEMPLATES,
                         oracle.PARSE_ONLY_TEMPLATES)
    for k, ts in table.items() for t in ts])
def test_template_parses_to_its_kind(kind, template):
  q = oracle.parse_question(template.format(**_SLOTS) + "?")
  assert isinstance(q, oracle.Query), q
  assert q.kind == kind
  assert q.ref.colour == "red" and q.ref.shape == "circle"
  if q.ref2 is not None:
    assert (q.ref2.colour, q.ref2.shape) == ("blue", "square")


@pytest.mark.parametrize("text, want", [
    ("is there a red circle?", "yes"),
    ("Is there a RED circle", "yes"),
    ("  is   there a red   circle ?? ", "yes"),
    ("is there a green circle?", "no"),
    ("is there a big red circle?", "yes"),
    ("is there a red large circle?", "yes"),
    ("is there any triangle in the image?", "yes"),
    ("is there an object in the bottom left corner?", "no"),
    ("is there anything in the top row?", "yes"),
    ("how many circles are there?", "2"),
    ("how many objects are there?", "4"),
    ("how many blue objects on the right are there?", "2"),
    ("How many things?", "4"),
    ("how many small blue circles are there", "1"),
    ("what colour is the square?", "blue"),
    ("What COLOR is the large circle?", "red"),
    ("what colour is the object in the top left corner?", "red"),
    ("what colour is the object at row 3 column 2?", "green"),
    ("what colour is the object in row 1 column 4?", "blue"),
    ("what shape is the green object?", "triangle"),
    ("what shape is the object in the left column?", "circle"),
    ("what size is the blue square?", "small"),
    ("is the triangle large or small?", "large"),
    ("is the red circle on the left or the right?", "left"),
    ("is the blue circle left or right", "right"),
    ("is the blue square at the top or the bottom?", "bottom"),
    ("is the green triangle in the top half or the bottom half?", "bottom"),
    ("are there more circles than squares?", "yes"),
    ("are there fewer circles than squares?", "no"),
    ("are there more squares than diamonds?", "yes"),
    ("are there more triangles than squares?", "no"),
    ("is the red circle bigger than the blue square?", "yes"),
    ("is the red circle smaller than the blue square?", "no"),
    ("is the red circle larger than the green triangle?", "no"),
    ("what colour is the diamond?", "none"),
    ("what shape is the purple object?", "none"),
    ("is the red square on the left or the right?", "none"),
    ("is the red diamond bigger than the blue square?", "none"),
    ("what colour is the circle on the left?", "red"),
])
def test_oracle_on_handmade_questions(text, want):
  assert oracle.answer(SCENE, text) == want


@pytest.mark.parametrize("text, kind", [
    ("what colour is the circle?", "ambiguous"),
    ("is the blue object on the left or the right?", "ambiguous"),
    ("is the circle bigger than the square?", "ambiguous"),
    ("what colour is the object at row 7 column 1?", "invalid"),
    ("what colour is the object at row 0 column 1?", "parse"),
    ("what is the meaning of life?", "parse"),
    ("what colour is the red blue circle?", "parse"),
    ("", "parse"),
    ("?", "parse"),
    ("x" * 1000, "parse"),
])
def test_oracle_errors(text, kind):
  got = oracle.answer(SCENE, text)
  assert isinstance(got, OracleError) and got.kind == kind, got
  assert not got and got.message


def test_oracle_non_str_and_middle_column():
  assert oracle.answer(SCENE, None).kind == "parse"
  assert oracle.answer(SCENE, 3).kind == "parse"
  s = Scene((Obj("circle", "red", "small", 1, 1),), grid=3, image_size=48)
  assert oracle.answer(s, "is the red circle on the left or the right?"
                       ).kind == "unanswerable"
  assert oracle.answer(Scene(), "how many objects are there?") == "0"
  assert oracle.answer(Scene(), "what colour is the circle?") == "none"


def test_places_cover_the_grid():
  for grid in (2, 3, 4, 5):
    for p in refs.ALL_CORNERS:
      assert len(p.cells(grid)) == 1
    for p in refs.ALL_LINES:
      assert len(p.cells(grid)) == grid
    left, right = refs.Place("half", "left"), refs.Place("half", "right")
    assert len(left.cells(grid)) == len(right.cells(grid)) == grid * (grid // 2)
    assert not set(left.cells(grid)) & set(right.cells(grid))


def test_sample_example_deterministic():
  a = questions.sample_example(123)
  b = questions.sample_example(123)
  assert a == b
  import numpy as np  # pylint: disable=g-import-not-at-top
  g1, g2 = np.random.default_rng(9), np.random.default_rng(9)
  qa = [questions.sample_example(g1)["question"] for _ in range(30)]
  qb = [questions.sample_example(g2)["question"] for _ in range(30)]
  assert qa == qb and len(set(qa)) > 20
  img = questions.sample_example(5, with_image=True)["image"]
  assert img.shape == (64, 64, 3)


def test_slice_weights_and_require():
  rng = random.Random(0)
  exs = [questions.sample_example(
      rng, "colour", {"skill:colour&answer:purple": 0.0}) for _ in range(300)]
  assert all(e["answer"] != "purple" for e in exs)
  exs = [questions.sample_example(rng, "colour", require=["answer:purple"])
         for _ in range(30)]
  assert all(e["answer"] == "purple" for e in exs)
  exs = [questions.sample_example(rng, "count", {"count>=5": 4.0})
         for _ in range(400)]
  high = sum(int(e["answer"]) >= 5 for e in exs) / len(exs)
  assert high > 0.7  # 0.5 unweighted; 4x weight gives 0.8.
  assert questions.slice_weight(("a", "b"), {"a&b": 0.5, "a": 2.0, "c": 9}) == 1
  with pytest.raises(RuntimeError, match="slice filter"):
    questions.sample_example(0, "count", {"skill:count": 0.0}, max_tries=50)
  with pytest.raises(ValueError, match="unknown skill"):
    questions.sample_example(0, "telepathy")


def test_skill_weights():
  rng = random.Random(1)
  skills = {questions.sample_example(
      rng, skill_weights={s: 0.0 for s in questions.SKILLS[1:]})["skill"]
            for _ in range(20)}
  assert skills == {questions.SKILLS[0]}


def test_binding_needs_both_attributes(examples):
  for ex in examples:
    if ex["skill"] != "binding":
      continue
    q = oracle.parse_question(ex["question"])
    assert len(q.ref.attrs) == 2
    for attr in q.ref.attrs:  # Each attribute alone names several objects.
      alone = refs.Ref(**{attr: getattr(q.ref, attr)})
      assert len(alone.find(ex["scene"])) >= 2


def test_spatial_skills_are_one_step(examples):
  for ex in examples:
    q = oracle.parse_question(ex["question"])
    if ex["skill"] in ("left_right", "above_below"):
      assert q.kind in ("side_h", "side_v") and q.ref2 is None
      assert len(q.ref.find(ex["scene"])) == 1
    if ex["skill"] == "extremes":
      assert q.ref.place is not None and not q.ref.attrs
      assert len(q.ref.find(ex["scene"])) == 1


# ---------------------------------------------------------------------------
# Robustness: the oracle never raises and returns the documented types.


def _check_result(res):
  if isinstance(res, OracleError):
    assert res.kind in ("parse", "ambiguous", "invalid", "unanswerable")
  else:
    assert res in questions.ANSWER_WORDS


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=120))
def test_oracle_never_raises_on_random_text(text):
  _check_result(oracle.answer(SCENE, text))


_VALID = [questions.sample_example(i, questions.SKILLS[i % 14])["question"]
          for i in range(200)]
_WORDS = sorted({w for q in _VALID for w in re.findall(r"[a-z0-9]+", q)} |
                {"the", "a", "big", "color", "row", "9", "0"})


@settings(max_examples=400, deadline=None)
@given(text=mutated(_VALID, _WORDS), seed=st.integers(0, 50))
def test_oracle_never_raises_on_mutated_questions(text, seed):
  _check_result(oracle.answer(scene_lib.sample_scene(seed), text))
  q = oracle.parse_question(text)
  assert isinstance(q, (oracle.Query, OracleError))

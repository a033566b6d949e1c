"""Edit commands (editor E), captions (generator G) and the world vocabulary."""

import collections
import re

import pytest
from hypothesis import given, settings, strategies as st

from auditdm_jax.world import editor
from auditdm_jax.world import generator
from auditdm_jax.world import grammar
from auditdm_jax.world import oracle
from auditdm_jax.world import refs
from auditdm_jax.world import scene as scene_lib
from auditdm_jax.world import vocab
from text_mutation import mutated

Obj = scene_lib.Obj
Scene = scene_lib.Scene
Edit = grammar.Edit
EditError = grammar.EditError
CaptionError = grammar.CaptionError
Place = refs.Place
Ref = refs.Ref

# red circle (large, top left), blue square (small, bottom right),
# blue circle (small, top right), green triangle (large, row 3 col 2).
SCENE = Scene((Obj("circle", "red", "large", 0, 0),
               Obj("square", "blue", "small", 3, 3),
               Obj("circle", "blue", "small", 0, 3),
               Obj("triangle", "green", "large", 2, 1)))


def _diff(a: Scene, b: Scene):
  """(objects only in a, objects only in b)."""
  sa, sb = set(a.objects), set(b.objects)
  return sa - sb, sb - sa


# ---------------------------------------------------------------------------
# Edits.


@pytest.mark.parametrize("text, edit", [
    ("make the red circle blue", Edit("recolour", Ref(colour="red",
                                                      shape="circle"),
                                      colour="blue")),
    ("Color the triangle PURPLE.", Edit("recolour", Ref(shape="triangle"),
                                        colour="purple")),
    ("make the small square large", Edit("resize", Ref("small", shape="square"),
                                         size="large")),
    ("make the red circle smaller", Edit("resize", Ref(colour="red",
                                                       shape="circle"),
                                         size="small")),
    ("remove the green triangle", Edit("remove", Ref(colour="green",
                                                     shape="triangle"))),
    ("delete the object in the top left corner",
     Edit("remove", Ref(place=Place("corner", "top left")))),
    ("add a small purple circle at the top left",
     Edit("add", colour="purple", shape="circle", size="small",
          place=Place("corner", "top left"))),
    ("add a circle", Edit("add", shape="circle")),
    ("draw an orange object in row 2 column 3",
     Edit("add", colour="orange", place=Place.at(1, 2))),
    ("move the red circle to the bottom right",
     Edit("move", Ref(colour="red", shape="circle"),
          place=Place("corner", "bottom right"))),
    ("put the circle on the left in the bottom row",
     Edit("move", Ref(shape="circle", place=Place("half", "left")),
          place=Place("line", "bottom"))),
    ("turn the blue square into a triangle",
     Edit("reshape", Ref(colour="blue", shape="square"), shape="triangle")),
    ("change the shape of the square to diamond",
     Edit("reshape", Ref(shape="square"), shape="diamond")),
])
def test_parse_edit_examples(text, edit):
  assert grammar.parse_edit(text) == edit


@pytest.mark.parametrize("op, template", [
    (op, t) for table in (grammar.EDIT_TEMPLATES,
                          grammar.PARSE_ONLY_EDIT_TEMPLATES)
    for op, ts in table.items() for t in ts])
def test_every_edit_phrasing_parses_to_its_op(op, template):
  slots = {"ref": "the red circle", "colour": "blue", "size": "small",
           "sizecmp": "smaller", "spec": "a small blue square",
           "place": "at the top left", "shapespec": "a triangle",
           "shapeword": "triangle"}
  e = grammar.parse_edit(template.format(**slots))
  assert isinstance(e, Edit), (template, e)
  assert e.op == op


def test_edit_text_round_trips_every_template():
  target = Ref(colour="red", shape="circle")
  edits = {"recolour": Edit("recolour", target, colour="blue"),
           "resize": Edit("resize", target, size="small"),
           "remove": Edit("remove", target),
           "move": Edit("move", target, place=Place("half", "right")),
           "reshape": Edit("reshape", target, shape="diamond")}
  for op, templates in grammar.EDIT_TEMPLATES.items():
    for t in templates:
      if op == "add":
        e = Edit("add", colour="red", size="large",
                 place=Place.at(2, 3) if "{place}" in t else None)
      else:
        e = edits[op]
      for variant in (0, 1):
        text = grammar.edit_text(e, t, variant)
        assert grammar.parse_edit(text) == e, text


@pytest.fixture(scope="module")
def sampled_edits():
  out = []
  for seed in range(1500):
    grid = (4, 4, 4, 3, 5)[seed % 5]
    scene = scene_lib.sample_scene(seed, grid=grid, image_size=16 * grid)
    res = editor.sample_edit(scene, seed, grammar.EDIT_OPS[seed % 6])
    if res is not None:
      out.append((scene, *res, seed))
  return out


def test_sampled_edits_parse_and_apply(sampled_edits):
  ops = collections.Counter(e.op for _, _, e, _ in sampled_edits)
  assert set(ops) == set(grammar.EDIT_OPS) and min(ops.values()) > 150
  for scene, text, edit, seed in sampled_edits:
    assert grammar.parse_edit(text) == edit, text
    out = editor.apply_edit(scene, text, seed)
    assert isinstance(out, Scene), (text, out)
    assert out == editor.apply_edit(scene, edit, seed)  # Deterministic.


def test_edits_change_exactly_what_they_say(sampled_edits):
  for scene, text, edit, seed in sampled_edits:
    out = editor.apply_edit(scene, edit, seed)
    gone, new = _diff(scene, out)
    n0, n1 = len(scene.objects), len(out.objects)
    if edit.op == "add":
      assert not gone and len(new) == 1 and n1 == n0 + 1
      (o,) = new
      for f in ("colour", "shape", "size"):
        assert getattr(edit, f) in (None, getattr(o, f))
      assert edit.place is None or edit.place.contains(o.row, o.col, out.grid)
      continue
    (old,) = edit.target.find(scene)
    assert gone == {old}, text
    if edit.op == "remove":
      assert not new and n1 == n0 - 1
      continue
    (o,) = new
    if edit.op == "move":
      assert (o.shape, o.colour, o.size) == (old.shape, old.colour, old.size)
      assert edit.place.contains(o.row, o.col, out.grid)
      assert scene.object_at(o.row, o.col) is None
    else:
      field = {"recolour": "colour", "resize": "size",
               "reshape": "shape"}[edit.op]
      assert o.cell == old.cell and getattr(o, field) == getattr(edit, field)
      for f in {"colour", "size", "shape"} - {field}:
        assert getattr(o, f) == getattr(old, f)


def test_oracle_agrees_with_edits(sampled_edits):
  for scene, text, edit, seed in sampled_edits:
    out = editor.apply_edit(scene, edit, seed)
    n0 = len(scene.objects)
    count = oracle.answer(out, "how many objects are there?")
    assert count == str(n0 + {"add": 1, "remove": -1}.get(edit.op, 0))
    if edit.op in ("add", "remove"):
      continue
    (old,) = edit.target.find(scene)
    (o,) = _diff(scene, out)[1]
    at = f"the object at row {o.row + 1} column {o.col + 1}"
    for f in ("colour", "shape", "size"):
      assert oracle.answer(out, f"what {f} is {at}?") == getattr(o, f)
    if edit.op == "move":
      assert oracle.answer(out, f"is there an object at row {old.row + 1} "
                           f"column {old.col + 1}?") == "no"


def test_recolour_then_ask():
  out = editor.apply_edit(SCENE, "make the red circle blue")
  assert oracle.answer(out, "is there a blue circle?") == "yes"
  assert oracle.answer(out, "is there a red circle?") == "no"
  assert oracle.answer(out, "how many blue circles are there?") == "2"
  assert oracle.answer(out, "what size is the large blue circle?") == "large"
  out = editor.apply_edit(SCENE, "move the green triangle to the top row", 1)
  assert oracle.answer(out, "is the green triangle at the top or the bottom?"
                       ) == "top"
  out = editor.apply_edit(SCENE, "add a small purple circle at the bottom left")
  assert oracle.answer(out, "what colour is the object in the bottom left "
                       "corner?") == "purple"
  out = editor.apply_edit(SCENE, "turn the blue square into a triangle")
  assert oracle.answer(out, "how many triangles are there?") == "2"
  out = editor.apply_edit(SCENE, "make the blue square bigger")
  assert oracle.answer(out, "is the blue square bigger than the red circle?"
                       ) == "no"
  assert oracle.answer(out, "what size is the blue square?") == "large"


@pytest.mark.parametrize("text, kind", [
    ("make the purple circle blue", "missing"),
    ("remove the circle", "ambiguous"),
    ("remove the blue object", "ambiguous"),
    ("move the red circle to the top right", "occupied"),
    ("add a red circle in the top right corner", "occupied"),
    ("make the red circle red", "noop"),
    ("make the red circle bigger", "noop"),
    ("turn the red circle into a circle", "noop"),
    ("move the red circle to the left", "noop"),
    ("move the red circle to row 7 column 1", "invalid"),
    ("remove the object at row 9 column 9", "invalid"),
    ("make the red circle", "parse"),
    ("make the red circle a blue square", "parse"),
    ("please make everything nicer", "parse"),
    ("", "parse"),
])
def test_edit_errors(text, kind):
  out = editor.apply_edit(SCENE, text)
  assert isinstance(out, EditError) and out.kind == kind, out
  assert not out and out.message


def test_add_to_full_scene_and_region_seeds():
  full = scene_lib.sample_scene(0, 8)
  out = editor.apply_edit(full, "add a red circle")
  assert isinstance(out, EditError) and out.kind == "full"
  spots = set()
  for seed in range(40):
    out = editor.apply_edit(SCENE, "add a red square on the left", seed)
    (o,) = _diff(SCENE, out)[1]
    assert o.col < 2
    spots.add(o.cell)
  assert len(spots) > 3  # The seed picks among the free cells.
  assert editor.apply_edit(SCENE, "x", seed=1).kind == "parse"
  assert editor.apply_edit("not a scene", "remove the red circle"
                           ).kind == "invalid"
  assert editor.apply_edit(SCENE, 42).kind == "parse"


def test_remove_last_object_gives_empty_scene():
  s = Scene((Obj("circle", "red", "large", 1, 1),))
  out = editor.apply_edit(s, "remove the circle")
  assert out == Scene()
  assert oracle.answer(out, "how many objects are there?") == "0"
  assert editor.sample_edit(out, 0, "remove") is None
  assert editor.sample_edit(out, 0)[1].op == "add"


# ---------------------------------------------------------------------------
# Captions.


def test_caption_from_brief():
  text = ("a large red circle at the top left, a small blue square and two "
          "green triangles")
  s = generator.parse_caption(text, seed=3)
  assert isinstance(s, Scene) and len(s.objects) == 4
  assert s.object_at(0, 0) == Obj("circle", "red", "large", 0, 0)
  assert len(Ref("small", "blue", "square").find(s)) == 1
  assert len(Ref(colour="green", shape="triangle").find(s)) == 2
  assert generator.parse_caption(text, seed=3) == s
  others = {generator.parse_caption(text, seed=k) for k in range(10)}
  assert len(others) > 5  # Free positions and sizes follow the seed.


@pytest.mark.parametrize("text, n", [
    ("a red circle", 1),
    ("An image of a red circle.", 1),
    ("a scene with three blue squares on the right", 3),
    ("a picture of a circle, a square, and a triangle", 3),
    ("two objects in the top row and one large diamond", 3),
    ("a red circle at row 2, column 3", 1),
    ("a small cyan diamond in the top-left corner", 1),
    ("8 circles", 8),
    ("a big yellow thing at the bottom", 1),
])
def test_caption_variants(text, n):
  s = generator.parse_caption(text)
  assert isinstance(s, Scene), s
  assert len(s.objects) == n


@pytest.mark.parametrize("text, kind", [
    ("", "parse"),
    ("a scene with", "parse"),
    ("a red circle and", "parse"),
    ("a red blue circle", "parse"),
    ("a purple elephant", "parse"),
    ("two circles at the top left", "occupied"),
    ("a circle at the top left and a square in the top left corner",
     "occupied"),
    ("five circles in the left column", "occupied"),
    ("nine circles", "parse"),
    ("five circles and four squares", "full"),
    ("a circle at row 7 column 1", "invalid"),
    ("a circle at row 0 column 1", "parse"),
])
def test_caption_errors(text, kind):
  out = generator.parse_caption(text)
  assert isinstance(out, CaptionError) and out.kind == kind, out
  assert not out and out.message


def test_caption_grid_and_seed_arguments():
  s = generator.parse_caption("a circle at row 5 column 5", grid=5,
                              image_size=80)
  assert isinstance(s, Scene) and s.object_at(4, 4) is not None
  assert generator.parse_caption("a circle", grid=4, image_size=50
                                 ).kind == "invalid"
  assert generator.parse_caption("a circle", seed="x").kind == "invalid"
  assert generator.parse_caption(None).kind == "parse"
  assert generator.parse_caption("four circles", grid=2, image_size=24
                                 ).objects
  assert generator.parse_caption("five circles", grid=2, image_size=24
                                 ).kind == "full"


@pytest.mark.parametrize("grid", [3, 4, 5])
def test_describe_scene_all_positions_round_trips(grid):
  for seed in range(300):
    s = scene_lib.sample_scene(seed, grid=grid, image_size=16 * grid)
    text = generator.describe_scene(s, seed, positions="all")
    assert generator.parse_caption(text, seed, grid, 16 * grid) == s, text


def _attrs(s):
  return collections.Counter((o.shape, o.colour, o.size) for o in s.objects)


def test_describe_scene_without_positions_keeps_objects():
  grouped = 0
  for seed in range(300):
    s = scene_lib.sample_scene(seed)
    text = generator.describe_scene(s, seed, positions="none")
    grouped += bool(re.search(r"\b(two|three|four)\b", text))
    out = generator.parse_caption(text, seed)
    assert _attrs(out) == _attrs(s), text
  assert grouped > 10


def test_describe_scene_mixed_positions_are_respected():
  for seed in range(300):
    s = scene_lib.sample_scene(seed)
    text = generator.describe_scene(s, seed, positions="mixed")
    cap = grammar.parse_caption_items(text)
    out = generator.build_scene(cap, seed)
    assert _attrs(out) == _attrs(s), text
    for it in cap.items:
      assert len(it.ref.find(out)) >= it.count, (text, it)


def test_sample_caption_valid_and_varied():
  texts = [generator.sample_caption(seed) for seed in range(400)]
  assert len(set(texts)) > 380
  for seed, t in enumerate(texts):
    s = generator.parse_caption(t, seed)
    assert isinstance(s, Scene) and s.objects, (t, s)
  assert any(t.startswith(p) for t in texts for p in grammar.CAPTION_PREFIXES)
  assert any(" at row " in t for t in texts)
  assert any(" on the " in t for t in texts)
  assert generator.sample_caption(7) == generator.sample_caption(7)


# ---------------------------------------------------------------------------
# Vocabulary and corpus.


def test_corpus_covers_all_kinds_with_a_closed_vocabulary():
  text = list(vocab.corpus(600, seed=0))
  assert text == list(vocab.corpus(600, seed=0))
  assert len(text) == 600
  words = vocab.words()
  assert len(words) < 150
  seen = set()
  for s in text:
    toks = vocab.words_of(s)
    assert toks and set(toks) <= words, s
    seen |= set(toks)
    assert s == s.lower() and "  " not in s
  assert sum(s.endswith("?") for s in text) > 150  # Questions.
  assert sum(len(vocab.words_of(s)) == 1 for s in text) > 40  # Answers.
  assert sum(s.split(" ")[0] in ("make", "colour", "paint", "turn", "remove",
                                 "delete", "add", "move", "put", "place",
                                 "draw", "change", "take", "erase")
             for s in text) > 60  # Edits.
  assert sum(generator.parse_caption(s).__class__ is Scene for s in text
             if not s.endswith("?")) > 100  # Captions.
  assert seen == words  # Every word is used, so a tokenizer sees them all.


# ---------------------------------------------------------------------------
# Robustness: parse functions never raise and return the documented types.

_EDIT_KINDS = ("parse", "missing", "ambiguous", "occupied", "full", "noop",
               "invalid")
_CAPTION_KINDS = ("parse", "full", "occupied", "invalid")


def _check_all(text, seed=0):
  e = grammar.parse_edit(text)
  assert isinstance(e, Edit) or (isinstance(e, EditError) and
                                 e.kind == "parse"), e
  out = editor.apply_edit(SCENE, text, seed)
  assert isinstance(out, Scene) or (isinstance(out, EditError) and
                                    out.kind in _EDIT_KINDS), out
  c = grammar.parse_caption_items(text)
  assert isinstance(c, grammar.Caption) or (
      isinstance(c, CaptionError) and c.kind in _CAPTION_KINDS), c
  s = generator.parse_caption(text, seed)
  assert isinstance(s, Scene) or (isinstance(s, CaptionError) and
                                  s.kind in _CAPTION_KINDS), s


@settings(max_examples=250, deadline=None)
@given(text=st.text(max_size=150), seed=st.integers(0, 2**31))
def test_parsers_never_raise_on_random_text(text, seed):
  _check_all(text, seed)


_VALID = ([editor.sample_edit(scene_lib.sample_scene(i), i)[0]
           for i in range(150)] +
          [generator.sample_caption(i) for i in range(150)])
_WORDS = sorted({w for t in _VALID for w in re.findall(r"[a-z0-9]+", t)} |
                {"and", "the", "big", "row", "column", "0", "9", "into", "to"})


@settings(max_examples=500, deadline=None)
@given(text=mutated(_VALID, _WORDS), seed=st.integers(0, 1000))
def test_parsers_never_raise_on_mutated_text(text, seed):
  _check_all(text, seed)


def test_non_str_inputs():
  for bad in (None, 3, b"make the red circle blue", ["remove"], object()):
    assert grammar.parse_edit(bad).kind == "parse"
    assert grammar.parse_caption_items(bad).kind == "parse"
    assert generator.parse_caption(bad).kind == "parse"
    assert editor.apply_edit(SCENE, bad).kind == "parse"

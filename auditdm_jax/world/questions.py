"""VQA examples with exact answers: 14 skills over the scene world.

  ex = sample_example(rng=0, skill="colour")
  ex["question"], ex["answer"]    # "what colour is the circle?", "purple"
  ex["tags"]                      # ("skill:colour", "answer:purple", ...)

Every question is written from oracle.QUESTION_TEMPLATES, and its answer is
computed here from the objects the generator picked (not by calling the
oracle), so tests can check `oracle.answer(scene, q) == a` independently.

Skills (one example each; "X" is a referring expression that names exactly
one object, or no object for hallucination):

  existence        is there a red circle?                     yes / no
  count            how many objects are there?                1..8
  count_attr       how many red objects are there?            0..8
  colour           what colour is the circle?                 colour
  shape            what shape is the red object?              shape
  size             is the red circle small or large?          small / large
  left_right       is the red circle on the left or the right?    left / right
  above_below      is the red circle at the top or the bottom?    top / bottom
  extremes         what colour is the object in the left column?  colour/shape
  occupancy        is there an object in the top left corner?     yes / no
  comparison       are there more circles than squares?       yes / no
  size_comparison  is the red circle bigger than the blue square?  yes / no
  hallucination    what colour is the triangle? (no triangle)  none
  binding          what colour is the large square?           colour/shape/size

Spatial skills are ONE-STEP on purpose: research/world_feasibility.md found
two-object relations ("is A left of B") and arg-min extremes ("the leftmost
object") at chance after 25 min of CPU training, while binding an attribute
to one object is learned in minutes. So:
  * left_right / above_below ask which HALF of the image one named object is
    in (find the object, read its own position embedding: one hop);
  * extremes ask an attribute of "the object in the left column / top row /
    top left corner", only when that line or corner holds exactly one object
    (attend to fixed positions, read the attribute: one hop, no arg-min);
  * occupancy asks whether a fixed corner, edge line or cell holds anything
    (a pure position lookup, the simplest stepping stone).

Colour, shape and size name the object by attributes where at most one is
individually ambiguous; binding uses two attributes that are each ambiguous
("the large square" with two squares and two large objects), so it cannot be
answered without binding. Hallucination asks the colour/shape/size/side of a
near-miss absent object (it shares an attribute with a present one) and its
answer is always "none" by construction.

Slice tags (strings) let datasets reweight combinations: "skill:colour",
"answer:purple", "colour:purple", "shape:circle", "size:large" (of the
objects the question names or is about), "count>=5" / "count<=4" (numeric
answers), "relation:left" (spatial answers and place sides),
"place:left_column",
"ask:colour", "by:shape", "kind:more", "n_objects:6", "phrasing:2".
`slice_weights` keys are tags or "&"-joined conjunctions
("skill:colour&answer:purple").
"""

from __future__ import annotations

import collections
import functools
import itertools
import operator
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Optional

from auditdm_jax.world import _rng
from auditdm_jax.world import oracle
from auditdm_jax.world import refs as refs_lib
from auditdm_jax.world import render as render_lib
from auditdm_jax.world import scene as scene_lib

Obj = scene_lib.Obj
Ref = refs_lib.Ref
Scene = scene_lib.Scene
answer = oracle.answer  # Re-exported: the oracle for any question text.

SKILLS = ("existence", "count", "count_attr", "colour", "shape", "size",
          "left_right", "above_below", "extremes", "occupancy", "comparison",
          "size_comparison", "hallucination", "binding")
ATTRS = ("size", "colour", "shape")
_VALUES = {"size": scene_lib.SIZES, "colour": scene_lib.COLOUR_NAMES,
           "shape": scene_lib.SHAPES}
COMBOS = tuple(c for n in (1, 2, 3) for c in itertools.combinations(ATTRS, n))
ANSWER_WORDS = (oracle.YES, oracle.NO, oracle.NONE, "left", "right", "top",
                "bottom", *map(str, range(scene_lib.MAX_OBJECTS + 1)),
                *scene_lib.COLOUR_NAMES, *scene_lib.SHAPES, *scene_lib.SIZES)


_KEY = {c: operator.attrgetter(*c) for c in COMBOS}  # Works on Obj and Ref.


class _Index:
  """Counts of objects per attribute combination, for uniqueness tests.

  One Counter per combo, built on first use, keyed by _KEY[combo](x): a value
  for one attribute, a tuple for several, so Obj and Ref give the same key.
  """

  def __init__(self, scene: Scene):
    self.scene = scene
    self.objs = scene.objects
    self._c = {}

  def _counter(self, combo: tuple[str, ...]) -> collections.Counter:
    c = self._c.get(combo)
    if c is None:
      c = self._c[combo] = collections.Counter(map(_KEY[combo], self.objs))
    return c

  def count_ref(self, ref: Ref) -> int:
    """Objects matching ref's attributes (its place is ignored)."""
    combo = ref.attrs
    if not combo:
      return len(self.objs)
    return self._counter(combo)[_KEY[combo](ref)]

  def of(self, obj: Obj, combo: tuple[str, ...]) -> int:
    """Objects sharing obj's values of the attributes in combo."""
    return self._counter(combo)[_KEY[combo](obj)]

  def unique(self, obj: Obj, combo: tuple[str, ...]) -> bool:
    return self.of(obj, combo) == 1

  def is_binding(self, obj: Obj, combo: tuple[str, ...]) -> bool:
    """Two attributes that name obj together but each name several objects."""
    return (len(combo) == 2 and self.of(obj, combo) == 1 and
            self.of(obj, combo[:1]) >= 2 and self.of(obj, combo[1:]) >= 2)


class _Q:
  """A generated question before tags are finalised."""

  def __init__(self, kind: str, slots: Mapping[str, str], ans: str,
               tags: Iterable[str], rng: _rng.Rng):
    templates = oracle.QUESTION_TEMPLATES[kind]
    i = _rng.index(rng, len(templates))
    self.text = templates[i].format(**slots) + "?"
    self.answer = ans
    self.tags = [f"kind:{kind}", f"phrasing:{i}", *tags]


def _obj_tags(o: Obj) -> list[str]:
  return [f"colour:{o.colour}", f"shape:{o.shape}", f"size:{o.size}"]


def _ref_tags(r: Ref) -> list[str]:
  return [f"{a}:{getattr(r, a)}" for a in r.attrs]


def _generic(rng: _rng.Rng) -> str:
  return "shape" if _rng.coin(rng, 0.2) else "object"


def _pick_combo(rng, idx: _Index, obj: Obj,
                weighted: Mapping[tuple, float]) -> Optional[tuple[str, ...]]:
  """A combo from `weighted` that names obj uniquely, by weight."""
  combos = [c for c in weighted if idx.unique(obj, c)]
  if not combos:
    return None
  return _rng.weighted_choice(rng, combos, [weighted[c] for c in combos])


def _absent_ref(rng, idx: _Index, combos: Mapping[tuple, float],
                tries: int = 12) -> Optional[Ref]:
  """A near-miss Ref naming no object: a present object, one attr changed."""
  if not idx.objs:
    return None
  names = list(combos)
  weights = [combos[c] for c in names]
  for _ in range(tries):
    o = _rng.choice(rng, idx.objs)
    combo = _rng.weighted_choice(rng, names, weights)
    attr = _rng.choice(rng, combo)
    values = [v for v in _VALUES[attr] if v != getattr(o, attr)]
    kw = {a: getattr(o, a) for a in combo}
    kw[attr] = _rng.choice(rng, values)
    ref = Ref(**kw)
    if idx.count_ref(ref) == 0:
      return ref
  return None


# --------------------------------------------------------------------------
# One function per skill: (index, rng) -> _Q or None.

_EXIST_YES = {("colour", "shape"): 5, ("size", "colour", "shape"): 2,
              ("shape",): 1.5, ("colour",): 1.5}
_EXIST_NO = {("colour", "shape"): 6, ("size", "colour", "shape"): 2,
             ("shape",): 1, ("colour",): 1}


def _slots_for_set(ref: Ref, rng) -> dict[str, str]:
  g = _generic(rng)
  return {"indef": ref.indefinite(g), "plural": ref.plural(g)}


def _existence(idx: _Index, rng) -> Optional[_Q]:
  ref = None
  if _rng.coin(rng, 0.5):
    ref = _absent_ref(rng, idx, _EXIST_NO)
  if ref is None:
    o = _rng.choice(rng, idx.objs)
    ref = Ref.of(o, _rng.weighted_choice(rng, list(_EXIST_YES),
                                         list(_EXIST_YES.values())))
  ans = oracle.YES if idx.count_ref(ref) else oracle.NO
  return _Q("exists", _slots_for_set(ref, rng), ans, _ref_tags(ref), rng)


def _count(idx: _Index, rng) -> Optional[_Q]:
  g = _generic(rng)
  return _Q("count", {"plural": Ref().plural(g)}, str(len(idx.objs)),
            ["by:all"], rng)


_COUNT_BY = {("colour",): 3.5, ("shape",): 3.5, ("size",): 1,
             ("colour", "shape"): 2}


def _count_attr(idx: _Index, rng) -> Optional[_Q]:
  combo = _rng.weighted_choice(rng, list(_COUNT_BY), list(_COUNT_BY.values()))
  if _rng.coin(rng, 0.8) and idx.objs:
    ref = Ref.of(_rng.choice(rng, idx.objs), combo)
  else:
    ref = Ref(**{a: _rng.choice(rng, _VALUES[a]) for a in combo})
  n = idx.count_ref(ref)
  by = "&".join(combo)
  return _Q("count", {"plural": ref.plural(_generic(rng))}, str(n),
            [f"by:{by}", *_ref_tags(ref)], rng)


def _attr_question(idx: _Index, rng, attr: str, binding: bool,
                   skill_objs: Optional[Sequence[Obj]] = None) -> Optional[_Q]:
  """colour/shape/size of one object, named without `attr`."""
  combos = [c for c in COMBOS if attr not in c]
  cands = []
  for o in skill_objs or idx.objs:
    ok = [c for c in combos if idx.unique(o, c) and
          idx.is_binding(o, c) == binding]
    if ok:
      cands.append((o, ok))
  if not cands:
    return None
  o, ok = _rng.choice(rng, cands)
  ref = Ref.of(o, _rng.choice(rng, ok))
  return _Q(attr, {"ref": ref.definite()}, getattr(o, attr),
            [f"ask:{attr}", *_obj_tags(o)], rng)


def _colour(idx, rng):
  return _attr_question(idx, rng, "colour", False)


def _shape(idx, rng):
  return _attr_question(idx, rng, "shape", False)


def _size(idx, rng):
  return _attr_question(idx, rng, "size", False)


def _binding(idx: _Index, rng) -> Optional[_Q]:
  attrs = _rng.shuffled(rng, ATTRS)
  for attr in attrs:
    q = _attr_question(idx, rng, attr, True)
    if q is not None:
      q.tags.append("binding:" + "&".join(a for a in ATTRS if a != attr))
      return q
  return None


_SPATIAL = {("colour", "shape"): 4, ("shape",): 1, ("colour",): 1,
            ("size", "colour", "shape"): 1}


def _spatial(idx: _Index, rng, axis: str) -> Optional[_Q]:
  cands = [o for o in idx.objs
           if oracle.side(idx.scene, o.row, o.col, axis) is not None]
  cands = [o for o in cands if any(idx.unique(o, c) for c in _SPATIAL)]
  if not cands:
    return None
  o = _rng.choice(rng, cands)
  ref = Ref.of(o, _pick_combo(rng, idx, o, _SPATIAL))
  ans = oracle.side(idx.scene, o.row, o.col, axis)
  kind = "side_h" if axis == "h" else "side_v"
  return _Q(kind, {"ref": ref.definite()}, ans,
            [f"relation:{ans}", *_obj_tags(o)], rng)


def _left_right(idx, rng):
  return _spatial(idx, rng, "h")


def _above_below(idx, rng):
  return _spatial(idx, rng, "v")


def _place_tags(p: refs_lib.Place) -> list[str]:
  tags = [f"place:{p.tag()}"]
  if p.side is not None:
    tags += [f"relation:{s}" for s in p.side.split(" ")]
  return tags


def _extremes(idx: _Index, rng) -> Optional[_Q]:
  g = idx.scene.grid
  cands = []
  for p in refs_lib.ALL_CORNERS + refs_lib.ALL_LINES:
    inside = [o for o in idx.objs if p.contains(o.row, o.col, g)]
    if len(inside) == 1:
      cands.append((p, inside[0]))
  if not cands:
    return None
  p, o = _rng.choice(rng, cands)
  attr = "colour" if _rng.coin(rng, 0.5) else "shape"
  ref = Ref(place=p)
  return _Q(attr, {"ref": ref.definite()}, getattr(o, attr),
            [f"ask:{attr}", *_place_tags(p), *_obj_tags(o)], rng)


@functools.lru_cache(maxsize=None)
def _occupancy_places(grid: int) -> tuple[tuple[refs_lib.Place, ...], ...]:
  cells = tuple(refs_lib.Place.at(r, c) for r in range(grid)
                for c in range(grid))
  return (refs_lib.ALL_CORNERS, refs_lib.ALL_LINES, cells)


def _occupancy(idx: _Index, rng) -> Optional[_Q]:
  g = idx.scene.grid
  group = _occupancy_places(g)[_rng.weighted_index(rng, (5, 3, 2))]
  def occupied(p):
    return any(p.contains(o.row, o.col, g) for o in idx.objs)
  want = _rng.coin(rng, 0.5)
  pool = [p for p in group if occupied(p) == want] or list(group)
  p = _rng.choice(rng, pool)
  ref = Ref(place=p)
  g_word = _generic(rng)
  indef = ("anything " + p.phrases("ref")[0] if _rng.coin(rng, 0.25)
           else ref.indefinite(g_word))
  ans = oracle.YES if occupied(p) else oracle.NO
  return _Q("exists", {"indef": indef, "plural": ref.plural(g_word)}, ans,
            _place_tags(p), rng)


def _comparison(idx: _Index, rng) -> Optional[_Q]:
  attr = "shape" if _rng.coin(rng, 0.6) else "colour"
  kind = "more" if _rng.coin(rng, 0.5) else "fewer"
  counts = {v: idx.count_ref(Ref(**{attr: v})) for v in _VALUES[attr]}
  pairs = [(a, b) for a in _VALUES[attr] for b in _VALUES[attr]
           if a != b and counts[a] + counts[b] > 0]
  if not pairs:
    return None
  def yes(p):
    a, b = counts[p[0]], counts[p[1]]
    return a > b if kind == "more" else a < b
  want = _rng.coin(rng, 0.5)
  pool = [p for p in pairs if yes(p) == want] or pairs
  a, b = _rng.choice(rng, pool)
  ra, rb = Ref(**{attr: a}), Ref(**{attr: b})
  g = _generic(rng)
  ans = oracle.YES if yes((a, b)) else oracle.NO
  return _Q(kind, {"plural": ra.plural(g), "plural2": rb.plural(g)}, ans,
            [f"by:{attr}", f"{attr}:{a}", f"{attr}:{b}"], rng)


_SIZE_CMP = {("colour", "shape"): 4, ("shape",): 1, ("colour",): 1}


def _size_comparison(idx: _Index, rng) -> Optional[_Q]:
  cands = [o for o in idx.objs if any(idx.unique(o, c) for c in _SIZE_CMP)]
  if len(cands) < 2:
    return None
  kind = "bigger" if _rng.coin(rng, 0.6) else "smaller"
  want_pair = ("large", "small") if kind == "bigger" else ("small", "large")
  pairs = [(a, b) for a in cands for b in cands if a is not b]
  want = _rng.coin(rng, 0.5)
  pool = [p for p in pairs if ((p[0].size, p[1].size) == want_pair) == want]
  if not pool:  # E.g. all objects one size: "yes" is impossible. Keeps the
    return None  # answers balanced; sample_example draws another scene.
  a, b = _rng.choice(rng, pool)
  ra = Ref.of(a, _pick_combo(rng, idx, a, _SIZE_CMP))
  rb = Ref.of(b, _pick_combo(rng, idx, b, _SIZE_CMP))
  ans = oracle.YES if (a.size, b.size) == want_pair else oracle.NO
  tags = [f"colour:{a.colour}", f"colour:{b.colour}", f"shape:{a.shape}",
          f"shape:{b.shape}", f"sizes:{a.size}&{b.size}"]
  return _Q(kind, {"ref": ra.definite(), "ref2": rb.definite()}, ans, tags,
            rng)


_HALLUCINATE = {
    "colour": {("shape",): 1, ("size", "shape"): 1},
    "shape": {("colour",): 1, ("size", "colour"): 1},
    "size": {("colour", "shape"): 1},
    "side_h": {("colour", "shape"): 1},
    "side_v": {("colour", "shape"): 1},
}


def _hallucination(idx: _Index, rng) -> Optional[_Q]:
  kind = _rng.choice(rng, tuple(_HALLUCINATE))
  ref = _absent_ref(rng, idx, _HALLUCINATE[kind])
  if ref is None:
    return None
  return _Q(kind, {"ref": ref.definite()}, oracle.NONE,
            [f"ask:{kind}", *_ref_tags(ref)], rng)


_SKILL_FNS = {
    "existence": _existence, "count": _count, "count_attr": _count_attr,
    "colour": _colour, "shape": _shape, "size": _size,
    "left_right": _left_right, "above_below": _above_below,
    "extremes": _extremes, "occupancy": _occupancy,
    "comparison": _comparison, "size_comparison": _size_comparison,
    "hallucination": _hallucination, "binding": _binding,
}
assert tuple(_SKILL_FNS) == SKILLS


def sample_question(scene: Scene, skill: str,
                    rng: _rng.RngLike = None) -> Optional[dict[str, Any]]:
  """Writes one question of `skill` about `scene`, or None if it can't be asked.

  Args:
    scene: the scene (with at least one object for every skill).
    skill: one of SKILLS.
    rng: numpy Generator, random.Random, int seed or None.

  Returns:
    {"question": str, "answer": str, "skill": str, "tags": tuple[str, ...]},
    or None when the scene does not allow this skill (e.g. binding on a scene
    without two objects sharing each attribute), or, for size_comparison,
    when the answer drawn for balance ("yes"/"no") is impossible on it.
  """
  if skill not in _SKILL_FNS:
    raise ValueError(f"unknown skill {skill!r}; known: {SKILLS}")
  rng = _rng.as_rng(rng)
  if not scene.objects:
    return None
  idx = _Index(scene)
  q = _SKILL_FNS[skill](idx, rng)
  if q is None:
    return None
  tags = [f"skill:{skill}", f"answer:{q.answer}"]
  if q.answer.isdigit():
    tags.append("count>=5" if int(q.answer) >= 5 else "count<=4")
  tags += q.tags
  tags.append(f"n_objects:{len(scene.objects)}")
  return {"question": q.text, "answer": q.answer, "skill": skill,
          "tags": tuple(dict.fromkeys(tags))}


def slice_weight(tags: Iterable[str],
                 slice_weights: Optional[Mapping[str, float]]) -> float:
  """Product of the weights of all keys whose "&"-joined tags are all present.

  Keys that match nothing contribute 1.
  """
  if not slice_weights:
    return 1.0
  have = set(tags)
  w = 1.0
  for key, value in slice_weights.items():
    if all(t in have for t in key.split("&")):
      w *= value
  return w


def sample_example(
    rng: _rng.RngLike = None,
    skill: Optional[str] = None,
    slice_weights: Optional[Mapping[str, float]] = None,
    *,
    skill_weights: Optional[Mapping[str, float]] = None,
    require: Sequence[str] = (),
    grid: int = scene_lib.DEFAULT_GRID,
    image_size: int = scene_lib.DEFAULT_IMAGE_SIZE,
    min_objects: int = 1,
    max_objects: int = scene_lib.MAX_OBJECTS,
    with_image: bool = False,
    max_tries: int = 10_000,
) -> dict[str, Any]:
  """Samples a scene and one question of a skill about it.

  The skill is fixed first (given, or drawn by `skill_weights`, uniform by
  default); scenes are then drawn until the skill can be asked and the
  example passes the slice filter, so skill shares are kept exactly while
  slices inside a skill are reweighted.

  Args:
    rng: numpy Generator, random.Random, int seed or None.
    skill: a SKILLS entry, or None to draw one.
    slice_weights: {tag or "a&b" conjunction: weight}; an example is kept with
      probability slice_weight(tags) / max(1, max weight). E.g.
      {"skill:colour&answer:purple": 0.0} plants a gap, {"count>=5": 3.0}
      triples a slice.
    skill_weights: {skill: weight} for drawing the skill (missing: 1).
    require: tags (or "&" conjunctions) that must all be present.
    grid: cells per side.
    image_size: pixels per side.
    min_objects: fewest objects per scene.
    max_objects: most objects per scene.
    with_image: also render "image": uint8[H, W, 3].
    max_tries: scenes to try before giving up.

  Returns:
    {"scene": Scene, "question", "answer", "skill", "tags"} (+ "image").

  Raises:
    ValueError: unknown skill or weights.
    RuntimeError: no acceptable example in max_tries scenes (e.g. a slice
      weight of 0 on everything the skill can produce).
  """
  rng = _rng.as_rng(rng)
  if skill is None:
    sw = _rng.weights_for(SKILLS, skill_weights)
    skill = _rng.weighted_choice(rng, SKILLS, sw)
  elif skill not in _SKILL_FNS:
    raise ValueError(f"unknown skill {skill!r}; known: {SKILLS}")
  w_max = max([1.0, *(slice_weights or {}).values()])
  for _ in range(max_tries):
    scene = scene_lib.sample_scene(rng, grid=grid, image_size=image_size,
                                   min_objects=min_objects,
                                   max_objects=max_objects)
    ex = sample_question(scene, skill, rng)
    if ex is None:
      continue
    if require and not all(all(t in ex["tags"] for t in r.split("&"))
                           for r in require):
      continue
    if slice_weights:
      w = slice_weight(ex["tags"], slice_weights)
      if w <= 0 or (w < w_max and rng.random() * w_max >= w):
        continue
    ex["scene"] = scene
    if with_image:
      ex["image"] = render_lib.render(scene)
    return ex
  raise RuntimeError(f"no example for skill {skill!r} passed the slice filter "
                     f"in {max_tries} scenes (require={list(require)}, "
                     f"slice_weights={dict(slice_weights or {})})")

"""Editor E of the world: apply edit commands to scene graphs.

  apply_edit(scene, "make the red circle blue")      # -> Scene or EditError
  text, edit = sample_edit(scene, rng)               # a valid command

`apply_edit` never raises. It changes exactly what the command says: one
object's colour, size or shape, its cell (move), one object fewer (remove)
or one more (add); everything else is kept. The target must name exactly one
object ("missing" / "ambiguous" otherwise); an edit that would change
nothing is a "noop" error, so a command always produces a different image.

Where a command leaves something open (the cell inside "on the left", or the
colour of "add a circle"), the value is drawn from `seed`: the same (scene,
command, seed) always gives the same result.
"""

from __future__ import annotations

import random
from typing import Optional, Union

from auditdm_jax.world import _rng
from auditdm_jax.world import grammar
from auditdm_jax.world import refs as refs_lib
from auditdm_jax.world import scene as scene_lib

Edit = grammar.Edit
EditError = grammar.EditError
Place = refs_lib.Place
Ref = refs_lib.Ref
Scene = scene_lib.Scene

EditResult = Union[Scene, EditError]


def _free_in(scene: Scene, place: Optional[Place]) -> list[tuple[int, int]]:
  free = scene.free_cells()
  if place is None:
    return free
  return [c for c in free if place.contains(c[0], c[1], scene.grid)]


def _target(scene: Scene, ref: Ref):
  found = ref.find(scene)
  if not found:
    return EditError("missing", f"no object matches {ref.definite()!r}")
  if len(found) > 1:
    return EditError("ambiguous", f"{len(found)} objects match "
                     f"{ref.definite()!r}")
  return found[0]


def _apply(scene: Scene, edit: Edit, seed: int) -> EditResult:
  rng = random.Random(seed)
  g = scene.grid
  for p in (edit.place, edit.target.place if edit.target else None):
    if p is not None and not p.fits(g):
      return EditError("invalid", f"row {p.row + 1} column {p.col + 1} is "
                       f"outside the {g}x{g} grid")
  if edit.op == "add":
    if len(scene.objects) >= scene.capacity:
      return EditError("full", f"the scene already holds {scene.capacity} "
                       "objects")
    free = _free_in(scene, edit.place)
    if not free:
      where = edit.place.phrases("ref")[0] if edit.place else "the scene"
      return EditError("occupied", f"no free cell {where}")
    row, col = _rng.choice(rng, free)
    new = scene_lib.Obj(
        shape=edit.shape or _rng.choice(rng, scene_lib.SHAPES),
        colour=edit.colour or _rng.choice(rng, scene_lib.COLOUR_NAMES),
        size=edit.size or _rng.choice(rng, scene_lib.SIZES), row=row, col=col)
    return scene.with_objects(scene.objects + (new,))
  obj = _target(scene, edit.target)
  if isinstance(obj, EditError):
    return obj
  rest = tuple(o for o in scene.objects if o is not obj)
  if edit.op == "remove":
    return scene.with_objects(rest)
  if edit.op == "move":
    if edit.place.contains(obj.row, obj.col, g):
      return EditError("noop", f"the object is already "
                       f"{edit.place.phrases('ref')[0]}")
    free = _free_in(scene, edit.place)
    if not free:
      return EditError("occupied", f"no free cell "
                       f"{edit.place.phrases('ref')[0]}")
    row, col = _rng.choice(rng, free)
    return scene.with_objects(rest + (obj.replace(row=row, col=col),))
  field = {"recolour": "colour", "resize": "size", "reshape": "shape"}[edit.op]
  value = getattr(edit, field)
  if getattr(obj, field) == value:
    return EditError("noop", f"the object is already {value}")
  return scene.with_objects(rest + (obj.replace(**{field: value}),))


def apply_edit(scene: Scene, edit: Union[str, Edit],
               seed: int = 0) -> EditResult:
  """Applies an edit (an Edit or command text) to `scene`; never raises.

  Args:
    scene: the scene to edit (not modified; scenes are immutable).
    edit: an Edit, or text parsed with grammar.parse_edit.
    seed: draws what the command leaves open (cell in a region, attributes
      of an added object).

  Returns:
    The edited Scene, or an EditError (see its `kind`s).
  """
  try:
    if isinstance(edit, str):
      edit = grammar.parse_edit(edit)
      if isinstance(edit, EditError):
        return edit
    if not isinstance(edit, Edit):
      return EditError("parse", f"expected an Edit or str, got "
                       f"{type(edit).__name__}")
    if not isinstance(scene, Scene):
      return EditError("invalid", f"expected a Scene, got "
                       f"{type(scene).__name__}")
    return _apply(scene, edit, seed)
  except Exception as e:  # pylint: disable=broad-except  # Contract: no raise.
    return EditError("internal", f"{type(e).__name__}: {e}")


# --------------------------------------------------------------------------
# Sampling valid commands (to teach the auditor to write them).

_TARGET_COMBOS = {("colour", "shape"): 5, ("size", "colour", "shape"): 1.5,
                  ("shape",): 1, ("colour",): 1, ("size", "shape"): 0.5}


def _sample_target(scene: Scene, rng) -> Optional[tuple[scene_lib.Obj, Ref]]:
  """A random object and a Ref naming only it (attributes, or its place)."""
  g = scene.grid
  options = []
  for o in scene.objects:
    refs = [(Ref.of(o, c), w) for c, w in _TARGET_COMBOS.items()]
    refs += [(Ref(place=p), 1.0) for p in refs_lib.ALL_CORNERS +
             refs_lib.ALL_LINES if p.contains(o.row, o.col, g)]
    refs = [(r, w) for r, w in refs if len(r.find(scene)) == 1]
    if refs:
      options.append((o, refs))
  if not options:
    return None
  o, refs = _rng.choice(rng, options)
  ref = _rng.weighted_choice(rng, [r for r, _ in refs], [w for _, w in refs])
  return o, ref


def _sample_place(scene: Scene, rng, exclude: Optional[scene_lib.Obj],
                  exact_weight: float = 0.6) -> Optional[Place]:
  """A place with a free cell (and not containing `exclude`)."""
  g = scene.grid
  def ok(p):
    if exclude is not None and p.contains(exclude.row, exclude.col, g):
      return False
    return bool(_free_in(scene, p))
  exact = [p for p in refs_lib.ALL_CORNERS if ok(p)]
  exact += [Place.at(r, c) for r, c in scene.free_cells()]
  regions = [p for p in refs_lib.ALL_HALVES + refs_lib.ALL_LINES if ok(p)]
  pools = [(exact, exact_weight), (regions, 1 - exact_weight)]
  pools = [(p, w) for p, w in pools if p]
  if not pools:
    return None
  pool = _rng.weighted_choice(rng, [p for p, _ in pools], [w for _, w in pools])
  # Corners first in `exact`: give them about half the exact mass.
  if pool is exact and _rng.coin(rng, 0.5):
    corners = [p for p in exact if p.kind == "corner"]
    if corners:
      return _rng.choice(rng, corners)
  return _rng.choice(rng, pool)


def sample_edit(scene: Scene, rng: _rng.RngLike = None,
                op: Optional[str] = None) -> Optional[tuple[str, Edit]]:
  """Samples a command that applies to `scene` without error.

  Args:
    scene: the scene to edit.
    rng: numpy Generator, random.Random, int seed or None.
    op: an EDIT_OPS entry, or None for a uniform feasible op.

  Returns:
    (text, edit) with grammar.parse_edit(text) == edit, or None if `op`
    (or every op) is impossible on this scene.
  """
  rng = _rng.as_rng(rng)
  if op is not None and op not in grammar.EDIT_OPS:
    raise ValueError(f"unknown op {op!r}; known: {grammar.EDIT_OPS}")
  can_add = len(scene.objects) < scene.capacity and scene.free_cells()
  target = _sample_target(scene, rng)
  ops = [o for o in grammar.EDIT_OPS
         if (o == "add" and can_add) or
         (o == "move" and target and scene.free_cells()) or
         (o not in ("add", "move") and target)]
  if op is not None:
    ops = [o for o in ops if o == op]
  if not ops:
    return None
  op = _rng.choice(rng, ops)
  obj, ref = target if target else (None, None)
  if op == "add":
    spec = {a: _rng.choice(rng, v) for a, v in (
        ("colour", scene_lib.COLOUR_NAMES), ("shape", scene_lib.SHAPES),
        ("size", scene_lib.SIZES))}
    for a in ("size", "colour", "shape"):
      if _rng.coin(rng, {"size": 0.25, "colour": 0.1, "shape": 0.1}[a]):
        spec[a] = None
    place = _sample_place(scene, rng, None) if _rng.coin(rng, 0.7) else None
    edit = Edit("add", place=place, **spec)
  elif op == "move":
    place = _sample_place(scene, rng, obj)
    if place is None:
      return None
    edit = Edit("move", ref, place=place)
  elif op == "remove":
    edit = Edit("remove", ref)
  else:
    field = {"recolour": "colour", "resize": "size", "reshape": "shape"}[op]
    values = {"colour": scene_lib.COLOUR_NAMES, "size": scene_lib.SIZES,
              "shape": scene_lib.SHAPES}[field]
    value = _rng.choice(rng, [v for v in values if v != getattr(obj, field)])
    edit = Edit(op, ref, **{field: value})
  templates = grammar.EDIT_TEMPLATES[op]
  if op == "add":
    templates = [t for t in templates
                 if ("{place}" in t) == (place is not None)]
  template = _rng.choice(rng, templates)
  generic = "shape" if _rng.coin(rng, 0.15) else "object"
  text = grammar.edit_text(edit, template, _rng.index(rng, 2), generic)
  return text, edit

"""Generator G of the world: captions -> scenes, and scenes -> captions.

  parse_caption("a large red circle at the top left and two green triangles",
                seed=3)                    # -> Scene or CaptionError
  describe_scene(scene, rng, positions="all")   # caption that rebuilds it
  sample_caption(rng)                            # a random valid caption

Building a scene from a caption, with `rng = random.Random(seed)`:
  1. missing attributes (size, colour, shape) are drawn, item by item;
  2. objects with an exact place (a corner or "row r column c") take it;
  3. objects with a region ("on the left", "in the top row") take a free cell
     of it, drawn from rng;
  4. the rest take free cells drawn from rng.
So the same (caption, seed, grid, image_size) always gives the same scene,
and `parse_caption` never raises.
"""

from __future__ import annotations

import random
from typing import Optional, Union

from auditdm_jax.world import _rng
from auditdm_jax.world import grammar
from auditdm_jax.world import refs as refs_lib
from auditdm_jax.world import scene as scene_lib

Caption = grammar.Caption
CaptionError = grammar.CaptionError
CaptionItem = grammar.CaptionItem
Place = refs_lib.Place
Scene = scene_lib.Scene

CaptionResult = Union[Scene, CaptionError]
POSITION_MODES = ("all", "none", "mixed")


def build_scene(caption: Caption, seed: int = 0,
                grid: int = scene_lib.DEFAULT_GRID,
                image_size: int = scene_lib.DEFAULT_IMAGE_SIZE
                ) -> CaptionResult:
  """Builds the scene a parsed Caption describes; never raises."""
  try:
    rng = random.Random(seed)
    cap = min(scene_lib.MAX_OBJECTS, grid * grid)
    if caption.n_objects > cap:
      return CaptionError("full", f"{caption.n_objects} objects; a "
                          f"{grid}x{grid} scene holds at most {cap}")
    pending = []  # (attrs, place) per object, in caption order.
    for it in caption.items:
      if it.place is not None and not it.place.fits(grid):
        return CaptionError("invalid", f"row {it.place.row + 1} column "
                            f"{it.place.col + 1} is outside the {grid}x{grid} "
                            "grid")
      for _ in range(it.count):
        attrs = dict(
            shape=it.shape or _rng.choice(rng, scene_lib.SHAPES),
            colour=it.colour or _rng.choice(rng, scene_lib.COLOUR_NAMES),
            size=it.size or _rng.choice(rng, scene_lib.SIZES))
        pending.append((attrs, it.place))
    taken: dict[tuple[int, int], int] = {}
    cells: list[Optional[tuple[int, int]]] = [None] * len(pending)
    for i, (_, p) in enumerate(pending):  # Exact places first.
      if p is not None and p.kind in ("corner", "cell"):
        cell = p.cells(grid)[0]
        if cell in taken:
          return CaptionError("occupied", f"two objects "
                              f"{p.phrases('ref')[0]}")
        taken[cell] = i
        cells[i] = cell
    for i, (_, p) in enumerate(pending):  # Then regions, then anywhere.
      if p is not None and cells[i] is None:
        free = [c for c in p.cells(grid) if c not in taken]
        if not free:
          return CaptionError("occupied", f"no free cell "
                              f"{p.phrases('ref')[0]}")
        cells[i] = _rng.choice(rng, free)
        taken[cells[i]] = i
    for i, (_, p) in enumerate(pending):
      if cells[i] is None:
        free = [(r, c) for r in range(grid) for c in range(grid)
                if (r, c) not in taken]
        cells[i] = _rng.choice(rng, free)
        taken[cells[i]] = i
    objs = tuple(scene_lib.Obj(row=r, col=c, **attrs)
                 for (attrs, _), (r, c) in zip(pending, cells))
    return Scene(objs, grid=grid, image_size=image_size)
  except Exception as e:  # pylint: disable=broad-except  # Contract: no raise.
    return CaptionError("internal", f"{type(e).__name__}: {e}")


def parse_caption(text: str, seed: int = 0,
                  grid: int = scene_lib.DEFAULT_GRID,
                  image_size: int = scene_lib.DEFAULT_IMAGE_SIZE
                  ) -> CaptionResult:
  """Parses a caption and builds its scene; never raises.

  Args:
    text: caption text (grammar.py describes the grammar).
    seed: draws unspecified attributes and positions.
    grid: cells per side of the scene to build.
    image_size: pixels per side.

  Returns:
    A Scene, or a CaptionError.
  """
  cap = grammar.parse_caption_items(text)
  if isinstance(cap, CaptionError):
    return cap
  if not isinstance(seed, int) or isinstance(seed, bool):
    return CaptionError("invalid", f"seed must be an int, got {seed!r}")
  try:
    Scene((), grid=grid, image_size=image_size)
  except (scene_lib.SceneError, TypeError) as e:
    return CaptionError("invalid", str(e))
  return build_scene(cap, seed, grid, image_size)


def _exact_place(o: scene_lib.Obj, grid: int) -> Place:
  for p in refs_lib.ALL_CORNERS:
    if p.contains(o.row, o.col, grid):
      return p
  return Place.at(o.row, o.col)


def _region_place(o: scene_lib.Obj, grid: int, rng) -> Optional[Place]:
  regions = [p for p in refs_lib.ALL_HALVES + refs_lib.ALL_LINES
             if p.contains(o.row, o.col, grid)]
  return _rng.choice(rng, regions) if regions else None


def describe_scene(scene: Scene, rng: _rng.RngLike = None,
                   positions: str = "all", shuffle: bool = True,
                   prefix: Optional[str] = None) -> str:
  """Writes a caption of `scene`.

  Args:
    scene: the scene (at least one object).
    rng: numpy Generator, random.Random, int seed or None.
    positions: "all" (every object gets its exact cell, so parse_caption
      rebuilds `scene` exactly), "none" (no positions; identical objects are
      grouped: "two green triangles") or "mixed" (each object gets its exact
      cell, a region containing it, or nothing).
    shuffle: randomise the order of items.
    prefix: a CAPTION_PREFIXES entry or "" ; None draws one (half the time
      none).

  Returns:
    Caption text; parse_caption of it gives a scene with the same objects
    (positions where given: each object inside its named place).
  """
  if positions not in POSITION_MODES:
    raise ValueError(f"positions must be one of {POSITION_MODES}")
  if not scene.objects:
    raise ValueError("cannot describe an empty scene")
  rng = _rng.as_rng(rng)
  g = scene.grid
  items, loose = [], []
  for o in scene.objects:
    mode = positions
    if mode == "mixed":
      mode = ("exact", "region", "none")[_rng.weighted_index(rng, (4, 3, 3))]
    place = None
    if mode in ("all", "exact"):
      place = _exact_place(o, g)
    elif mode == "region":
      place = _region_place(o, g, rng)
    if place is None:
      loose.append(o)
    else:
      items.append(CaptionItem(1, o.size, o.colour, o.shape, place))
  groups: dict[tuple[str, str, str], int] = {}
  for o in loose:
    k = (o.size, o.colour, o.shape)
    groups[k] = groups.get(k, 0) + 1
  items += [CaptionItem(n, *k) for k, n in groups.items()]
  if shuffle:
    items = _rng.shuffled(rng, items)
  if prefix is None:
    prefix = (_rng.choice(rng, grammar.CAPTION_PREFIXES)
              if _rng.coin(rng, 0.5) else "")
  variants = [_rng.index(rng, 2) for _ in items]
  return grammar.caption_text(Caption(tuple(items)), prefix,
                              oxford=_rng.coin(rng, 0.2),
                              place_variants=variants)


def counting_caption(rng: _rng.RngLike = None,
                     grid: int = scene_lib.DEFAULT_GRID,
                     first_count: Optional[int] = None) -> str:
  """A caption of groups: "five red objects and two large squares on the left".

  Args:
    rng: numpy Generator, random.Random, int seed or None.
    grid: cells per side (the caption must fit it).
    first_count: count of the first group (2..8), or None to draw it.

  Returns:
    Caption text that parse_caption builds without error on this grid.
  """
  rng = _rng.as_rng(rng)
  cap = min(scene_lib.MAX_OBJECTS, grid * grid)
  while True:
    left = cap
    items = []
    for i in range(1 + _rng.weighted_index(rng, (5, 3, 2))):
      if left < 1:
        break
      if i == 0 and first_count is not None:
        n = min(first_count, left)
      else:
        n = 1 + _rng.index(rng, min(left, 6))
      left -= n
      attrs = {}
      for a, vals, p in (("size", scene_lib.SIZES, 0.3),
                         ("colour", scene_lib.COLOUR_NAMES, 0.6),
                         ("shape", scene_lib.SHAPES, 0.6)):
        if _rng.coin(rng, p):
          attrs[a] = _rng.choice(rng, vals)
      place = (_rng.choice(rng, refs_lib.ALL_HALVES + refs_lib.ALL_LINES)
               if _rng.coin(rng, 0.25) else None)
      items.append(CaptionItem(n, place=place, **attrs))
    caption = Caption(tuple(items))
    if isinstance(build_scene(caption, 0, grid, 16 * grid), Scene):
      prefix = (_rng.choice(rng, grammar.CAPTION_PREFIXES)
                if _rng.coin(rng, 0.5) else "")
      return grammar.caption_text(caption, prefix)


def sample_caption(rng: _rng.RngLike = None,
                   grid: int = scene_lib.DEFAULT_GRID,
                   image_size: int = scene_lib.DEFAULT_IMAGE_SIZE,
                   min_objects: int = 1, max_objects: int = 6,
                   counting: float = 0.15) -> str:
  """A random valid caption: a random scene described with random detail.

  Some attributes are dropped (the generator fills them from its seed), so
  captions range from "a red circle" to fully placed scene descriptions; a
  `counting` share are group captions from `counting_caption`.
  """
  rng = _rng.as_rng(rng)
  if _rng.coin(rng, counting):
    return counting_caption(rng, grid)
  scene = scene_lib.sample_scene(rng, grid=grid, image_size=image_size,
                                 min_objects=min_objects,
                                 max_objects=max_objects)
  text = describe_scene(scene, rng,
                        positions=_rng.weighted_choice(rng, POSITION_MODES,
                                                       (2, 3, 5)))
  cap = grammar.parse_caption_items(text)
  if _rng.coin(rng, 0.3) and isinstance(cap, Caption):
    items = []
    for it in cap.items:
      drop = {a: None for a in ("size", "colour", "shape")
              if _rng.coin(rng, {"size": 0.3, "colour": 0.1, "shape": 0.1}[a])}
      items.append(CaptionItem(it.count, **{**dict(size=it.size,
                                                   colour=it.colour,
                                                   shape=it.shape,
                                                   place=it.place), **drop}))
    prefix = next((p for p in grammar.CAPTION_PREFIXES
                   if text.startswith(p + " ")), "")
    text = grammar.caption_text(Caption(tuple(items)), prefix)
  return text

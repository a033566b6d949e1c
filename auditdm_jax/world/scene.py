"""Scene graph of the embedded world: objects on a grid of patch-aligned cells.

A scene is a `grid` x `grid` board of square cells of `cell_size =
image_size // grid` pixels (4 x 16 px = 64 px by default, so one cell is one
16-px vision patch). Each object fills one cell and no two objects share one:
research/world_feasibility.md measured that tiny models learn attribute
binding in minutes with this layout and nothing object-specific without it.

Rows count from the top, columns from the left, both from 0 here; the text
grammar says "row 1 column 1" for (0, 0). Objects are kept sorted by (row,
col), so two scenes with the same objects are equal and serialise equally.

  scene = sample_scene(rng=0)                 # 1-8 objects, 4x4 grid, 64 px
  Scene.from_json(scene.to_json()) == scene   # True
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from auditdm_jax.world import _rng

SHAPES = ("circle", "square", "triangle", "diamond")
SIZES = ("small", "large")
# Named colours, far from each other (min pairwise RGB distance ~90) and from
# the background (>= 130); tests/test_world_scene.py checks both.
COLOURS: Mapping[str, tuple[int, int, int]] = {
    "red": (220, 20, 20),
    "green": (20, 170, 20),
    "blue": (20, 50, 230),
    "yellow": (245, 230, 20),
    "purple": (140, 20, 200),
    "orange": (255, 140, 0),
    "cyan": (0, 220, 220),
    "white": (250, 250, 250),
}
COLOUR_NAMES = tuple(COLOURS)
BACKGROUND = (128, 128, 128)

MAX_OBJECTS = 8          # Counting answers run 0..MAX_OBJECTS.
DEFAULT_GRID = 4
DEFAULT_IMAGE_SIZE = 64
MIN_CELL_SIZE = 12      # Below this, small shapes are indistinguishable.
MAX_GRID = 9             # The text grammar names rows/columns by one digit.


class SceneError(ValueError):
  """An Obj, Scene or scene JSON is invalid; the message names the problem."""


def _check_int(name: str, value: Any) -> None:
  # Exact type: bool is an int subclass and must be rejected.
  if type(value) is not int:  # pylint: disable=unidiomatic-typecheck
    raise SceneError(f"{name} must be an int, got {value!r}")


@dataclasses.dataclass(frozen=True)
class Obj:
  """One object: a shape of one colour and size filling cell (row, col).

  Attributes:
    shape: one of SHAPES.
    colour: one of COLOUR_NAMES.
    size: one of SIZES.
    row: 0-based row from the top (checked against the grid by Scene).
    col: 0-based column from the left.
  """
  shape: str
  colour: str
  size: str
  row: int
  col: int

  def __post_init__(self):
    if self.shape not in SHAPES:
      raise SceneError(f"unknown shape {self.shape!r}; known: {SHAPES}")
    if self.colour not in COLOURS:
      raise SceneError(f"unknown colour {self.colour!r}; known: {COLOUR_NAMES}")
    if self.size not in SIZES:
      raise SceneError(f"unknown size {self.size!r}; known: {SIZES}")
    for name in ("row", "col"):
      value = getattr(self, name)
      _check_int(name, value)
      if value < 0:
        raise SceneError(f"{name} must be >= 0, got {value}")

  @property
  def cell(self) -> tuple[int, int]:
    return (self.row, self.col)

  def replace(self, **changes) -> Obj:
    """Returns a copy with `changes` applied (validated)."""
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict[str, Any]:
    return {"shape": self.shape, "colour": self.colour, "size": self.size,
            "row": self.row, "col": self.col}

  @classmethod
  def from_dict(cls, d: Any, where: str = "object") -> Obj:
    """Builds an Obj from a dict with exactly the five fields.

    Raises:
      SceneError: naming `where` and the bad or missing field.
    """
    if not isinstance(d, Mapping):
      raise SceneError(f"{where}: expected an object, got {type(d).__name__}")
    fields = ("shape", "colour", "size", "row", "col")
    missing = [f for f in fields if f not in d]
    extra = sorted(str(k) for k in d if k not in fields)
    if missing:
      raise SceneError(f"{where}: missing field(s) {missing}")
    if extra:
      raise SceneError(f"{where}: unknown field(s) {extra}")
    try:
      return cls(**{f: d[f] for f in fields})
    except SceneError as e:
      raise SceneError(f"{where}: {e}") from None


@dataclasses.dataclass(frozen=True)
class Scene:
  """A validated scene: 0..MAX_OBJECTS objects in distinct grid cells.

  Datasets sample 1..8 objects; 0 is allowed for editor results (removing the
  last object) and renders as a plain background.

  Attributes:
    objects: tuple of Obj, sorted by (row, col) on construction.
    grid: cells per side, 2..MAX_GRID.
    image_size: pixels per side; a multiple of grid with cells of >= 12 px.
  """
  objects: tuple[Obj, ...] = ()
  grid: int = DEFAULT_GRID
  image_size: int = DEFAULT_IMAGE_SIZE

  def __post_init__(self):
    _check_int("grid", self.grid)
    _check_int("image_size", self.image_size)
    if not 2 <= self.grid <= MAX_GRID:
      raise SceneError(f"grid must be in [2, {MAX_GRID}], got {self.grid}")
    if self.image_size % self.grid:
      raise SceneError(f"image_size {self.image_size} is not a multiple of "
                       f"grid {self.grid}")
    if self.image_size // self.grid < MIN_CELL_SIZE:
      raise SceneError(f"cells must be >= {MIN_CELL_SIZE} px, got "
                       f"{self.image_size} // {self.grid}")
    if not isinstance(self.objects, (tuple, list)):
      raise SceneError(f"objects must be a sequence of Obj, got "
                       f"{type(self.objects).__name__}")
    objs = tuple(self.objects)
    g = self.grid
    for i, o in enumerate(objs):
      if type(o) is not Obj:  # pylint: disable=unidiomatic-typecheck
        raise SceneError(f"objects[{i}] is not an Obj: {o!r}")
      if o.row >= g or o.col >= g:
        raise SceneError(f"objects[{i}] at (row {o.row}, col {o.col}) is "
                         f"outside the {g}x{g} grid")
    cap = min(MAX_OBJECTS, self.grid * self.grid)
    if len(objs) > cap:
      raise SceneError(f"at most {cap} objects, got {len(objs)}")
    cells = [(o.row, o.col) for o in objs]
    if len(set(cells)) != len(cells):
      dup = sorted({c for c in cells if cells.count(c) > 1})
      raise SceneError(f"two objects share a cell: {dup}")
    object.__setattr__(self, "objects", tuple(sorted(objs, key=_cell_key)))

  @property
  def cell_size(self) -> int:
    return self.image_size // self.grid

  @property
  def capacity(self) -> int:
    """Most objects this scene may hold."""
    return min(MAX_OBJECTS, self.grid * self.grid)

  def object_at(self, row: int, col: int) -> Optional[Obj]:
    for o in self.objects:
      if o.row == row and o.col == col:
        return o
    return None

  def free_cells(self) -> list[tuple[int, int]]:
    """Unoccupied cells in reading order."""
    taken = {o.cell for o in self.objects}
    return [(r, c) for r in range(self.grid) for c in range(self.grid)
            if (r, c) not in taken]

  def with_objects(self, objects: Sequence[Obj]) -> Scene:
    """Returns a scene with the same grid and size and new objects."""
    return Scene(tuple(objects), grid=self.grid, image_size=self.image_size)

  def to_dict(self) -> dict[str, Any]:
    return {"grid": self.grid, "image_size": self.image_size,
            "objects": [o.to_dict() for o in self.objects]}

  def to_json(self) -> str:
    """Compact, key-sorted JSON; equal scenes give equal strings."""
    return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

  @classmethod
  def from_dict(cls, d: Any) -> Scene:
    """Inverse of to_dict.

    Raises:
      SceneError: naming the bad field, e.g. "objects[2]: unknown colour
        'pink'".
    """
    if not isinstance(d, Mapping):
      raise SceneError(f"scene: expected an object, got {type(d).__name__}")
    extra = sorted(str(k) for k in d if k not in ("grid", "image_size",
                                                  "objects"))
    if extra:
      raise SceneError(f"scene: unknown field(s) {extra}")
    if "objects" not in d:
      raise SceneError("scene: missing field 'objects'")
    objs = d["objects"]
    if not isinstance(objs, list):
      raise SceneError(f"scene: 'objects' must be a list, got "
                       f"{type(objs).__name__}")
    parsed = tuple(Obj.from_dict(o, f"objects[{i}]")
                   for i, o in enumerate(objs))
    return cls(parsed, grid=d.get("grid", DEFAULT_GRID),
               image_size=d.get("image_size", DEFAULT_IMAGE_SIZE))

  @classmethod
  def from_json(cls, text: str) -> Scene:
    """Inverse of to_json.

    Raises:
      SceneError: on invalid JSON or an invalid scene, naming the problem.
    """
    try:
      d = json.loads(text)
    except (TypeError, ValueError) as e:
      raise SceneError(f"scene JSON does not parse: {e}") from None
    return cls.from_dict(d)


def _cell_key(o: Obj) -> tuple[int, int]:
  return (o.row, o.col)


def sample_scene(
    rng: _rng.RngLike = None,
    n_objects: Optional[int] = None,
    *,
    grid: int = DEFAULT_GRID,
    image_size: int = DEFAULT_IMAGE_SIZE,
    min_objects: int = 1,
    max_objects: int = MAX_OBJECTS,
    colour_weights: Optional[Mapping[str, float]] = None,
    shape_weights: Optional[Mapping[str, float]] = None,
    size_weights: Optional[Mapping[str, float]] = None,
) -> Scene:
  """Samples a random scene; the same rng state gives the same scene.

  Args:
    rng: numpy Generator, random.Random, int seed or None.
    n_objects: exact object count; None draws it uniformly from
      [min_objects, max_objects].
    grid: cells per side.
    image_size: pixels per side.
    min_objects: smallest count when n_objects is None.
    max_objects: largest count when n_objects is None (capped by the grid).
    colour_weights: optional {colour: weight}; missing colours weigh 1.
    shape_weights: optional {shape: weight}.
    size_weights: optional {size: weight}.

  Returns:
    A Scene with objects in distinct uniformly drawn cells.
  """
  rng = _rng.as_rng(rng)
  cap = min(MAX_OBJECTS, grid * grid)
  if n_objects is None:
    hi = min(max_objects, cap)
    if not 0 <= min_objects <= hi:
      raise ValueError(f"need 0 <= min_objects <= max_objects <= {cap}, got "
                       f"{min_objects}, {max_objects}")
    n_objects = min_objects + _rng.index(rng, hi - min_objects + 1)
  if not 0 <= n_objects <= cap:
    raise ValueError(f"n_objects must be in [0, {cap}], got {n_objects}")
  pickers = [_picker(names, w) for names, w in ((SHAPES, shape_weights),
                                                (COLOUR_NAMES, colour_weights),
                                                (SIZES, size_weights))]
  pick_shape, pick_colour, pick_size = pickers
  cells = _rng.sample_indices(rng, grid * grid, n_objects)
  r = rng.random
  objs = [Obj(pick_shape(r()), pick_colour(r()), pick_size(r()), cell // grid,
              cell % grid) for cell in cells]
  return Scene(tuple(objs), grid=grid, image_size=image_size)


def _picker(names: Sequence[str], weights: Optional[Mapping[str, float]]):
  """Returns f(u) -> name for u uniform in [0, 1), with the given weights."""
  if weights is None:
    n = len(names)
    return lambda u: names[int(u * n)]
  cum = _cumulative(names, weights)
  return lambda u: names[_pick(cum, u)]


def _cumulative(names: Sequence[str],
                weights: Optional[Mapping[str, float]]) -> list[float]:
  """Normalised cumulative weights."""
  w = _rng.weights_for(names, weights)
  total, acc, out = sum(w), 0.0, []
  for x in w:
    acc += x / total
    out.append(acc)
  out[-1] = 1.0
  return out


def _pick(cum: list[float], u: float) -> int:
  """Index i of the first cum[i] > u, skipping zero-weight entries."""
  for i, c in enumerate(cum):
    if u < c and (i == 0 or c > cum[i - 1]):
      return i
  return len(cum) - 1

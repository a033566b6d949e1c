"""Referring expressions and places: the noun phrases all world text shares.

Questions, edit commands and captions all name objects the same way:

  Ref(colour="red", shape="circle")          "the red circle" / "a red circle"
  Ref(size="large")                          "the large object"
  Ref(place=Place("corner", "top left"))     "the object in the top left corner"
  Ref(colour="red", place=Place("half", "left"))  "the red object on the left"

A `Place` names cells of the grid without knowing its size; `cells(grid)`
resolves it. Kinds (g = grid, rows and columns 0-based):

  corner  side in CORNERS        one cell, e.g. "top left" = (0, 0)
  line    side in SIDES          "left" = column 0, "top" = row 0,
                                 "right" = column g-1, "bottom" = row g-1
  half    side in SIDES          "left" = columns < g//2, "right" = columns
                                 >= ceil(g/2); the middle column of an odd grid
                                 is in neither half (rows alike)
  cell    row, col               "row 2 column 3" = (1, 2)

Text is lower case with single spaces (`normalise` makes it so). Parsing is
lenient (synonyms like "big", "color", "top-left", "thing"); generation uses
one canonical vocabulary (`vocab.py` lists it).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Optional, Union

from auditdm_jax.world import scene as scene_lib

Obj = scene_lib.Obj
Scene = scene_lib.Scene

CORNERS = ("top left", "top right", "bottom left", "bottom right")
SIDES = ("left", "right", "top", "bottom")
PLACE_KINDS = ("corner", "line", "half", "cell")

# Word -> canonical value. Generation uses only the canonical words.
SIZE_WORDS = {"small": "small", "little": "small", "tiny": "small",
              "large": "large", "big": "large", "huge": "large"}
COLOUR_WORDS = {c: c for c in scene_lib.COLOUR_NAMES}
SHAPE_NOUNS = {**{s: s for s in scene_lib.SHAPES},
               "object": None, "shape": None, "thing": None}
PLURAL_NOUNS = {n + "s": s for n, s in SHAPE_NOUNS.items()}
MAX_TEXT_CHARS = 400  # Longer text is rejected before any regex runs.

_VOWELS = "aeiou"


def normalise(text: str) -> str:
  """Lower-cases, maps "color" to "colour", trims end punctuation and spaces."""
  t = text.lower()
  t = re.sub(r"\bcolor", "colour", t)
  t = re.sub(r"\s*,\s*", ", ", t)
  t = re.sub(r"\s+", " ", t).strip()
  t = re.sub(r"[\s?!.,]+$", "", t)
  return t


def article(word: str) -> str:
  """Returns "an" before a vowel sound in this vocabulary, else "a"."""
  return "an" if word[:1] in _VOWELS else "a"


# --------------------------------------------------------------------------
# Places.


@dataclasses.dataclass(frozen=True)
class Place:
  """A set of grid cells named in text; see the module docstring.

  Attributes:
    kind: one of PLACE_KINDS.
    side: a CORNERS entry for "corner", a SIDES entry for "line" and "half",
      None for "cell".
    row: 0-based row for "cell", else None.
    col: 0-based column for "cell", else None.
  """
  kind: str
  side: Optional[str] = None
  row: Optional[int] = None
  col: Optional[int] = None

  def __post_init__(self):
    if self.kind not in PLACE_KINDS:
      raise ValueError(f"unknown place kind {self.kind!r}; known: "
                       f"{PLACE_KINDS}")
    if self.kind == "cell":
      for name in ("row", "col"):
        v = getattr(self, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
          raise ValueError(f"cell place needs int {name} >= 0, got {v!r}")
      if self.side is not None:
        raise ValueError("cell place takes no side")
    else:
      allowed = CORNERS if self.kind == "corner" else SIDES
      if self.side not in allowed:
        raise ValueError(f"{self.kind} place needs side in {allowed}, got "
                         f"{self.side!r}")
      if self.row is not None or self.col is not None:
        raise ValueError(f"{self.kind} place takes no row/col")

  @classmethod
  def at(cls, row: int, col: int) -> Place:
    return cls("cell", row=row, col=col)

  def fits(self, grid: int) -> bool:
    """False for a cell outside a grid x grid board."""
    return self.kind != "cell" or (self.row < grid and self.col < grid)

  def contains(self, row: int, col: int, grid: int) -> bool:
    """True iff cell (row, col) of a grid x grid board is in this place."""
    k, s = self.kind, self.side
    if k == "cell":
      return row == self.row and col == self.col
    if k == "corner":
      v, h = s.split(" ")
      return (row == (0 if v == "top" else grid - 1) and
              col == (0 if h == "left" else grid - 1))
    if k == "line":
      return {"left": col == 0, "right": col == grid - 1,
              "top": row == 0, "bottom": row == grid - 1}[s]
    half = grid // 2
    return {"left": col < half, "right": col >= grid - half,
            "top": row < half, "bottom": row >= grid - half}[s]

  def cells(self, grid: int) -> list[tuple[int, int]]:
    """Cells of this place on a grid x grid board, in reading order."""
    return [(r, c) for r in range(grid) for c in range(grid)
            if self.contains(r, c, grid)]

  def phrases(self, use: str = "ref") -> tuple[str, ...]:
    """Canonical phrasings; the first is the default.

    Args:
      use: "ref" (inside a referring expression: "the red circle in the top
        left corner"), "at" (where to add or draw: "at the top left") or "to"
        (where to move: "to the top left").
    """
    k, s = self.kind, self.side
    if k == "cell":
      rc = f"row {self.row + 1} column {self.col + 1}"
      return {"ref": (f"at {rc}",), "at": (f"at {rc}", f"in {rc}"),
              "to": (f"to {rc}",)}[use]
    if k == "corner":
      return {"ref": (f"in the {s} corner",),
              "at": (f"at the {s}", f"in the {s} corner"),
              "to": (f"to the {s}", f"to the {s} corner")}[use]
    if k == "line":
      noun = "column" if s in ("left", "right") else "row"
      prep = {"ref": "in", "at": "in", "to": "to"}[use]
      return (f"{prep} the {s} {noun}",)
    on = "on" if s in ("left", "right") else "at"
    return {"ref": (f"{on} the {s}", f"in the {s} half"),
            "at": (f"{on} the {s}", f"in the {s} half"),
            "to": (f"to the {s}", f"to the {s} half")}[use]

  def tag(self) -> str:
    """Short slice-tag form, e.g. "top_left_corner", "left_column", "r1c2"."""
    if self.kind == "cell":
      return f"r{self.row + 1}c{self.col + 1}"
    s = self.side.replace(" ", "_")
    if self.kind == "line":
      return s + ("_column" if self.side in ("left", "right") else "_row")
    return f"{s}_{self.kind}"


ALL_CORNERS = tuple(Place("corner", c) for c in CORNERS)
ALL_LINES = tuple(Place("line", s) for s in SIDES)
ALL_HALVES = tuple(Place("half", s) for s in SIDES)

_PREP_ANY = r"(?:at|in|on|to|into|onto)"
_PREP_REF = r"(?:at|in|on)"


def _place_pattern(prep: str) -> str:
  return (rf"{prep} (?:the )?(?:"
          r"(?:top|bottom)[ -](?:left|right)(?: corner)?"
          r"|(?:left|right) (?:column|side|half)"
          r"|(?:top|bottom) (?:row|side|half)"
          r"|left|right|top|bottom"
          r"|(?:cell at )?row [0-9]{1,2},? col(?:umn)? [0-9]{1,2})")


PLACE_RE = _place_pattern(_PREP_ANY)   # Where to add / move something.
REF_PLACE_RE = _place_pattern(_PREP_REF)

_PLACE_PARSE = re.compile(
    rf"^{_PREP_ANY} (?:the )?(?:"
    r"(?P<cv>top|bottom)[ -](?P<ch>left|right)(?: corner)?"
    r"|(?P<lh>left|right) column|(?P<lv>top|bottom) row"
    r"|(?P<half>left|right|top|bottom)(?: side| half)?"
    r"|(?:cell at )?row (?P<r>[0-9]{1,2}),? col(?:umn)? (?P<c>[0-9]{1,2}))$")


def parse_place(text: str) -> Union[Place, str]:
  """Parses a place phrase ("in the top left corner"); a str is an error."""
  m = _PLACE_PARSE.match(text)
  if not m:
    return f"not a place: {text!r}"
  g = m.groupdict()
  if g["cv"]:
    return Place("corner", f"{g['cv']} {g['ch']}")
  if g["lh"] or g["lv"]:
    return Place("line", g["lh"] or g["lv"])
  if g["half"]:
    return Place("half", g["half"])
  row, col = int(g["r"]), int(g["c"])
  if row < 1 or col < 1:
    return f"rows and columns count from 1: {text!r}"
  return Place.at(row - 1, col - 1)


# --------------------------------------------------------------------------
# Referring expressions.


@dataclasses.dataclass(frozen=True)
class Ref:
  """Which objects a phrase names: every given attribute must match.

  Attributes:
    size: a SIZES entry or None (any).
    colour: a COLOUR_NAMES entry or None.
    shape: a SHAPES entry or None ("object").
    place: a Place the object's cell must be in, or None.
  """
  size: Optional[str] = None
  colour: Optional[str] = None
  shape: Optional[str] = None
  place: Optional[Place] = None

  def __post_init__(self):
    if self.size is not None and self.size not in scene_lib.SIZES:
      raise ValueError(f"unknown size {self.size!r}")
    if self.colour is not None and self.colour not in scene_lib.COLOURS:
      raise ValueError(f"unknown colour {self.colour!r}")
    if self.shape is not None and self.shape not in scene_lib.SHAPES:
      raise ValueError(f"unknown shape {self.shape!r}")
    if self.place is not None and not isinstance(self.place, Place):
      raise ValueError(f"place must be a Place, got {self.place!r}")

  @classmethod
  def of(cls, obj: Obj, attrs: Sequence[str]) -> Ref:
    """The Ref naming `obj` by the attributes in `attrs` (size/colour/shape)."""
    return cls(**{a: getattr(obj, a) for a in attrs})

  @property
  def attrs(self) -> tuple[str, ...]:
    """Names of the attributes this Ref fixes, in size, colour, shape order."""
    return tuple(a for a in ("size", "colour", "shape")
                 if getattr(self, a) is not None)

  def matches(self, obj: Obj, grid: int) -> bool:
    return ((self.size is None or obj.size == self.size) and
            (self.colour is None or obj.colour == self.colour) and
            (self.shape is None or obj.shape == self.shape) and
            (self.place is None or self.place.contains(obj.row, obj.col, grid)))

  def find(self, scene: Scene) -> list[Obj]:
    """Objects of `scene` this Ref names, in reading order."""
    return [o for o in scene.objects if self.matches(o, scene.grid)]

  def fits(self, grid: int) -> bool:
    return self.place is None or self.place.fits(grid)

  def noun_phrase(self, plural: bool = False, generic: str = "object") -> str:
    """E.g. "large red circle", "objects"; no article, no place."""
    words = [w for w in (self.size, self.colour) if w is not None]
    noun = self.shape or generic
    words.append(noun + "s" if plural else noun)
    return " ".join(words)

  def _place_text(self, place_variant: int) -> str:
    if self.place is None:
      return ""
    ph = self.place.phrases("ref")
    return " " + ph[place_variant % len(ph)]

  def definite(self, generic: str = "object", place_variant: int = 0) -> str:
    """E.g. "the red circle", "the object in the top left corner"."""
    return ("the " + self.noun_phrase(generic=generic) +
            self._place_text(place_variant))

  def indefinite(self, generic: str = "object", place_variant: int = 0) -> str:
    """E.g. "a red circle", "an object in the left column"."""
    np_ = self.noun_phrase(generic=generic)
    return f"{article(np_)} {np_}{self._place_text(place_variant)}"

  def plural(self, generic: str = "object", place_variant: int = 0) -> str:
    """E.g. "red circles", "objects on the left"."""
    return self.noun_phrase(True, generic) + self._place_text(place_variant)


_ADJ_WORDS = sorted(list(SIZE_WORDS) + list(COLOUR_WORDS), key=len,
                    reverse=True)
ADJ_RE = rf"(?:(?:{'|'.join(_ADJ_WORDS)}) ){{0,2}}"  # Up to two adjectives.
NOUN_SG_RE = rf"(?:{'|'.join(SHAPE_NOUNS)})"
NOUN_PL_RE = rf"(?:{'|'.join(PLURAL_NOUNS)})"
_OPT_PLACE = rf"(?: {REF_PLACE_RE})?"

# Regex fragments (no capture groups) for templates.
DEFINITE_RE = rf"the {ADJ_RE}{NOUN_SG_RE}{_OPT_PLACE}"
INDEFINITE_RE = (rf"(?:(?:an?|any|one) {ADJ_RE}{NOUN_SG_RE}|anything|"
                 rf"something){_OPT_PLACE}")
PLURAL_RE = rf"{ADJ_RE}{NOUN_PL_RE}{_OPT_PLACE}"
# An object to create: adjectives and noun, no place.
SPEC_RE = rf"(?:an?|one) {ADJ_RE}{NOUN_SG_RE}"


def parse_ref(text: str) -> Union[Ref, str]:
  """Parses a noun phrase matched by one of the *_RE fragments.

  Accepts an optional article ("the", "a", "an", "any", "one"), up to two
  adjectives (size, colour, either order), a singular or plural noun, and an
  optional place. Returns a Ref, or a str describing the error (e.g. two
  colours).
  """
  words = text.split(" ")
  if words and words[0] in ("the", "a", "an", "any", "one"):
    words = words[1:]
  if words and words[0] in ("anything", "something"):
    rest = words[1:]
    kw = {}
  else:
    kw = {}
    i = 0
    while i < len(words) and (words[i] in SIZE_WORDS or words[i] in
                              COLOUR_WORDS):
      w = words[i]
      key, value = (("size", SIZE_WORDS[w]) if w in SIZE_WORDS else
                    ("colour", COLOUR_WORDS[w]))
      if key in kw:
        return f"two {key} words in {text!r}"
      kw[key] = value
      i += 1
    if i >= len(words):
      return f"no noun in {text!r}"
    noun = words[i]
    if noun in SHAPE_NOUNS:
      shape = SHAPE_NOUNS[noun]
    elif noun in PLURAL_NOUNS:
      shape = PLURAL_NOUNS[noun]
    else:
      return f"unknown noun {noun!r} in {text!r}"
    if shape is not None:
      kw["shape"] = shape
    rest = words[i + 1:]
  if rest:
    place = parse_place(" ".join(rest))
    if isinstance(place, str):
      return place
    kw["place"] = place
  return Ref(**kw)

"""Edit-command and caption grammars: text <-> Edit / Caption values.

Edit commands (what the auditor writes for the editor E, applied by
editor.py):

  recolour  "make the red circle blue"       "paint the circle green"
  resize    "make the small square large"    "make the red circle bigger"
  remove    "remove the green triangle"      "delete the object in the top row"
  add       "add a small purple circle at the top left"   "draw a red square"
  move      "move the red circle to the bottom right"
            "put the circle in row 2 column 3"
  reshape   "turn the blue square into a triangle"

Captions (what the auditor writes for the generator G, built by
generator.py): items joined by ", " / " and ", each "count [size] [colour]
noun [place]", optionally after "a scene with" / "an image of" / "a picture
of":

  "a large red circle at the top left, a small blue square and two green
   triangles on the right"

Missing attributes and positions are filled in from a seed when the value is
applied. `parse_edit` and `parse_caption_items` NEVER raise: any str (or
other object) gives the value or an EditError / CaptionError.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Mapping
from typing import Optional, Union

from auditdm_jax.world import oracle
from auditdm_jax.world import refs as refs_lib
from auditdm_jax.world import scene as scene_lib

Place = refs_lib.Place
Ref = refs_lib.Ref

EDIT_OPS = ("recolour", "resize", "remove", "add", "move", "reshape")
COUNT_WORDS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4,
               "five": 5, "six": 6, "seven": 7, "eight": 8,
               **{str(i): i for i in range(1, scene_lib.MAX_OBJECTS + 1)}}
NUMBER_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight")
CAPTION_PREFIXES = ("a scene with", "an image of", "a picture of")
_PARSE_PREFIXES = (*CAPTION_PREFIXES, "an image with", "a picture with",
                   "a scene of", "an image showing", "a picture showing",
                   "there is", "there are", "the image shows",
                   "this image shows", "the scene shows", "generate",
                   "draw", "show", "create")


# --------------------------------------------------------------------------
# Edits.


@dataclasses.dataclass(frozen=True)
class Edit:
  """One edit command.

  Attributes:
    op: one of EDIT_OPS.
    target: the object to change (all ops but "add"); must name one object.
    colour: new colour ("recolour"), or the added object's colour ("add",
      None = from the seed).
    shape: new shape ("reshape"), or the added object's shape ("add").
    size: new size ("resize"), or the added object's size ("add").
    place: destination ("move", required; "add", optional).
  """
  op: str
  target: Optional[Ref] = None
  colour: Optional[str] = None
  shape: Optional[str] = None
  size: Optional[str] = None
  place: Optional[Place] = None

  _FIELDS = {"recolour": ("colour",), "resize": ("size",), "remove": (),
             "add": ("colour", "shape", "size", "place"), "move": ("place",),
             "reshape": ("shape",)}

  def __post_init__(self):
    if self.op not in EDIT_OPS:
      raise ValueError(f"unknown edit op {self.op!r}; known: {EDIT_OPS}")
    if (self.op == "add") != (self.target is None):
      need = "takes no" if self.op == "add" else "needs a"
      raise ValueError(f"{self.op} {need} target")
    if self.target is not None and not isinstance(self.target, Ref):
      raise ValueError(f"target must be a Ref, got {self.target!r}")
    allowed = self._FIELDS[self.op]
    for f in ("colour", "shape", "size", "place"):
      v = getattr(self, f)
      if v is not None and f not in allowed:
        raise ValueError(f"{self.op} takes no {f}")
      if v is None and f in allowed and self.op != "add":
        raise ValueError(f"{self.op} needs a {f}")
    if self.colour is not None and self.colour not in scene_lib.COLOURS:
      raise ValueError(f"unknown colour {self.colour!r}")
    if self.shape is not None and self.shape not in scene_lib.SHAPES:
      raise ValueError(f"unknown shape {self.shape!r}")
    if self.size is not None and self.size not in scene_lib.SIZES:
      raise ValueError(f"unknown size {self.size!r}")
    if self.place is not None and not isinstance(self.place, Place):
      raise ValueError(f"place must be a Place, got {self.place!r}")


@dataclasses.dataclass(frozen=True)
class EditError:
  """Why an edit could not be parsed or applied; returned, never raised.

  Attributes:
    kind: "parse" (not in the grammar), "missing" (the target names no
      object), "ambiguous" (it names several), "occupied" (destination cell
      taken, or no free cell in the named region), "full" (scene at
      capacity), "noop" (the edit would change nothing), "invalid" (e.g. row 7
      of a 4x4 grid) or "internal" (a bug; tests check it never occurs).
    message: human-readable detail.
  """
  kind: str
  message: str

  def __bool__(self) -> bool:
    return False


# Slots: {ref} "the red circle", {colour}, {size}, {sizecmp} bigger/smaller,
# {spec} "a small red circle", {place}, {shapespec} "a triangle", {shapeword}.
EDIT_TEMPLATES: Mapping[str, tuple[str, ...]] = {
    "recolour": ("make {ref} {colour}", "colour {ref} {colour}",
                 "paint {ref} {colour}",
                 "change the colour of {ref} to {colour}",
                 "turn {ref} {colour}"),
    "resize": ("make {ref} {size}", "change the size of {ref} to {size}",
               "make {ref} {sizecmp}"),
    "remove": ("remove {ref}", "delete {ref}", "take away {ref}",
               "erase {ref}"),
    "add": ("add {spec}", "add {spec} {place}", "put {spec} {place}",
            "draw {spec} {place}", "draw {spec}"),
    "move": ("move {ref} {place}", "put {ref} {place}", "place {ref} {place}"),
    "reshape": ("turn {ref} into {shapespec}", "change {ref} into {shapespec}",
                "change the shape of {ref} to {shapeword}",
                "make {ref} {shapespec}"),
}
# Which place phrasing (refs.Place.phrases use) each template expects.
EDIT_PLACE_USE = {"move {ref} {place}": "to"}

PARSE_ONLY_EDIT_TEMPLATES: Mapping[str, tuple[str, ...]] = {
    "recolour": ("recolour {ref} {colour}", "recolour {ref} to {colour}",
                 "recolour {ref} as {colour}", "change {ref} to {colour}",
                 "paint {ref} in {colour}", "colour {ref} in {colour}",
                 "turn {ref} to {colour}", "make {ref} {colour} instead",
                 "change the colour of {ref} into {colour}",
                 "set the colour of {ref} to {colour}"),
    "resize": ("resize {ref} to {size}", "change {ref} to {size}",
               "make {ref} {size} instead", "turn {ref} {size}",
               "set the size of {ref} to {size}", "enlarge {ref}",
               "shrink {ref}", "make {ref} a bit {sizecmp}"),
    "remove": ("get rid of {ref}", "take {ref} away",
               "remove {ref} from the image",
               "delete {ref} from the image", "erase {ref} from the image"),
    "add": ("add {spec} to the image", "insert {spec}", "insert {spec} {place}",
            "place {spec} {place}", "create {spec}", "create {spec} {place}",
            "put {spec} into the image", "draw {spec} into the image"),
    "move": ("shift {ref} {place}", "move {ref} over {place}",
             "relocate {ref} {place}"),
    "reshape": ("change {ref} to {shapespec}", "change {ref} to {shapeword}",
                "turn {ref} to {shapespec}", "make {ref} into {shapespec}",
                "change the shape of {ref} into {shapespec}",
                "change the shape of {ref} to {shapespec}",
                "set the shape of {ref} to {shapeword}"),
}

_SHAPES_ALT = "|".join(scene_lib.SHAPES)
_EDIT_SLOTS = {
    "ref": refs_lib.DEFINITE_RE,
    "colour": "|".join(scene_lib.COLOUR_NAMES),
    "size": "|".join(refs_lib.SIZE_WORDS),
    "sizecmp": "bigger|larger|smaller",
    "spec": refs_lib.SPEC_RE,
    "place": refs_lib.PLACE_RE,
    "shapespec": rf"an? (?:{_SHAPES_ALT})",
    "shapeword": _SHAPES_ALT,
}


@functools.cache
def _edit_patterns() -> tuple[tuple[str, str, re.Pattern], ...]:
  return tuple((op, t, oracle.compile_template(t, _EDIT_SLOTS))
               for table in (EDIT_TEMPLATES, PARSE_ONLY_EDIT_TEMPLATES)
               for op, ts in table.items() for t in ts)


def _edit_from_match(op: str, template: str, g: Mapping[str, str]):
  kw = {}
  if g.get("ref"):
    target = refs_lib.parse_ref(g["ref"])
    if isinstance(target, str):
      return EditError("parse", target)
    kw["target"] = target
  if g.get("colour"):
    kw["colour"] = g["colour"]
  if g.get("size"):
    kw["size"] = refs_lib.SIZE_WORDS[g["size"]]
  if g.get("sizecmp"):
    kw["size"] = "small" if g["sizecmp"] == "smaller" else "large"
  if template.startswith("enlarge"):
    kw["size"] = "large"
  if template.startswith("shrink"):
    kw["size"] = "small"
  if g.get("shapespec"):
    kw["shape"] = g["shapespec"].split(" ")[1]
  if g.get("shapeword"):
    kw["shape"] = g["shapeword"]
  if g.get("spec"):
    spec = refs_lib.parse_ref(g["spec"])
    if isinstance(spec, str):
      return EditError("parse", spec)
    kw.update(colour=spec.colour, shape=spec.shape, size=spec.size)
  if g.get("place"):
    place = refs_lib.parse_place(g["place"])
    if isinstance(place, str):
      return EditError("parse", place)
    kw["place"] = place
  return Edit(op, **kw)


def parse_edit(text: str) -> Union[Edit, EditError]:
  """Parses an edit command; never raises.

  Returns:
    An Edit, or EditError(kind="parse") for text outside the grammar.
  """
  try:
    if not isinstance(text, str):
      return EditError("parse", f"expected str, got {type(text).__name__}")
    t = refs_lib.normalise(text)
    if len(t) > refs_lib.MAX_TEXT_CHARS:
      return EditError("parse", f"edit longer than {refs_lib.MAX_TEXT_CHARS} "
                       "characters")
    for op, template, pattern in _edit_patterns():
      m = pattern.match(t)
      if m:
        return _edit_from_match(op, template, m.groupdict())
    return EditError("parse", f"not an edit command of the world grammar: "
                     f"{t!r}")
  except Exception as e:  # pylint: disable=broad-except  # Contract: no raise.
    return EditError("internal", f"{type(e).__name__}: {e}")


def edit_text(edit: Edit, template: str, place_variant: int = 0,
              generic: str = "object") -> str:
  """Writes `edit` with one of EDIT_TEMPLATES[edit.op] (no final period).

  Raises:
    ValueError: the template does not fit the edit (e.g. "make {ref}
      {sizecmp}" is fine for resize only).
  """
  if template not in EDIT_TEMPLATES[edit.op]:
    raise ValueError(f"{template!r} is not in EDIT_TEMPLATES[{edit.op!r}]")
  slots = {}
  if edit.target is not None:
    slots["ref"] = edit.target.definite(generic)
  if edit.colour is not None:
    slots["colour"] = edit.colour
  if edit.size is not None:
    slots["size"] = edit.size
    slots["sizecmp"] = "bigger" if edit.size == "large" else "smaller"
  if edit.shape is not None:
    slots["shapespec"] = f"{refs_lib.article(edit.shape)} {edit.shape}"
    slots["shapeword"] = edit.shape
  if edit.op == "add":
    spec = Ref(size=edit.size, colour=edit.colour, shape=edit.shape)
    slots["spec"] = spec.indefinite(generic)
    if "{place}" in template and edit.place is None:
      raise ValueError(f"{template!r} needs a place")
    if "{place}" not in template and edit.place is not None:
      raise ValueError(f"{template!r} has no place slot")
  if edit.place is not None:
    use = "to" if edit.op == "move" and template.startswith("move") else "at"
    ph = edit.place.phrases(use)
    slots["place"] = ph[place_variant % len(ph)]
  return template.format(**slots)


# --------------------------------------------------------------------------
# Captions.


@dataclasses.dataclass(frozen=True)
class CaptionItem:
  """`count` objects with the given attributes (None = from the seed).

  Attributes:
    count: 1..MAX_OBJECTS.
    size: a SIZES entry or None.
    colour: a COLOUR_NAMES entry or None.
    shape: a SHAPES entry or None ("object").
    place: where all `count` objects go, or None (anywhere free).
  """
  count: int
  size: Optional[str] = None
  colour: Optional[str] = None
  shape: Optional[str] = None
  place: Optional[Place] = None

  def __post_init__(self):
    if (isinstance(self.count, bool) or not isinstance(self.count, int) or
        not 1 <= self.count <= scene_lib.MAX_OBJECTS):
      raise ValueError(f"count must be in [1, {scene_lib.MAX_OBJECTS}], got "
                       f"{self.count!r}")
    Ref(size=self.size, colour=self.colour, shape=self.shape, place=self.place)

  @property
  def ref(self) -> Ref:
    return Ref(size=self.size, colour=self.colour, shape=self.shape,
               place=self.place)

  def text(self, place_variant: int = 0, generic: str = "object") -> str:
    """E.g. "two green triangles on the right", "a large red circle"."""
    r = Ref(size=self.size, colour=self.colour, shape=self.shape)
    if self.count == 1:
      words = r.indefinite(generic)
    else:
      words = f"{NUMBER_WORDS[self.count - 1]} {r.plural(generic)}"
    if self.place is not None:
      ph = self.place.phrases("at")
      words += " " + ph[place_variant % len(ph)]
    return words


@dataclasses.dataclass(frozen=True)
class Caption:
  """A parsed caption: a non-empty tuple of CaptionItem."""
  items: tuple[CaptionItem, ...]

  def __post_init__(self):
    object.__setattr__(self, "items", tuple(self.items))
    if not self.items:
      raise ValueError("a caption needs at least one item")
    if not all(isinstance(i, CaptionItem) for i in self.items):
      raise ValueError("caption items must be CaptionItem")

  @property
  def n_objects(self) -> int:
    return sum(i.count for i in self.items)


@dataclasses.dataclass(frozen=True)
class CaptionError:
  """Why a caption could not be parsed or built; returned, never raised.

  Attributes:
    kind: "parse", "full" (more objects than the scene holds), "occupied"
      (two objects in one cell, or a region without enough free cells),
      "invalid" (e.g. row 7 of a 4x4 grid) or "internal" (a bug).
    message: human-readable detail.
  """
  kind: str
  message: str

  def __bool__(self) -> bool:
    return False


_COUNT_ALT = "|".join(sorted(COUNT_WORDS, key=len, reverse=True))
_ITEM_RE = re.compile(
    rf"^(?P<count>{_COUNT_ALT}) (?P<np>{refs_lib.ADJ_RE}"
    rf"(?:{refs_lib.NOUN_PL_RE}|{refs_lib.NOUN_SG_RE}))"
    rf"(?: (?P<place>{refs_lib.PLACE_RE}))?$")
_PREFIX_RE = re.compile(
    rf"^(?:{'|'.join(sorted(_PARSE_PREFIXES, key=len, reverse=True))})[: ]+")
# Items are split where a count word follows, so "row 2, column 3" stays whole.
_SPLIT_RE = re.compile(rf"(?:, and |, | and |; | with )(?=(?:{_COUNT_ALT}) )")


def parse_caption_items(text: str) -> Union[Caption, CaptionError]:
  """Parses caption text into a Caption (no scene yet); never raises."""
  try:
    if not isinstance(text, str):
      return CaptionError("parse", f"expected str, got {type(text).__name__}")
    t = refs_lib.normalise(text)
    if len(t) > refs_lib.MAX_TEXT_CHARS:
      return CaptionError("parse", f"caption longer than "
                          f"{refs_lib.MAX_TEXT_CHARS} characters")
    t = _PREFIX_RE.sub("", t, count=1)
    if not t:
      return CaptionError("parse", "empty caption")
    items = []
    for part in _SPLIT_RE.split(t):
      m = _ITEM_RE.match(part)
      if not m:
        return CaptionError("parse", f"not a caption item: {part!r}")
      count = COUNT_WORDS[m["count"]]
      ref = refs_lib.parse_ref(m["np"])
      if isinstance(ref, str):
        return CaptionError("parse", ref)
      place = None
      if m["place"]:
        place = refs_lib.parse_place(m["place"])
        if isinstance(place, str):
          return CaptionError("parse", place)
        if count > 1 and place.kind in ("corner", "cell"):
          return CaptionError("occupied", f"{count} objects cannot share one "
                              f"cell: {part!r}")
      items.append(CaptionItem(count, ref.size, ref.colour, ref.shape, place))
    cap = Caption(tuple(items))
    if cap.n_objects > scene_lib.MAX_OBJECTS:
      return CaptionError("full", f"{cap.n_objects} objects; a scene holds at "
                          f"most {scene_lib.MAX_OBJECTS}")
    return cap
  except Exception as e:  # pylint: disable=broad-except  # Contract: no raise.
    return CaptionError("internal", f"{type(e).__name__}: {e}")


def caption_text(caption: Caption, prefix: str = "", oxford: bool = False,
                 place_variants: Optional[list[int]] = None,
                 generic: str = "object") -> str:
  """Writes a Caption: "[prefix ]item, item and item"."""
  pv = place_variants or [0] * len(caption.items)
  parts = [it.text(v, generic) for it, v in zip(caption.items, pv)]
  if len(parts) == 1:
    body = parts[0]
  else:
    last = ", and " if oxford and len(parts) > 2 else " and "
    body = ", ".join(parts[:-1]) + last + parts[-1]
  return f"{prefix} {body}" if prefix else body

"""Question grammar and the ground-truth oracle: question text -> answer.

`answer(scene, text)` parses any question the grammar produces (every
phrasing in QUESTION_TEMPLATES, plus PARSE_ONLY_TEMPLATES and variations of
case, spacing, "color", trailing punctuation) into a `Query` and evaluates it
on the scene graph. It never raises: text it cannot read, or a question with
no single right answer, gives an `OracleError`. This is how the auditor's own
questions are checked, so the generator in questions.py only writes text
from these templates, and tests check the oracle agrees with it.

Query kinds and answers (refs are `refs.Ref`; "the X" must name one object):

  exists   "is there a red circle?"                    yes / no
  count    "how many red objects are there?"           0..8
  colour   "what colour is the circle?"                a colour | none
  shape    "what shape is the red object?"             a shape | none
  size     "is the red circle small or large?"         small / large | none
  side_h   "is the red circle on the left or the right?"   left / right | none
  side_v   "is the red circle at the top or the bottom?"   top / bottom | none
  more     "are there more circles than squares?"      yes / no
  fewer    "are there fewer circles than squares?"     yes / no
  bigger   "is the red circle bigger than the blue square?"  yes / no | none
  smaller  "is the red circle smaller than the blue square?" yes / no | none

"none" means the question names an absent object (the hallucination answer).
"left" = the left half of the grid (columns < grid // 2), "top" = the top half.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Mapping
from typing import Optional, Union

from auditdm_jax.world import refs as refs_lib
from auditdm_jax.world import scene as scene_lib

Ref = refs_lib.Ref
Scene = scene_lib.Scene

QUERY_KINDS = ("exists", "count", "colour", "shape", "size", "side_h",
               "side_v", "more", "fewer", "bigger", "smaller")
YES, NO, NONE = "yes", "no", "none"

# Phrasings the generator writes. Slots: {ref} {ref2} "the red circle",
# {indef} "a red circle", {plural} {plural2} "red circles".
QUESTION_TEMPLATES: Mapping[str, tuple[str, ...]] = {
    "exists": ("is there {indef}", "are there any {plural}",
               "does the image contain {indef}", "can you see {indef}"),
    "count": ("how many {plural} are there",
              "how many {plural} are in the image",
              "what is the number of {plural}",
              "how many {plural} can you see"),
    "colour": ("what colour is {ref}", "what is the colour of {ref}",
               "which colour is {ref}", "what colour does {ref} have"),
    "shape": ("what shape is {ref}", "what is the shape of {ref}",
              "which shape is {ref}", "what shape does {ref} have"),
    "size": ("what size is {ref}", "is {ref} small or large",
             "is {ref} large or small", "what is the size of {ref}"),
    "side_h": ("is {ref} on the left or the right",
               "is {ref} on the right or the left",
               "is {ref} in the left half or the right half",
               "which side is {ref} on",
               "is {ref} on the left or on the right"),
    "side_v": ("is {ref} at the top or the bottom",
               "is {ref} at the bottom or the top",
               "is {ref} in the top half or the bottom half",
               "is {ref} near the top or the bottom"),
    "more": ("are there more {plural} than {plural2}",
             "is the number of {plural} greater than the number of {plural2}"),
    "fewer": ("are there fewer {plural} than {plural2}",
              "is the number of {plural} smaller than the number of {plural2}"),
    "bigger": ("is {ref} bigger than {ref2}", "is {ref} larger than {ref2}"),
    "smaller": ("is {ref} smaller than {ref2}",),
}

_IMG = ("image", "picture", "scene")
# Accepted but never generated.
PARSE_ONLY_TEMPLATES: Mapping[str, tuple[str, ...]] = {
    "exists": ("are there {plural}", "do you see {indef}",
               "do you see any {plural}",
               "can you see any {plural}", "is {indef} there",
               *(f"is there {{indef}} in the {w}" for w in _IMG),
               *(f"are there any {{plural}} in the {w}" for w in _IMG),
               *(f"does the {w} contain {{indef}}" for w in _IMG[1:]),
               *(f"does the {w} contain any {{plural}}" for w in _IMG),
               *(f"does the {w} have {{indef}}" for w in _IMG)),
    "count": ("how many {plural}", "count the {plural}",
              "how many {plural} do you see", "how many {plural} are visible",
              "count {plural}", "what is the count of {plural}",
              "what number of {plural} are there",
              *(f"how many {{plural}} are there in the {w}" for w in _IMG),
              *(f"how many {{plural}} are in the {w}" for w in _IMG[1:]),
              *(f"how many {{plural}} does the {w} contain" for w in _IMG),
              *(f"how many {{plural}} does the {w} have" for w in _IMG)),
    "colour": ("which colour does {ref} have", "what is {ref}'s colour",
               "what colour has {ref}", "tell me the colour of {ref}",
               "name the colour of {ref}", "colour of {ref}"),
    "shape": ("which shape does {ref} have", "what kind of shape is {ref}",
              "tell me the shape of {ref}", "name the shape of {ref}",
              "shape of {ref}"),
    "size": ("which size is {ref}", "is {ref} big or small",
             "is {ref} small or big", "what size does {ref} have",
             "size of {ref}", "is {ref} large or is it small",
             "is {ref} small or is it large"),
    "side_h": ("is {ref} left or right", "is {ref} on the left or right",
               "is {ref} on the left side or the right side",
               "is {ref} on the left side or on the right side",
               "is {ref} on the right or on the left",
               "is {ref} in the left or the right half",
               "is {ref} in the left or right half",
               "is {ref} in the right half or the left half",
               "on which side is {ref}",
               "which side is {ref} on, left or right",
               "is {ref} on the left half or the right half"),
    "side_v": ("is {ref} top or bottom", "is {ref} at the top or bottom",
               "is {ref} at the top or at the bottom",
               "is {ref} at the bottom or at the top",
               "is {ref} in the top or the bottom half",
               "is {ref} in the top or bottom half",
               "is {ref} in the bottom half or the top half",
               "is {ref} near the top or near the bottom",
               "is {ref} in the upper half or the lower half",
               "is {ref} in the upper or lower half"),
    "more": ("are there more {plural} than there are {plural2}",
             "does the image have more {plural} than {plural2}",
             "is the number of {plural} larger than the number of {plural2}",
             "is the number of {plural} bigger than the number of {plural2}"),
    "fewer": ("are there less {plural} than {plural2}",
              "are there fewer {plural} than there are {plural2}",
              "does the image have fewer {plural} than {plural2}",
              "is the number of {plural} less than the number of {plural2}"),
    "bigger": ("is {ref} bigger than {ref2} is",
               "is {ref} larger than {ref2} is",
               "is {ref} big compared to {ref2}"),
    "smaller": ("is {ref} smaller than {ref2} is",
                "is {ref} tinier than {ref2}",
                "is {ref} small compared to {ref2}"),
}

_SLOT_RE = {"ref": refs_lib.DEFINITE_RE, "ref2": refs_lib.DEFINITE_RE,
            "indef": refs_lib.INDEFINITE_RE, "plural": refs_lib.PLURAL_RE,
            "plural2": refs_lib.PLURAL_RE}


def compile_template(template: str, slot_res: Mapping[str, str]) -> re.Pattern:
  """Compiles "is there {indef}" to an anchored regex with a group per slot."""
  parts = re.split(r"\{(\w+)\}", template)
  out = []
  for i, part in enumerate(parts):
    if i % 2:
      out.append(f"(?P<{part}>{slot_res[part]})")
    else:
      out.append(re.escape(part))
  return re.compile("^" + "".join(out) + "$")


@functools.cache
def _patterns() -> tuple[tuple[str, re.Pattern], ...]:
  """All question regexes, compiled on first use (keeps import fast)."""
  return tuple((kind, compile_template(t, _SLOT_RE))
               for table in (QUESTION_TEMPLATES, PARSE_ONLY_TEMPLATES)
               for kind, ts in table.items() for t in ts)


@dataclasses.dataclass(frozen=True)
class Query:
  """A parsed question.

  Attributes:
    kind: one of QUERY_KINDS.
    ref: the (first) object or set of objects asked about.
    ref2: the second one for "more", "fewer", "bigger", "smaller".
  """
  kind: str
  ref: Ref
  ref2: Optional[Ref] = None

  def __post_init__(self):
    if self.kind not in QUERY_KINDS:
      raise ValueError(f"unknown query kind {self.kind!r}")
    if not isinstance(self.ref, Ref):
      raise ValueError(f"ref must be a Ref, got {self.ref!r}")
    two = self.kind in ("more", "fewer", "bigger", "smaller")
    if two != isinstance(self.ref2, Ref):
      raise ValueError(f"{self.kind} needs ref2 {'set' if two else 'unset'}")


@dataclasses.dataclass(frozen=True)
class OracleError:
  """Why a question has no answer; returned, never raised.

  Attributes:
    kind: "parse" (not in the grammar), "ambiguous" ("the circle" with two
      circles), "invalid" (e.g. row 7 of a 4x4 grid), "unanswerable" (e.g.
      left or right of an object in the middle column of an odd grid) or
      "internal" (a bug; tests check it never occurs).
    message: human-readable detail.
  """
  kind: str
  message: str

  def __bool__(self) -> bool:  # So `if answer(...)` reads naturally.
    return False


OracleResult = Union[str, OracleError]


def parse_question(text: str) -> Union[Query, OracleError]:
  """Parses question text into a Query; never raises."""
  try:
    if not isinstance(text, str):
      return OracleError("parse", f"expected str, got {type(text).__name__}")
    t = refs_lib.normalise(text)
    if len(t) > refs_lib.MAX_TEXT_CHARS:
      return OracleError("parse", f"question longer than "
                         f"{refs_lib.MAX_TEXT_CHARS} characters")
    for kind, pattern in _patterns():
      m = pattern.match(t)
      if not m:
        continue
      g = m.groupdict()
      one = g.get("ref") or g.get("indef") or g.get("plural")
      two = g.get("ref2") or g.get("plural2")
      ref = refs_lib.parse_ref(one)
      if isinstance(ref, str):
        return OracleError("parse", ref)
      ref2 = None
      if two is not None:
        ref2 = refs_lib.parse_ref(two)
        if isinstance(ref2, str):
          return OracleError("parse", ref2)
      return Query(kind, ref, ref2)
    return OracleError("parse", f"not a question of the world grammar: {t!r}")
  except Exception as e:  # pylint: disable=broad-except  # Contract: no raise.
    return OracleError("internal", f"{type(e).__name__}: {e}")


def _the(scene: Scene, ref: Ref):
  """The one object `ref` names, NONE if absent, or an OracleError."""
  found = ref.find(scene)
  if not found:
    return NONE
  if len(found) > 1:
    return OracleError("ambiguous", f"{len(found)} objects match "
                       f"{ref.definite()!r}")
  return found[0]


def side(scene: Scene, row: int, col: int, axis: str) -> Optional[str]:
  """"left"/"right" (axis "h") or "top"/"bottom" (axis "v"); None if middle."""
  g = scene.grid
  v = col if axis == "h" else row
  lo, hi = ("left", "right") if axis == "h" else ("top", "bottom")
  if v < g // 2:
    return lo
  if v >= g - g // 2:
    return hi
  return None


def evaluate(scene: Scene, query: Query) -> OracleResult:
  """Answers a Query from the scene graph; never raises."""
  try:
    for r in (query.ref, query.ref2):
      if r is not None and not r.fits(scene.grid):
        return OracleError("invalid", f"place outside the {scene.grid}x"
                           f"{scene.grid} grid")
    k = query.kind
    if k == "exists":
      return YES if query.ref.find(scene) else NO
    if k == "count":
      return str(len(query.ref.find(scene)))
    if k in ("more", "fewer"):
      a, b = len(query.ref.find(scene)), len(query.ref2.find(scene))
      return YES if (a > b if k == "more" else a < b) else NO
    obj = _the(scene, query.ref)
    if isinstance(obj, (OracleError, str)):
      return obj
    if k in ("colour", "shape", "size"):
      return getattr(obj, k)
    if k in ("side_h", "side_v"):
      s = side(scene, obj.row, obj.col, k[-1])
      if s is None:
        return OracleError("unanswerable", "the object is in the middle "
                           f"{'column' if k == 'side_h' else 'row'}")
      return s
    other = _the(scene, query.ref2)
    if isinstance(other, (OracleError, str)):
      return other
    want = ("large", "small") if k == "bigger" else ("small", "large")
    return YES if (obj.size, other.size) == want else NO
  except Exception as e:  # pylint: disable=broad-except  # Contract: no raise.
    return OracleError("internal", f"{type(e).__name__}: {e}")


def answer(scene: Scene, text: str) -> OracleResult:
  """Answers question `text` about `scene`: a canonical answer or an error.

  Never raises. Canonical answers are one lower-case word: "yes", "no",
  "none", a digit, a colour, shape or size, "left", "right", "top", "bottom".
  """
  q = parse_question(text)
  if isinstance(q, OracleError):
    return q
  return evaluate(scene, q)

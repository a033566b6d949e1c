"""Ground truth for audit pairs in the scene world.

  t = truth(scene, "what colour is the circle")
  t.answer        # "purple" (None when the oracle cannot answer)
  t.skill         # "colour"
  t.tags          # {"skill:colour", "answer:purple"}
  in_slice(t.tags, "skill:colour&answer:purple")     # True

The reward never looks at this (the method only has the references); it is
what lets the world CHECK the method: whether a rewarded pair is a real
failure of the target, and which planted gap (a `slice_weights` conjunction
of configs/world/zoo.py) the failure falls in.

Tags follow `world.questions` (the strings the training data was weighted
by): "skill:<skill>", "answer:<answer>", "count>=5" / "count<=4" for numeric
answers, and "by:<attrs>" for counting by attribute ("by:shape",
"by:colour&shape"), so a planted gap's conjunction matches a pair exactly
when the training data would have tagged that question so.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Optional, Union

from auditdm_jax.eval import world_bench
from auditdm_jax.world import oracle
from auditdm_jax.world import scene as scene_lib

_ATTR_ORDER = ("colour", "shape", "size")


@dataclasses.dataclass(frozen=True)
class Truth:
  """The oracle's view of one (scene, question) pair.

  Attributes:
    answer: the canonical answer, or None if the question is not answerable
      on this scene (parse error, ambiguous reference, ...).
    skill: the `questions.SKILLS` entry it exercises, or None.
    tags: slice tags (module docstring); empty when unanswerable.
    error: why the oracle could not answer, else None.
  """
  answer: Optional[str]
  skill: Optional[str]
  tags: frozenset[str]
  error: Optional[str] = None


def truth(scene: Union[scene_lib.Scene, str], question: str) -> Truth:
  """The oracle's answer, skill and slice tags of `question` on `scene`."""
  if isinstance(scene, str):
    scene = scene_lib.Scene.from_json(scene)
  ans = oracle.answer(scene, question)
  if isinstance(ans, oracle.OracleError):
    return Truth(None, None, frozenset(), error=str(ans))
  skill = world_bench.question_skill(scene, question)
  tags = {f"skill:{skill}", f"answer:{ans}"}
  if ans.isdigit():
    tags.add("count>=5" if int(ans) >= 5 else "count<=4")
  if skill == "count_attr":
    q = oracle.parse_question(question)
    attrs = [a for a in _ATTR_ORDER if getattr(q.ref, a, None)]
    tags.add("by:" + "&".join(attrs))
  return Truth(ans, skill, frozenset(tags))


def in_slice(tags: Iterable[str], conjunction: str) -> bool:
  """Whether `tags` carry every "&"-joined part of `conjunction`.

  "by:colour&shape" is one tag that itself contains "&": a part matches a
  tag exactly, so "skill:count_attr&by:shape" does not match it.
  """
  tags = set(tags)
  return all(part in tags for part in conjunction.split("&"))

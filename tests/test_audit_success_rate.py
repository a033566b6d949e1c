"""The success-rate protocol's statistics and the world ground truth."""

import numpy as np
import pytest

from auditdm_jax.audit import judge as judge_lib
from auditdm_jax.audit import rollout as rollout_lib
from auditdm_jax.audit import world_truth
from auditdm_jax.eval import success_rate
from auditdm_jax.world import scene as scene_lib

Obj = scene_lib.Obj


def test_wilson_interval_hand_values():
  # 91 of 100: the Wilson 95% interval is [0.8377, 0.9519].
  lo, hi = success_rate.wilson(91, 100)
  assert lo == pytest.approx(0.8377, abs=1e-4)
  assert hi == pytest.approx(0.9519, abs=1e-4)
  assert success_rate.wilson(0, 10)[0] == 0.0
  assert success_rate.wilson(10, 10)[1] == 1.0
  assert success_rate.wilson(0, 0) == (0.0, 1.0)


def _scene():
  return scene_lib.Scene((
      Obj("circle", "purple", "large", 0, 0),
      Obj("square", "red", "small", 1, 2),
      *(Obj("square", "blue", "small", 3, c) for c in range(4)),
      Obj("square", "green", "large", 2, 3)))


def test_truth_tags_match_the_planted_gaps():
  s = _scene()
  t = world_truth.truth(s, "what colour is the circle?")
  assert t.answer == "purple" and t.skill == "colour"
  assert world_truth.in_slice(t.tags, "skill:colour&answer:purple")
  t = world_truth.truth(s, "how many squares are there?")
  assert t.answer == "6" and t.skill == "count_attr"
  assert world_truth.in_slice(t.tags, "skill:count_attr&by:shape&count>=5")
  t = world_truth.truth(s, "how many blue squares are there?")
  assert "by:colour&shape" in t.tags
  assert not world_truth.in_slice(t.tags,
                                  "skill:count_attr&by:shape&count>=5")
  bad = world_truth.truth(s, "what is the meaning of life?")
  assert bad.answer is None and bad.error and not bad.tags


def _pair(mode, valid, target, truth, tags=(), skill=None):
  p = rollout_lib.Pair(source_id="s", group=0, mode=mode, kind="question",
                       completion="q", question="q" if valid else None,
                       error=None if valid else "question: garbage",
                       target_answer=target if valid else None, truth=truth,
                       skill=skill, tags=frozenset(tags))
  p.verdict = judge_lib.Verdict(reward=1.0 if valid else 0.0, valid=valid,
                                consensus=truth, target_differs=valid,
                                references_agree=valid, novelty=0.0)
  return p


def test_summarise_counts_only_oracle_verified_failures():
  gap = {"skill:colour&answer:purple": "colour_purple"}
  pairs = [
      _pair("question", True, "red", "purple",
            {"skill:colour", "answer:purple"}, "colour"),   # success, in gap
      _pair("question", True, "2", "2"),                    # target right
      _pair("image", False, None, None),                    # invalid
      _pair("image", True, "yes", "no", {"skill:existence"}, "existence"),
  ]
  r = success_rate.summarise(pairs, gap)
  assert r["overall"]["successes"] == 2 and r["overall"]["n"] == 4
  assert r["overall"]["rate"] == 0.5
  assert r["modes"]["question"]["rate"] == 0.5
  assert r["modes"]["image"]["successes"] == 1
  assert r["validity"] == 0.75
  assert r["gaps"] == {"colour_purple": 1}
  assert r["gap_share"] == 0.5
  assert r["skills"] == {"colour": 1, "existence": 1}
  assert "question" in success_rate.format_table({"a": r})

"""Yes/no benchmarks: MME (acc + acc+ per category) and POPE (F1 & co).

  extract_yes_no("Yes, there is a dog.")   # "yes"
  extract_yes_no("yes or no?")             # None (both words)

`extract_yes_no` follows VLMEvalKit's YOrN_Extraction: the reply's words
(after the VQA punctuation rules of `judge.normalize_answer`) must hold
exactly one of "yes" / "no"; otherwise the reply is unknown and scores as
wrong (and as a "no" prediction in POPE's precision / recall, as VLMEvalKit
counts it).

Scorers:
  mme   per category: acc = % questions right, acc+ = % images with every
        question right (MME asks two per image; `group` holds the image),
        score = acc + acc+ (0..200). "perception" sums the 10 perception
        categories, "cognition" the 4 cognition ones (VLMEvalKit calls it
        "reasoning"), "total" both (the paper's MME column, e.g. 1517.3).
        Sums run over the categories present; categories outside both lists
        are reported but in no sum.
  pope  accuracy, precision, recall, F1 (positive = "yes"), yes_ratio (share
        of replies read as yes), unknown (share read as neither), overall
        and per category ("adversarial/f1", ...). A category cell
        "adversarial,popular" counts the row in each, and the overall
        numbers run over those expanded rows, as VLMEvalKit's POPE_rating
        does. The headline is F1 (VLMEvalKit's "Overall").
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Any, Optional

from auditdm_jax.audit.judge import normalize_answer
from auditdm_jax.eval.scorers import registry
from auditdm_jax.eval.scorers.registry import register

MME_PERCEPTION = ("OCR", "artwork", "celebrity", "color", "count",
                  "existence", "landmark", "position", "posters", "scene")
MME_COGNITION = ("code_reasoning", "commonsense_reasoning",
                 "numerical_calculation", "text_translation")


def extract_yes_no(prediction: str) -> Optional[str]:
  """"yes", "no", or None when the reply holds both or neither."""
  if not isinstance(prediction, str):
    return None
  words = set(normalize_answer(prediction).split())
  yes, no = "yes" in words, "no" in words
  if yes != no:
    return "yes" if yes else "no"
  return None


def _truth(ex: Any) -> str:
  answers = registry.field(ex, "answers") or ()
  t = normalize_answer(answers[0]) if len(answers) == 1 else ""
  if t not in ("yes", "no"):
    raise ValueError(f"example {registry.field(ex, 'id')!r}: the answer must "
                     f"be yes or no, got {list(answers)}")
  return t


@register("mme", main_key="total",
          description="MME: per category acc + acc+, perception + cognition")
def score_mme(predictions: Sequence[Optional[str]],
              examples: Sequence[Any]) -> dict[str, float]:
  preds = registry.check_inputs(predictions, examples)
  # category -> image -> [hit, ...]
  stats: dict[str, dict[str, list[bool]]] = collections.defaultdict(
      lambda: collections.defaultdict(list))
  for p, ex in zip(preds, examples):
    cat = registry.field(ex, "category") or ""
    image = registry.field(ex, "group") or ""
    if not cat or not image:
      raise ValueError(f"example {registry.field(ex, 'id')!r}: MME needs a "
                       "category and a group (its image)")
    stats[cat][image].append(extract_yes_no(p) == _truth(ex))
  out: dict[str, float] = {}
  for cat, images in sorted(stats.items()):
    hits = [h for hs in images.values() for h in hs]
    acc = registry.pct([float(h) for h in hits])
    acc_plus = registry.pct([float(all(hs)) for hs in images.values()])
    out[cat] = acc + acc_plus
    out[f"{cat}/acc"] = acc
    out[f"{cat}/acc_plus"] = acc_plus
  out["perception"] = sum(out[c] for c in MME_PERCEPTION if c in stats)
  out["cognition"] = sum(out[c] for c in MME_COGNITION if c in stats)
  out["total"] = out["perception"] + out["cognition"]
  return out


def _binary_metrics(truth: Sequence[str], pred: Sequence[Optional[str]]
                    ) -> dict[str, float]:
  n = len(truth)
  tp = sum(t == "yes" and p == "yes" for t, p in zip(truth, pred))
  fp = sum(t == "no" and p == "yes" for t, p in zip(truth, pred))
  fn = sum(t == "yes" and p != "yes" for t, p in zip(truth, pred))
  precision = tp / (tp + fp) if tp + fp else 0.0
  recall = tp / (tp + fn) if tp + fn else 0.0
  f1 = (2 * precision * recall / (precision + recall)
        if precision + recall else 0.0)
  return {"accuracy": 100.0 * sum(t == p for t, p in zip(truth, pred)) / n,
          "precision": 100.0 * precision, "recall": 100.0 * recall,
          "f1": 100.0 * f1,
          "yes_ratio": 100.0 * sum(p == "yes" for p in pred) / n,
          "unknown": 100.0 * sum(p is None for p in pred) / n}


@register("pope", main_key="f1",
          description="POPE: accuracy, precision, recall, F1, yes-ratio")
def score_pope(predictions: Sequence[Optional[str]],
               examples: Sequence[Any]) -> dict[str, float]:
  preds = registry.check_inputs(predictions, examples)
  rows = []  # (category, truth, prediction), one per category of a row.
  for p, ex in zip(preds, examples):
    t, got = _truth(ex), extract_yes_no(p)
    cats = [c.strip() for c in (registry.field(ex, "category") or ""
                                ).split(",") if c.strip()] or [""]
    rows.extend((c, t, got) for c in cats)
  out = _binary_metrics([r[1] for r in rows], [r[2] for r in rows])
  for cat in sorted({r[0] for r in rows} - {""}):
    sub = [r for r in rows if r[0] == cat]
    for k, v in _binary_metrics([r[1] for r in sub],
                                [r[2] for r in sub]).items():
      out[f"{cat}/{k}"] = v
  return out

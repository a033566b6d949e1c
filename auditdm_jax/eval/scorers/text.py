"""Open-answer scorers: VQA accuracy, exact match, ANLS, relaxed accuracy.

  vqa_accuracy("Two", ["2"] * 2 + ["3"] * 8)   # 0.6 (see the function)
  anls("hello wrld", ["hello world"])           # 1 - 1/11
  relaxed_match("10.4", "10")                   # True: within 5%

Per-example functions return a score in [0, 1]; the registered scorers
(`vqa_accuracy`, `exact_match`, `anls`, `relaxed_accuracy`) average them as
percentages, with a breakdown by `category` (VQAv2's answer type, GQA's
structural type, ChartQA's file) under "accuracy/<category>" etc.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

from auditdm_jax.audit.judge import normalize_answer
from auditdm_jax.eval.scorers import registry
from auditdm_jax.eval.scorers.registry import register


def _answers(ex: Any) -> list[str]:
  answers = list(registry.field(ex, "answers") or ())
  if not answers:
    raise ValueError(f"example {registry.field(ex, 'id')!r} has no "
                     "reference answers")
  return answers


def _categories(examples: Sequence[Any]) -> list[str]:
  return [registry.field(ex, "category") or "" for ex in examples]


# --- VQA accuracy -------------------------------------------------------------


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
  """The VQA accuracy of one prediction against the human answers.

  As the official evaluation: acc = min(#humans that gave the answer / 3, 1)
  averaged over the 10 leave-one-out subsets of 9 answers. If k of the n
  answers match, leaving out a matching one leaves k - 1, another leaves k:

    acc = (k * min((k-1)/3, 1) + (n-k) * min(k/3, 1)) / n

  Answers are compared after `judge.normalize_answer` (the official
  processPunctuation + processDigitArticle rules). Difference from the
  official script: it leaves the human answers raw when all of them agree
  (the prediction is always normalised there), so ten "Two" would not match
  a prediction "two"; here both sides are always normalised. VQA's human
  answers were normalised when collected, so the two agree in practice.

  One reference answer (some exports keep only the majority answer) scores
  as exact match.
  """
  if not answers:
    raise ValueError("vqa_accuracy needs at least one answer")
  pred = normalize_answer(prediction)
  matches = [normalize_answer(a) == pred for a in answers]
  if len(matches) == 1:
    return float(matches[0])
  k = sum(matches)
  return sum(min((k - m) / 3.0, 1.0) for m in matches) / len(matches)


@register("vqa_accuracy", main_key="accuracy",
          description="VQA accuracy: min(#humans/3, 1), leave-one-out mean")
def score_vqa_accuracy(predictions: Sequence[Optional[str]],
                       examples: Sequence[Any]) -> dict[str, float]:
  preds = registry.check_inputs(predictions, examples)
  accs = [vqa_accuracy(p, _answers(ex)) for p, ex in zip(preds, examples)]
  return {"accuracy": registry.pct(accs),
          **registry.breakdown(accs, _categories(examples), "accuracy")}


# --- exact match --------------------------------------------------------------


def exact_match(prediction: str, answers: Sequence[str]) -> float:
  """1.0 when the normalised prediction equals a normalised answer."""
  pred = normalize_answer(prediction)
  return float(any(normalize_answer(a) == pred for a in answers))


@register("exact_match", main_key="accuracy",
          description="exact match after VQA answer normalisation (GQA)")
def score_exact_match(predictions: Sequence[Optional[str]],
                      examples: Sequence[Any]) -> dict[str, float]:
  preds = registry.check_inputs(predictions, examples)
  hits = [exact_match(p, _answers(ex)) for p, ex in zip(preds, examples)]
  return {"accuracy": registry.pct(hits),
          **registry.breakdown(hits, _categories(examples), "accuracy")}


# --- ANLS ---------------------------------------------------------------------


def levenshtein(a: str, b: str) -> int:
  """Edit distance (insertions, deletions, substitutions of characters)."""
  if len(a) < len(b):
    a, b = b, a  # Keep the row short.
  prev = list(range(len(b) + 1))
  for i, ca in enumerate(a, 1):
    cur = [i]
    for j, cb in enumerate(b, 1):
      cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
    prev = cur
  return prev[-1]


def _anls_text(s: str) -> str:
  # The DocVQA evaluation compares stripped, lower-cased, space-collapsed
  # strings.
  return " ".join(s.strip().lower().split())


def anls(prediction: str, answers: Sequence[str], threshold: float = 0.5
         ) -> float:
  """Average Normalized Levenshtein Similarity of one prediction (DocVQA).

  max over answers of (1 - NL) if NL < threshold else 0, where NL = edit
  distance / max(len); two empty strings have NL = 0 (score 1).
  """
  if not answers:
    raise ValueError("anls needs at least one answer")
  if not 0.0 < threshold <= 1.0:
    raise ValueError(f"threshold must be in (0, 1], got {threshold}")
  p = _anls_text(prediction)
  best = 0.0
  for a in answers:
    g = _anls_text(a)
    longest = max(len(p), len(g))
    nl = levenshtein(p, g) / longest if longest else 0.0
    best = max(best, 1.0 - nl if nl < threshold else 0.0)
  return best


@register("anls", main_key="anls",
          description="ANLS, threshold 0.5 (DocVQA)")
def score_anls(predictions: Sequence[Optional[str]],
               examples: Sequence[Any]) -> dict[str, float]:
  preds = registry.check_inputs(predictions, examples)
  vals = [anls(p, _answers(ex)) for p, ex in zip(preds, examples)]
  return {"anls": registry.pct(vals),
          **registry.breakdown(vals, _categories(examples), "anls")}


# --- relaxed accuracy ---------------------------------------------------------


def _to_float(text: str) -> Optional[float]:
  """"12.5" -> 12.5, "40%" -> 0.4, anything else -> None."""
  try:
    if text.endswith("%"):
      return float(text[:-1]) / 100.0
    return float(text)
  except ValueError:
    return None


def relaxed_match(prediction: str, target: str,
                  max_relative_error: float = 0.05) -> bool:
  """ChartQA's relaxed correctness (Methani et al. 2020, as pix2struct).

  Numeric target (non-zero) and numeric prediction: correct within
  `max_relative_error` of the target. Otherwise (text, or a target of 0):
  case-insensitive exact match of the stripped strings.
  """
  p, t = prediction.strip(), target.strip()
  pf, tf = _to_float(p), _to_float(t)
  if pf is not None and tf:  # tf == 0 (or None) falls through to exact.
    return abs(pf - tf) / abs(tf) <= max_relative_error
  return p.lower() == t.lower()


@register("relaxed_accuracy", main_key="relaxed_accuracy",
          description="relaxed accuracy: 5% numeric tolerance (ChartQA)")
def score_relaxed_accuracy(predictions: Sequence[Optional[str]],
                           examples: Sequence[Any]) -> dict[str, float]:
  preds = registry.check_inputs(predictions, examples)
  relaxed, exact = [], []
  for p, ex in zip(preds, examples):
    answers = _answers(ex)
    relaxed.append(float(any(relaxed_match(p, a) for a in answers)))
    exact.append(float(any(p.strip() == a.strip() for a in answers)))
  return {"relaxed_accuracy": registry.pct(relaxed),
          "exact_accuracy": registry.pct(exact),
          **registry.breakdown(relaxed, _categories(examples),
                               "relaxed_accuracy")}

"""Multiple choice: answer extraction, plain accuracy, MMBench circular eval.

  extract_choice("The answer is (B).", ["cat", "dog"])   # "B"
  extract_choice("a dog", ["cat", "dog"])                # "B" (option text)
  extract_choice("maybe", ["cat", "dog"])                # None

`extract_choice` is rule-based, like VLMEvalKit's exact-matching mode
(`can_infer`) without its ChatGPT fallback; the rules, first match wins:

  1. the whole reply is a letter, optionally wrapped: "B", "(B)", "[B]",
     "B.", "B)", "B:", "**B**";
  2. the reply starts with a letter marker: "B. cat", "(B) cat", "B) cat",
     "B: cat";
  3. "answer / option / choice [is] [:] X" names exactly one letter ("The
     answer is B", "Answer: (C)");
  4. option text: the normalised reply equals exactly one normalised option
     (`judge.normalize_answer`, so "Two." matches "2"), else exactly one
     option occurs in it as whole words (an option inside another
     candidate's text, like "red" in "dark red", gives way to it);
  5. exactly one distinct valid letter stands alone in the reply. A capital
     followed by a lower-case word is read as a word ("A dog", "I think"),
     except before "is", "and", "or".

Letters are upper case and limited to the example's options (A.. for n
options). None means nothing could be read; it scores as wrong.

Scorers:
  multiple_choice   accuracy (+ by category / l2_category, and the share
                    of replies a letter was read from). Examples without
                    options (MMMU's open questions) count as correct when
                    the normalised answer equals or occurs (whole words) in
                    the normalised reply, which is what VLMEvalKit's
                    MMMU_preproc + can_infer_text amount to.
  mmbench_circular  VLMEvalKit's circular evaluation: rows with the same
                    `group` (index mod 1e6) are circular shifts of one
                    question; the question counts only if every shift is
                    answered right. Groups are the ones whose original row
                    (id == group, i.e. index < 1e6) is present, and take its
                    categories, as in VLMEvalKit's mcq_circular_eval.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Sequence
from typing import Any, Optional

from auditdm_jax.audit.judge import normalize_answer
from auditdm_jax.eval.scorers import registry
from auditdm_jax.eval.scorers.registry import register

LETTERS = string.ascii_uppercase

_WRAPPED = re.compile(r"[\(\[]?([A-Z])[\)\]]?[\.:]?")
_LEADING = re.compile(r"[\(\[]?([A-Z])(?:[\)\]][\.:]?|[\.:])(?=\s)")
_PHRASE = re.compile(
    r"(?i:answer|option|choice)(?:\s+(?i:is|would\s+be|should\s+be))?"
    r"\s*[:：]?\s*[\(\[]?\**([A-Z])\**[\)\]]?(?=[\s\.,;:!\)\*]|$)")
_LONE = re.compile(r"(?<![A-Za-z0-9])([A-Z])(?![A-Za-z0-9])")
_NEXT_WORD = re.compile(r"\s+([a-z]+)")
_LETTER_VERBS = frozenset({"is", "and", "or"})


def _one(letters: Sequence[str]) -> Optional[str]:
  distinct = set(letters)
  return distinct.pop() if len(distinct) == 1 else None


def _option_text_match(prediction: str, options: Sequence[str]
                       ) -> Optional[int]:
  pred = normalize_answer(prediction)
  if not pred:
    return None
  norm = [normalize_answer(o) for o in options]
  exact = [i for i, o in enumerate(norm) if o and o == pred]
  if exact:  # Two options with the same text: ambiguous.
    return exact[0] if len(exact) == 1 else None
  found = [i for i, o in enumerate(norm)
           if o and re.search(rf"(?<!\S){re.escape(o)}(?!\S)", pred)]
  # "red" inside "dark red": the longer candidate wins.
  found = [i for i in found
           if not any(j != i and norm[i] != norm[j] and norm[i] in norm[j]
                      for j in found)]
  return found[0] if len(found) == 1 else None


def extract_choice(prediction: str, options: Sequence[str]) -> Optional[str]:
  """The option letter a free-text reply picks, or None (rules above)."""
  n = len(options)
  if not n or not isinstance(prediction, str):
    return None
  valid = LETTERS[:n]
  text = prediction.strip()
  core = text.strip("*_` \t\n\"'")
  m = _WRAPPED.fullmatch(core)
  if m:
    return m.group(1) if m.group(1) in valid else None
  m = _LEADING.match(core)
  if m and m.group(1) in valid:
    return m.group(1)
  named = _one([m.group(1) for m in _PHRASE.finditer(text)
                if m.group(1) in valid])
  if named:
    return named
  i = _option_text_match(text, options)
  if i is not None:
    return LETTERS[i]
  lone = []
  for m in _LONE.finditer(text):
    nxt = _NEXT_WORD.match(text, m.end())
    if nxt and nxt.group(1) not in _LETTER_VERBS:
      continue  # "A dog", "I think": a word, not an option.
    if m.group(1) in valid:
      lone.append(m.group(1))
  return _one(lone)


def open_answer_match(prediction: str, answers: Sequence[str]) -> bool:
  """An open (optionless) answer: normalised equal or contained (words)."""
  pred = normalize_answer(prediction)
  for a in answers:
    a = normalize_answer(a)
    if a and (a == pred or re.search(rf"(?<!\S){re.escape(a)}(?!\S)", pred)):
      return True
  return False


def _hit(prediction: str, ex: Any) -> tuple[float, Optional[bool]]:
  """(correct, whether a letter was read; None for open questions)."""
  options = tuple(registry.field(ex, "options") or ())
  if options:
    letter = registry.field(ex, "answer_letter") or ""
    if not letter:
      raise ValueError(f"example {registry.field(ex, 'id')!r} has options "
                       "but no answer_letter")
    got = extract_choice(prediction, options)
    return float(got == letter), got is not None
  answers = tuple(registry.field(ex, "answers") or ())
  if not answers:
    raise ValueError(f"example {registry.field(ex, 'id')!r} has neither "
                     "options nor answers")
  return float(open_answer_match(prediction, answers)), None


@register("multiple_choice", main_key="accuracy",
          description="multiple-choice accuracy with rule-based extraction")
def score_multiple_choice(predictions: Sequence[Optional[str]],
                          examples: Sequence[Any]) -> dict[str, float]:
  preds = registry.check_inputs(predictions, examples)
  hits, parsed = [], []
  for p, ex in zip(preds, examples):
    h, ok = _hit(p, ex)
    hits.append(h)
    if ok is not None:
      parsed.append(float(ok))
  out = {"accuracy": registry.pct(hits)}
  if parsed:
    out["parsed"] = registry.pct(parsed)
  for key in ("category", "l2_category"):
    out.update(registry.breakdown(
        hits, [registry.field(ex, key) or "" for ex in examples], key))
  return out


@register("mmbench_circular", main_key="circular_accuracy",
          description="MMBench circular evaluation (all shifts right)")
def score_mmbench_circular(predictions: Sequence[Optional[str]],
                           examples: Sequence[Any]) -> dict[str, float]:
  preds = registry.check_inputs(predictions, examples)
  groups: dict[str, list[float]] = collections.defaultdict(list)
  originals: dict[str, Any] = {}
  first_pass: dict[str, float] = {}
  for p, ex in zip(preds, examples):
    g = registry.field(ex, "group") or ""
    if not g:
      raise ValueError(f"example {registry.field(ex, 'id')!r} has no group "
                       "(the index mod 1e6)")
    h, _ = _hit(p, ex)
    groups[g].append(h)
    if str(registry.field(ex, "id")) == g:
      originals[g] = ex
      first_pass[g] = h
  counted = [g for g in groups if g in originals]
  if not counted:
    raise ValueError("no original questions (id == group) among the examples")
  circ = [float(all(groups[g])) for g in counted]
  out = {"circular_accuracy": registry.pct(circ),
         # The originals alone, scored once: what vanilla evaluation gives.
         "vanilla_accuracy": registry.pct([first_pass[g] for g in counted]),
         "groups": float(len(counted)),
         "rows": float(sum(len(groups[g]) for g in counted))}
  for key in ("category", "l2_category"):
    out.update(registry.breakdown(
        circ, [registry.field(originals[g], key) or "" for g in counted],
        key))
  return out

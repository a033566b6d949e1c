"""CIDEr-D for captioning (COCO Captions), written from the paper's formula.

  mean, per_image = cider_d({1: "a cat on a mat"},
                            {1: ["a cat sits on the mat", "a cat"]})
  tokenize_caption("A dog's toy.")   # "a dog 's toy"

CIDEr-D (Vedantam et al. 2015, as the COCO caption evaluation computes it):

  * n-grams n = 1..4 of whitespace tokens; each n-gram g of a sentence gets
    the weight tf(g) * (log N - log max(1, df(g))), where N is the number of
    images and df(g) the number of images whose references contain g;
  * per n: similarity = sum_g min(w_c(g), w_r(g)) * w_r(g) / (|w_c| |w_r|)
    (the clipped cosine), times the length penalty
    exp(-(l_c - l_r)^2 / (2 sigma^2)), sigma = 6, where l is the number of
    bigrams in the sentence (what the reference implementation counts);
  * image score = 10 * mean over n of the mean over references; CIDEr-D =
    mean over images.

Document frequencies come from the evaluated set's references, so a score
depends on the whole set (as in the reference implementation).

Inputs are pre-tokenised, lower-case strings. The COCO toolkit tokenises with
Stanford's PTBTokenizer (Java); `tokenize_caption` approximates it in Python
(lower case, clitics split off as PTB does, punctuation dropped) and is what
the registered scorer uses. tests/test_bench_metrics.py checks `cider_d`
against pycocoevalcap's Cider on the same token strings.

Scorer `cider`: {"cider": 100 x CIDEr-D} (the paper's units: 145.0).
"""

from __future__ import annotations

import collections
import math
import re
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Optional

from auditdm_jax.eval.scorers import registry
from auditdm_jax.eval.scorers.registry import register

NGRAMS = 4
SIGMA = 6.0

# PTB splits these clitics off ("don't" -> "do n't", "dog's" -> "dog 's").
_CLITIC = re.compile(r"(?i)(\w)(n't|'s|'re|'ve|'ll|'d|'m)\b")
_CLITICS = frozenset({"n't", "'s", "'re", "'ve", "'ll", "'d", "'m"})
# Punctuation PTB makes its own tokens (the COCO toolkit then drops them);
# quotes are handled per token below so that clitics keep theirs.
_PUNCT = re.compile(r"""(\.\.\.|--|[.,!?;:()\[\]{}"`])""")
_DECIMAL = re.compile(r"(\d)\.(\d)")
_DROPPED = frozenset({"-", "--", "...", ".", "?", "!", ",", ":", ";", "(",
                      ")", "[", "]", "{", "}", '"', "`", "``"})


def tokenize_caption(text: str) -> str:
  """Lower-case PTB-like tokens joined by spaces, punctuation removed."""
  # Keep "2.5" in one piece: hide the decimal point from _PUNCT.
  t = _DECIMAL.sub(lambda m: f"{m.group(1)}\x00{m.group(2)}", text.lower())
  t = _CLITIC.sub(r"\1 \2", t)
  t = _PUNCT.sub(r" \1 ", t).replace("\x00", ".")
  out = []
  for w in t.split():
    if w not in _CLITICS:
      w = w.strip("'")  # Quotes around a word ('fetch', dogs').
    if w and w not in _DROPPED:
      out.append(w)
  return " ".join(out)


Counts = collections.Counter


def _ngrams(sentence: str, n: int = NGRAMS) -> Counts:
  words = sentence.split()
  return collections.Counter(tuple(words[i:i + k])
                             for k in range(1, n + 1)
                             for i in range(len(words) - k + 1))


def _tfidf(counts: Counts, df: Mapping[tuple, float], log_n: float
           ) -> tuple[list[dict], list[float], int]:
  """(per-n weights, per-n norms, bigram count) of one sentence."""
  vec = [dict() for _ in range(NGRAMS)]
  sq = [0.0] * NGRAMS
  bigrams = 0
  for g, tf in counts.items():
    k = len(g) - 1
    w = tf * (log_n - math.log(max(1.0, df.get(g, 0.0))))
    vec[k][g] = w
    sq[k] += w * w
    if k == 1:
      bigrams += tf
  return vec, [math.sqrt(s) for s in sq], bigrams


def _sim(c: tuple, r: tuple) -> float:
  """Sum over n of the clipped, length-penalised cosine (see above)."""
  (vc, nc, lc), (vr, nr, lr) = c, r
  penalty = math.exp(-((lc - lr) ** 2) / (2 * SIGMA ** 2))
  total = 0.0
  for k in range(NGRAMS):
    dot = sum(min(w, vr[k].get(g, 0.0)) * vr[k].get(g, 0.0)
              for g, w in vc[k].items())
    if nc[k] and nr[k]:
      dot /= nc[k] * nr[k]
    total += dot * penalty
  return total


def cider_d(candidates: Mapping[Hashable, str],
            references: Mapping[Hashable, Sequence[str]]
            ) -> tuple[float, dict[Hashable, float]]:
  """CIDEr-D of tokenised candidates against tokenised references.

  Args:
    candidates: {image key: one caption}.
    references: {image key: its reference captions}; same keys.

  Returns:
    (mean over images, {key: image score}), on the raw scale (1.45, not
    145).
  """
  if set(candidates) != set(references):
    raise ValueError("candidates and references must have the same keys")
  if not candidates:
    raise ValueError("cider_d needs at least one image")
  ref_counts = {}
  for k, refs in references.items():
    if not refs:
      raise ValueError(f"image {k!r} has no references")
    ref_counts[k] = [_ngrams(r) for r in refs]
  df: collections.Counter = collections.Counter()
  for counts in ref_counts.values():
    df.update(set().union(*counts))
  log_n = math.log(float(len(references)))
  scores = {}
  for k, cand in candidates.items():
    c = _tfidf(_ngrams(cand), df, log_n)
    total = sum(_sim(c, _tfidf(r, df, log_n)) for r in ref_counts[k])
    scores[k] = 10.0 * total / NGRAMS / len(ref_counts[k])
  return sum(scores.values()) / len(scores), scores


@register("cider", main_key="cider",
          description="CIDEr-D x 100 on PTB-like tokens (COCO Captions)")
def score_cider(predictions: Sequence[Optional[str]],
                examples: Sequence[Any]) -> dict[str, float]:
  preds = registry.check_inputs(predictions, examples)
  cands, refs = {}, {}
  for i, (p, ex) in enumerate(zip(preds, examples)):
    answers = registry.field(ex, "answers") or ()
    if not answers:
      raise ValueError(f"example {registry.field(ex, 'id')!r} has no "
                       "reference captions")
    cands[i] = tokenize_caption(p)
    refs[i] = [tokenize_caption(a) for a in answers]
  mean, _ = cider_d(cands, refs)
  return {"cider": 100.0 * mean}

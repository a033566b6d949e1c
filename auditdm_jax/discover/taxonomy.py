r"""Failure taxonomy: harvested failures -> named failure types (+ model diff).

  examples = load_examples("/out")                 # a harvest's failures
  tax = build_taxonomy(examples, asked=harvest.read_asked("/out"),
                       gaps=GAP_SPLITS)            # world: gaps found
  tax.to_json()                                    # what the report reads
  tax.assign(["how many squares are there?"])      # -> ["t03"]
  diff = model_diff(tax, pairs, answers_3b, answers_28b,
                    name_a="3B", name_b="28B")     # paper's weakness figure

  python -m auditdm_jax.discover.taxonomy --failures DIR [--k K] \
      [--zoo ZOO | --gaps JSON] [--out taxonomy.json]

The paper (research/paper.md §6) reports 20+ named failure types but not how
they were made; this is a simple, inspectable, model-agnostic method:

Featurisation. Each failure's text is its question plus its edit command or
caption (the "instruction"). Words are lower-case [a-z0-9]+ tokens (with an
inner apostrophe), `stop_words` removed, then word n-grams of
`ngram_range` (uni- and bigrams by default) are formed within each field (a
bigram never spans the question and the instruction). A document's term
count is its question's count plus `instruction_weight` x its instruction's
(the question says what the target got wrong; the instruction says what
was changed around it). TF-IDF as scikit-learn's default: idf = ln((1 + N) /
(1 + df)) + 1, terms kept with min_df <= df <= max_df * N, the
`max_features` most frequent, rows L2-normalised. Rows are stored sparse
(`Rows`, CSR in plain numpy): a failure has a dozen terms out of
thousands. scipy is installed in this venv but is not a project
requirement, so it is not used.

Clustering. k-means (Lloyd) with k-means++ seeding, `n_init` restarts from
numpy seeded by (seed, restart), the lowest inertia kept; an empty cluster
is re-seeded with the point farthest from its centre. k is `config.k`, or
with k = 0 the k in [k_min, k_max] with the highest mean silhouette
(Euclidean, on a fixed random subsample of `silhouette_sample` rows; ties
go to the smaller k); k never exceeds the number of distinct rows, and
with fewer distinct rows than the range allows each distinct text is its own
type. On short template-like texts the silhouette tends to keep rising with
k (measured on 600 world questions of 14 skills: 0.04 at k=2 to 0.115 at
k=16, NMI against the skills 0.61 at k=16, 0.65 at k=20), so k_max (16 by
default, about the paper's top-15 categories) often decides: set `k` to fix
the number of types. Types are ordered by size (largest first) and named
t00, t01, ...

Naming. A type's top terms are its centroid's largest TF-IDF weights (ties
to the longer n-gram); its name joins the first `name_terms` of them with
" / ", skipping a term already inside a chosen one ("many" after "how
many"). An optional `namer` (text -> text, e.g. a reference model behind a
generate call) is asked once per type with the top terms and example
questions (`namer_prompt`); its first line (quotes and trailing
punctuation stripped, <= 60 chars) replaces the name unless empty.

Rates. With a rollout log (`asked`: harvest's asked.jsonl or a GRPO
workdir's rollouts.jsonl), every valid asked pair is assigned to the
nearest type centroid; rate = failures among them / asked pairs of the
type (a failure: references agree and the target differs; records without
that flag: consensus set and reward > 0). Counted over the log, with
repeats, so a type's rate does not depend on de-duplication; `count` is
its number of distinct harvested failures. Without a log, rates are null.

World checks. `oracle`: NMI (arithmetic-mean normalisation, as
scikit-learn's default) and purity of the types against the oracle's skill
labels, over the failures that have one. `gaps`: per planted gap (a
`world_truth.in_slice` tag conjunction, e.g. configs/world/zoo.py GAPS), the
failures in that slice, how many the oracle verifies (truth known, the
target's answer wrong), and whether there is at least one.

Model diff (the paper's 3B-vs-28B figure). Two models' answers on the SAME
pairs, each compared with the pair's label (the consensus pseudo-label, or
the oracle truth); per category (a taxonomy type, or the oracle skill),
rate_X = failures of X / pairs. Normalised as in the paper's figure so the
two bars sum to 100: norm_a = 100 rate_a / (rate_a + rate_b), norm_b = 100 -
norm_a (50 / 50 when neither fails). Sorted by norm_a - norm_b, largest
first (A's relative weaknesses first, B's last). For an unbiased diff use
pairs not selected by one model's failures (harvest with keep="agreed").

Taxonomy JSON (`Taxonomy.to_json()`):
  {"format": "auditdm_jax.taxonomy/1", "num_failures": int, "k": int,
   "k_selection": {"method": "config" | "silhouette" | "trivial",
                   "scores": {"<k>": silhouette, ...},
                   "requested": int (method "config" only)},
   "config": {TaxonomyConfig fields}, "vocab_size": int,
   "rates_known": bool, "asked": int | null,
   "types": [{"id": "t00", "name": str, "name_source": "terms" | "namer",
              "top_terms": [[term, weight], ...], "count": int,
              "share": float, "asked": int | null, "failures": int | null,
              "rate": float | null, "example_ids": [id, ...],
              "examples": [{"id", "question", "instruction", "mode", "kind",
                            "auditor", "target_answer", "consensus",
                            "truth", "skill"}],
              "skills": {skill: n}, "modes": {mode: n},
              "auditors": {name: n}}, ...],
   "assignments": {example id: type id},
   "oracle": {"labelled": int, "nmi": float, "purity": float,
              "skills": {skill: n}} | null,
   "gaps": {"planted": int, "found": int,
            "items": [{"conjunction", "name", "failures", "verified",
                       "found", "types": {type id: n}}]} | null}

Model diff JSON (`model_diff`):
  {"format": "auditdm_jax.model_diff/1", "model_a", "model_b", "label",
   "by": "type" | "skill", "pairs": int, "skipped": int,
   "normalisation": str,
   "categories": [{"category", "name", "pairs", "failures_a",
                   "failures_b", "rate_a", "rate_b", "norm_a", "norm_b",
                   "diff"}, ...]}
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import math
import pathlib
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Optional, Union

import numpy as np

from auditdm_jax import atomic_io

FORMAT = "auditdm_jax.taxonomy/1"
DIFF_FORMAT = "auditdm_jax.model_diff/1"
# Function words that carry no failure type. Kept short on purpose: words
# such as "how", "many", "left", "or", "there" mark question templates.
DEFAULT_STOP_WORDS = ("a", "an", "the", "of", "in", "on", "at", "is", "are",
                      "this", "that", "to", "and", "image", "picture",
                      "photo")
_TOKEN_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_NAME_MAX = 60


# --- Config -------------------------------------------------------------------


def _is_int(x) -> bool:
  return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


@dataclasses.dataclass(frozen=True)
class TaxonomyConfig:
  """How failures are featurised, clustered and named (module docstring).

  Attributes:
    k: the number of types; 0 = choose by silhouette in [k_min, k_max].
    k_min, k_max: the silhouette search range (2 <= k_min <= k_max).
    ngram_range: (min n, max n) word n-grams.
    stop_words: words removed before n-grams.
    instruction_weight: weight of the edit / caption terms (>= 0).
    min_df: a term must occur in at least this many failures.
    max_df: ... and in at most this fraction of them (0 < max_df <= 1).
    max_features: keep this many most frequent terms at most.
    sublinear_tf: tf -> ln(1 + tf).
    n_init, max_iter: k-means restarts and iterations per restart.
    seed: seeds k-means++ and the silhouette subsample.
    silhouette_sample: rows the silhouette is computed on at most.
    top_terms: terms listed per type.
    name_terms: terms joined into a type's name.
    n_examples: representative examples per type (closest to the centroid).
  """
  k: int = 0
  k_min: int = 2
  k_max: int = 16
  ngram_range: tuple[int, int] = (1, 2)
  stop_words: tuple[str, ...] = DEFAULT_STOP_WORDS
  instruction_weight: float = 0.5
  min_df: int = 1
  max_df: float = 1.0
  max_features: int = 4096
  sublinear_tf: bool = False
  n_init: int = 4
  max_iter: int = 100
  seed: int = 0
  silhouette_sample: int = 1000
  top_terms: int = 6
  name_terms: int = 2
  n_examples: int = 5

  def __post_init__(self):
    ints = {"k": 0, "k_min": 2, "k_max": 2, "min_df": 1, "max_features": 1,
            "n_init": 1, "max_iter": 1, "silhouette_sample": 2,
            "top_terms": 1, "name_terms": 1, "n_examples": 0}
    for name, low in ints.items():
      v = getattr(self, name)
      if not _is_int(v) or v < low:
        raise ValueError(f"TaxonomyConfig.{name} must be an int >= {low}, "
                         f"got {v!r}")
    if self.k_min > self.k_max:
      raise ValueError(f"k_min ({self.k_min}) > k_max ({self.k_max})")
    lo_hi = tuple(self.ngram_range)
    if (len(lo_hi) != 2 or not all(_is_int(n) for n in lo_hi)
        or not 1 <= lo_hi[0] <= lo_hi[1]):
      raise ValueError(f"ngram_range must be (min, max) with 1 <= min <= "
                       f"max, got {self.ngram_range!r}")
    object.__setattr__(self, "ngram_range", lo_hi)
    if isinstance(self.stop_words, str):
      raise ValueError("stop_words must be a sequence of words, not a str")
    object.__setattr__(self, "stop_words", tuple(self.stop_words))
    if not 0 < self.max_df <= 1:
      raise ValueError(f"max_df must be in (0, 1], got {self.max_df!r}")
    if not (isinstance(self.instruction_weight, (int, float)) and
            math.isfinite(self.instruction_weight) and
            self.instruction_weight >= 0):
      raise ValueError(f"instruction_weight must be a finite number >= 0, "
                       f"got {self.instruction_weight!r}")
    if not _is_int(self.seed):
      raise ValueError(f"seed must be an int, got {self.seed!r}")

  def to_json(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d["ngram_range"] = list(self.ngram_range)
    d["stop_words"] = list(self.stop_words)
    return d


# --- TF-IDF -------------------------------------------------------------------


def tokenize(text: Optional[str], stop_words: Iterable[str] = ()) -> list[str]:
  """Lower-case word tokens of `text` without `stop_words` (None -> [])."""
  if not text:
    return []
  stop = set(stop_words)
  return [t for t in _TOKEN_RE.findall(text.lower()) if t not in stop]


def ngrams(tokens: Sequence[str], lo: int, hi: int) -> list[str]:
  """Word n-grams of lengths lo..hi, joined by spaces, in order."""
  return [" ".join(tokens[i:i + n]) for n in range(lo, hi + 1)
          for i in range(len(tokens) - n + 1)]


def term_counts(question: Optional[str], instruction: Optional[str],
                config: TaxonomyConfig) -> dict[str, float]:
  """One failure's weighted n-gram counts (module docstring)."""
  lo, hi = config.ngram_range
  out: dict[str, float] = collections.defaultdict(float)
  for text, w in ((question, 1.0), (instruction,
                                    float(config.instruction_weight))):
    if w <= 0:
      continue
    for g in ngrams(tokenize(text, config.stop_words), lo, hi):
      out[g] += w
  return dict(out)


@dataclasses.dataclass(frozen=True, eq=False)
class TfidfVectorizer:
  """A fitted TF-IDF featuriser (vocabulary in sorted order, idf per term).

  Build with `TfidfVectorizer.fit(docs, config)`; docs are term-count dicts
  (`term_counts`).
  """
  vocab: tuple[str, ...]
  idf: np.ndarray
  sublinear_tf: bool = False

  def __post_init__(self):
    if len(self.vocab) != len(self.idf):
      raise ValueError("one idf per vocabulary term expected")
    object.__setattr__(self, "_index",
                       {t: i for i, t in enumerate(self.vocab)})

  @classmethod
  def fit(cls, docs: Sequence[Mapping[str, float]],
          config: TaxonomyConfig) -> TfidfVectorizer:
    n = len(docs)
    df = collections.Counter(t for d in docs for t, c in d.items() if c > 0)
    keep = [(t, c) for t, c in df.items()
            if c >= config.min_df and c <= config.max_df * n]
    # The most frequent first (ties by term, for determinism), then sorted.
    keep.sort(key=lambda tc: (-tc[1], tc[0]))
    keep = sorted(keep[:config.max_features])
    vocab = tuple(t for t, _ in keep)
    dfs = np.asarray([c for _, c in keep], np.float64)
    idf = np.log((1.0 + n) / (1.0 + dfs)) + 1.0
    return cls(vocab, idf.astype(np.float32), config.sublinear_tf)

  def transform(self, docs: Sequence[Mapping[str, float]]) -> Rows:
    """tf x idf as sparse Rows, L2-normalised (all-zero rows stay zero)."""
    index = self.__dict__["_index"]
    indptr, indices, data = [0], [], []
    for d in docs:
      row = sorted((index[t], c) for t, c in d.items()
                   if c > 0 and t in index)
      indices.extend(j for j, _ in row)
      data.extend(c for _, c in row)
      indptr.append(len(indices))
    data = np.asarray(data, np.float64)
    indices = np.asarray(indices, np.int64)
    if self.sublinear_tf:
      # ln(1 + tf), not scikit-learn's 1 + ln(tf): weighted counts can be
      # below 1, where 1 + ln(tf) would turn negative.
      data = np.log1p(data)
    data = data * self.idf.astype(np.float64)[indices]
    rows = Rows(np.asarray(indptr, np.int64), indices, data, len(self.vocab))
    norms = np.sqrt(rows.sq_norms())
    scale = np.where(norms > 0, 1.0 / np.where(norms > 0, norms, 1), 0.0)
    return Rows(rows.indptr, indices, data * scale[rows.row_ids()],
                len(self.vocab))


# --- Sparse rows --------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class Rows:
  """Sparse rows in CSR layout, in numpy (a failure's text has a dozen
  terms of thousands, so k-means on dense rows would spend its time on
  zeros; scipy.sparse is not a project requirement).

  Row i holds data[indptr[i]:indptr[i+1]] at columns
  indices[indptr[i]:indptr[i+1]].
  """
  indptr: np.ndarray
  indices: np.ndarray
  data: np.ndarray
  ncols: int

  @classmethod
  def from_dense(cls, x: np.ndarray) -> Rows:
    x = np.asarray(x, np.float64)
    if x.ndim != 2:
      raise ValueError(f"want a 2-d array, got shape {x.shape}")
    r, c = np.nonzero(x)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(r, minlength=len(x)))])
    return cls(indptr.astype(np.int64), c.astype(np.int64), x[r, c],
               x.shape[1])

  def __len__(self) -> int:
    return len(self.indptr) - 1

  def row_ids(self) -> np.ndarray:
    """The row of each stored value."""
    return np.repeat(np.arange(len(self)), np.diff(self.indptr))

  def dense(self) -> np.ndarray:
    out = np.zeros((len(self), self.ncols))
    out[self.row_ids(), self.indices] = self.data
    return out

  def take(self, rows: Sequence[int]) -> Rows:
    rows = np.asarray(rows, np.int64)
    lengths = np.diff(self.indptr)[rows]
    pos = (np.concatenate([np.arange(self.indptr[r], self.indptr[r + 1])
                           for r in rows]) if len(rows) else
           np.zeros(0, np.int64))
    return Rows(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
                self.indices[pos], self.data[pos], self.ncols)

  def sq_norms(self) -> np.ndarray:
    return np.bincount(self.row_ids(), weights=self.data ** 2,
                       minlength=len(self))

  def dot(self, c: np.ndarray) -> np.ndarray:
    """f64[N, K] = self @ c.T for dense c f64[K, ncols]."""
    c = np.asarray(c, np.float64)
    out = np.zeros((len(self), len(c)))
    filled = np.diff(self.indptr) > 0
    if filled.any():
      prod = c[:, self.indices] * self.data[None, :]            # [K, nnz]
      out[filled] = np.add.reduceat(prod, self.indptr[:-1][filled],
                                    axis=1).T
    return out

  def group_means(self, labels: np.ndarray, k: int) -> np.ndarray:
    """f64[k, ncols]: the mean row of each label (0 for an empty one)."""
    sums = np.bincount(labels[self.row_ids()] * self.ncols + self.indices,
                       weights=self.data, minlength=k * self.ncols)
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    return sums.reshape(k, self.ncols) / np.maximum(counts, 1)[:, None]

  def distinct(self) -> int:
    """Number of distinct rows (up to 1e-9)."""
    keys = {(tuple(self.indices[a:b]), tuple(np.round(self.data[a:b], 9)))
            for a, b in zip(self.indptr[:-1], self.indptr[1:])}
    return len(keys)


def _rows(x: Union[Rows, np.ndarray]) -> Rows:
  return x if isinstance(x, Rows) else Rows.from_dense(x)


# --- k-means ------------------------------------------------------------------


def _sq_dists(x: Rows, c: np.ndarray,
              xx: Optional[np.ndarray] = None) -> np.ndarray:
  """f64[N, K] squared Euclidean distances (clipped at 0); `xx` = the rows'
  squared norms when the caller has them (k-means calls this a lot)."""
  c = np.asarray(c, np.float64)
  if xx is None:
    xx = x.sq_norms()
  d = xx[:, None] - 2.0 * x.dot(c) + np.einsum("ij,ij->i", c, c)[None, :]
  return np.maximum(d, 0.0)


def _kmeanspp(x: Rows, k: int, rng: np.random.Generator,
              xx: np.ndarray) -> np.ndarray:
  n = len(x)
  first = int(rng.integers(n))
  centers = [first]
  d2 = _sq_dists(x, x.take([first]).dense(), xx)[:, 0]
  for _ in range(1, k):
    total = d2.sum()
    if total <= 0:  # Every point sits on a centre already.
      i = int(rng.integers(n))
    else:
      i = int(rng.choice(n, p=d2 / total))
    centers.append(i)
    d2 = np.minimum(d2, _sq_dists(x, x.take([i]).dense(), xx)[:, 0])
  return x.take(centers).dense()


def kmeans(x: Union[Rows, np.ndarray], k: int, *, seed: int = 0,
           n_init: int = 4, max_iter: int = 100, tol: float = 1e-10
           ) -> tuple[np.ndarray, np.ndarray, float]:
  """k-means++ / Lloyd, best of n_init restarts (deterministic in seed).

  Args:
    x: Rows or a dense f[N, D] array.
    k: clusters, 1 <= k <= N.
    seed: restart r seeds numpy with (seed, r).
    n_init, max_iter: restarts, Lloyd iterations per restart.
    tol: stop when the assignment is unchanged and the centres moved less
      than this (squared).

  Returns:
    (labels int[N] in 0..k'-1, centres f64[k', D], inertia), k' = k unless
    centres coincided (see `_canonical`). Labels are canonical: clusters
    ordered by size (largest first), ties by their first member.

  Raises:
    ValueError: k outside [1, N].
  """
  x = _rows(x)
  n = len(x)
  if not 1 <= k <= n:
    raise ValueError(f"k must be in [1, {n}], got {k}")
  xx = x.sq_norms()
  best = None
  for restart in range(n_init):
    rng = np.random.default_rng([seed, restart])
    c = _kmeanspp(x, k, rng, xx)
    labels = None
    for _ in range(max_iter):
      d = _sq_dists(x, c, xx)
      new = d.argmin(1)
      # Empty clusters: take the points farthest from their centres.
      counts = np.bincount(new, minlength=k)
      if (counts == 0).any():
        far = np.argsort(-d[np.arange(n), new], kind="stable")
        for taken, j in enumerate(np.flatnonzero(counts == 0)):
          new[far[taken]] = j
      c_new = x.group_means(new, k)
      shift = float(((c_new - c) ** 2).sum())
      c = c_new
      if labels is not None and (new == labels).all() and shift <= tol:
        break
      labels = new
    d = _sq_dists(x, c, xx)
    labels = d.argmin(1)
    inertia = float(d[np.arange(n), labels].sum())
    if best is None or inertia < best[2] - 1e-12:
      best = (labels, c, inertia)
  labels, c, inertia = best
  return (*_canonical(labels, c), inertia)


def _canonical(labels: np.ndarray, centers: np.ndarray):
  """Clusters by size (largest first, ties by first member); a cluster the
  final assignment emptied (only possible when two centres coincide) is
  dropped, so fewer than k may come back."""
  sizes = np.bincount(labels, minlength=len(centers))
  order = sorted(np.flatnonzero(sizes),
                 key=lambda j: (-sizes[j], np.flatnonzero(labels == j)[0]))
  remap = np.full(len(centers), -1, np.int64)
  remap[order] = np.arange(len(order))
  return remap[labels], centers[order]


def silhouette(x: Union[Rows, np.ndarray], labels: np.ndarray) -> float:
  """Mean silhouette (Euclidean): s = (b - a) / max(a, b) per point, with a
  the mean distance to its own cluster (others), b the smallest mean
  distance to another cluster; 0 for a point alone in its cluster.
  Costs N^2 distances: callers subsample.

  Raises:
    ValueError: fewer than 2 or more than N - 1 clusters.
  """
  x = _rows(x)
  labels = np.asarray(labels)
  uniq = np.unique(labels)
  n = len(x)
  if not 2 <= len(uniq) <= n - 1:
    raise ValueError(f"silhouette needs 2 <= clusters <= N - 1, got "
                     f"{len(uniq)} clusters of {n} points")
  dense = x.dense()
  xx = x.sq_norms()
  # Row blocks keep the [block, nnz] products of `Rows.dot` small.
  d = np.concatenate([_sq_dists(x, dense[i:i + 256], xx).T
                      for i in range(0, n, 256)])
  d = np.sqrt(d)
  np.fill_diagonal(d, 0.0)
  onehot = (labels[:, None] == uniq[None, :]).astype(np.float64)
  sizes = onehot.sum(0)
  sums = d @ onehot                                   # [N, C]
  own = (labels[:, None] == uniq[None, :])
  own_size = sizes[own.argmax(1)]
  a = np.where(own_size > 1, sums[own] / np.maximum(own_size - 1, 1), 0.0)
  mean_other = np.where(own, np.inf, sums / sizes[None, :])
  b = mean_other.min(1)
  denom = np.maximum(a, b)
  s = np.where((own_size > 1) & (denom > 0), (b - a) / np.where(
      denom > 0, denom, 1), 0.0)
  return float(s.mean())


# --- Clustering labels vs classes ---------------------------------------------


def _contingency(a: Sequence[Any], b: Sequence[Any]) -> np.ndarray:
  if len(a) != len(b):
    raise ValueError(f"labelings differ in length: {len(a)} vs {len(b)}")
  if not len(a):
    raise ValueError("labelings are empty")
  ia = {v: i for i, v in enumerate(sorted(set(a), key=str))}
  ib = {v: i for i, v in enumerate(sorted(set(b), key=str))}
  c = np.zeros((len(ia), len(ib)), np.float64)
  for u, v in zip(a, b):
    c[ia[u], ib[v]] += 1
  return c


def _entropy(counts: np.ndarray) -> float:
  p = counts[counts > 0] / counts.sum()
  return float(-(p * np.log(p)).sum())


def nmi(clusters: Sequence[Any], classes: Sequence[Any]) -> float:
  """Normalised mutual information, MI / ((H(U) + H(V)) / 2), natural log.

  1.0 when both labelings are constant (identical partitions); 0.0 when
  exactly one is constant.
  """
  c = _contingency(clusters, classes)
  n = c.sum()
  hu, hv = _entropy(c.sum(1)), _entropy(c.sum(0))
  if hu == 0 and hv == 0:
    return 1.0
  pij = c / n
  pi, pj = pij.sum(1, keepdims=True), pij.sum(0, keepdims=True)
  nz = pij > 0
  mi = float((pij[nz] * np.log(pij[nz] / (pi @ pj)[nz])).sum())
  return max(0.0, min(1.0, mi / ((hu + hv) / 2)))


def purity(clusters: Sequence[Any], classes: Sequence[Any]) -> float:
  """Share of items in their cluster's most common class."""
  c = _contingency(clusters, classes)
  return float(c.max(1).sum() / c.sum())


# --- The taxonomy -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FailureType:
  """One named failure type (see the JSON schema in the module docstring)."""
  id: str
  name: str
  name_source: str
  top_terms: tuple[tuple[str, float], ...]
  count: int
  share: float
  asked: Optional[int]
  failures: Optional[int]
  rate: Optional[float]
  example_ids: tuple[str, ...]
  examples: tuple[Mapping[str, Any], ...]
  skills: Mapping[str, int]
  modes: Mapping[str, int]
  auditors: Mapping[str, int]

  def to_json(self) -> dict[str, Any]:
    return {"id": self.id, "name": self.name,
            "name_source": self.name_source,
            "top_terms": [[t, w] for t, w in self.top_terms],
            "count": self.count, "share": self.share, "asked": self.asked,
            "failures": self.failures, "rate": self.rate,
            "example_ids": list(self.example_ids),
            "examples": [dict(e) for e in self.examples],
            "skills": dict(self.skills), "modes": dict(self.modes),
            "auditors": dict(self.auditors)}


@dataclasses.dataclass(frozen=True, eq=False)
class Taxonomy:
  """Failure types of a set of failures, and what assigns new pairs to them.

  `to_json()` is the report's input; `assign` maps new (question,
  instruction) texts to type ids with the fitted featuriser and centroids.
  """
  types: tuple[FailureType, ...]
  assignments: Mapping[str, str]
  k_selection: Mapping[str, Any]
  config: TaxonomyConfig
  rates_known: bool
  asked: Optional[int]
  oracle: Optional[Mapping[str, Any]]
  gaps: Optional[Mapping[str, Any]]
  vectorizer: Optional[TfidfVectorizer] = dataclasses.field(
      default=None, repr=False)
  centroids: Optional[np.ndarray] = dataclasses.field(default=None,
                                                      repr=False)

  @property
  def num_failures(self) -> int:
    return sum(t.count for t in self.types)

  def by_id(self, type_id: str) -> FailureType:
    for t in self.types:
      if t.id == type_id:
        return t
    raise KeyError(f"no type {type_id!r}; have {[t.id for t in self.types]}")

  def assign(self, questions: Sequence[str],
             instructions: Optional[Sequence[Optional[str]]] = None
             ) -> list[str]:
    """The type id of each (question, instruction): the nearest centroid
    (the k-means rule; a text with no known term goes to the type whose
    centroid is nearest the origin).

    Raises:
      ValueError: no types, or lengths differ.
    """
    if not self.types or self.vectorizer is None:
      raise ValueError("this taxonomy has no types to assign to")
    instructions = ([None] * len(questions) if instructions is None
                    else list(instructions))
    if len(instructions) != len(questions):
      raise ValueError(f"{len(questions)} questions but "
                       f"{len(instructions)} instructions")
    x = self.vectorizer.transform(
        [term_counts(q, i, self.config)
         for q, i in zip(questions, instructions)])
    idx = _sq_dists(x, self.centroids).argmin(1)
    return [self.types[int(j)].id for j in idx]

  def to_json(self) -> dict[str, Any]:
    return {"format": FORMAT, "num_failures": self.num_failures,
            "k": len(self.types), "k_selection": dict(self.k_selection),
            "config": self.config.to_json(),
            "vocab_size": (0 if self.vectorizer is None
                           else len(self.vectorizer.vocab)),
            "rates_known": self.rates_known, "asked": self.asked,
            "types": [t.to_json() for t in self.types],
            "assignments": dict(self.assignments),
            "oracle": None if self.oracle is None else dict(self.oracle),
            "gaps": None if self.gaps is None else dict(self.gaps)}


def _check_examples(examples: Sequence[Mapping[str, Any]]) -> None:
  ids = set()
  for i, ex in enumerate(examples):
    if not isinstance(ex, Mapping):
      raise ValueError(f"examples[{i}] is a {type(ex).__name__}, not a "
                       "mapping")
    for key in ("id", "question"):
      if not isinstance(ex.get(key), str) or not ex[key]:
        raise ValueError(f"examples[{i}] needs a non-empty str {key!r}")
    if ex["id"] in ids:
      raise ValueError(f"duplicate example id {ex['id']!r}")
    ids.add(ex["id"])


def _choose_k(x: Rows, config: TaxonomyConfig
              ) -> tuple[int, dict[str, Any]]:
  distinct = x.distinct()
  n = len(x)
  if config.k:
    return min(config.k, distinct), {"method": "config",
                                     "requested": config.k, "scores": {}}
  hi = min(config.k_max, distinct, n - 1)
  if hi < config.k_min:
    # Too few distinct failures for the search range (the silhouette needs
    # 2 <= k <= N - 1): one type per distinct text, at most k_max.
    return min(distinct, config.k_max), {"method": "trivial", "scores": {}}
  rng = np.random.default_rng([config.seed, 1 << 20])
  sample = (np.sort(rng.choice(n, config.silhouette_sample, replace=False))
            if n > config.silhouette_sample else np.arange(n))
  scores = {}
  for k in range(config.k_min, hi + 1):
    labels, _, _ = kmeans(x, k, seed=config.seed, n_init=config.n_init,
                          max_iter=config.max_iter)
    sl = labels[sample]
    if len(np.unique(sl)) < 2 or len(np.unique(sl)) > len(sl) - 1:
      continue
    scores[k] = silhouette(x.take(sample), sl)
  if not scores:
    return 1, {"method": "trivial", "scores": {}}
  best = max(scores, key=lambda k: (round(scores[k], 12), -k))
  return best, {"method": "silhouette",
                "scores": {str(k): v for k, v in scores.items()}}


def _name_from_terms(terms: Sequence[str], n: int) -> str:
  inside = lambda a, b: f" {a} " in f" {b} "   # a's words run inside b
  chosen: list[str] = []
  for t in terms:
    if any(inside(t, c) for c in chosen):
      continue  # Already said by a chosen n-gram ("many" in "how many").
    # A longer n-gram replaces the shorter ones it contains.
    chosen = [c for c in chosen if not inside(c, t)] + [t]
    if len(chosen) == n:
      break
  return " / ".join(chosen) if chosen else "(no terms)"


def _clean_name(reply: Any) -> str:
  if not isinstance(reply, str):
    return ""
  lines = [l.strip() for l in reply.strip().splitlines() if l.strip()]
  if not lines:
    return ""
  name = lines[0].strip().strip("\"'`*").strip().rstrip(".:;,!").strip()
  return name if len(name) <= _NAME_MAX else ""


def namer_prompt(top_terms: Sequence[str], questions: Sequence[str]) -> str:
  """The text a `namer` is asked for one type."""
  qs = "\n".join(f"- {q}" for q in questions)
  return ("A vision-language model answered these questions about images "
          f"wrongly:\n{qs}\nTheir most distinctive terms: "
          f"{', '.join(top_terms)}.\nName this kind of failure in two to "
          "four words (for example: Color Recognition, Counting, Spatial "
          "Relationship). Reply with the name only.")


def _is_failure(rec: Mapping[str, Any]) -> bool:
  if "target_differs" in rec:
    return bool(rec["target_differs"]) and bool(rec.get(
        "references_agree", rec.get("consensus") is not None))
  return rec.get("consensus") is not None and float(
      rec.get("reward") or 0) > 0


def _valid_asked(rec: Mapping[str, Any]) -> bool:
  return (rec.get("error") is None and isinstance(rec.get("question"), str)
          and bool(rec["question"]))


def _count(values: Iterable[Any]) -> dict[str, int]:
  return dict(collections.Counter(str(v) for v in values if v)
              .most_common())


def _summary_example(ex: Mapping[str, Any]) -> dict[str, Any]:
  return {k: ("" if ex.get(k) is None else str(ex.get(k)))
          for k in ("id", "question", "instruction", "mode", "kind",
                    "auditor", "target_answer", "consensus", "truth",
                    "skill")}


def build_taxonomy(examples: Iterable[Mapping[str, Any]], *,
                   config: TaxonomyConfig = TaxonomyConfig(),
                   asked: Optional[Iterable[Mapping[str, Any]]] = None,
                   namer: Optional[Callable[[str], str]] = None,
                   gaps: Optional[Union[Mapping[str, str],
                                        Sequence[str]]] = None
                   ) -> Taxonomy:
  """Groups failures into named types (module docstring).

  Args:
    examples: failure dicts with "id" and "question" (and optionally
      "instruction", "skill", "tags", "truth", "target_answer",
      "consensus", "mode", "kind", "auditor", "target_differs"), e.g.
      `load_examples(harvest_dir)`. Examples with target_differs False
      (a keep="agreed" harvest) are not failures and are left out.
    config: the TaxonomyConfig.
    asked: the rollout log for failure rates (harvest.read_asked, or a GRPO
      workdir's rollouts.jsonl records); None = counts only.
    namer: text -> text, asked once per type to name it (optional).
    gaps: planted gaps: {conjunction: name} or [conjunction, ...].

  Returns:
    The Taxonomy.

  Raises:
    ValueError: malformed examples.
  """
  if not isinstance(config, TaxonomyConfig):
    raise ValueError(f"config must be a TaxonomyConfig, got "
                     f"{type(config).__name__}")
  if namer is not None and not callable(namer):
    raise ValueError("namer must be callable (text -> text)")
  examples = [ex for ex in examples]
  _check_examples(examples)
  examples = [ex for ex in examples if ex.get("target_differs", True)]
  gap_items = _gap_list(gaps)
  asked_list = None if asked is None else [r for r in asked]

  if not examples:
    return Taxonomy(types=(), assignments={}, k_selection={
        "method": "trivial", "scores": {}}, config=config,
        rates_known=asked_list is not None,
        asked=None if asked_list is None else sum(
            map(_valid_asked, asked_list)),
        oracle=None, gaps=_gaps([], [], gap_items) if gap_items else None)

  docs = [term_counts(ex["question"], ex.get("instruction"), config)
          for ex in examples]
  vec = TfidfVectorizer.fit(docs, config)
  x = vec.transform(docs)
  k, selection = _choose_k(x, config)
  labels, centers, _ = kmeans(x, k, seed=config.seed, n_init=config.n_init,
                              max_iter=config.max_iter)
  k = len(centers)
  # Centroids as the means of the final members (what the names describe).
  centers = x.group_means(labels, k)

  asked_by_type = fails_by_type = None
  n_asked = None
  if asked_list is not None:
    valid = [r for r in asked_list if _valid_asked(r)]
    n_asked = len(valid)
    asked_by_type = collections.Counter()
    fails_by_type = collections.Counter()
    if valid:
      xa = vec.transform([term_counts(r["question"], r.get("instruction"),
                                      config) for r in valid])
      ja = _sq_dists(xa, centers).argmin(1)
      for r, j in zip(valid, ja):
        asked_by_type[int(j)] += 1
        fails_by_type[int(j)] += _is_failure(r)

  types = []
  type_ids = [f"t{j:02d}" for j in range(k)]
  for j in range(k):
    members = np.flatnonzero(labels == j)
    w = centers[j]
    # Ties (terms that always occur together) go to the longer n-gram:
    # "how many" names a type better than "how" and "many".
    order = sorted(np.flatnonzero(w > 0),
                   key=lambda i: (-round(float(w[i]), 9),
                                  -vec.vocab[i].count(" "), vec.vocab[i]))
    top = tuple((vec.vocab[i], round(float(w[i]), 6))
                for i in order[:config.top_terms])
    name = _name_from_terms([t for t, _ in top], config.name_terms)
    # Representatives: nearest the centroid, distinct texts first, then
    # the nearest others (same text, other images).
    d = _sq_dists(x.take(members), centers[j][None, :])[:, 0]
    near = [int(i) for i in members[np.argsort(d, kind="stable")]]
    texts, first, rest = set(), [], []
    for i in near:
      key = (examples[i]["question"], examples[i].get("instruction") or "")
      (rest if key in texts else first).append(i)
      texts.add(key)
    reps = (first + rest)[:config.n_examples]
    source = "terms"
    if namer is not None:
      got = _clean_name(namer(namer_prompt(
          [t for t, _ in top], [examples[i]["question"] for i in reps])))
      if got:
        name, source = got, "namer"
    a = None if asked_by_type is None else int(asked_by_type[j])
    f = None if fails_by_type is None else int(fails_by_type[j])
    types.append(FailureType(
        id=type_ids[j], name=name, name_source=source, top_terms=top,
        count=len(members), share=len(members) / len(examples), asked=a,
        failures=f, rate=(f / a) if a else None,
        example_ids=tuple(examples[i]["id"] for i in reps),
        examples=tuple(_summary_example(examples[i]) for i in reps),
        skills=_count(examples[i].get("skill") for i in members),
        modes=_count(examples[i].get("mode") for i in members),
        auditors=_count(examples[i].get("auditor") for i in members)))
  _dedupe_names(types)

  assignments = {ex["id"]: type_ids[int(l)] for ex, l in zip(examples,
                                                            labels)}
  skilled = [(type_ids[int(l)], ex.get("skill")) for ex, l in
             zip(examples, labels) if ex.get("skill")]
  oracle = None
  if skilled:
    cl, sk = zip(*skilled)
    oracle = {"labelled": len(skilled), "nmi": nmi(cl, sk),
              "purity": purity(cl, sk), "skills": _count(sk)}
  return Taxonomy(
      types=tuple(types), assignments=assignments, k_selection=selection,
      config=config, rates_known=asked_list is not None, asked=n_asked,
      oracle=oracle,
      gaps=_gaps(examples, [assignments[ex["id"]] for ex in examples],
                 gap_items) if gap_items else None,
      vectorizer=vec, centroids=centers)


def _dedupe_names(types: list[FailureType]) -> None:
  seen = collections.Counter()
  for i, t in enumerate(types):
    seen[t.name] += 1
    if seen[t.name] > 1:
      types[i] = dataclasses.replace(t, name=f"{t.name} ({seen[t.name]})")


def _gap_list(gaps) -> list[tuple[str, str]]:
  if gaps is None:
    return []
  if isinstance(gaps, str):
    raise ValueError("gaps must be a mapping or a sequence of conjunctions")
  items = (list(gaps.items()) if isinstance(gaps, Mapping)
           else [(g, g) for g in gaps])
  for conj, name in items:
    if not isinstance(conj, str) or not conj or not isinstance(name, str):
      raise ValueError(f"bad gap {conj!r}: {name!r}")
  return items


def _gaps(examples: Sequence[Mapping[str, Any]], type_ids: Sequence[str],
          items: Sequence[tuple[str, str]]) -> dict[str, Any]:
  from auditdm_jax.audit import judge as judge_lib  # pylint: disable=g-import-not-at-top
  from auditdm_jax.audit import world_truth  # pylint: disable=g-import-not-at-top
  out = []
  for conj, name in items:
    hit = [i for i, ex in enumerate(examples)
           if world_truth.in_slice(ex.get("tags") or (), conj)]
    verified = sum(
        1 for i in hit if examples[i].get("truth") and
        not judge_lib.answers_match(examples[i].get("target_answer"),
                                    examples[i]["truth"]))
    out.append({"conjunction": conj, "name": name, "failures": len(hit),
                "verified": verified, "found": bool(hit),
                "types": _count(type_ids[i] for i in hit)})
  return {"planted": len(out), "found": sum(g["found"] for g in out),
          "items": out}


# --- Model diff ---------------------------------------------------------------


def model_diff(taxonomy: Optional[Taxonomy],
               pairs: Sequence[Mapping[str, Any]],
               answers_a: Sequence[str], answers_b: Sequence[str], *,
               name_a: str = "A", name_b: str = "B",
               label: str = "consensus", by: str = "type",
               judge: Any = None) -> dict[str, Any]:
  """Per-category failure rates of two models on the same pairs (module
  docstring; JSON schema there).

  Args:
    taxonomy: assigns pairs to types (by="type"); unused for by="skill".
    pairs: dicts with "question", optionally "instruction", the `label`
      field and (by="skill") "skill".
    answers_a, answers_b: each model's answer per pair.
    name_a, name_b: the models' names.
    label: the field holding the right answer ("consensus" = the
      pseudo-label, or "truth" = the oracle); pairs without one are
      skipped.
    by: "type" (taxonomy types) or "skill" (the oracle's skill).
    judge: judge D (`audit.judge`); default exact match after VQA
      normalisation.

  Raises:
    ValueError: lengths differ, an unknown `by`, or by="type" without a
      taxonomy that has types.
  """
  from auditdm_jax.audit import judge as judge_lib  # pylint: disable=g-import-not-at-top
  if by not in ("type", "skill"):
    raise ValueError(f"by must be 'type' or 'skill', got {by!r}")
  if not len(pairs) == len(answers_a) == len(answers_b):
    raise ValueError(f"one answer per pair from each model expected: "
                     f"{len(pairs)} pairs, {len(answers_a)} and "
                     f"{len(answers_b)} answers")
  if by == "type" and (taxonomy is None or not taxonomy.types):
    raise ValueError("by='type' needs a taxonomy with types")
  keep = [i for i, p in enumerate(pairs) if p.get(label) and (
      by == "type" or p.get("skill"))]
  judge = judge or judge_lib.ExactMatchJudge()
  if by == "type":
    cats = taxonomy.assign([pairs[i]["question"] for i in keep],
                           [pairs[i].get("instruction") for i in keep])
    names = {t.id: t.name for t in taxonomy.types}
  else:
    cats = [str(pairs[i]["skill"]) for i in keep]
    names = {c: c for c in cats}
  same = judge.same([(answers_a[i], pairs[i][label]) for i in keep] +
                    [(answers_b[i], pairs[i][label]) for i in keep])
  ok_a, ok_b = same[:len(keep)], same[len(keep):]
  per: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0, 0])
  for c, a, b in zip(cats, ok_a, ok_b):
    per[c][0] += 1
    per[c][1] += not a
    per[c][2] += not b
  rows = []
  for c, (n, fa, fb) in per.items():
    ra, rb = fa / n, fb / n
    na = 100.0 * ra / (ra + rb) if ra + rb > 0 else 50.0
    rows.append({"category": c, "name": names[c], "pairs": n,
                 "failures_a": fa, "failures_b": fb, "rate_a": ra,
                 "rate_b": rb, "norm_a": na, "norm_b": 100.0 - na,
                 "diff": 2 * na - 100.0})
  rows.sort(key=lambda r: (-r["diff"], r["name"]))
  return {"format": DIFF_FORMAT, "model_a": name_a, "model_b": name_b,
          "label": label, "by": by, "pairs": len(keep),
          "skipped": len(pairs) - len(keep),
          "normalisation": "norm_a = 100 * rate_a / (rate_a + rate_b), "
                           "norm_b = 100 - norm_a (50/50 when neither "
                           "fails); diff = norm_a - norm_b",
          "categories": rows}


def ask(model: Any, examples: Sequence[Mapping[str, Any]]) -> list[str]:
  """A VQA model's answers (`model.answer(questions, images)`) on examples'
  asked images (uint8 arrays or PNG bytes), for `model_diff`."""
  from auditdm_jax.discover import dataset as dataset_lib  # pylint: disable=g-import-not-at-top
  images = [dataset_lib.decode_png(ex["image"])
            if isinstance(ex["image"], (bytes, bytearray))
            else np.asarray(ex["image"], np.uint8) for ex in examples]
  return list(model.answer([ex["question"] for ex in examples], images))


def load_examples(path: Any) -> list[dict[str, Any]]:
  """A harvest's failures without their images (for `build_taxonomy`)."""
  from auditdm_jax.discover import dataset as dataset_lib  # pylint: disable=g-import-not-at-top
  ds = dataset_lib.read_failures(path, decode_images=False)
  out = []
  for i in range(len(ds)):
    ex = dict(ds[i])
    for k in dataset_lib.IMAGE_FIELDS:
      ex.pop(k, None)
    out.append(ex)
  return out


# --- Command line -------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = argparse.ArgumentParser(
      prog="python -m auditdm_jax.discover.taxonomy",
      description="Group a harvest's failures into named types (JSON).")
  p.add_argument("--failures", required=True, help="the harvest directory")
  p.add_argument("--asked", default="",
                 help="rollout log for rates (default: the harvest's "
                 "asked.jsonl; or a GRPO workdir's rollouts.jsonl)")
  p.add_argument("--k", type=int, default=0, help="0 = by silhouette")
  p.add_argument("--k_min", type=int, default=2)
  p.add_argument("--k_max", type=int, default=16)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--zoo", default="", help="read the planted gaps from the "
                 "zoo's target.json gap_splits")
  p.add_argument("--gaps", default="", help='JSON {"conjunction": "name"}')
  p.add_argument("--out", default="", help="write the JSON here")
  args = p.parse_args(argv)
  try:
    config = TaxonomyConfig(k=args.k, k_min=args.k_min, k_max=args.k_max,
                            seed=args.seed)
    examples = load_examples(args.failures)
    asked_path = pathlib.Path(args.asked or pathlib.Path(args.failures) /
                              "asked.jsonl")
    asked = None
    if asked_path.is_file():
      asked = [json.loads(l) for l in asked_path.read_text(
          encoding="utf-8").splitlines() if l.strip()]
    elif args.asked:
      raise FileNotFoundError(f"no rollout log at {asked_path}")
    gaps = json.loads(args.gaps) if args.gaps else None
    if args.zoo:
      root = pathlib.Path(args.zoo)
      root = root / "export" if (root / "export").is_dir() else root
      info = json.loads((root / "target.json").read_text())
      gaps = dict(info.get("gap_splits", {}))
    tax = build_taxonomy(examples, config=config, asked=asked, gaps=gaps)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  out = tax.to_json()
  text = json.dumps(out, indent=2) + "\n"
  if args.out:
    atomic_io.write_text(args.out, text)
  for t in tax.types:
    rate = "-" if t.rate is None else f"{t.rate:.1%}"
    print(f"{t.id} {t.count:>6} rate {rate:>6}  {t.name}")
  if tax.oracle:
    print(f"oracle: NMI {tax.oracle['nmi']:.3f}, purity "
          f"{tax.oracle['purity']:.3f} on {tax.oracle['labelled']}")
  if tax.gaps:
    print(f"planted gaps found: {tax.gaps['found']}/{tax.gaps['planted']}")
  return 0


if __name__ == "__main__":
  sys.exit(main())

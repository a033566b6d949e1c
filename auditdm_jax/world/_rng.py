"""Seeded random helpers shared by the world's samplers.

Public samplers take `rng`: a `numpy.random.Generator`, a `random.Random`, an
int seed or None (fresh entropy), and turn it into a `random.Random` with
`as_rng`. A Generator gives one 63-bit draw that seeds the Random, so a
Generator passed to successive calls advances deterministically. Internally
all draws are `Random.random()` (about 0.1 us, against 1-4 us for a numpy
scalar draw), and the helpers below build every choice from it, so results
do not depend on `random`'s higher-level algorithms.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Optional, TypeVar, Union

import numpy as np

T = TypeVar("T")
Rng = random.Random
RngLike = Union[np.random.Generator, random.Random, int, None]


def as_rng(rng: RngLike) -> Rng:
  """Returns a `random.Random` for `rng` (itself if it already is one)."""
  if isinstance(rng, random.Random):
    return rng
  if isinstance(rng, np.random.Generator):
    return random.Random(int(rng.integers(0, 2**63 - 1)))
  if rng is None or (isinstance(rng, int) and not isinstance(rng, bool)):
    return random.Random(rng)
  raise TypeError(f"rng must be a numpy Generator, random.Random, int or None,"
                  f" got {type(rng).__name__}")


def index(rng: Rng, n: int) -> int:
  """Returns a uniform int in [0, n); n must be >= 1."""
  return min(int(rng.random() * n), n - 1)


def choice(rng: Rng, seq: Sequence[T]) -> T:
  """Returns a uniform element of the non-empty sequence `seq`."""
  return seq[index(rng, len(seq))]


def coin(rng: Rng, p: float) -> bool:
  """Returns True with probability p."""
  return rng.random() < p


def weighted_index(rng: Rng, weights: Sequence[float]) -> int:
  """Returns i with probability weights[i] / sum(weights); sum must be > 0."""
  total = float(sum(weights))
  x = rng.random() * total
  acc = 0.0
  last = 0
  for i, w in enumerate(weights):
    if w <= 0:
      continue
    acc += w
    last = i
    if x < acc:
      return i
  return last


def weighted_choice(rng: Rng, seq: Sequence[T],
                    weights: Optional[Sequence[float]] = None) -> T:
  """Returns an element of `seq`, uniform or with the given weights."""
  if weights is None:
    return choice(rng, seq)
  return seq[weighted_index(rng, weights)]


def weights_for(names: Sequence[str],
                weights: Optional[Mapping[str, float]]
                ) -> Optional[list[float]]:
  """Turns a {name: weight} mapping into a list aligned with `names`.

  Names missing from the mapping get weight 1. Returns None for None.

  Raises:
    ValueError: on an unknown name, a negative weight or an all-zero result.
  """
  if weights is None:
    return None
  unknown = sorted(set(weights) - set(names))
  if unknown:
    raise ValueError(f"unknown names in weights: {unknown}; known: "
                     f"{list(names)}")
  out = [float(weights.get(n, 1.0)) for n in names]
  if any(w < 0 for w in out):
    raise ValueError(f"weights must be >= 0, got {dict(weights)}")
  if sum(out) <= 0:
    raise ValueError(f"weights must not all be zero, got {dict(weights)}")
  return out


def shuffled(rng: Rng, seq: Sequence[T]) -> list[T]:
  """Returns a shuffled copy of `seq` (Fisher-Yates on rng.random())."""
  out = list(seq)
  for i in range(len(out) - 1, 0, -1):
    j = index(rng, i + 1)
    out[i], out[j] = out[j], out[i]
  return out


def sample_indices(rng: Rng, n: int, k: int) -> list[int]:
  """Returns k distinct uniform ints from [0, n), in random order."""
  pool = list(range(n))
  for i in range(k):
    j = i + index(rng, n - i)
    pool[i], pool[j] = pool[j], pool[i]
  return pool[:k]

"""The metric registry and what every scorer shares.

  @register("exact_match", main_key="accuracy", description="...")
  def exact_match(predictions, examples) -> dict[str, float]: ...

  get_metric("exact_match")(predictions, examples)   # validated call

A scorer takes the model's predictions (str, one per example, in order) and
the examples (`BenchExample`s, or the dicts `decode_record` yields: anything
with the schema's fields as keys or attributes) and returns a flat dict of
floats in the paper's units: percentages for accuracies, CIDEr x 100, MME
points. `Metric.main_key` names the number the paper's tables report.
"""

from __future__ import annotations

import collections
import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Optional

ScoreFn = Callable[[Sequence[str], Sequence[Any]], dict[str, float]]
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclasses.dataclass(frozen=True)
class Metric:
  """A registered scorer.

  Attributes:
    name: registry key (BenchmarkSpec.metric).
    fn: score(predictions, examples) -> {key: float}.
    main_key: the key holding the headline number.
    description: one line for listings.
  """
  name: str
  fn: ScoreFn
  main_key: str
  description: str = ""

  def __post_init__(self):
    if not _NAME_RE.match(self.name):
      raise ValueError(f"metric name must be [a-z][a-z0-9_]*: {self.name!r}")
    if not callable(self.fn):
      raise TypeError(f"{self.name}: fn must be callable")
    if not self.main_key:
      raise ValueError(f"{self.name}: main_key must be named")

  def __call__(self, predictions: Sequence[Optional[str]],
               examples: Sequence[Any]) -> dict[str, float]:
    out = self.fn(predictions, examples)
    if self.main_key not in out:  # A scorer bug, not a caller's.
      raise AssertionError(f"{self.name} returned no {self.main_key!r}")
    return {k: float(v) for k, v in out.items()}


METRICS: dict[str, Metric] = {}


def register(name: str, *, main_key: str, description: str = ""
             ) -> Callable[[ScoreFn], ScoreFn]:
  """Decorator: registers `fn` as metric `name` (a name is taken once)."""

  def deco(fn: ScoreFn) -> ScoreFn:
    if name in METRICS:
      raise ValueError(f"metric {name!r} is already registered")
    METRICS[name] = Metric(name, fn, main_key, description)
    return fn

  return deco


def get_metric(name: str) -> Metric:
  """The metric `name`; ValueError listing the registered ones."""
  try:
    return METRICS[name]
  except KeyError:
    raise ValueError(f"unknown metric {name!r}; known: {sorted(METRICS)}"
                     ) from None


def field(ex: Any, name: str, default: Any = None) -> Any:
  """Field `name` of an example given as a mapping or an object."""
  if isinstance(ex, Mapping):
    return ex.get(name, default)
  return getattr(ex, name, default)


def check_inputs(predictions: Sequence[Optional[str]],
                 examples: Sequence[Any]) -> list[str]:
  """Validates a scorer's arguments; returns the predictions as str.

  None stands for "the model produced nothing" and scores like "".

  Raises:
    ValueError: empty, or the lengths differ.
    TypeError: a prediction is neither str nor None.
  """
  if len(predictions) != len(examples):
    raise ValueError(f"{len(predictions)} predictions for {len(examples)} "
                     "examples")
  if not examples:
    raise ValueError("nothing to score: no examples")
  out = []
  for i, p in enumerate(predictions):
    if p is None:
      p = ""
    if not isinstance(p, str):
      raise TypeError(f"prediction {i} is a {type(p).__name__}, not str")
    out.append(p)
  return out


def pct(values: Sequence[float]) -> float:
  """Mean of per-example scores in [0, 1], as a percentage."""
  return 100.0 * sum(values) / len(values)


def breakdown(values: Sequence[float], keys: Sequence[str], prefix: str
              ) -> dict[str, float]:
  """{prefix/key: pct of the values with that key}, blank keys skipped."""
  groups = collections.defaultdict(list)
  for v, k in zip(values, keys):
    if k:
      groups[k].append(v)
  return {f"{prefix}/{k}": pct(vs) for k, vs in sorted(groups.items())}

"""Scorers of the paper's 16 benchmarks, in a registry by metric name.

  from auditdm_jax.eval import scorers
  scorers.score("vqa_accuracy", predictions, examples)
      # {"accuracy": 86.7, "accuracy/yes/no": ..., ...}
  m = scorers.get_metric(bench.BENCHMARKS["pope"].metric)
  m(predictions, examples)[m.main_key]      # the paper's number
  scorers.score_benchmark("mme", predictions, examples)["total"]

Every scorer: `score(predictions: Sequence[str], examples: Sequence[example])
-> dict[str, float]`, examples being `data.bench.BenchExample`s or the dicts
`data.bench.decode_record` yields. Values are in the paper's units
(percentages, CIDEr x 100, MME points); `Metric.main_key` is the headline.

Metrics (module):
  vqa_accuracy      VQAv2, OK-VQA          (text)
  exact_match       GQA                    (text)
  anls              DocVQA                 (text)
  relaxed_accuracy  ChartQA                (text)
  box_accuracy      RefCOCO                (grounding)
  cider             COCO Captions          (cider)
  multiple_choice   AI2D, MMT-Bench, SEED-IMG, MMMU, MMStar, RealWorldQA
                                           (choice)
  mmbench_circular  MMBench-v1.1           (choice)
  mme               MME                    (yesno)
  pope              POPE                   (yesno)

The per-example functions (vqa_accuracy, anls, relaxed_match, box_iou,
extract_choice, extract_yes_no, cider_d, ...) are importable from the
modules for reuse, e.g. as RL rewards.
"""

from collections.abc import Sequence
from typing import Any, Optional

from auditdm_jax.eval.scorers import choice
from auditdm_jax.eval.scorers import cider
from auditdm_jax.eval.scorers import grounding
from auditdm_jax.eval.scorers import text
from auditdm_jax.eval.scorers import yesno
from auditdm_jax.eval.scorers.choice import extract_choice
from auditdm_jax.eval.scorers.cider import cider_d
from auditdm_jax.eval.scorers.cider import tokenize_caption
from auditdm_jax.eval.scorers.grounding import box_iou
from auditdm_jax.eval.scorers.grounding import parse_loc_box
from auditdm_jax.eval.scorers.registry import get_metric
from auditdm_jax.eval.scorers.registry import Metric
from auditdm_jax.eval.scorers.registry import METRICS
from auditdm_jax.eval.scorers.registry import register
from auditdm_jax.eval.scorers.text import anls
from auditdm_jax.eval.scorers.text import relaxed_match
from auditdm_jax.eval.scorers.text import vqa_accuracy
from auditdm_jax.eval.scorers.yesno import extract_yes_no


def score(metric: str, predictions: Sequence[Optional[str]],
          examples: Sequence[Any]) -> dict[str, float]:
  """Scores predictions with the registered metric `metric`."""
  return get_metric(metric)(predictions, examples)


def score_benchmark(benchmark: str, predictions: Sequence[Optional[str]],
                    examples: Sequence[Any]) -> dict[str, float]:
  """Scores with the metric the benchmark's spec names (data.bench)."""
  # Lazy: the data package imports TFDS, which scoring alone never needs.
  # pylint: disable-next=g-import-not-at-top
  from auditdm_jax.data.bench import schema
  return score(schema.get_benchmark(benchmark).metric, predictions, examples)

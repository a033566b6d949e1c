r"""Rectification: fine-tune the target on the failures the auditor found.

  mixed = AugmentedSource(labelled, as_training_examples(failures), 1)
  state = rectify(target_params, mixed, train_cfg, "/tmp/rectify", tok)

The paper's two data strategies (research/paper.md §7):

  * augmented — the target's own labelled training data with ONE generated
    example per labelled example (`AugmentedSource(labelled, generated,
    per_labelled=1)`): element 2i is labelled example i, element 2i + 1
    generated example i mod G. The generated examples are harvested
    failures, answered with the references' consensus (the pseudo-label:
    no human annotation).
  * bootstrapped — rounds of harvest -> fine-tune -> refresh the auditor
    against the new target, until a held-out metric stops improving
    (`bootstrap`, which takes the three stages as functions so the world
    and real runs plug in their own).

Fine-tuning is the supervised trainer (`train.loop.train`) started from the
target's weights: full fine-tuning or LoRA (`TrainConfig.lora_rank`), every
other option of TrainConfig as for any SFT run.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Union

from auditdm_jax.train import loop as loop_lib
from auditdm_jax.train.config import TrainConfig

PathLike = Union[str, os.PathLike]


def as_training_example(record: Mapping[str, Any]) -> dict[str, Any]:
  """A harvested failure (discover.dataset record) -> an SFT example.

  The image is the one the question was asked about (the counterfactual in
  image / both modes) and the answer is the references' consensus.
  """
  for key in ("image", "question", "consensus"):
    if key not in record:
      raise KeyError(f"a failure record needs {key!r}; has {sorted(record)}")
  if not record["consensus"]:
    raise ValueError(f"failure {record.get('id', '?')} has no consensus "
                     "answer to train on")
  return {"image": record["image"], "question": record["question"],
          "answer": record["consensus"]}


class MappedSource:
  """`fn(source[i])` for every i (lazy)."""

  def __init__(self, source: Sequence[Any], fn: Callable[[Any], Any]):
    self.source, self.fn = source, fn

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, i: int):
    return self.fn(self.source[int(i)])


def as_training_examples(failures: Sequence[Mapping[str, Any]]
                         ) -> MappedSource:
  return MappedSource(failures, as_training_example)


class AugmentedSource:
  """Labelled examples with `per_labelled` generated ones after each.

  Length N * (1 + k) for N labelled examples and k = per_labelled; the
  generated ones cycle when there are fewer than N * k of them. Indexable,
  so the SFT Batcher shuffles and resumes it like any source.
  """

  def __init__(self, labelled: Sequence[Any], generated: Sequence[Any],
               per_labelled: int = 1):
    if per_labelled < 1:
      raise ValueError(f"per_labelled must be >= 1, got {per_labelled}")
    if not len(labelled):
      raise ValueError("no labelled examples to augment")
    if not len(generated):
      raise ValueError("no generated examples: nothing was harvested")
    self.labelled, self.generated = labelled, generated
    self.k = int(per_labelled)

  def __len__(self) -> int:
    return len(self.labelled) * (1 + self.k)

  def __getitem__(self, i: int):
    i = int(i)
    if not 0 <= i < len(self):
      raise IndexError(i)
    q, r = divmod(i, 1 + self.k)
    if r == 0:
      return self.labelled[q]
    return self.generated[(q * self.k + r - 1) % len(self.generated)]


def rectify(params: Any, source: Sequence[Any], config: TrainConfig,
            workdir: PathLike, tokenizer, **kw):
  """Fine-tunes the target (`params`) on `source`; resumable (SFT loop)."""
  return loop_lib.train(config, workdir, source, tokenizer=tokenizer,
                        params=params, **kw)


@dataclasses.dataclass
class Round:
  """What one bootstrapped round did."""
  index: int
  harvested: int
  metric_before: float
  metric_after: float
  kept: bool


def bootstrap(target_params: Any, *,
              harvest: Callable[[Any, int], Sequence[Any]],
              finetune: Callable[[Any, Sequence[Any], int], Any],
              evaluate: Callable[[Any], float],
              refresh_auditor: Callable[[Any, int], None],
              max_rounds: int = 3, min_gain: float = 0.0
              ) -> tuple[Any, list[Round]]:
  """Rounds of harvest -> fine-tune -> refresh the auditor (paper §7).

  Args:
    target_params: the starting target.
    harvest: (target params, round) -> generated training examples
      (failures of the CURRENT target, pseudo-labelled).
    finetune: (target params, generated, round) -> new target params.
    evaluate: target params -> held-out metric (higher is better).
    refresh_auditor: (new target params, round) -> None: retrains the
      auditor against the new target (its next harvest finds new failures).
    max_rounds: at most this many rounds.
    min_gain: stop when a round improves the metric by no more than this;
      that round's target is discarded (the best target is returned).
  Returns:
    (the best target params, the rounds).
  """
  best, best_metric = target_params, evaluate(target_params)
  rounds: list[Round] = []
  for r in range(max_rounds):
    generated = harvest(best, r)
    if not len(generated):
      logging.info("bootstrap round %d: nothing harvested; stopping", r)
      rounds.append(Round(r, 0, best_metric, best_metric, False))
      break
    candidate = finetune(best, generated, r)
    metric = evaluate(candidate)
    kept = metric > best_metric + min_gain
    rounds.append(Round(r, len(generated), best_metric, metric, kept))
    logging.info("bootstrap round %d: %d examples, metric %.4f -> %.4f%s",
                 r, len(generated), best_metric, metric,
                 "" if kept else " (no gain: stop)")
    if not kept:
      break
    best, best_metric = candidate, metric
    if r + 1 < max_rounds:
      refresh_auditor(best, r)
  return best, rounds

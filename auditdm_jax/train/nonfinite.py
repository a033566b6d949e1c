"""Book-keeping of rollbacks past non-finite steps, shared by the SFT and
GRPO loops.

A loop that sees NaN / Inf in a step's checked metrics asks the guard
first (`check`): it raises when a rollback cannot help (too many bad steps
in a row, or no checkpoint yet), else the loop restores its last
checkpoint and reports it (`rolled_back`), which marks the offending batch
to be skipped. `step_done` re-arms the counter once training gets past the
last bad step. The restore itself stays in each loop: what it resets
(a batcher position, a novelty buffer, a rollouts file) differs.
"""

from __future__ import annotations

from collections.abc import Mapping
import logging
from typing import Any, Optional

import jax
import numpy as np

# Step metrics that must be finite; anything else rolls the step back.
CHECKED_METRICS = ("loss", "grad_norm")


def first_bad_metric(metrics: Mapping[str, Any]
                     ) -> Optional[tuple[str, float]]:
  """(name, value) of the first CHECKED_METRICS entry that is NaN / Inf."""
  for k in CHECKED_METRICS:
    if k in metrics and not np.isfinite(metrics[k]):
      return k, float(metrics[k])
  return None


def first_nonfinite(steps) -> Optional[tuple[int, int, str, float]]:
  """(step, batch index, metric, value) of the first of `steps`
  ([(step, batch index, metrics)], metrics possibly on device) whose loss
  or grad_norm is NaN / Inf; one device_get for all of them."""
  host = jax.device_get([m for _, _, m in steps])
  for (step, index, _), m in zip(steps, host):
    bad = first_bad_metric(m)
    if bad is not None:
      return (step, index) + bad
  return None


class RollbackGuard:
  """Counts non-finite steps and records the rollbacks of one run.

  Attributes:
    skip: batch numbers never to train on again (they gave NaN / Inf).
    rollbacks: [{step, batch, metric, value, restored}], for the summary.
  """

  def __init__(self, max_bad_steps: int, label: str = "steps"):
    self.max_bad_steps, self.label = max_bad_steps, label
    self.skip: set[int] = set()
    self.rollbacks: list[dict] = []
    self._in_a_row, self._last_bad = 0, -1

  def check(self, step: int, batch: int, metric: str, value: float,
            have_checkpoint: bool) -> str:
    """Counts a bad step; raises FloatingPointError if rolling back can't
    help. Returns the description used in messages."""
    self._in_a_row += 1
    self._last_bad = max(self._last_bad, step)
    what = f"non-finite {metric} ({value}) at step {step} (batch {batch})"
    if self._in_a_row > self.max_bad_steps:
      raise FloatingPointError(
          f"{what}: {self._in_a_row} non-finite {self.label} in a row (the "
          f"last checkpoint's weights may be bad, or the learning rate "
          f"diverges); rollbacks so far: {self.rollbacks}")
    if not have_checkpoint:
      raise FloatingPointError(f"{what}, and no checkpoint to roll back to")
    return what

  def rolled_back(self, workdir, what: str, step: int, batch: int,
                  metric: str, value: float, restored: int) -> None:
    """Records a rollback to step `restored`; batch `batch` is skipped."""
    self.skip.add(batch)
    self.rollbacks.append({"step": step, "batch": batch, "metric": metric,
                           "value": str(value), "restored": restored})
    logging.warning("%s %s: rolled back to the checkpoint at step %d; that "
                    "batch is skipped", workdir, what, restored)

  def step_done(self, done: int) -> None:
    """A finite step `done` was taken: past the last bad one, re-arm."""
    if done > self._last_bad:
      self._in_a_row = 0

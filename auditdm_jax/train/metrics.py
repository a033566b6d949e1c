"""Metric writer: TensorBoard event files (no TensorFlow) + JSON lines.

  with MetricWriter(workdir) as w:
    w.write_scalars(step, {"train/loss": 1.3, "train/lr": 1e-3})
    w.write_summary({"final_step": 100, ...})

Files under `workdir`:

  tensorboard/events.out.tfevents.*   scalars, via tensorboardX (pure
                                      python + protobuf; `tensorboard
                                      --logdir workdir/tensorboard`)
  metrics.jsonl                       {"step": s, "time": t, name: value}
                                      one line per write, appended, so a
                                      resumed run continues the same file
                                      (after `rewind(checkpoint step)`
                                      drops the lines of steps that will
                                      run again)
  summary.json                        the last `write_summary` dict

Only process 0 writes; on other processes every method is a no-op, so
callers need no `if jax.process_index() == 0`.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import sys
import time
from collections.abc import Mapping
from typing import Any, Optional, Union

import jax
import numpy as np

from auditdm_jax import atomic_io

PathLike = Union[str, os.PathLike]


def _scalar(v: Any) -> Optional[float]:
  """A Python float for scalar-like values (numpy / jax 0-d), else None."""
  try:
    arr = np.asarray(v)
  except Exception:  # pylint: disable=broad-except
    return None
  if arr.ndim != 0 or not (np.issubdtype(arr.dtype, np.number)
                           or arr.dtype == np.bool_):
    return None
  return float(arr)


def _json_safe(obj: Any) -> Any:
  """Converts numpy / jax values and non-finite floats for strict JSON."""
  if isinstance(obj, Mapping):
    return {str(k): _json_safe(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_json_safe(v) for v in obj]
  if isinstance(obj, (str, bool, int)) or obj is None:
    return obj
  value = _scalar(obj)
  if value is None:
    return str(obj)
  if np.issubdtype(np.asarray(obj).dtype, np.integer):
    return int(np.asarray(obj))
  if not math.isfinite(value):
    return str(value)  # 'nan' / 'inf': JSON has no literal for them
  return value


def _summary_writer_class():
  """tensorboardX.SummaryWriter, imported without importing torch.

  tensorboardX imports torch at import time whenever it is installed (the
  torch extra is), which costs seconds and hundreds of MB in a JAX process
  for tensor conversions we never use (we pass floats). Unless torch is
  already loaded, hide it during the import; tensorboardX then falls back to
  numpy. Imported lazily in any case: only the writing process needs it.
  """
  # pylint: disable=g-import-not-at-top
  if "torch" in sys.modules or "tensorboardX" in sys.modules:
    from tensorboardX import SummaryWriter
    return SummaryWriter
  sys.modules["torch"] = None  # makes `import torch` raise ImportError
  try:
    from tensorboardX import SummaryWriter
  finally:
    del sys.modules["torch"]
  return SummaryWriter


class MetricWriter:
  """Scalars to TensorBoard and JSON lines; a summary to JSON; process 0."""

  def __init__(self, workdir: PathLike, *, enabled: Optional[bool] = None):
    self.workdir = pathlib.Path(workdir)
    self.enabled = (jax.process_index() == 0) if enabled is None else enabled
    self._tb = None
    self._jsonl = None
    if not self.enabled:
      return
    self.workdir.mkdir(parents=True, exist_ok=True)
    self._tb = _summary_writer_class()(str(self.workdir / "tensorboard"))
    self._jsonl = open(self.workdir / "metrics.jsonl", "a", encoding="utf-8")

  @property
  def jsonl_path(self) -> pathlib.Path:
    return self.workdir / "metrics.jsonl"

  @property
  def summary_path(self) -> pathlib.Path:
    return self.workdir / "summary.json"

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    """Writes every scalar-like value of `scalars` at `step`.

    Non-scalar values are skipped in TensorBoard but kept (as text) in the
    JSON line, so an evaluator may return extra detail.
    """
    if not self.enabled:
      return
    step = int(step)
    wall = time.time()
    for name, value in scalars.items():
      v = _scalar(value)
      if v is not None:
        self._tb.add_scalar(name, v, global_step=step, walltime=wall)
    line = {"step": step, "time": wall, **_json_safe(dict(scalars))}
    self._jsonl.write(json.dumps(line) + "\n")
    # Whole lines reach the file as they are logged: `tail -f` works, and a
    # killed run leaves at most one torn line (readers skip it).
    self._jsonl.flush()

  def rewind(self, last_step: int) -> None:
    """Drops the metrics.jsonl lines of steps after `last_step` (a resume
    or a rollback repeats those steps). TensorBoard keeps its points: its
    event files cannot be cut, and it shows the newest value per step."""
    if not self.enabled:
      return
    self._jsonl.close()
    truncate_jsonl(self.jsonl_path, last_step)
    self._jsonl = open(self.jsonl_path, "a", encoding="utf-8")

  def write_summary(self, summary: Mapping[str, Any]) -> None:
    """Writes `summary.json` (replacing an older one) atomically."""
    if not self.enabled:
      return
    atomic_io.write_json(self.summary_path, _json_safe(dict(summary)),
                         sort_keys=True)

  def flush(self) -> None:
    if self.enabled:
      self._tb.flush()
      self._jsonl.flush()

  def close(self) -> None:
    if self.enabled and self._jsonl is not None:
      self._tb.close()
      self._jsonl.close()
      self._jsonl = None

  def __enter__(self) -> "MetricWriter":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def truncate_jsonl(path: PathLike, last_step: int) -> None:
  """Keeps only the lines with "step" <= last_step (atomic rewrite); a torn
  line (a killed writer) and everything after it is dropped too."""
  path = pathlib.Path(path)
  if not path.exists():
    return
  keep = []
  for line in path.read_text(encoding="utf-8").splitlines():
    if not line.strip():
      continue
    try:
      if json.loads(line).get("step", 0) <= last_step:
        keep.append(line)
    except (ValueError, AttributeError):
      break
  atomic_io.write_text(path, "".join(l + "\n" for l in keep))


def read_jsonl(path: PathLike) -> list[dict]:
  """The records of a metrics.jsonl file, in order."""
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]

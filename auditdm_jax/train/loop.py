"""The supervised training loop: create or resume, step, log, eval, save.

  state = train(cfg, workdir, source, eval_fn, tokenizer=tok)

`train` is the only impure part of the trainer: it owns the host loop, the
progress bar, the metric files, the evaluator calls and the checkpoints,
and calls the pure jitted step (`step.make_train_step`) in between.

Resuming: when `workdir/checkpoints` holds a checkpoint, the latest usable
one (a damaged one is reported and skipped: `checkpoint.py`) is restored
straight into the step's shardings together with the data iterator
position, metrics.jsonl lines of later steps are dropped (they will be
logged again), and training continues to `cfg.total_steps`; the result is
bitwise the one of an uninterrupted run (same process count and mesh),
however often the process was killed (tests/test_preemption.py).
`num_steps` stops a call early (time-sliced jobs, tests), and so does
`max_seconds` (a wall-time budget, checked every `log_every` steps): either
saves a checkpoint where it stops, and the next call picks up from there.

Non-finite steps: the loss and grad_norm of every step are checked on the
host at each log, eval and checkpoint boundary (and at the end), before
anything is logged, evaluated or saved, so no checkpoint ever holds the
result of a non-finite step. A NaN / Inf there is reported
(`logging.warning` with the step, the batch index and the value), the last
checkpoint is restored, metric lines after it are dropped, and the steps
are run again with the offending batch skipped (the data stream is the same
minus that batch: the good steps in between repeat bitwise). At most
`max_bad_steps` non-finite steps in a row (no finite step beyond the last
bad one in between) are rolled back; the next one raises
`FloatingPointError` (poisoned weights in the checkpoint itself, or a
learning rate that diverges, would otherwise loop), and so does the first
one when there is no checkpoint yet to go back to. The summary lists the
rollbacks.

Files in `workdir`: `config.json` (the run config), `checkpoints/`,
`metrics.jsonl`, `tensorboard/` and `summary.json` (see `metrics.py`).
Metric names: `train/<name>` averaged over the last `log_every` steps
(loss, accuracy, grad_norm, lr, target_tokens, dropped_targets,
steps_per_sec), and `eval/<name>` for whatever `eval_fn` returns.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional, Union

import jax
import numpy as np
import tqdm

from auditdm_jax.models.vlm import Model
from auditdm_jax.sharding import mesh as mesh_lib
from auditdm_jax.tokenizer import Tokenizer
from auditdm_jax.train import checkpoint as checkpoint_lib
from auditdm_jax.train import data as data_lib
from auditdm_jax.train import metrics as metrics_lib
from auditdm_jax.train import nonfinite
from auditdm_jax.train import state as state_lib
from auditdm_jax.train import step as step_lib
from auditdm_jax.train.config import TrainConfig

PathLike = Union[str, os.PathLike]
EvalFn = Callable[[Any], Mapping[str, Any]]

# Fields that may change between a run and its resumption.
_RESUMABLE_CHANGES = frozenset({
    "progress", "log_every", "eval_every", "checkpoint_every",
    "keep_checkpoints", "async_checkpointing", "tokenizer", "init_from"})


def _check_resume_config(saved: Optional[dict], config: TrainConfig) -> None:
  if not saved:
    return
  now = config.to_dict()
  changed = sorted(
      k for k in set(saved) | set(now)
      if k not in _RESUMABLE_CHANGES and saved.get(k) != now.get(k))
  if changed:
    logging.warning("resuming with a changed config: %s",
                    {k: (saved.get(k), now.get(k)) for k in changed})


def _initial_params(config: TrainConfig, params, model: Model,
                    mesh) -> Optional[Any]:
  """Given params, else `config.init_from` restored in place, else None."""
  if params is not None or config.init_from is None:
    return params
  # pylint: disable-next=g-import-not-at-top
  from auditdm_jax.convert import orbax_io
  shardings = None
  if mesh is not None:
    shardings = state_lib.state_shardings(model, config, mesh).params
  return orbax_io.restore_params(config.init_from, shardings=shardings,
                                 dtype=config.param_dtype)


def _mean_metrics(window: Sequence[Mapping[str, jax.Array]]) -> dict:
  host = jax.device_get(list(window))
  return {k: float(np.mean([m[k] for m in host])) for k in host[0]}


def train(config: TrainConfig, workdir: PathLike, source: Sequence[Any],
          eval_fn: Optional[EvalFn] = None, *,
          tokenizer: Optional[Tokenizer] = None, params: Any = None,
          num_steps: Optional[int] = None,
          max_seconds: Optional[float] = None,
          max_bad_steps: int = 3) -> state_lib.TrainState:
  """Trains (or resumes training) to `config.total_steps`.

  Args:
    config: the run config.
    workdir: where checkpoints, metrics and the summary go; a checkpoint
      already there is resumed.
    source: indexable examples (`data.py` docstring).
    eval_fn: `eval_fn(params) -> {name: value}`, called with the model
      params (LoRA merged) every `config.eval_every` steps and at the end.
    tokenizer: the model's tokenizer (default: loaded from
      `config.tokenizer`).
    params: starting params for a fresh run (default: `config.init_from`,
      else random); ignored when resuming.
    num_steps: stop after this many steps in this call (and checkpoint).
    max_seconds: stop at the first `log_every` boundary past this many
      seconds of this call (and checkpoint).
    max_bad_steps: non-finite steps in a row that are rolled back (module
      docstring) before giving up; 0 = give up at the first.
  Returns:
    The final TrainState (on device, in the training shardings).
  Raises:
    FloatingPointError: the loss or gradient norm became NaN / Inf
      `max_bad_steps` + 1 times in a row, or before the first checkpoint.
  """
  workdir = pathlib.Path(workdir)
  if tokenizer is None:
    if config.tokenizer is None:
      raise ValueError("train needs a tokenizer or config.tokenizer")
    tokenizer = Tokenizer(config.tokenizer)
  model = state_lib.make_model(config)
  mesh = mesh_lib.make_mesh(config.mesh) if config.mesh else None
  batcher = data_lib.Batcher.from_config(source, tokenizer, config)
  # One batch before anything is written: missing fields, a tokenizer that
  # is not the model's, too long examples or unreadable images fail here,
  # naming the problem, rather than after the workdir has been set up.
  batcher.batch(0)
  workdir.mkdir(parents=True, exist_ok=True)
  step_fn = step_lib.make_train_step(model, config, mesh)
  primary = jax.process_index() == 0

  ckpt = checkpoint_lib.Checkpointer.for_workdir(workdir, config)
  writer = None
  abstract = state_lib.abstract_state(model, config)
  try:
    if ckpt.latest_step() is not None:
      state, data_state = ckpt.restore(abstract, step_fn.state_shardings)
      try:
        saved = ckpt.read_json("config", ckpt.restored_step)
      except checkpoint_lib.CorruptCheckpointError as e:
        logging.warning("%s", e)  # Only read to warn about changes.
        saved = None
      _check_resume_config(saved, config)
      batcher.set_state(data_state)
      logging.info("resumed %s at step %d", workdir, int(state.step))
    else:
      state = state_lib.create_state(
          model, config, _initial_params(config, params, model, mesh),
          mesh=mesh)
      if primary:
        (workdir / "config.json").write_text(
            json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")
    start = int(jax.device_get(state.step))
    writer = metrics_lib.MetricWriter(workdir)
    # Lines past the checkpoint come from steps that will run again.
    writer.rewind(start)
    end = config.total_steps
    if num_steps is not None:
      end = min(end, start + num_steps)
    if start >= end:
      logging.info("%s is at step %d of %d: nothing to do", workdir, start,
                   config.total_steps)
      return state
    labels = state_lib.trainable_labels(config, state.trainable)
    counts = state_lib.count_params(state.trainable, labels)

    last_train: dict = {}
    last_eval: dict = {}

    def evaluate(step: int):
      nonlocal last_eval
      if eval_fn is None:
        return
      t0 = time.perf_counter()
      result = dict(eval_fn(state.model_params()))
      result["seconds"] = time.perf_counter() - t0
      last_eval = result
      writer.write_scalars(step, {f"eval/{k}": v for k, v in result.items()})
      writer.flush()

    window: list = []
    unchecked: list = []          # (step, batch index, metrics)
    guard = nonfinite.RollbackGuard(max_bad_steps)
    window_steps_from = start
    run_t0 = window_t0 = time.perf_counter()
    first_step_s = None

    def roll_back(bad) -> int:
      """Restores the last checkpoint past a non-finite step; its step."""
      nonlocal state
      step_b, index, key, value = bad
      what = guard.check(step_b, index, key, value,
                         ckpt.latest_step() is not None)
      state, data_state = ckpt.restore(abstract, step_fn.state_shardings)
      batcher.set_state(data_state)
      back = int(jax.device_get(state.step))
      guard.rolled_back(workdir, what, step_b, index, key, value, back)
      writer.rewind(back)
      return back

    with tqdm.tqdm(total=config.total_steps, initial=start,
                   disable=not (config.progress and primary),
                   desc=f"train {config.arch}", dynamic_ncols=True) as bar:
      step = start
      while step < end:
        index = int(batcher.get_state()["index"])
        if index in guard.skip:
          batcher.set_state({"index": index + 1})
          continue
        state, metrics = step_fn(state, next(batcher))
        window.append(metrics)
        unchecked.append((step + 1, index, metrics))
        done = step = step + 1
        if first_step_s is None:
          jax.block_until_ready(metrics)  # compile time, reported apart
          first_step_s = time.perf_counter() - run_t0
          window_t0 = time.perf_counter()
          window_steps_from = done
        log = done % config.log_every == 0 or done == end
        eval_now = bool(config.eval_every and done % config.eval_every == 0)
        save = bool(config.checkpoint_every and
                    done % config.checkpoint_every == 0 and done != end)
        if log or eval_now or save:
          # Before anything is logged, evaluated or saved.
          bad = nonfinite.first_nonfinite(unchecked)
          unchecked = []
          if bad is not None:
            step = roll_back(bad)
            window, window_t0, window_steps_from = [], time.perf_counter(), step
            bar.n = step
            bar.refresh()
            continue
          guard.step_done(done)
        if log:
          last_train = _mean_metrics(window)
          now = time.perf_counter()
          steps = done - window_steps_from
          if steps > 0:
            last_train["steps_per_sec"] = steps / (now - window_t0)
          window, window_t0, window_steps_from = [], now, done
          writer.write_scalars(
              done, {f"train/{k}": v for k, v in last_train.items()})
          bar.set_postfix(loss=f"{last_train['loss']:.4f}",
                          acc=f"{last_train['accuracy']:.3f}")
          if max_seconds is not None and now - run_t0 > max_seconds:
            logging.info("%s: time budget of %.0f s reached at step %d",
                         workdir, max_seconds, done)
            bar.update(1)
            break
        if eval_now:
          evaluate(done)
        if save:
          ckpt.save(state, batcher.get_state(), config)
        bar.update(1)

    final = int(jax.device_get(state.step))
    if final == config.total_steps and eval_fn is not None and not (
        config.eval_every and final % config.eval_every == 0 and final > start):
      evaluate(final)
    if final > start or ckpt.latest_step() is None:
      ckpt.save(state, batcher.get_state(), config)
    ran = final - start
    wall = time.perf_counter() - run_t0
    writer.write_summary({
        "step": final, "total_steps": config.total_steps,
        "finished": final == config.total_steps, "resumed_from": start,
        "train": last_train, "eval": last_eval, "rollbacks": guard.rollbacks,
        "first_step_seconds": first_step_s, "wall_seconds": wall,
        "steps_per_sec": (ran - 1) / (wall - first_step_s)
                         if ran > 1 and wall > first_step_s else None,
        "params": counts, "config": config.to_dict()})
    writer.flush()
  finally:
    ckpt.close()
    if writer is not None:
      writer.close()
  return state

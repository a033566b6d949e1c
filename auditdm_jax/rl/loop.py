r"""The GRPO loop for the auditor: rollout, advantages, one update; repeat.

  state = train(train_cfg, grpo_cfg, rollout, sources, workdir,
                sources_per_step=8, params=auditor_init_params)

Each step (the only impure part; the update itself is `rl.step`'s jitted
pure step):

  1. take `sources_per_step` sources (epoch-wise shuffled by the run seed:
     step i's sources are a pure function of (seed, i));
  2. `rollout(policy params, sources, key=fold_in(key(seed), i))`: G
     completions per source, pairs in the three modes, answers, rewards;
  3. group-normalised advantages (`rl.grpo.group_advantages`);
  4. old log-probs (the policy before the update) and reference log-probs
     (LoRA: the base weights with LoRA off; full fine-tuning: the initial
     weights, kept in `workdir/reference`), by the jitted scorer;
  5. the jitted GRPO step (donated state).

Files in `workdir`: `checkpoints/` (state + data position: the step and the
novelty window), `reference/` (full fine-tuning with KL only),
`metrics.jsonl` + `tensorboard/` (per step: `rollout/*` monitors of
`audit.rollout.rollout_metrics` and `train/*` of the step), `rollouts.jsonl`
(every pair of every step: completion, question, instruction, answers,
reward, oracle truth, so failures can be harvested later), `summary.json`.

Resuming restores the latest usable checkpoint (a damaged one is reported
and skipped: `train/checkpoint.py`) and drops lines of the two JSONL files
written after it, so a killed run continued to the end has exactly the
files and parameters of an uninterrupted one (rollouts are pure functions
of (params, sources, key); tests/test_preemption.py kills it at random).

Non-finite steps: a step whose loss or grad_norm is NaN / Inf is reported
(`logging.warning` with the step, the batch and the value) before anything
of it is logged or saved; the last checkpoint is restored, the JSONL lines
after it are dropped, and the steps are run again with that step's batch
(its sources and rollout key) skipped. The batch counter is checkpointed
("batch" in the data state; it equals the step until a batch is skipped),
so resuming stays exact. At most `max_bad_steps` non-finite steps in a row
(no finite step beyond the last bad one in between) are rolled back; the
next raises `FloatingPointError`, as does the first one when there is no
checkpoint yet. The summary lists the rollbacks.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import time
from collections.abc import Sequence
from typing import Any, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from auditdm_jax.audit.rollout import Pair, Rollout, SourceItem
from auditdm_jax.convert import orbax_io
from auditdm_jax.rl import grpo
from auditdm_jax.rl import step as rl_step
from auditdm_jax.rl.config import GrpoConfig
from auditdm_jax.sharding import mesh as mesh_lib
from auditdm_jax.train import checkpoint as checkpoint_lib
from auditdm_jax.train import metrics as metrics_lib
from auditdm_jax.train import nonfinite
from auditdm_jax.train import state as state_lib
from auditdm_jax.train.config import TrainConfig

PathLike = Union[str, os.PathLike]


# --- Host-side helpers -------------------------------------------------------


def source_indices(step: int, per_step: int, n: int, seed: int) -> list[int]:
  """Indices of step `step`'s sources: element j of the stream is
  perm_e[j % n] with e = j // n and perm_e seeded by (seed, e)."""
  out = []
  for j in range(step * per_step, (step + 1) * per_step):
    epoch, pos = divmod(j, n)
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    out.append(int(perm[pos]))
  return out


def pair_record(step: int, p: Pair) -> dict[str, Any]:
  """A JSON-able record of one pair (for rollouts.jsonl / harvesting)."""
  v = p.verdict
  return {
      "step": step, "source_id": p.source_id, "group": p.group,
      "mode": p.mode, "kind": p.kind, "completion": p.completion,
      "question": p.question, "instruction": p.instruction,
      "error": p.error, "target_answer": p.target_answer,
      "reference_answers": list(p.reference_answers),
      "consensus": None if v is None else v.consensus,
      "references_agree": bool(v is not None and v.references_agree),
      "target_differs": bool(v is not None and v.target_differs),
      "reward": p.reward, "truth": p.truth, "skill": p.skill,
      "tags": sorted(p.tags),
      "image_scene": None if p.picture is None else p.picture.scene,
  }


# Kept for callers of the old private name.
_truncate_jsonl = metrics_lib.truncate_jsonl


def _reset_novelty(rollout: Rollout, recent: Sequence[str]) -> None:
  """The rollout's novelty window refilled from a checkpoint's questions."""
  if rollout.novelty is not None:
    rollout.novelty = type(rollout.novelty)(rollout.novelty.window)
    for q in recent:
      rollout.novelty.add(q)


def _reference_params(model, config: TrainConfig, grpo_config: GrpoConfig,
                      state, workdir: pathlib.Path):
  """The KL reference: None (no KL), the LoRA base, or the initial params."""
  if not grpo_config.kl_beta:
    return None
  if state.lora is not None:
    return state.params  # LoRA off = the frozen base weights
  ref_dir = workdir / "reference"
  if (ref_dir / "_CHECKPOINT_METADATA").exists() or ref_dir.is_dir():
    try:
      return orbax_io.restore_params(ref_dir, dtype=config.param_dtype)
    except Exception as e:  # pylint: disable=broad-except
      raise RuntimeError(f"the reference policy in {ref_dir} cannot be read "
                         f"({e}); delete the workdir to start over") from e
  if int(jax.device_get(state.step)) != 0:
    raise RuntimeError(f"resuming full fine-tuning with KL but {ref_dir} is "
                       "missing: the initial weights are lost")
  if jax.process_index() == 0:
    orbax_io.save_params(jax.device_get(state.params), ref_dir, model.cfg)
  # A copy: the step donates (and so frees) the state's own buffers.
  return rl_step.frozen_copy(state.params)


# --- The loop -----------------------------------------------------------------


def train(config: TrainConfig, grpo_config: GrpoConfig, rollout: Rollout,
          sources: Sequence[SourceItem], workdir: PathLike, *,
          sources_per_step: int, params: Any = None,
          num_steps: Optional[int] = None, novelty_window: int = 0,
          write_rollouts: bool = True,
          max_seconds: Optional[float] = None,
          max_bad_steps: int = 3) -> state_lib.TrainState:
  """Trains the auditor with GRPO to `config.total_steps` (or resumes).

  Args:
    config: optimiser, LoRA / freezing, arch, seed, steps, checkpointing
      (`checkpoint_every`, `keep_checkpoints`) and logging (`log_every` is
      ignored: every step is logged).
    grpo_config: the loss; its group_size must equal the rollout's.
    rollout: a `Rollout` whose auditor model is `config.arch`.
    sources: indexable SourceItems.
    workdir: see the module docstring.
    sources_per_step: groups per step (R = sources_per_step * G rows).
    params: initial auditor params (fresh runs; default config.init_from).
    num_steps: stop after this many steps in this call (checkpointed).
    novelty_window: questions remembered for the novelty bonus (0 = none;
      the rollout's NoveltyTracker is refilled from the checkpoint).
    write_rollouts: append every pair to rollouts.jsonl.
    max_seconds: stop (and checkpoint) at the first step past this wall time.
    max_bad_steps: non-finite steps in a row that are rolled back (module
      docstring) before giving up; 0 = give up at the first.
  Returns:
    The final TrainState.
  Raises:
    FloatingPointError: see max_bad_steps.
  """
  workdir = pathlib.Path(workdir)
  g = rollout.config.group_size
  if grpo_config.group_size != g:
    raise ValueError(f"grpo group_size {grpo_config.group_size} != rollout "
                     f"group_size {g}")
  if config.batch_size != sources_per_step * g:
    raise ValueError(f"config.batch_size must be sources_per_step x "
                     f"group_size = {sources_per_step * g}, got "
                     f"{config.batch_size}")
  if not len(sources):
    raise ValueError("no audit sources")
  model = rollout.auditor.model
  if model.cfg.name != config.arch:
    raise ValueError(f"the rollout's auditor is {model.cfg.name} but "
                     f"config.arch is {config.arch}")
  mesh = mesh_lib.make_mesh(config.mesh) if config.mesh else None
  step_fn = rl_step.make_grpo_step(model, config, grpo_config, mesh)
  logprob_fn = rl_step.make_logprob_fn(model, grpo_config, mesh)
  primary = jax.process_index() == 0

  # After the checks above: a refused run leaves no workdir behind.
  workdir.mkdir(parents=True, exist_ok=True)
  ckpt = checkpoint_lib.Checkpointer.for_workdir(workdir, config)
  writer = metrics_lib.MetricWriter(workdir)
  abstract = state_lib.abstract_state(model, config)
  recent: list[str] = []
  batch_no = 0        # The data position: step, plus batches skipped.
  try:
    if ckpt.latest_step() is not None:
      state, data_state = ckpt.restore(abstract, step_fn.state_shardings)
      recent = list(data_state.get("novelty", []))
      start = int(jax.device_get(state.step))
      batch_no = int(data_state.get("batch", start))
      logging.info("resumed %s at step %d", workdir, start)
    else:
      if params is None and config.init_from:
        params = orbax_io.restore_params(config.init_from,
                                         dtype=config.param_dtype)
      state = state_lib.create_state(model, config, params, mesh=mesh)
      start = 0
      if primary:
        (workdir / "config.json").write_text(json.dumps(
            {"train": config.to_dict(), "grpo": grpo_config.to_dict()},
            indent=2, sort_keys=True) + "\n")
    if primary:
      # Lines past the checkpoint come from steps that will run again.
      metrics_lib.truncate_jsonl(workdir / "rollouts.jsonl", start)
    writer.rewind(start)
    _reset_novelty(rollout, recent)
    ref_params = _reference_params(model, config, grpo_config, state,
                                   workdir)

    end = config.total_steps
    if num_steps is not None:
      end = min(end, start + num_steps)
    base_key = jax.random.key(config.seed)
    rollouts_path = workdir / "rollouts.jsonl"
    rollouts_file = (open(rollouts_path, "a", encoding="utf-8")
                     if write_rollouts and primary else None)
    t0 = time.perf_counter()
    last: dict = {}
    done = start
    guard = nonfinite.RollbackGuard(max_bad_steps, "GRPO steps")

    def roll_back(step_b: int, batch_b: int, key: str, value: float) -> int:
      """Restores the last checkpoint past a non-finite step; its step."""
      nonlocal state, recent, batch_no, rollouts_file
      what = guard.check(step_b, batch_b, key, value,
                         ckpt.latest_step() is not None)
      state, data_state = ckpt.restore(abstract, step_fn.state_shardings)
      back = int(jax.device_get(state.step))
      recent = list(data_state.get("novelty", []))
      batch_no = int(data_state.get("batch", back))
      _reset_novelty(rollout, recent)
      guard.rolled_back(workdir, what, step_b, batch_b, key, value, back)
      writer.rewind(back)
      if rollouts_file is not None:
        rollouts_file.close()
        metrics_lib.truncate_jsonl(rollouts_path, back)
        rollouts_file = open(rollouts_path, "a", encoding="utf-8")
      return back

    try:
      with tqdm.tqdm(total=config.total_steps, initial=start,
                     disable=not (config.progress and primary),
                     desc=f"grpo {config.arch}", dynamic_ncols=True) as bar:
        step = start
        while step < end:
          while batch_no in guard.skip:
            batch_no += 1
          t_step = time.perf_counter()
          idx = source_indices(batch_no, sources_per_step, len(sources),
                               config.seed)
          policy = state.model_params()
          out = rollout(policy, [sources[i] for i in idx],
                        key=jax.random.fold_in(base_key, batch_no))
          t_roll = time.perf_counter() - t_step
          adv = np.asarray(grpo.group_advantages(
              jnp.asarray(out.rewards), g, grpo_config.advantage_scale,
              grpo_config.adv_eps))
          batch = out.grpo_batch(adv)
          # Scores stay on device and go straight back into the step.
          batch["old_logprobs"] = logprob_fn(state.params, batch,
                                             lora=state.lora)
          if ref_params is not None:
            batch["ref_logprobs"] = logprob_fn(ref_params, batch)
          else:
            batch["ref_logprobs"] = np.zeros(batch["completion"].shape,
                                             np.float32)
          state, m = step_fn(state, batch)
          m = {k: float(v) for k, v in jax.device_get(m).items()}
          bad = nonfinite.first_bad_metric(m)
          if bad is not None:
            # Before anything of this step is logged or saved.
            step = roll_back(step + 1, batch_no, *bad)
            bar.n = step
            bar.refresh()
            continue
          done = step = step + 1
          batch_no += 1
          guard.step_done(done)
          metrics = {f"rollout/{k}": v for k, v in out.metrics().items()}
          metrics.update({f"train/{k}": v for k, v in m.items()})
          metrics["time/rollout_s"] = t_roll
          metrics["time/step_s"] = time.perf_counter() - t_step
          writer.write_scalars(done, metrics)
          if rollouts_file is not None:
            for p in out.pairs:
              rollouts_file.write(json.dumps(pair_record(done, p)) + "\n")
            rollouts_file.flush()
          recent = (recent + out.questions_asked)[-novelty_window:] \
              if novelty_window else []
          last = metrics
          bar.set_postfix(reward=f"{metrics['rollout/reward_mean']:.3f}",
                          valid=f"{metrics['rollout/validity']:.2f}")
          bar.update(1)
          if (config.checkpoint_every and done % config.checkpoint_every == 0
              and done != end):
            writer.flush()
            ckpt.save(state, {"step": done, "batch": batch_no,
                              "novelty": recent}, config)
          if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
            logging.info("time budget reached at step %d", done)
            break
    finally:
      if rollouts_file is not None:
        rollouts_file.close()
    if done > start or ckpt.latest_step() is None:
      writer.flush()
      ckpt.save(state, {"step": done, "batch": batch_no, "novelty": recent},
                config)
    writer.write_summary({
        "step": done, "total_steps": config.total_steps,
        "finished": done == config.total_steps, "resumed_from": start,
        "rollbacks": guard.rollbacks,
        "wall_seconds": time.perf_counter() - t0, "last": last,
        "config": {"train": config.to_dict(), "grpo": grpo_config.to_dict()}})
    writer.flush()
  finally:
    ckpt.close()
    writer.close()
  return state


def read_rollouts(workdir: PathLike) -> list[dict]:
  """Every pair record of a run (rollouts.jsonl), in order."""
  path = pathlib.Path(workdir) / "rollouts.jsonl"
  if not path.exists():
    return []
  return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def reward_curve(workdir: PathLike) -> list[tuple[int, float]]:
  """[(step, rollout/reward_mean)] from metrics.jsonl."""
  path = pathlib.Path(workdir) / "metrics.jsonl"
  out = []
  if path.exists():
    for line in path.read_text().splitlines():
      rec = json.loads(line)
      if "rollout/reward_mean" in rec:
        out.append((rec["step"], rec["rollout/reward_mean"]))
  return out


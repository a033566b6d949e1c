"""Train checkpoints: Orbax CheckpointManager over state + data position.

  ckpt = Checkpointer(workdir / "checkpoints", keep=3)
  ckpt.save(state, data_state=batcher.get_state(), config=cfg)
  state, data_state = ckpt.restore(abstract_state, shardings)   # latest
  ckpt.close()

One checkpoint per step directory `<dir>/<step>/`, with three items:

  state/   {'step', 'params', 'opt_state', 'rng' (raw key data), 'lora'}
           (StandardCheckpointHandler, OCDBT; 'lora' only in LoRA mode)
  data/    the data iterator state (JSON)
  config/  the TrainConfig (JSON), so a checkpoint explains itself

Restoring builds `jax.ShapeDtypeStruct` targets that carry the requested
shardings, so every device reads only its own shards: nothing is
materialised whole on device 0 (tunix #595). Saves are asynchronous by
default: the arrays are copied off the devices before `save` returns (so
the caller may donate them to the next step) and written in a background
thread; `wait` / `close` block until the writes are committed.

Integrity. Orbax commits a step by renaming its temporary folder and
writing `commit_success.txt`, so a killed save never shows up as a step;
but a step damaged afterwards (a truncated or garbled file from a bad
disk or an interrupted copy, a deleted item) is restored silently: a
flipped byte in a tensor file or in the data JSON loads wrong numbers
without an error (measured). So once a step is committed, process 0
writes `<step>/auditdm_integrity.json` (size + sha256 of every file in
the step folder; atomic rename) -- at the next `save`, `wait` or `close`,
or at once for synchronous saves; it costs one read of the checkpoint.
Restoring checks, newest step first: the commit marker, the `state` and
`data` items, the integrity file when there is one (a step whose process
was killed before sealing it is "unverified" and checked by Orbax alone),
then restores all items in one call and checks the step number. A step
that fails is reported (`logging.warning` naming the step and the reason)
and the next older one is tried; nothing is returned half-restored. When
an older step restores, the bad newer ones are moved aside to
`<dir>/corrupt-<step>-<time>/` (process 0), so the run can save those
steps again; when none restores, `CorruptCheckpointError` lists every
reason and nothing is moved. An explicit `step=` is checked the same way
but never falls back.

From the shell:

  python -m auditdm_jax.train.checkpoint WORKDIR            # list steps
  python -m auditdm_jax.train.checkpoint WORKDIR \\
      --export_params OUT [--step N]                         # params only

`--export_params` writes a `convert.orbax_io.save_params` checkpoint (LoRA
merged in) that evaluation, sampling and HF export read.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import pathlib
import sys
import time
from typing import Any, Optional, Union

import jax
import orbax.checkpoint as ocp

from auditdm_jax import atomic_io
from auditdm_jax.train import state as state_lib
from auditdm_jax.train.config import TrainConfig

PathLike = Union[str, os.PathLike]

_STATE, _DATA, _CONFIG = "state", "data", "config"
COMMIT_MARKER = "commit_success.txt"     # Orbax's, written when committed.
INTEGRITY = "auditdm_integrity.json"     # Ours, written after the commit.
_INTEGRITY_FORMAT = "auditdm_jax.checkpoint_integrity/1"
# Orbax's own step bookkeeping, which it may rewrite after the commit; it
# holds no restored value.
_UNSEALED_FILES = ("_CHECKPOINT_METADATA",)
QUARANTINE_PREFIX = "corrupt-"


class CorruptCheckpointError(ValueError):
  """A checkpoint step is damaged (or no step of a directory is usable)."""


def _file_digest(path: pathlib.Path) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 22), b""):
      h.update(block)
  return h.hexdigest()


def _step_files(step_dir: pathlib.Path) -> list[pathlib.Path]:
  return sorted(p for p in step_dir.rglob("*")
                if p.is_file() and p.name != INTEGRITY
                and not p.name.startswith(f".{INTEGRITY}")
                and str(p.relative_to(step_dir)) not in _UNSEALED_FILES)


def seal_step(step_dir: pathlib.Path) -> None:
  """Writes `step_dir/auditdm_integrity.json` (atomically): the size and
  sha256 of every file of a committed step."""
  files = {str(p.relative_to(step_dir)): [p.stat().st_size, _file_digest(p)]
           for p in _step_files(step_dir)}
  atomic_io.write_text(step_dir / INTEGRITY, json.dumps(
      {"format": _INTEGRITY_FORMAT, "files": files}, sort_keys=True) + "\n")


def check_step(step_dir: pathlib.Path, verify: bool = True
               ) -> Optional[str]:
  """Why the files of a step cannot be trusted, or None (see the module
  docstring); never raises."""
  try:
    if not step_dir.is_dir():
      return "the step folder is missing"
    if not (step_dir / COMMIT_MARKER).is_file():
      return f"no commit marker ({COMMIT_MARKER}): the save never finished"
    for item in (_STATE, _DATA):
      if not (step_dir / item).is_dir():
        return f"the {item!r} item is missing"
    seal = step_dir / INTEGRITY
    if not verify or not seal.exists():
      return None
    try:
      record = json.loads(seal.read_text())
      files = record["files"]
      if record.get("format") != _INTEGRITY_FORMAT:
        return f"{INTEGRITY} has an unknown format {record.get('format')!r}"
    except (ValueError, KeyError, TypeError) as e:
      return f"{INTEGRITY} is unreadable ({e})"
    for rel, (size, digest) in sorted(files.items()):
      path = step_dir / rel
      if not path.is_file():
        return f"file {rel} is missing"
      if path.stat().st_size != size:
        return (f"file {rel} has {path.stat().st_size} bytes, "
                f"{size} when saved (truncated?)")
      if _file_digest(path) != digest:
        return f"file {rel} does not match its sha256 (garbled)"
    return None
  except OSError as e:
    return f"{type(e).__name__}: {e}"


def _to_tree(state: state_lib.TrainState) -> dict:
  tree = {"step": state.step, "params": state.params,
          "opt_state": state.opt_state,
          "rng": jax.random.key_data(state.rng)}
  if state.lora is not None:
    tree["lora"] = state.lora.factors
  return tree


def _from_tree(tree: dict, like: state_lib.TrainState) -> state_lib.TrainState:
  lora = None
  if like.lora is not None:
    lora = like.lora.replace(factors=tree["lora"])
  return state_lib.TrainState(
      step=tree["step"], params=tree["params"], opt_state=tree["opt_state"],
      # create_state makes keys with the default impl; so does this.
      rng=jax.random.wrap_key_data(tree["rng"]),
      lora=lora)


def _targets(abstract: state_lib.TrainState,
             shardings: Optional[state_lib.TrainState]) -> dict:
  """Restore targets: ShapeDtypeStructs carrying shardings."""
  tree = jax.eval_shape(_to_tree, abstract)
  if shardings is None:
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    sh = jax.tree.map(lambda _: device, tree)
  else:
    # The raw key data is placed like the key.
    sh = {"step": shardings.step, "params": shardings.params,
          "opt_state": shardings.opt_state, "rng": shardings.rng}
    if shardings.lora is not None:
      sh["lora"] = shardings.lora.factors
  return jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
      tree, sh)


class Checkpointer:
  """Saves and restores TrainStates with their data position; keeps N."""

  def __init__(self, directory: PathLike, *, keep: int = 3,
               async_save: bool = True, verify: bool = True):
    """Args:
      directory: the checkpoints folder (created).
      keep: how many steps to keep.
      async_save: write in a background thread.
      verify: seal committed steps with an integrity file and check it on
        restore (module docstring); costs one read of each checkpoint.
    """
    self.directory = pathlib.Path(directory).absolute()
    self.verify = verify
    self.async_save = async_save
    self._unsealed: list[int] = []
    # The step the last `restore` returned.
    self.restored_step: Optional[int] = None
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True,
            enable_async_checkpointing=async_save),
        item_handlers={_STATE: ocp.StandardCheckpointHandler(),
                       _DATA: ocp.JsonCheckpointHandler(),
                       _CONFIG: ocp.JsonCheckpointHandler()})

  @classmethod
  def for_workdir(cls, workdir: PathLike, config: TrainConfig
                  ) -> "Checkpointer":
    return cls(pathlib.Path(workdir) / "checkpoints",
               keep=config.keep_checkpoints,
               async_save=config.async_checkpointing)

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def save(self, state: state_lib.TrainState,
           data_state: Optional[dict] = None,
           config: Optional[TrainConfig] = None, *, force: bool = True
           ) -> bool:
    """Saves at `state.step`; returns False if that step already exists."""
    step = int(jax.device_get(state.step))
    if step in self._manager.all_steps():
      return False
    # Orbax waits for the previous save here anyway; seal it first.
    self._seal()
    items = {_STATE: ocp.args.StandardSave(_to_tree(state)),
             _DATA: ocp.args.JsonSave(dict(data_state or {}))}
    if config is not None:
      items[_CONFIG] = ocp.args.JsonSave(config.to_dict())
    saved = self._manager.save(step, args=ocp.args.Composite(**items),
                               force=force)
    if saved:
      self._unsealed.append(step)
      if not self.async_save:
        self._seal()
    return saved

  def _seal(self) -> None:
    """Writes the integrity files of this process's committed saves."""
    if not self._unsealed:
      return
    self._manager.wait_until_finished()
    if self.verify and jax.process_index() == 0:
      for step in self._unsealed:
        step_dir = self.directory / str(step)
        # Gone when max_to_keep already dropped it.
        if (step_dir / COMMIT_MARKER).is_file():
          seal_step(step_dir)
    self._unsealed = []

  def _quarantine(self, steps: list[int]) -> None:
    """Moves damaged steps aside (process 0) so they can be saved again."""
    if jax.process_index() == 0:
      for step in steps:
        src = self.directory / str(step)
        dst = self.directory / f"{QUARANTINE_PREFIX}{step}-{time.time_ns()}"
        try:
          os.replace(src, dst)
          logging.warning("checkpoint step %d in %s moved aside to %s", step,
                          self.directory, dst.name)
        except OSError as e:
          logging.warning("checkpoint step %d in %s could not be moved aside "
                          "(%s)", step, self.directory, e)
    self._manager.reload()

  def _restore_step(self, step: int, abstract, shardings
                    ) -> tuple[state_lib.TrainState, dict]:
    """All items of one step, or CorruptCheckpointError with the reason."""
    reason = check_step(self.directory / str(step), self.verify)
    if reason is None:
      try:
        out = self._manager.restore(step, args=ocp.args.Composite(**{
            _STATE: ocp.args.StandardRestore(_targets(abstract, shardings)),
            _DATA: ocp.args.JsonRestore()}))
        state = _from_tree(out[_STATE], abstract)
        data = {} if out[_DATA] is None else out[_DATA]
        got = int(jax.device_get(state.step))
        if got != step:
          reason = f"its state is at step {got}"
        elif not isinstance(data, dict):
          reason = f"its data item is a {type(data).__name__}, not an object"
        else:
          return state, data
      except Exception as e:  # pylint: disable=broad-except
        # Orbax and TensorStore raise many types for damaged files (ValueError,
        # KeyError, JSONDecodeError, plain Exception...).
        reason = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
    raise CorruptCheckpointError(
        f"checkpoint step {step} in {self.directory} is unusable: {reason}")

  def restore(self, abstract: state_lib.TrainState,
              shardings: Optional[state_lib.TrainState] = None,
              step: Optional[int] = None
              ) -> tuple[state_lib.TrainState, dict]:
    """(state, data_state) of `step` (default: the newest usable step).

    Without `step`, a damaged newest step is reported and skipped for the
    next older one (module docstring); `self.restored_step` says which
    step came back.

    Args:
      abstract: ShapeDtypeStruct TrainState (`state.abstract_state`).
      shardings: TrainState of shardings (`state.state_shardings`), or None
        for the first local device.
      step: which checkpoint (no fallback).
    Raises:
      FileNotFoundError: no checkpoint (at `step`).
      CorruptCheckpointError: `step` (or every step) is unusable.
    """
    self._seal()
    steps = self.all_steps()
    if step is not None:
      if step not in steps:
        raise FileNotFoundError(f"no checkpoint at step {step} in "
                                f"{self.directory} (have {steps})")
      out = self._restore_step(step, abstract, shardings)
      self.restored_step = step
      return out
    if not steps:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    bad, reasons = [], []
    for s in reversed(steps):
      try:
        out = self._restore_step(s, abstract, shardings)
      except CorruptCheckpointError as e:
        older = [t for t in steps if t < s]
        logging.warning("%s; %s", e, f"falling back to step {older[-1]}"
                        if older else "no older step to fall back to")
        bad.append(s)
        reasons.append(f"step {s}: {e}")
        continue
      if bad:
        self._quarantine(bad)
      self.restored_step = s
      return out
    raise CorruptCheckpointError(
        f"no usable checkpoint in {self.directory}: " + "; ".join(reasons)
        + ". Move the directory away to start over.")

  def read_json(self, item: str, step: Optional[int] = None) -> Any:
    """The 'data' or 'config' JSON item of a checkpoint (None if absent).

    Raises:
      CorruptCheckpointError: the item cannot be read.
    """
    step = self.latest_step() if step is None else step
    if step is None or not (self.directory / str(step) / item).is_dir():
      return None
    try:
      out = self._manager.restore(step, args=ocp.args.Composite(
          **{item: ocp.args.JsonRestore()}))
    except Exception as e:  # pylint: disable=broad-except
      raise CorruptCheckpointError(
          f"checkpoint step {step} in {self.directory}: the {item!r} item "
          f"cannot be read ({type(e).__name__}: {e})") from None
    return out[item]

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are committed (and sealed)."""
    self._manager.wait_until_finished()
    self._seal()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._seal()
    self._manager.close()

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def export_params(workdir: PathLike, out: PathLike,
                  step: Optional[int] = None) -> pathlib.Path:
  """Writes the (LoRA-merged) params of a train checkpoint for evaluation."""
  # Only the export needs it. pylint: disable-next=g-import-not-at-top
  from auditdm_jax.convert import orbax_io
  ckpt = Checkpointer(pathlib.Path(workdir) / "checkpoints")
  try:
    # Every step of a run has the same config: any readable one will do
    # (`restore` then skips damaged steps itself).
    config_dict = None
    for s in [step] if step is not None else reversed(ckpt.all_steps()):
      try:
        config_dict = ckpt.read_json(_CONFIG, s)
      except CorruptCheckpointError as e:
        logging.warning("%s", e)
      if config_dict is not None:
        break
    if config_dict is None:
      raise FileNotFoundError(f"no checkpoint with a config in {workdir}")
    config = TrainConfig.from_dict(config_dict)
    model = state_lib.make_model(config)
    state, _ = ckpt.restore(state_lib.abstract_state(model, config), step=step)
  finally:
    ckpt.close()
  return orbax_io.save_params(state.model_params(), out, model.cfg)


def main(argv=None) -> int:
  """Lists the checkpoints of a train workdir, or exports params."""
  parser = argparse.ArgumentParser(description=main.__doc__)
  parser.add_argument("workdir")
  parser.add_argument("--step", type=int, default=None)
  parser.add_argument("--export_params", default=None, metavar="OUT")
  args = parser.parse_args(argv)
  directory = pathlib.Path(args.workdir) / "checkpoints"
  # Checked first: the Checkpointer would create the folder.
  if not directory.is_dir():
    print(f"error: no checkpoints folder in {args.workdir}", file=sys.stderr)
    return 2
  try:
    if args.export_params:
      print(export_params(args.workdir, args.export_params, args.step))
      return 0
    ckpt = Checkpointer(directory)
    try:
      for step in ckpt.all_steps():
        reason = check_step(directory / str(step))
        sealed = (directory / str(step) / INTEGRITY).exists()
        status = (f"unusable ({reason})" if reason else
                  "ok" if sealed else "ok (unverified: not sealed)")
        data = ckpt.read_json(_DATA, step) if not reason else None
        print(f"step {step}: {status}; data {json.dumps(data)}")
      config = ckpt.read_json(_CONFIG)
      if config is not None:
        print(f"config: {json.dumps(config, sort_keys=True)}")
    finally:
      ckpt.close()
  except (FileNotFoundError, FileExistsError, ValueError) as e:
    # CorruptCheckpointError and the export's CheckpointMismatch included.
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())

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

From the shell:

  python -m auditdm_jax.train.checkpoint WORKDIR            # list steps
  python -m auditdm_jax.train.checkpoint WORKDIR \\
      --export_params OUT [--step N]                         # params only

`--export_params` writes a `convert.orbax_io.save_params` checkpoint (LoRA
merged in) that evaluation, sampling and HF export read.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
from typing import Any, Optional, Union

import jax
import orbax.checkpoint as ocp

from auditdm_jax.train import state as state_lib
from auditdm_jax.train.config import TrainConfig

PathLike = Union[str, os.PathLike]

_STATE, _DATA, _CONFIG = "state", "data", "config"


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
               async_save: bool = True):
    self.directory = pathlib.Path(directory).absolute()
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
    items = {_STATE: ocp.args.StandardSave(_to_tree(state)),
             _DATA: ocp.args.JsonSave(dict(data_state or {}))}
    if config is not None:
      items[_CONFIG] = ocp.args.JsonSave(config.to_dict())
    return self._manager.save(step, args=ocp.args.Composite(**items),
                              force=force)

  def restore(self, abstract: state_lib.TrainState,
              shardings: Optional[state_lib.TrainState] = None,
              step: Optional[int] = None
              ) -> tuple[state_lib.TrainState, dict]:
    """(state, data_state) of `step` (default: the latest).

    Args:
      abstract: ShapeDtypeStruct TrainState (`state.abstract_state`).
      shardings: TrainState of shardings (`state.state_shardings`), or None
        for the first local device.
      step: which checkpoint.
    Raises:
      FileNotFoundError: no checkpoint (at `step`).
    """
    step = self.latest_step() if step is None else step
    if step is None or step not in self._manager.all_steps():
      raise FileNotFoundError(
          f"no checkpoint{'' if step is None else f' at step {step}'} in "
          f"{self.directory} (have {self.all_steps()})")
    out = self._manager.restore(step, args=ocp.args.Composite(**{
        _STATE: ocp.args.StandardRestore(_targets(abstract, shardings)),
        _DATA: ocp.args.JsonRestore()}))
    return _from_tree(out[_STATE], abstract), dict(out[_DATA] or {})

  def read_json(self, item: str, step: Optional[int] = None) -> Any:
    """The 'data' or 'config' JSON item of a checkpoint (None if absent)."""
    step = self.latest_step() if step is None else step
    if step is None or not (self.directory / str(step) / item).is_dir():
      return None
    out = self._manager.restore(step, args=ocp.args.Composite(
        **{item: ocp.args.JsonRestore()}))
    return out[item]

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are committed."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
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
    config_dict = ckpt.read_json(_CONFIG, step)
    if config_dict is None:
      raise FileNotFoundError(f"no checkpoint with a config in {workdir}")
    config = TrainConfig.from_dict(config_dict)
    model = state_lib.make_model(config)
    state, _ = ckpt.restore(state_lib.abstract_state(model, config), step=step)
  finally:
    ckpt.close()
  return orbax_io.save_params(state.model_params(), out, model.cfg)


def main(argv=None) -> None:
  """Lists the checkpoints of a train workdir, or exports params."""
  parser = argparse.ArgumentParser(description=main.__doc__)
  parser.add_argument("workdir")
  parser.add_argument("--step", type=int, default=None)
  parser.add_argument("--export_params", default=None, metavar="OUT")
  args = parser.parse_args(argv)
  if args.export_params:
    print(export_params(args.workdir, args.export_params, args.step))
    return
  ckpt = Checkpointer(pathlib.Path(args.workdir) / "checkpoints")
  try:
    for step in ckpt.all_steps():
      print(f"step {step}: data {json.dumps(ckpt.read_json(_DATA, step))}")
    config = ckpt.read_json(_CONFIG)
    if config is not None:
      print(f"config: {json.dumps(config, sort_keys=True)}")
  finally:
    ckpt.close()


if __name__ == "__main__":
  main()

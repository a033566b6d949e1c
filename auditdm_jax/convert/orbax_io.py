"""Self-describing Orbax param checkpoints, restored straight into shardings.

  save_params(params, "/ckpt/pg2", cfg)
  cfg = arch_of_checkpoint("/ckpt/pg2")
  params = restore_params("/ckpt/pg2", shardings=sharding_tree)

On disk (one Orbax composite checkpoint):
  DIR/params/  the param tree (StandardCheckpointHandler, OCDBT)
  DIR/arch/    the full ArchConfig as JSON (`arch_json.arch_to_dict`)

Orbax writes the composite under a temporary name and renames it when every
item is committed, so an interrupted save leaves no checkpoint at DIR.

Restoring builds a ShapeDtypeStruct target per leaf with the requested
sharding, so each device reads only its own shard: a model larger than one
device's (or host's) memory never materialises whole.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any, Optional, Union

import jax
import numpy as np
import orbax.checkpoint as ocp

from auditdm_jax.convert.arch_json import arch_from_dict, arch_to_dict
from auditdm_jax.convert.hf import (CheckpointMismatch, check_params,
                                   compare_shapes, flatten, unflatten)
from auditdm_jax.convert.safetensors_io import CheckpointFileError, as_np_dtype
from auditdm_jax.models.config import ArchConfig

PathLike = Union[str, os.PathLike]

_PARAMS, _ARCH = "params", "arch"


def _checkpointer() -> ocp.Checkpointer:
  # Handlers named per item, so metadata() and partial restores know how to
  # read each item without first being shown a save.
  return ocp.Checkpointer(ocp.CompositeCheckpointHandler(**{
      _PARAMS: ocp.StandardCheckpointHandler(),
      _ARCH: ocp.JsonCheckpointHandler()}))


def save_params(params, directory: PathLike, cfg: Optional[ArchConfig] = None,
                overwrite: bool = False) -> pathlib.Path:
  """Saves a param tree (numpy or jax arrays, any sharding) with its arch.

  Args:
    params: nested dict of arrays.
    directory: destination; must not exist unless `overwrite`.
    cfg: the architecture, recorded so `arch_of_checkpoint` can rebuild the
      model; the params are validated against it before anything is written.
    overwrite: replace an existing checkpoint (Orbax deletes the old one
      before writing, so this is not an atomic swap).
  """
  directory = pathlib.Path(directory).absolute()
  if cfg is not None:
    check_params(params, cfg)
  if directory.exists() and not overwrite:
    raise FileExistsError(f"{directory} already exists (pass overwrite=True to "
                          "replace it)")
  items = {_PARAMS: ocp.args.StandardSave(params)}
  if cfg is not None:
    items[_ARCH] = ocp.args.JsonSave(arch_to_dict(cfg))
  ckptr = _checkpointer()
  ckptr.save(directory, args=ocp.args.Composite(**items), force=overwrite)
  ckptr.close()
  return directory


def _require_checkpoint(directory: pathlib.Path, item: str) -> None:
  if not directory.exists():
    raise FileNotFoundError(f"checkpoint not found: {directory}")
  if not (directory / item).is_dir():
    what = ("no arch record (saved without cfg=?)" if item == _ARCH
            else "no params item; not a checkpoint written by save_params")
    raise CheckpointFileError(f"{directory}: {what}")


def arch_of_checkpoint(directory: PathLike) -> ArchConfig:
  """The ArchConfig recorded by `save_params`."""
  directory = pathlib.Path(directory).absolute()
  _require_checkpoint(directory, _ARCH)
  ckptr = _checkpointer()
  try:
    out = ckptr.restore(directory, args=ocp.args.Composite(
        **{_ARCH: ocp.args.JsonRestore()}))
  finally:
    ckptr.close()
  try:
    return arch_from_dict(out[_ARCH])
  except (TypeError, ValueError) as e:
    raise CheckpointFileError(f"{directory}: bad arch record ({e})") from None


def saved_shapes(
    directory: PathLike) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
  """{path: (shape, dtype)} of the saved params, from metadata only."""
  directory = pathlib.Path(directory).absolute()
  _require_checkpoint(directory, _PARAMS)
  ckptr = _checkpointer()
  try:
    meta = ckptr.metadata(directory).item_metadata[_PARAMS]
  finally:
    ckptr.close()
  tree = getattr(meta, "tree", meta)
  return {p: (tuple(m.shape), np.dtype(m.dtype))
          for p, m in flatten(tree).items()}


def _sharding_for(shardings, path: str,
                  leaf) -> Optional[jax.sharding.Sharding]:
  if shardings is None:
    return getattr(leaf, "sharding", None)
  if isinstance(shardings, jax.sharding.Sharding):
    return shardings
  return shardings[path]


def restore_params(directory: PathLike, shardings: Any = None,
                   abstract: Any = None, dtype=None) -> dict:
  """Restores the params, each leaf placed with its requested sharding.

  Args:
    directory: a `save_params` checkpoint.
    shardings: a tree like the params with a `jax.sharding.Sharding` per leaf
      (typically NamedSharding), or one Sharding for every leaf. Default: the
      `abstract` leaves' shardings, else the first local device.
    abstract: optional ShapeDtypeStruct tree (e.g.
      `Model(cfg).abstract_params()`) fixing the expected structure, shapes
      and dtypes; checked against the checkpoint first. Default: what the
      checkpoint holds.
    dtype: cast every leaf to this dtype on restore (overrides `abstract`'s).
  Raises:
    CheckpointMismatch: the checkpoint's tree differs from `abstract` /
      `shardings` (all differences listed).
  """
  directory = pathlib.Path(directory).absolute()
  saved = saved_shapes(directory)
  if abstract is not None:
    flat_abstract = flatten(abstract)
    compare_shapes({p: tuple(a.shape) for p, a in flat_abstract.items()},
                   {p: s for p, (s, _) in saved.items()})
  else:
    flat_abstract = {p: jax.ShapeDtypeStruct(s, d)
                     for p, (s, d) in saved.items()}
  if shardings is not None and not isinstance(shardings, jax.sharding.Sharding):
    flat_sh = flatten(shardings)
    missing = sorted(set(saved) - set(flat_sh))
    unexpected = sorted(set(flat_sh) - set(saved))
    if missing or unexpected:
      raise CheckpointMismatch(
          missing=[f"sharding for {p}" for p in missing],
          unexpected=[f"sharding for {p}" for p in unexpected])
    shardings = flat_sh
  default = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  cast = as_np_dtype(dtype)
  targets = {}
  for path, leaf in flat_abstract.items():
    sharding = _sharding_for(shardings, path, leaf) or default
    targets[path] = jax.ShapeDtypeStruct(
        tuple(leaf.shape), cast if cast is not None else leaf.dtype,
        sharding=sharding)
  ckptr = _checkpointer()
  try:
    out = ckptr.restore(directory, args=ocp.args.Composite(
        **{_PARAMS: ocp.args.StandardRestore(unflatten(targets))}))
  finally:
    ckptr.close()
  return out[_PARAMS]


def load_checkpoint(directory: PathLike, shardings: Any = None,
                    dtype=None) -> tuple[ArchConfig, dict]:
  """(arch, params): the recorded arch, and the params checked against it.

  Leaves keep their saved dtype unless `dtype` is given.
  """
  cfg = arch_of_checkpoint(directory)
  check_params(unflatten({p: jax.ShapeDtypeStruct(s, d) for p, (s, d)
                          in saved_shapes(directory).items()}), cfg)
  return cfg, restore_params(directory, shardings, dtype=dtype)

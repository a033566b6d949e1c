"""`ArchConfig` <-> JSON-safe dicts, so checkpoints describe themselves.

  d = arch_to_dict(cfg)      # {"format_version": 1, "name": ..., "text": ...}
  cfg == arch_from_dict(d)   # exact round trip, also through json.dumps

The conversion follows the dataclass type hints (nested configs, Optional,
tuples), so fields added to the configs later round-trip without edits here.
Unknown keys are an error rather than being dropped: a checkpoint written by
a newer version should fail loudly, not load as a different model.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Mapping

from auditdm_jax.models.config import ArchConfig

FORMAT_VERSION = 1


def arch_to_dict(cfg: ArchConfig) -> dict[str, Any]:
  """A JSON-serialisable dict (tuples become lists) with a format version."""
  return {"format_version": FORMAT_VERSION, **_encode(cfg)}


def arch_from_dict(d: Mapping[str, Any]) -> ArchConfig:
  """Inverse of `arch_to_dict`; raises ValueError on unknown/missing fields."""
  d = dict(d)
  version = d.pop("format_version", FORMAT_VERSION)
  if version != FORMAT_VERSION:
    raise ValueError(f"arch format_version {version} is not supported "
                     f"(expected {FORMAT_VERSION})")
  return _decode(ArchConfig, d, "arch")


def _encode(x):
  if dataclasses.is_dataclass(x):
    return {f.name: _encode(getattr(x, f.name)) for f in dataclasses.fields(x)}
  if isinstance(x, (tuple, list)):
    return [_encode(v) for v in x]
  return x


def _decode(tp, value, where: str):
  """Builds an instance of type hint `tp` from its JSON form."""
  origin = typing.get_origin(tp)
  if origin in (typing.Union, types.UnionType):
    args = typing.get_args(tp)
    if value is None and type(None) in args:
      return None
    non_none = [a for a in args if a is not type(None)]
    if len(non_none) != 1:
      raise TypeError(f"{where}: cannot decode union {tp}")
    return _decode(non_none[0], value, where)
  if dataclasses.is_dataclass(tp):
    if not isinstance(value, Mapping):
      raise ValueError(f"{where}: expected an object, got {value!r}")
    hints = typing.get_type_hints(tp)
    names = {f.name for f in dataclasses.fields(tp)}
    unknown = sorted(set(value) - names)
    if unknown:
      raise ValueError(f"{where}: unknown fields {unknown}")
    kwargs = {k: _decode(hints[k], v, f"{where}.{k}") for k, v in value.items()}
    try:
      return tp(**kwargs)
    except TypeError as e:  # a required field is missing
      raise ValueError(f"{where}: {e}") from None
  if origin is tuple:
    args = typing.get_args(tp)
    if len(args) == 2 and args[1] is Ellipsis:
      return tuple(_decode(args[0], v, where) for v in value)
    return tuple(_decode(a, v, where) for a, v in zip(args, value))
  if tp is float and isinstance(value, int):
    return float(value)   # json writes 10000.0 back as 10000.0, but be lenient
  return value

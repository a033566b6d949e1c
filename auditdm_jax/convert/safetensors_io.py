"""HF model directories (config.json + safetensors) <-> (ArchConfig, params).

  cfg, params = load_hf_checkpoint("/ckpt/paligemma2-3b-pt-224")
  save_hf_checkpoint(params, cfg, "/out/hf", max_shard_bytes=5 << 30)

Reading: `model.safetensors.index.json` + its shards when present, else
`model.safetensors`. The safetensors format (8-byte little-endian header
length, JSON header, one contiguous data block) is parsed here rather than
through the `safetensors` package: its numpy loader does not read bf16 in
every version, and parsing the header ourselves lets every corrupt or
truncated file be reported by name before any tensor is used. bf16 tensors
come back as `ml_dtypes.bfloat16` arrays with their bits untouched; nothing
is upcast unless `dtype=` asks for it. Every file is validated and every key
mapped (strictly, see `hf.params_from_hf`) before anything is returned.

Writing: config.json (`hf_config.hf_config_from_arch`) plus one
`model.safetensors`, or `model-0000i-of-0000n.safetensors` shards and an
index when the tensors exceed `max_shard_bytes`, in the key layout
transformers' `save_pretrained` writes. The directory is built under a
temporary name next to the destination and renamed into place, so a reader
never sees a half-written checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import shutil
import struct
import uuid
from typing import Any, Iterator, Mapping, Optional, Union

import ml_dtypes
import numpy as np

from auditdm_jax.convert import hf as hf_convert
from auditdm_jax.convert.hf_config import (ConfigError, arch_from_hf_config,
                                           hf_config_from_arch)
from auditdm_jax.models.config import ArchConfig

PathLike = Union[str, os.PathLike]

CONFIG_NAME = "config.json"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

# Real headers are a few hundred KB; anything far larger is a corrupt length.
_MAX_HEADER_BYTES = 100 << 20

_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "U8": np.dtype("u1"), "I8": np.dtype("i1"),
    "U16": np.dtype("<u2"), "I16": np.dtype("<i2"),
    "U32": np.dtype("<u4"), "I32": np.dtype("<i4"),
    "U64": np.dtype("<u8"), "I64": np.dtype("<i8"),
    "F16": np.dtype("<f2"), "F32": np.dtype("<f4"), "F64": np.dtype("<f8"),
    # ml_dtypes types are native-endian; every supported host is little-endian.
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
}
_DTYPE_NAMES = {v: k for k, v in _DTYPES.items()}


class CheckpointFileError(ValueError):
  """A checkpoint file that is corrupt, truncated or inconsistent."""


# --- safetensors files --------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Entry:
  name: str
  dtype: np.dtype
  shape: tuple[int, ...]
  begin: int   # byte offsets into the data block
  end: int


def _no_duplicates(pairs):
  out = {}
  for k, v in pairs:
    if k in out:
      raise CheckpointFileError(f"duplicate key {k!r} in header")
    out[k] = v
  return out


def _read_header(path: pathlib.Path, f) -> tuple[list[_Entry], int, dict]:
  """Parses and checks the header: (entries by offset, data start, metadata)."""
  size = os.fstat(f.fileno()).st_size
  if size < 8:
    raise CheckpointFileError(f"{path}: truncated ({size} bytes, no header)")
  (n,) = struct.unpack("<Q", f.read(8))
  if n > _MAX_HEADER_BYTES or n > size - 8:
    raise CheckpointFileError(
        f"{path}: header length {n} exceeds the file ({size} bytes); the file "
        "is truncated or not safetensors")
  try:
    header = json.loads(f.read(n).decode("utf-8"),
                        object_pairs_hook=_no_duplicates)
  except (UnicodeDecodeError, json.JSONDecodeError, CheckpointFileError) as e:
    raise CheckpointFileError(f"{path}: unreadable header ({e})") from None
  if not isinstance(header, dict):
    raise CheckpointFileError(f"{path}: header is not a JSON object")
  metadata = header.pop("__metadata__", None) or {}
  entries = []
  for name, info in header.items():
    try:
      dtype = _DTYPES[info["dtype"]]
      shape = tuple(int(s) for s in info["shape"])
      begin, end = (int(o) for o in info["data_offsets"])
    except (KeyError, TypeError, ValueError) as e:
      raise CheckpointFileError(
          f"{path}: bad header entry for {name!r}: {info!r} ({e!r})") from None
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if min(shape, default=0) < 0 or end - begin != nbytes:
      raise CheckpointFileError(
          f"{path}: {name!r} has shape {shape} {info['dtype']} ({nbytes} "
          f"bytes) but offsets [{begin}, {end})")
    entries.append(_Entry(name, dtype, shape, begin, end))
  entries.sort(key=lambda e: (e.begin, e.end))
  expected = 0
  for e in entries:
    if e.begin != expected:
      raise CheckpointFileError(
          f"{path}: tensor data is not contiguous at {e.name!r} (offset "
          f"{e.begin}, expected {expected})")
    expected = e.end
  have = size - 8 - n
  if have < expected:
    raise CheckpointFileError(
        f"{path}: truncated: the header describes {expected} bytes of tensor "
        f"data but the file holds {have}")
  if have > expected:
    raise CheckpointFileError(
        f"{path}: {have - expected} unexpected trailing bytes after the tensor "
        "data")
  return entries, 8 + n, metadata


def read_safetensors_header(
    path: PathLike) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
  """{name: (dtype, shape)} without reading any tensor data (validated)."""
  path = pathlib.Path(path)
  with _open(path) as f:
    entries, _, _ = _read_header(path, f)
  return {e.name: (e.dtype, e.shape) for e in entries}


def read_safetensors(path: PathLike) -> dict[str, np.ndarray]:
  """All tensors of one file as owned numpy arrays, in the file's dtypes."""
  path = pathlib.Path(path)
  out = {}
  with _open(path) as f:
    entries, start, _ = _read_header(path, f)
    for e in entries:
      arr = np.empty(e.shape, e.dtype)
      f.seek(start + e.begin)
      got = f.readinto(arr.reshape(-1).view(np.uint8)) if arr.size else 0
      if got != e.end - e.begin:   # file shrank while we were reading
        raise CheckpointFileError(f"{path}: truncated while reading {e.name!r}")
      out[e.name] = arr
  return out


@contextlib.contextmanager
def _open(path: pathlib.Path):
  try:
    f = open(path, "rb")
  except FileNotFoundError:
    raise FileNotFoundError(f"checkpoint file not found: {path}") from None
  with f:
    yield f


def _dtype_name(arr: np.ndarray, key: str) -> str:
  dtype = arr.dtype
  if dtype.byteorder == ">":
    dtype = dtype.newbyteorder("<")
  try:
    return _DTYPE_NAMES[dtype]
  except KeyError:
    raise TypeError(f"{key}: dtype {arr.dtype} cannot be stored in "
                    "safetensors") from None


def write_safetensors(path: PathLike, tensors: Mapping[str, np.ndarray],
                      metadata: Optional[Mapping[str, str]] = None) -> None:
  """Writes one safetensors file, streaming tensor by tensor (sorted keys)."""
  arrays = {k: np.asarray(v) for k, v in sorted(tensors.items())}
  header: dict[str, Any] = {}
  if metadata:
    header["__metadata__"] = dict(metadata)
  offset = 0
  for k, a in arrays.items():
    header[k] = {"dtype": _dtype_name(a, k), "shape": list(a.shape),
                 "data_offsets": [offset, offset + a.nbytes]}
    offset += a.nbytes
  blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
  blob += b" " * (-len(blob) % 8)   # 8-byte aligned data, as safetensors does
  with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(blob)))
    f.write(blob)
    for a in arrays.values():
      if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
      if a.size:
        f.write(np.ascontiguousarray(a).reshape(-1).view(np.uint8).data)
    f.flush()
    os.fsync(f.fileno())


# --- HF model directories -----------------------------------------------------


def _read_json(path: pathlib.Path) -> Any:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except FileNotFoundError:
    raise FileNotFoundError(f"checkpoint file not found: {path}") from None
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise CheckpointFileError(f"{path}: not valid JSON ({e})") from None


def _shard_files(directory: pathlib.Path) -> dict[str, list[str]]:
  """{shard file: keys the index assigns to it} ({SINGLE_FILE: []} if none)."""
  index_path = directory / INDEX_FILE
  if index_path.exists():
    index = _read_json(index_path)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
      raise CheckpointFileError(f"{index_path}: no 'weight_map' object")
    shards: dict[str, list[str]] = {}
    for key, fname in weight_map.items():
      # Shards must sit next to the index: refuse paths that leave the dir.
      if (not isinstance(fname, str) or pathlib.PurePath(fname).name != fname
          or fname in (".", "..")):
        raise CheckpointFileError(
            f"{index_path}: bad shard name {fname!r} for {key!r}")
      shards.setdefault(fname, []).append(key)
    return shards
  if (directory / SINGLE_FILE).exists():
    return {SINGLE_FILE: []}
  others = sorted(p.name for p in directory.glob("*.bin"))
  hint = (f" (found {', '.join(others)}: only safetensors is supported)"
          if others else "")
  raise FileNotFoundError(
      f"{directory}: neither {INDEX_FILE} nor {SINGLE_FILE} found{hint}")


def read_hf_tensors(directory: PathLike) -> dict[str, np.ndarray]:
  """Every tensor of an HF model directory, keyed by the saved names.

  For sharded checkpoints all shard headers are validated against the index
  (each key exactly where the index says, no extras, no duplicates) before any
  tensor data is read.
  """
  directory = pathlib.Path(directory)
  shards = _shard_files(directory)
  problems = []
  if list(shards) != [SINGLE_FILE] or shards[SINGLE_FILE]:
    seen: dict[str, str] = {}
    for fname, keys in shards.items():
      names = set(read_safetensors_header(directory / fname))
      for key in sorted(set(keys) - names):
        problems.append(f"{INDEX_FILE} puts {key!r} in {fname}, which lacks it")
      for key in sorted(names - set(keys)):
        where = f" (the index puts it in {seen[key]})" if key in seen else ""
        problems.append(f"{fname} holds {key!r}, which the index does not "
                        f"assign to it{where}")
      for key in names:
        seen.setdefault(key, fname)
  if problems:
    raise CheckpointFileError(
        f"{directory}: shards disagree with the index:\n  "
        + "\n  ".join(problems))
  tensors: dict[str, np.ndarray] = {}
  for fname in shards:
    tensors.update(read_safetensors(directory / fname))
  return tensors


def as_np_dtype(dtype) -> Optional[np.dtype]:
  """None, or a numpy dtype from "bfloat16" / jnp.bfloat16 / np.float32 ..."""
  if dtype is None:
    return None
  try:
    # Importing ml_dtypes (above) registers the "bfloat16" name with numpy.
    return np.dtype(dtype)
  except TypeError:
    raise ValueError(f"unknown dtype {dtype!r}") from None


def registered_name(cfg: ArchConfig) -> Optional[str]:
  """The registry name of an architecture equal to `cfg` up to its name."""
  from auditdm_jax.models import arch  # pylint: disable=g-import-not-at-top
  for name in arch.names():
    known = arch.get(name)
    if dataclasses.replace(cfg, name=name) == known:
      return name
  return None


def load_hf_config(directory: PathLike,
                   name: Optional[str] = None) -> ArchConfig:
  """The architecture of an HF directory's config.json.

  Named `name`, else after the equal registered architecture, else the
  default name of `arch_from_hf_config`.
  """
  path = pathlib.Path(directory) / CONFIG_NAME
  config = _read_json(path)
  try:
    cfg = arch_from_hf_config(config, name)
  except (ConfigError, KeyError, TypeError, ValueError) as e:
    raise ConfigError(f"{path}: {e}") from None
  if name is None:
    known = registered_name(cfg)
    if known is not None:
      cfg = dataclasses.replace(cfg, name=known)
  return cfg


def load_hf_checkpoint(directory: PathLike, dtype=None,
                       name: Optional[str] = None) -> tuple[ArchConfig, dict]:
  """(ArchConfig, nested numpy params) from an HF model directory.

  Args:
    directory: holds config.json and model.safetensors or an index + shards,
      in any of the key layouts `hf.canonical_key` folds.
    dtype: cast every param to this dtype (e.g. "bfloat16"); default keeps
      each tensor's dtype as stored.
    name: name for the architecture (default: see `load_hf_config`).
  Raises:
    FileNotFoundError: a required file is absent (named).
    CheckpointFileError: a file is corrupt, truncated or inconsistent (named).
    ConfigError: config.json does not describe a supported architecture.
    hf.CheckpointMismatch: missing / unexpected / mis-shaped tensors (all
      listed).
  """
  cfg = load_hf_config(directory, name)
  tensors = read_hf_tensors(directory)
  return cfg, hf_convert.params_from_hf(tensors, cfg, dtype=as_np_dtype(dtype))


# --- writing ------------------------------------------------------------------


@contextlib.contextmanager
def atomic_directory(dst: PathLike,
                     overwrite: bool = False) -> Iterator[pathlib.Path]:
  """Yields a fresh temporary directory that replaces `dst` on success.

  The temporary directory sits next to `dst` (same filesystem, so the final
  rename is atomic) and is deleted if the body raises.
  """
  dst = pathlib.Path(dst)
  if dst.exists() and not overwrite:
    raise FileExistsError(
        f"{dst} already exists (pass overwrite=True to replace it)")
  dst.parent.mkdir(parents=True, exist_ok=True)
  tmp = dst.parent / f".{dst.name}.tmp-{uuid.uuid4().hex[:12]}"
  tmp.mkdir()
  try:
    yield tmp
    if dst.exists():   # overwrite: move the old one aside, swap, then delete it
      old = dst.parent / f".{dst.name}.old-{uuid.uuid4().hex[:12]}"
      os.rename(dst, old)
      os.rename(tmp, dst)
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.rename(tmp, dst)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def _plan_shards(tensors: Mapping[str, np.ndarray],
                 max_shard_bytes: Optional[int]) -> list[list[str]]:
  """Greedy packing in key order; a tensor over the limit gets its own shard."""
  keys = sorted(tensors)
  if max_shard_bytes is None:
    return [keys]
  shards, current, size = [], [], 0
  for k in keys:
    n = tensors[k].nbytes
    if current and size + n > max_shard_bytes:
      shards.append(current)
      current, size = [], 0
    current.append(k)
    size += n
  if current or not shards:
    shards.append(current)
  return shards


def _config_dict(cfg: ArchConfig, tensors: Mapping[str, np.ndarray]) -> dict:
  config = hf_config_from_arch(cfg)
  dtypes = {a.dtype for a in tensors.values()}
  if len(dtypes) == 1:
    # transformers uses this as the default load dtype ("dtype": "auto").
    (dt,) = dtypes
    config["dtype"] = dt.name
  config["tie_word_embeddings"] = True   # the head is always the embedding
  return config


def save_hf_checkpoint(params, cfg: ArchConfig, directory: PathLike,
                       max_shard_bytes: Optional[int] = None,
                       overwrite: bool = False) -> pathlib.Path:
  """Writes `params` as a transformers-loadable directory; returns its path.

  Args:
    params: nested params (numpy or fully addressable jax arrays), any dtype.
    cfg: their architecture (written as config.json).
    directory: destination; must not exist unless `overwrite`.
    max_shard_bytes: shard the tensors into files of at most this many bytes
      (plus an index); default one `model.safetensors`.
    overwrite: replace an existing `directory` (atomically).
  """
  if max_shard_bytes is not None and max_shard_bytes <= 0:
    raise ValueError(f"max_shard_bytes must be > 0, got {max_shard_bytes}")
  hf_convert.check_params(params, cfg)   # extra (e.g. LoRA) or bad leaves
  tensors = hf_convert.params_to_hf(params, cfg)
  config = _config_dict(cfg, tensors)
  plan = _plan_shards(tensors, max_shard_bytes)
  metadata = {"format": "pt"}   # transformers checks this tag on load
  with atomic_directory(directory, overwrite) as tmp:
    with open(tmp / CONFIG_NAME, "w", encoding="utf-8") as f:
      json.dump(config, f, indent=2, sort_keys=True)
      f.write("\n")
    if len(plan) == 1:
      write_safetensors(tmp / SINGLE_FILE, tensors, metadata)
    else:
      weight_map = {}
      for i, keys in enumerate(plan):
        fname = f"model-{i + 1:05d}-of-{len(plan):05d}.safetensors"
        write_safetensors(tmp / fname, {k: tensors[k] for k in keys}, metadata)
        weight_map.update({k: fname for k in keys})
      total = sum(a.nbytes for a in tensors.values())
      index = {"metadata": {"total_size": total},
               "weight_map": dict(sorted(weight_map.items()))}
      with open(tmp / INDEX_FILE, "w", encoding="utf-8") as f:
        json.dump(index, f, indent=2)
        f.write("\n")
  return pathlib.Path(directory)

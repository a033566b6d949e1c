"""big_vision PaliGemma `.npz` checkpoints <-> params.

big_vision saves the flattened param tree with '/'-joined keys, optionally
under a `params/` prefix (released PaliGemma files have it; HF's converter
strips it), both accepted here. Our param tree was laid out after
big_vision's, so almost every key maps to the param of the same path with
the same shape (anchors.md §5.5):

  img/embedding/{kernel,bias}, img/pos_embedding [1, T, W], img/head/*,
  img/Transformer/encoderblock/... (scan-stacked: leading depth axis),
  img/Transformer/encoder_norm/*,
  llm/embedder/input_embedding [V, D], llm/final_norm/scale,
  llm/layers/attn/q_einsum/w [L, N, D, H], kv_einsum/w [L, 2, K, D, H],
  attn_vec_einsum/w [L, N, H, D], llm/layers/mlp/linear [L, F, D],
  llm/layers/{pre_attention,post_attention,pre_ffw,post_ffw}_norm/scale.

The one layout difference: big_vision's `llm/layers/mlp/gating_einsum` is
[L, 2, D, F]; ours (Gemma-3 "transposed" layout, shared with the HF mapping)
is [L, 2, F, D].

big_vision's PaliGemma-2 embedding has 257152 rows while the HF-compatible
architectures carry 64 padding rows (257216). With `pad_vocab` (default) a
smaller embedding is padded with zero rows, which no tokenizer id reaches.

bf16 arrays saved with `np.savez` come back as the raw 2-byte void dtype
('|V2'); they are reinterpreted as bfloat16 (bits unchanged).
"""

from __future__ import annotations

import os
import pathlib
import zipfile
from typing import Mapping, Union

import ml_dtypes
import numpy as np

from auditdm_jax.convert.hf import (CheckpointMismatch, check_params, flatten,
                                   param_shapes, unflatten)
from auditdm_jax.convert.safetensors_io import CheckpointFileError, as_np_dtype
from auditdm_jax.models.config import ArchConfig

PathLike = Union[str, os.PathLike]

PARAMS_PREFIX = "params/"
_GATING = "llm/layers/mlp/gating_einsum"
_EMBEDDING = "llm/embedder/input_embedding"


def _check_family(cfg: ArchConfig) -> None:
  if cfg.family != "paligemma2":
    raise ValueError(f"{cfg.name}: big_vision npz checkpoints exist only for "
                     f"PaliGemma (family 'paligemma2'), not {cfg.family!r}")


def _to_ours(path: str, arr: np.ndarray) -> np.ndarray:
  if path == _GATING:
    # [L, 2, D, F] <-> [L, 2, F, D]
    return np.ascontiguousarray(np.swapaxes(arr, -1, -2))
  return arr


def _to_big_vision(path: str, arr: np.ndarray) -> np.ndarray:
  return _to_ours(path, arr)   # the swap is its own inverse


def _fix_dtype(arr: np.ndarray) -> np.ndarray:
  if arr.dtype.kind == "V" and arr.dtype.itemsize == 2:
    return arr.view(ml_dtypes.bfloat16)
  return arr


def params_from_big_vision(flat: Mapping[str, np.ndarray], cfg: ArchConfig,
                           dtype=None, pad_vocab: bool = True) -> dict:
  """big_vision flat dict ('/'-joined keys, `params/` optional) -> params.

  Raises:
    CheckpointMismatch listing every missing / unexpected / mis-shaped key.
  """
  _check_family(cfg)
  shapes = param_shapes(cfg)
  dtype = as_np_dtype(dtype)
  out, unexpected, misshaped, other, seen = {}, [], [], [], {}
  for key, arr in flat.items():
    path = key[len(PARAMS_PREFIX):] if key.startswith(PARAMS_PREFIX) else key
    if path not in shapes:
      unexpected.append(key)
      continue
    if path in seen:
      other.append(f"{key} and {seen[path]} are the same param")
      continue
    seen[path] = key
    val = _to_ours(path, _fix_dtype(np.asarray(arr)))
    want = shapes[path]
    if (path == _EMBEDDING and pad_vocab and val.ndim == 2
        and val.shape[1] == want[1] and val.shape[0] < want[0]):
      val = np.concatenate([val, np.zeros((want[0] - val.shape[0], want[1]),
                                          val.dtype)])
    if tuple(val.shape) != want:
      shown = val.shape if path != _GATING else np.swapaxes(val, -1, -2).shape
      want_shown = want if path != _GATING else want[:-2] + want[:-3:-1]
      misshaped.append(f"{key}: expected {want_shown}, got {tuple(shown)}")
      continue
    out[path] = val.astype(dtype) if dtype is not None else val
  missing = sorted(set(shapes) - set(seen))
  if missing or unexpected or misshaped or other:
    raise CheckpointMismatch(missing, sorted(unexpected), misshaped, other)
  return unflatten(out)


def load_big_vision_npz(path: PathLike, cfg: ArchConfig, dtype=None,
                        pad_vocab: bool = True) -> dict:
  """Reads a big_vision PaliGemma `.npz` into nested numpy params (validated).

  Raises:
    FileNotFoundError / CheckpointFileError naming the file (and the entry)
    when it is absent, not a zip, or an entry is corrupt;
    CheckpointMismatch for missing / unexpected / mis-shaped keys.
  """
  _check_family(cfg)
  path = pathlib.Path(path)
  if not path.exists():
    raise FileNotFoundError(f"checkpoint file not found: {path}")
  try:
    npz = np.load(path, allow_pickle=False)
  except (zipfile.BadZipFile, EOFError, ValueError, OSError) as e:
    raise CheckpointFileError(f"{path}: not a valid npz file ({e})") from None
  if not isinstance(npz, np.lib.npyio.NpzFile):
    raise CheckpointFileError(f"{path}: a single .npy array, not an npz")
  flat = {}
  with npz:
    for key in npz.files:
      try:
        flat[key] = npz[key]
      except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise CheckpointFileError(
            f"{path}: entry {key!r} is corrupt ({e})") from None
  if not flat:
    raise CheckpointFileError(f"{path}: the npz holds no arrays")
  return params_from_big_vision(flat, cfg, dtype, pad_vocab)


def params_to_big_vision(params, cfg: ArchConfig,
                         prefix: str = PARAMS_PREFIX) -> dict[str, np.ndarray]:
  """Nested params -> big_vision flat dict (keys `prefix` + path)."""
  _check_family(cfg)
  check_params(params, cfg)
  flat = {p: np.asarray(a) for p, a in flatten(params).items()}
  return {prefix + p: _to_big_vision(p, a) for p, a in sorted(flat.items())}


def params_to_big_vision_npz(params, cfg: ArchConfig, path: PathLike,
                             prefix: str = PARAMS_PREFIX) -> None:
  """Writes `params` as a big_vision-style `.npz` (uncompressed), atomically."""
  path = pathlib.Path(path)
  flat = params_to_big_vision(params, cfg, prefix)
  tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
  try:
    with open(tmp, "wb") as f:   # a file object: np.savez would append ".npz"
      np.savez(f, **flat)
    os.replace(tmp, path)
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise

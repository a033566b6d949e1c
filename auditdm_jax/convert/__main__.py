"""Checkpoint conversion CLI.

  python -m auditdm_jax.convert hf2orbax --src HF_DIR --dst ORBAX_DIR \
      [--dtype bfloat16]
  python -m auditdm_jax.convert orbax2hf --src ORBAX_DIR --dst HF_DIR \
      [--max-shard-size 5GB]
  python -m auditdm_jax.convert npz2orbax --src FILE.npz --arch NAME \
      --dst ORBAX_DIR

Every input is validated in full before anything is written, and outputs
appear atomically (temporary name, then rename), so a failed run leaves no
partial output. Errors print one message to stderr and exit with status 1.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from typing import Optional, Sequence

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(text: str) -> int:
  """'5GB' -> 5 * 10**9, '50KiB' -> 51200, '1234' -> 1234 (as transformers)."""
  m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
  if not m or m.group(2).upper() not in _UNITS:
    raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 5GB, 500MiB)")
  return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def _summary(params) -> str:
  # pylint: disable=g-import-not-at-top
  import numpy as np
  from auditdm_jax.convert.hf import flatten
  # pylint: enable=g-import-not-at-top
  flat = flatten(params)
  count = sum(int(np.prod(np.shape(a))) for a in flat.values())
  dtypes = sorted({str(a.dtype) for a in flat.values()})
  return f"{len(flat)} arrays, {count:,} params, {'/'.join(dtypes)}"


def _hf2orbax(args) -> None:
  # pylint: disable-next=g-import-not-at-top
  from auditdm_jax.convert import orbax_io, safetensors_io
  cfg, params = safetensors_io.load_hf_checkpoint(args.src, dtype=args.dtype,
                                                  name=args.name)
  orbax_io.save_params(params, args.dst, cfg, overwrite=args.overwrite)
  print(f"{args.src} -> {args.dst}: arch {cfg.name}, {_summary(params)}")


def _orbax2hf(args) -> None:
  import jax  # pylint: disable=g-import-not-at-top
  # pylint: disable-next=g-import-not-at-top
  from auditdm_jax.convert import orbax_io, safetensors_io
  # Host memory, not an accelerator: the export only reads the arrays back.
  cpu = jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0])
  cfg, params = orbax_io.load_checkpoint(args.src, shardings=cpu,
                                         dtype=args.dtype)
  safetensors_io.save_hf_checkpoint(params, cfg, args.dst,
                                    max_shard_bytes=args.max_shard_size,
                                    overwrite=args.overwrite)
  print(f"{args.src} -> {args.dst}: arch {cfg.name}, {_summary(params)}")


def _npz2orbax(args) -> None:
  # pylint: disable-next=g-import-not-at-top
  from auditdm_jax.convert import big_vision_npz, orbax_io
  from auditdm_jax.models import arch  # pylint: disable=g-import-not-at-top
  if args.arch not in arch.names():
    raise ValueError(f"unknown --arch {args.arch!r}; known: "
                     f"{', '.join(arch.names())}")
  cfg = arch.get(args.arch)
  params = big_vision_npz.load_big_vision_npz(args.src, cfg, dtype=args.dtype,
                                              pad_vocab=not args.no_pad_vocab)
  orbax_io.save_params(params, args.dst, cfg, overwrite=args.overwrite)
  print(f"{args.src} -> {args.dst}: arch {cfg.name}, {_summary(params)}")


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m auditdm_jax.convert",
      description="Convert PaliGemma-2 / Gemma-3 checkpoints between HF "
                  "safetensors, big_vision npz and Orbax.")
  sub = parser.add_subparsers(dest="command", required=True)

  def common(p, dtype_help):
    p.add_argument("--src", required=True)
    p.add_argument("--dst", required=True)
    p.add_argument("--dtype", default=None, help=dtype_help)
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --dst")
    return p

  p = common(sub.add_parser("hf2orbax", help="HF model directory -> Orbax"),
             "cast params (e.g. bfloat16); default keeps the file's dtypes")
  p.add_argument("--name", default=None,
                 help="arch name to record (default: the matching registered "
                      "arch, else derived from config.json)")
  p.set_defaults(fn=_hf2orbax)

  p = common(sub.add_parser("orbax2hf", help="Orbax -> HF model directory"),
             "cast params; default keeps the checkpoint's dtypes")
  p.add_argument("--max-shard-size", type=parse_size, default=None,
                 help="shard safetensors files above this size (e.g. 5GB)")
  p.set_defaults(fn=_orbax2hf)

  p = common(sub.add_parser("npz2orbax",
                            help="big_vision PaliGemma npz -> Orbax"),
             "cast params; default keeps the file's dtypes")
  p.add_argument("--arch", required=True, help="registered arch name, e.g. "
                 "paligemma2_3b_224")
  p.add_argument("--no-pad-vocab", action="store_true",
                 help="fail instead of zero-padding a smaller embedding")
  p.set_defaults(fn=_npz2orbax)
  return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = build_parser().parse_args(argv)
  # Imported here so --help stays fast; these are the failures we explain.
  # pylint: disable=g-import-not-at-top
  from auditdm_jax.convert.hf import CheckpointMismatch
  from auditdm_jax.convert.hf_config import ConfigError
  from auditdm_jax.convert.safetensors_io import CheckpointFileError
  # pylint: enable=g-import-not-at-top
  start = time.time()
  try:
    args.fn(args)
  # The checkpoint errors are ValueErrors; OSError covers missing, existing
  # and unwritable paths. Anything else is a bug and keeps its traceback.
  except (CheckpointMismatch, CheckpointFileError, ConfigError, ValueError,
          OSError) as e:
    print(f"error: {args.command}: {e}", file=sys.stderr)
    return 1
  print(f"done in {time.time() - start:.1f}s", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())

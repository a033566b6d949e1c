"""Command line: prepare one benchmark split (see `builder`).

  python -m auditdm_jax.data.bench --data_dir DIR --benchmark pope \
      --split test --format vlmeval_tsv --source '{"path": "POPE.tsv"}'
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Optional

from auditdm_jax.data.bench import builder
from auditdm_jax.data.bench import formats
from auditdm_jax.data.bench import schema


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = argparse.ArgumentParser(
      prog="python -m auditdm_jax.data.bench",
      description="Read a benchmark split in its released format and write "
                  "it as TFDS array_record (real_bench/<benchmark>-<split>).")
  p.add_argument("--data_dir", required=True, help="TFDS data dir")
  p.add_argument("--benchmark", required=True, choices=sorted(
      schema.BENCHMARKS))
  p.add_argument("--split", required=True, help='e.g. "dev", "val", "testA"')
  p.add_argument("--format", required=True, choices=sorted(formats.FORMATS))
  p.add_argument("--source", required=True, type=json.loads,
                 help="JSON object of the format's fields, e.g. "
                      '\'{"path": "MMBench_DEV_EN_V11.tsv"}\'')
  p.add_argument("--overwrite", action="store_true",
                 help="replace a split prepared from another source")
  args = p.parse_args(argv)
  try:
    src = formats.make_source(args.format, **args.source)
    t0 = time.perf_counter()
    sources = builder.build(args.benchmark, args.split, src, args.data_dir,
                            overwrite=args.overwrite)
  except (ValueError, TypeError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  n = len(sources[args.split])
  meta = builder.metadata(args.data_dir, args.benchmark, args.split)
  print(f"{args.benchmark}/{args.split}: {n} examples "
        f"({meta.get('skipped_rows', 0)} rows skipped) in "
        f"{time.perf_counter() - t0:.1f} s -> "
        f"{builder.dataset_dir(args.data_dir, args.benchmark, args.split)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())

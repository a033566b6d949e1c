r"""Long property-based fuzzing run of every parser and normaliser.

  python scripts/fuzz_long.py --examples 10000 [--only parse_edit,...]
      [--seed 0] [--json OUT]

Runs the targets of tests/test_fuzz.py (the same strategies and checks; the
test suite draws 100 examples each) with `--examples` examples per target
and prints one line per target: examples run, failures, seconds. A failure
prints hypothesis' shrunk counterexample and the script exits 1. Run it
niced beside other work (`nice -n 10 python scripts/fuzz_long.py ...`).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time
import traceback

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import test_fuzz  # pylint: disable=g-import-not-at-top,wrong-import-position


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--examples", type=int, default=10_000)
  p.add_argument("--only", default="", help="comma-separated target names")
  p.add_argument("--seed", type=int, default=None,
                 help="hypothesis seed (default: random)")
  p.add_argument("--json", default=None, help="also write the counts here")
  args = p.parse_args(argv)
  names = [n for n in args.only.split(",") if n] or sorted(test_fuzz.TARGETS)
  unknown = sorted(set(names) - set(test_fuzz.TARGETS))
  if unknown:
    p.error(f"unknown targets {unknown}; known: {sorted(test_fuzz.TARGETS)}")
  # pylint: disable-next=g-import-not-at-top
  from hypothesis import seed as hypothesis_seed
  rows, failed = {}, []
  print(f"{'target':<22} {'examples':>9} {'failures':>9} {'seconds':>8}",
        flush=True)
  for name in names:
    counts = {}
    run = test_fuzz.fuzz(name, args.examples, counts)
    if args.seed is not None:
      run = hypothesis_seed(args.seed)(run)
    t0 = time.perf_counter()
    error = None
    try:
      run()
    except Exception:  # pylint: disable=broad-except  # Report, go on.
      error = traceback.format_exc()
    seconds = time.perf_counter() - t0
    rows[name] = {"examples": counts.get(name, 0),
                  "failures": int(error is not None), "seconds": seconds}
    print(f"{name:<22} {counts.get(name, 0):>9} {int(error is not None):>9} "
          f"{seconds:>8.1f}", flush=True)
    if error:
      failed.append(name)
      print(error, file=sys.stderr)
  total = sum(r["examples"] for r in rows.values())
  print(f"{'total':<22} {total:>9} {len(failed):>9}")
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(
        {"examples_per_target": args.examples, "pid": os.getpid(),
         "targets": rows}, indent=2) + "\n")
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())

r"""Preemption drill: SIGKILL the trainers and the harvester, restart, compare.

  python scripts/preemption.py [--kinds sft,grpo,harvest] [--kills 10]
      [--seeds 0,1,2] [--fresh] [--workdir DIR] [--json OUT]

For each kind and seed: one uninterrupted run, then a run killed with
SIGKILL at `--kills` seeded points (after the k-th checkpoint / harvest unit
appears plus a random delay, or during start-up) and restarted until done;
then the two are compared (tests/preemption_worker.py `compare`: bitwise
params and optimiser state, the same metric lines and rollouts; the same
harvested dataset, nothing lost or duplicated). Prints every process (kill
plan, units before / after, exit code, seconds) and a summary line per run,
and exits 1 if any comparison failed.

The workers are the tiny runs of tests/preemption_worker.py (the test,
tests/test_preemption.py, does 5 kills per kind with seed 0). By default
the workers are forked from a zygote that imported everything once
(restarts then cost the tracing of the steps, not the imports); `--fresh`
starts a new interpreter for every restart instead. Compiled programs come
from a JAX persistent compilation cache under the work directory, warmed by
the uninterrupted runs. `--steps N` lengthens the SFT / GRPO runs (more
checkpoints to kill between).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import preemption_worker as worker  # pylint: disable=g-import-not-at-top,wrong-import-position


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--kinds", default=",".join(worker.KINDS))
  p.add_argument("--kills", type=int, default=10)
  p.add_argument("--seeds", default="0")
  p.add_argument("--steps", type=int, default=None,
                 help="SFT / GRPO steps (default: the worker's)")
  p.add_argument("--fresh", action="store_true",
                 help="a new interpreter per restart (no zygote)")
  p.add_argument("--workdir", default=None,
                 help="where runs and the compile cache go (default: temp)")
  p.add_argument("--json", default=None, help="also write the results here")
  args = p.parse_args(argv)
  kinds = [k for k in args.kinds.split(",") if k]
  bad = sorted(set(kinds) - set(worker.KINDS))
  if bad:
    p.error(f"unknown kinds {bad}; known: {worker.KINDS}")
  if args.steps is not None and "harvest" in kinds and len(kinds) == 1:
    p.error("--steps applies to sft / grpo only")
  seeds = [int(s) for s in args.seeds.split(",") if s]
  root = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="preemption-"))
  root.mkdir(parents=True, exist_ok=True)
  results, failed = [], 0
  with worker.Launcher(root / "jax_cache", zygote=not args.fresh) as launcher:
    for kind in kinds:
      steps = args.steps if kind != "harvest" else None
      ref = root / kind / "ref"
      ref_s = worker.run_to_end(kind, ref, launcher, steps=steps)
      for seed in seeds:
        d = root / kind / f"killed-seed{seed}"
        t0 = time.monotonic()
        log = worker.run_with_kills(kind, d, launcher, kills=args.kills,
                                    seed=seed, steps=steps)
        wall = time.monotonic() - t0
        try:
          counts = worker.compare(kind, ref, d)
          verdict = "identical"
        except AssertionError as e:
          counts, verdict = {}, f"DIFFERENT: {e}"
          failed += 1
        print(f"\n{kind} seed {seed}: {log.kills} kills, "
              f"{len(log.processes)} processes, {wall:.1f} s "
              f"(uninterrupted {ref_s:.1f} s): {verdict} {counts}")
        print(f"  {'after':>5} {'delay':>6} {'units':>9} {'rc':>4} "
              f"{'seconds':>7}")
        for pr in log.processes:
          after = "-" if pr.after is None else pr.after
          delay = "-" if pr.delay is None else f"{pr.delay:.3f}"
          print(f"  {after:>5} {delay:>6} {pr.units_before:>4}->"
                f"{pr.units_after:<4} {pr.returncode:>4} {pr.seconds:>7.2f}")
        results.append({"kind": kind, "seed": seed, "kills": log.kills,
                        "verdict": verdict, "counts": counts,
                        "seconds": wall, "reference_seconds": ref_s,
                        "processes": [vars(pr) for pr in log.processes]})
  print(f"\n{len(results) - failed} of {len(results)} runs identical to "
        f"the uninterrupted ones (work dir {root})")
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())

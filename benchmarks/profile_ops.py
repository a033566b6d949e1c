r"""Where a train step's time goes: a jax.profiler trace, aggregated per XLA op.

  python benchmarks/profile_ops.py --arch paligemma2_world_s --batch 128 \
      --max_len 36 --unroll 4
  python benchmarks/profile_ops.py --arch gemma3_100m_text --batch 8 \
      --max_len 256 --top 30 --json /tmp/prof.json

Runs the project's jitted SFT step (`train.step`, the same one the trainer
and `arith_rate.py` use) on a synthetic batch, traces `--steps` steps, and
prints the ops that take the most time per step, plus totals per op kind
(the op name without its numeric suffix: `ynn_fusion`, `copy_bitcast_fusion`,
...). On XLA:CPU the names tell what a fusion does: `ynn_`/`xnn_` fusions
are the dot kernels, `copy_`/`transpose_` ones are layout copies, the rest
elementwise work. This is how the numbers in results.md's notes were
found (e.g. the per-layer weight slices that made decode copy its weights).
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import pathlib
import re
import sys
import tempfile

import jax

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import arith_rate  # pylint: disable=g-import-not-at-top,wrong-import-position
from auditdm_jax.models import arch as arch_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from auditdm_jax.models.vlm import Model  # pylint: disable=g-import-not-at-top,wrong-import-position

# Trace events that wrap the whole step rather than being one XLA op.
_WRAPPERS = re.compile(r"^(\$|ThunkExecutor|SlinkyThreadPool|PjRt|"
                       r"TfrtCpu|Execute|ParallelLoopRunner)")


def op_times(trace_dir: pathlib.Path, steps: int) -> dict[str, dict]:
  """{op: {'ms': per step, 'calls': per step}} from the newest trace."""
  files = sorted(trace_dir.glob("**/*.trace.json.gz"))
  if not files:
    raise FileNotFoundError(f"no *.trace.json.gz under {trace_dir}")
  events = json.load(gzip.open(files[-1]))["traceEvents"]
  total, calls = collections.Counter(), collections.Counter()
  for e in events:
    if e.get("ph") == "X" and "dur" in e and not _WRAPPERS.match(e["name"]):
      total[e["name"]] += e["dur"]
      calls[e["name"]] += 1
  return {n: {"ms": us / steps / 1e3, "calls": calls[n] / steps}
          for n, us in total.items()}


def by_kind(ops: dict[str, dict]) -> dict[str, float]:
  """Per-step ms summed over ops that differ only in a numeric suffix."""
  kinds = collections.Counter()
  for name, v in ops.items():
    kinds[re.sub(r"[._]\d+$", "", name)] += v["ms"]
  return dict(kinds.most_common())


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--arch", default="paligemma2_world_s",
                 choices=sorted(arch_lib.names()))
  p.add_argument("--batch", type=int, default=128)
  p.add_argument("--max_len", type=int, default=36)
  p.add_argument("--targets", type=int, default=4,
                 help="answer positions with logits (max_target_len)")
  p.add_argument("--unroll", type=int, default=1)
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--top", type=int, default=20)
  p.add_argument("--json", default="")
  a = p.parse_args()
  if min(a.batch, a.max_len, a.targets, a.unroll, a.steps, a.top) < 1:
    p.error("sizes and counts must be >= 1")
  if a.targets >= a.max_len:
    p.error(f"--targets {a.targets} must be < --max_len {a.max_len}")
  model = Model(arch_lib.get(a.arch), unroll=a.unroll)
  step = arith_rate.SftStep(model, a.batch, a.max_len, a.targets)
  for _ in range(2):
    step()
  with tempfile.TemporaryDirectory() as tmp:
    with jax.profiler.trace(tmp, create_perfetto_trace=True):
      for _ in range(a.steps):
        step()
    ops = op_times(pathlib.Path(tmp), a.steps)
  step_ms = sum(v["ms"] for v in ops.values())
  print(f"{a.arch}: batch {a.batch}, T {a.max_len}, unroll {a.unroll}: "
        f"{step_ms:.0f} ms of XLA ops per step, "
        f"{step.flops / 1e9:.1f} GFLOP per step")
  print(f"\n{'ms/step':>9} {'share':>6} {'calls':>6}  op")
  for name, v in sorted(ops.items(), key=lambda kv: -kv[1]["ms"])[:a.top]:
    print(f"{v['ms']:9.2f} {v['ms'] / step_ms:6.1%} {v['calls']:6.0f}  "
          f"{name[:100]}")
  kinds = by_kind(ops)
  print(f"\n{'ms/step':>9} {'share':>6}  op kind")
  for name, ms in list(kinds.items())[:a.top]:
    print(f"{ms:9.2f} {ms / step_ms:6.1%}  {name[:100]}")
  if a.json:
    pathlib.Path(a.json).write_text(json.dumps(
        {"args": vars(a), "step_ms": step_ms, "gflop": step.flops / 1e9,
         "ops": ops, "kinds": kinds}, indent=2) + "\n")


if __name__ == "__main__":
  main()

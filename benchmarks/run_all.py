"""`make bench`: every benchmark, one results file, one table against DESIGN.md §7.

Runs each benchmark script below as its own process (so one's compile
caches and memory peaks never colour another's), in order, with a time
limit each; then reads the JSON each wrote under benchmarks/results/ and
writes

  benchmarks/results.json   machine, versions, every benchmark's exit code,
                            wall time and full results
  benchmarks/results.md     the targets table (measured value, target,
                            met or missed) and each benchmark's own table

A benchmark that fails or runs past its limit is reported as such (its row
says why) and the others still run; the exit code is 1 then.

  python benchmarks/run_all.py                     # everything (~30-40 min)
  python benchmarks/run_all.py --only decode_scaling arith_rate  # updates
                                                   #   those two in the report
  python benchmarks/run_all.py --quick             # smoke run of each script
                                                   #   (overwrites results/)
  python benchmarks/run_all.py --loop_workdir DIR  # + stage times of a world
                                                   #   loop run (summary.json)
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import os
import pathlib
import platform
import subprocess
import sys
import time
from typing import Callable, Optional

HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE / "results"


@dataclasses.dataclass(frozen=True)
class Bench:
  """One benchmark script and how to read its targets.

  Attributes:
    name: the script's stem (benchmarks/<name>.py).
    args: its arguments for the full run.
    quick_args: its arguments for --quick.
    result: the JSON it writes, relative to benchmarks/results/.
    timeout_s: wall-time limit of the full run.
    targets: (label, value from the JSON, target text, met?) rows.
  """
  name: str
  args: tuple[str, ...] = ()
  quick_args: tuple[str, ...] = ("--quick",)
  result: str = ""
  timeout_s: int = 900
  targets: Callable[[dict], list[tuple[str, str, str, Optional[bool]]]] = (
      lambda r: [])


def _sampler_targets(r):
  rows = []
  for c in r.get("cases", []):
    if c["batch"] != 8:
      continue
    target = c["arch"] == "gemma3_100m_text"
    rows.append((f"decode tok/s vs transformers generate, {c['arch']}, B=8",
                 f"{c['decode_speedup']:.2f}x", "≥ 3x" if target else "(info)",
                 c["decode_speedup"] >= 3 if target else None))
    if target and "roofline_fraction" in c:
      rows.append((f"decode tok/s / memory-read roofline, {c['arch']}, B=8",
                   f"{c['roofline_fraction']:.0%}", "(info: ≤ 100%)", None))
  return rows


def _arith_targets(r):
  return [(f"{k} arithmetic rate / matmul ceiling, {r['arch']} B={r['batch']}"
           f" T={r['length']}", f"{r[k]['fraction']:.0%}", "≥ 40%",
           r[k]["fraction"] >= 0.4) for k in ("prefill", "sft_step")]


def _scaling_targets(r):
  return [(f"time(256 new tokens) / time(64), {c['arch']} B={c['batch']}",
           f"{c['ratio_256_over_64']:.2f}x", "≤ 4.5x",
           c["ratio_256_over_64"] <= 4.5) for c in r.get("cases", [])]


def _grpo_targets(r):
  return [(f"GRPO samples/s vs TRL GRPOTrainer, {c['arch']} "
           f"({c['rows']} samples/step)", f"{c['speedup']:.2f}x", "≥ 3x",
           c["speedup"] >= 3) for c in r.get("cases", [])]


def _memory_targets(r):
  rows = []
  for name, run in r.get("runs", {}).items():
    if "peak_ratio" in run:
      rows.append((f"PaliGemma-2-3B forward + 8 tokens, peak RSS / weights "
                   f"({name})", f"{run['peak_ratio']:.2f}x", "≤ 1.3x",
                   run["peak_ratio"] <= 1.3))
  return rows


def _world_grpo_targets(r):
  return [("world GRPO step (64 rows, random zoo), median s",
           f"{r['step_s_median']:.1f} s", "(info)", None)]


BENCHES = (
    Bench("sampler_vs_transformers", result="sampler_vs_transformers.json",
          quick_args=("--archs", "gemma3_tiny_text", "--quick"),
          timeout_s=1200, targets=_sampler_targets),
    Bench("decode_scaling", result="decode_scaling.json",
          quick_args=("--archs", "gemma3_tiny_text", "--quick"),
          targets=_scaling_targets),
    Bench("arith_rate", result="arith_rate.json",
          quick_args=("--arch", "gemma3_tiny_text", "--length", "64",
                      "--quick"),
          targets=_arith_targets),
    Bench("grpo_vs_trl", result="grpo_vs_trl.json", timeout_s=1200,
          targets=_grpo_targets),
    Bench("grpo_world_step", result="grpo_world_step.json",
          quick_args=("--steps", "2"), targets=_world_grpo_targets),
    Bench("paligemma2_3b_memory", result="paligemma2_3b_memory.json",
          args=("--unembed", "chunked"), quick_args=("--analyze_only",),
          timeout_s=1500, targets=_memory_targets),
)


def versions() -> dict:
  out = {"python": platform.python_version()}
  for pkg in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "torch",
              "transformers", "trl", "numpy"):
    try:
      out[pkg] = importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
      out[pkg] = None
  return out


def machine() -> dict:
  cpu = ""
  try:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
        break
  except OSError:
    pass
  mem = ""
  try:
    kb = int(pathlib.Path("/proc/meminfo").read_text().split()[1])
    mem = f"{kb / 2**20:.1f} GiB"
  except (OSError, ValueError, IndexError):
    pass
  return {"cpu": cpu, "cpu_count": os.cpu_count(), "memory": mem,
          "platform": platform.platform(),
          "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}


def run_bench(bench: Bench, quick: bool, log_dir: pathlib.Path) -> dict:
  args = bench.quick_args if quick else bench.args
  cmd = [sys.executable, str(HERE / f"{bench.name}.py"), *args]
  log = log_dir / f"{bench.name}.log"
  print(f"bench: {' '.join(cmd[1:])}  (log {log})", flush=True)
  t0 = time.perf_counter()
  with open(log, "w") as f:
    try:
      rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT,
                          timeout=bench.timeout_s, check=False).returncode
      error = None if rc == 0 else f"exit code {rc} (see {log})"
    except subprocess.TimeoutExpired:
      rc, error = None, f"ran past its {bench.timeout_s} s limit (see {log})"
  shown = [str(pathlib.Path(cmd[1]).relative_to(HERE.parent)), *cmd[2:]]
  entry = {"command": " ".join(["python", *shown]),
           "exit_code": rc, "wall_s": time.perf_counter() - t0,
           "error": error, "result": None, "targets": []}
  path = RESULTS / bench.result
  if error is None and path.exists():
    entry["result"] = json.loads(path.read_text())
    entry["targets"] = [list(t) for t in bench.targets(entry["result"])]
    md = path.with_suffix(".md")
    entry["markdown"] = md.read_text() if md.exists() else None
  elif error is None:
    entry["error"] = f"finished but wrote no {path}"
  print(f"bench: {bench.name} {'ok' if entry['error'] is None else 'FAILED: ' + entry['error']}"
        f" in {entry['wall_s']:.0f} s", flush=True)
  return entry


def loop_stages(workdir: pathlib.Path) -> dict:
  summary = json.loads((workdir / "summary.json").read_text())
  return {"workdir": str(workdir), "stages_s": summary["stages_s"],
          "total_s": summary["total_s"]}


def markdown(report: dict) -> str:
  m, v = report["machine"], report["versions"]
  lines = [
      "# auditdm_jax benchmarks",
      "",
      f"Machine: {m['cpu'] or 'unknown CPU'}, {m['cpu_count']} CPUs, "
      f"{m['memory']} RAM, {m['platform']}; load average at the start "
      f"{m['load_average']}.",
      "Versions: " + ", ".join(f"{k} {x}" for k, x in v.items() if x) + ".",
      f"Written by `python benchmarks/run_all.py{' --quick' if report['quick'] else ''}`"
      f" ({report['date']}). Ratios compare runs on the same machine in the "
      "same process or interleaved; absolute numbers move with the load of "
      "this shared 2-core box.",
      "",
      "## Targets (DESIGN.md §7)",
      "",
      "| measure | value | target | met |",
      "|---|---|---|---|",
  ]
  for name, e in report["benchmarks"].items():
    if e["error"]:
      lines.append(f"| {name} | – | – | not measured: {e['error']} |")
    for label, value, target, met in e["targets"]:
      mark = "–" if met is None else ("yes" if met else "**no**")
      lines.append(f"| {label} | {value} | {target} | {mark} |")
  if report.get("loop"):
    lp = report["loop"]
    lines.append(f"| world demo loop, end to end ({lp['workdir']}) | "
                 f"{lp['total_s'] / 60:.1f} min | ≤ 15 min | "
                 f"{'yes' if lp['total_s'] <= 900 else '**no**'} |")
  else:
    lines.append("| world demo loop, end to end | – | ≤ 15 min | not measured: "
                 "pass --loop_workdir of a `configs/world/loop.py` run |")
  lines += ["", "## Wall time of each benchmark", "",
            "| benchmark | command | s |", "|---|---|---|"]
  for name, e in report["benchmarks"].items():
    lines.append(f"| {name} | `{e['command']}` | {e['wall_s']:.0f} |")
  if report.get("loop"):
    lines += ["", "## World loop stages", "", "| stage | s |", "|---|---|"]
    lines += [f"| {k} | {s:.0f} |" for k, s in report["loop"]["stages_s"].items()]
  for name, e in report["benchmarks"].items():
    if e.get("markdown"):
      body = e["markdown"].strip().splitlines()
      lines += ["", "## " + (body[0].lstrip("# ") if body else name), ""]
      lines += body[1:]
  return "\n".join(lines) + "\n"


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--only", nargs="+", choices=[b.name for b in BENCHES])
  p.add_argument("--quick", action="store_true")
  p.add_argument("--loop_workdir", default="")
  p.add_argument("--out", default=str(HERE / "results"))
  args = p.parse_args()
  RESULTS.mkdir(exist_ok=True)
  log_dir = pathlib.Path(args.out).parent / "logs"
  log_dir.mkdir(parents=True, exist_ok=True)
  report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "quick": args.quick, "machine": machine(), "versions": versions(),
            "benchmarks": {}}
  out = pathlib.Path(args.out)
  previous = out.with_suffix(".json")
  if args.only and previous.exists():
    # A partial run updates its benchmarks in the last report, keeps the rest.
    report["benchmarks"] = json.loads(previous.read_text())["benchmarks"]
  for bench in BENCHES:
    if args.only and bench.name not in args.only:
      continue
    report["benchmarks"][bench.name] = run_bench(bench, args.quick, log_dir)
  report["benchmarks"] = {b.name: report["benchmarks"][b.name] for b in BENCHES
                          if b.name in report["benchmarks"]}
  if args.loop_workdir:
    report["loop"] = loop_stages(pathlib.Path(args.loop_workdir))
  # Written whole, then renamed: a killed run leaves the last report intact.
  for suffix, text in ((".json", json.dumps(report, indent=2) + "\n"),
                       (".md", markdown(report))):
    tmp = out.with_suffix(suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(out.with_suffix(suffix))
  print(markdown(report))
  return 1 if any(e["error"] for e in report["benchmarks"].values()) else 0


if __name__ == "__main__":
  sys.exit(main())

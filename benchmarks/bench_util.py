"""Helpers every benchmark script shares: timing, summaries, result files.

Scripts run as `python benchmarks/<name>.py`, so this module is importable
as `bench_util` from their directory.
"""

from __future__ import annotations

import json
import pathlib
import statistics
import time
from typing import Callable, Sequence


def stats(ts: Sequence[float]) -> dict:
  """{'min', 'median', 'max'} of a list of seconds."""
  return {"min": min(ts), "median": statistics.median(ts), "max": max(ts)}


def timed(fns: Sequence[Callable[[], object]], repeats: int
          ) -> list[list[float]]:
  """Wall times of each function, runs interleaved across functions (so
  load from other processes hits every function alike)."""
  times = [[] for _ in fns]
  for _ in range(repeats):
    for fn, ts in zip(fns, times):
      t0 = time.perf_counter()
      fn()
      ts.append(time.perf_counter() - t0)
  return times


def write_results(out: str | pathlib.Path, results: dict,
                  markdown: Callable[[dict], str]) -> str:
  """Writes <out>.json and <out>.md (each whole, then renamed); returns the
  markdown."""
  out = pathlib.Path(out)
  out.parent.mkdir(parents=True, exist_ok=True)
  text = markdown(results)
  for suffix, body in ((".json", json.dumps(results, indent=2) + "\n"),
                       (".md", text)):
    tmp = out.with_suffix(suffix + ".tmp")
    tmp.write_text(body)
    tmp.replace(out.with_suffix(suffix))
  return text

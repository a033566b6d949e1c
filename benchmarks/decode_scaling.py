"""Decode scaling: wall time of 64, 128 and 256 new tokens from one prompt batch.

DESIGN.md §7: with a KV cache, the cost of a token should not grow with
the number already made, so 256 new tokens should take at most 4.5x the
time of 64 (4x is perfectly flat; the rest allows for attention over a
longer cache). Each row is one whole `sampling.sample` call (prefill +
greedy decode, no EOS, so every row makes exactly N tokens), compiled
once per N beforehand (compile time reported, excluded); the N values
alternate across repeats so load from other processes hits them alike.

  python benchmarks/decode_scaling.py                       # tiny + ~100M, B=8
  python benchmarks/decode_scaling.py --archs gemma3_tiny_text --quick

Writes benchmarks/results/decode_scaling.{json,md}.

Letters: B batch, T prompt length, N new tokens.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import statistics
import time

import jax
import numpy as np

from bench_util import stats, write_results

from auditdm_jax import sampling
from auditdm_jax.models import arch
from auditdm_jax.models.vlm import Model

RESULTS = pathlib.Path(__file__).parent / "results"
NEW_TOKENS = (64, 128, 256)


def run_arch(name: str, b: int, t: int, repeats: int) -> dict:
  cfg = arch.get(name)
  model = Model(cfg)
  params = model.init(jax.random.key(0))
  rng = np.random.default_rng(0)
  prompts = rng.integers(3, cfg.text.vocab_size, (b, t)).astype(np.int32)
  mask = np.ones((b, t), bool)
  buckets = sampling.Buckets(length=t, batch=b, min_length=1)

  def make(n):
    config = sampling.SamplingConfig(temperature=0, max_new_tokens=n)
    def run():
      out = sampling.sample(model, params, prompts, mask, mask.astype(np.int32),
                            key=jax.random.key(0), config=config,
                            buckets=buckets)
      tokens = np.asarray(out.tokens)
      assert tokens.shape == (b, n), tokens.shape
      return tokens
    return run

  runs = {n: make(n) for n in NEW_TOKENS}
  compile_s = {}
  for n, fn in runs.items():
    t0 = time.perf_counter()
    fn()
    compile_s[n] = time.perf_counter() - t0
  times = {n: [] for n in NEW_TOKENS}
  for _ in range(repeats):
    for n, fn in runs.items():
      t0 = time.perf_counter()
      fn()
      times[n].append(time.perf_counter() - t0)
  med = {n: statistics.median(ts) for n, ts in times.items()}
  return {
      "arch": name, "batch": b, "prompt_len": t,
      "first_call_s": {str(n): s for n, s in compile_s.items()},
      "seconds": {str(n): stats(ts) for n, ts in times.items()},
      "tokens_per_s": {str(n): b * n / med[n] for n in NEW_TOKENS},
      "ratio_256_over_64": med[256] / med[64],
      "ratio_128_over_64": med[128] / med[64],
  }


def markdown(results: dict) -> str:
  m = results["machine"]
  lines = [
      "# Decode scaling (time for 64 / 128 / 256 new tokens)",
      "",
      f"Machine: {m['cpu_count']} CPUs, {m['platform']}; jax {m['jax']}. "
      f"f32, greedy, no EOS; one `sampling.sample` call per row (prefill "
      f"included), medians of {results['repeats']} interleaved runs.",
      "",
      "| arch | B | T | 64 tok s | 128 tok s | 256 tok s | 128/64 | 256/64 "
      "| target 256/64 |",
      "|---|---|---|---|---|---|---|---|---|",
  ]
  for r in results["cases"]:
    s = r["seconds"]
    lines.append(
        f"| {r['arch']} | {r['batch']} | {r['prompt_len']} | "
        f"{s['64']['median']:.3f} | {s['128']['median']:.3f} | "
        f"{s['256']['median']:.3f} | {r['ratio_128_over_64']:.2f}x | "
        f"**{r['ratio_256_over_64']:.2f}x** | ≤ 4.5x |")
  return "\n".join(lines) + "\n"


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--archs", nargs="+",
                 default=["gemma3_tiny_text", "gemma3_100m_text"])
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--prompt_len", type=int, default=32)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--quick", action="store_true")
  p.add_argument("--out", default=str(RESULTS / "decode_scaling"))
  args = p.parse_args()
  repeats = 1 if args.quick else args.repeats
  results = {
      "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                  "jax": jax.__version__},
      "repeats": repeats,
      "cases": [run_arch(a, args.batch, args.prompt_len, repeats)
                for a in args.archs],
  }
  print(write_results(args.out, results, markdown))


if __name__ == "__main__":
  main()

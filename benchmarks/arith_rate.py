"""Arithmetic rate of prefill and of an SFT step, against the matmul ceiling.

DESIGN.md §7: prefill and the SFT step should run at ≥ 40% of the measured
JAX matmul ceiling on a ~100M-parameter config, on the same machine in the
same run. Three measurements:

  ceiling   the best f32 GFLOP/s of one jitted `a @ b` over square sizes
            (512, 1024, 2048) and over the ~100M model's own projection
            shapes ([B*T, D] x [D, F]) — whatever this CPU's XLA dot does best.
  prefill   `Model.prefill` on B x T prompt tokens (fills the KV cache).
  sft_step  one jitted, donated train step (`train.step.make_train_step`):
            forward, backward over every parameter, AdamW update.

FLOPs come from XLA's own cost analysis of each program compiled with the
layer scans fully unrolled (so attention, the gathered LM head and the
optimiser count as they are actually computed; the analysis counts a loop
body once, so the scanned program would under-count by the number of
layers); the rate is FLOPs / median wall time of the program timed, which
runs with `--unroll` layers per scan iteration (1 = the default loop). Compile time is
excluded and reported. Runs of the three alternate, so load from other
processes hits all of them alike.

  python benchmarks/arith_rate.py                 # gemma3_100m_text, B=8 T=256
  python benchmarks/arith_rate.py --arch gemma3_tiny_text --quick

Writes benchmarks/results/arith_rate.{json,md}.

Letters: B batch, T tokens per row, D model dim, F MLP hidden dim, K answer
positions scored by the SFT loss.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from bench_util import stats, timed, write_results

from auditdm_jax.models import arch
from auditdm_jax.models.vlm import Model
from auditdm_jax.train import state as state_lib
from auditdm_jax.train import step as step_lib
from auditdm_jax.train.config import TrainConfig

RESULTS = pathlib.Path(__file__).parent / "results"


def compiled_flops(compiled) -> float:
  """XLA's FLOP count of a compiled program (0 if it gives none)."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # Older jax: one dict per program.
    cost = cost[0] if cost else {}
  return float((cost or {}).get("flops", 0.0))


class Matmul:
  """One jitted f32 [m, k] @ [k, n]."""

  def __init__(self, m: int, k: int, n: int):
    rng = np.random.default_rng(0)
    self.shape = (m, k, n)
    self.a = jnp.asarray(rng.standard_normal((m, k)), jnp.float32)
    self.b = jnp.asarray(rng.standard_normal((k, n)), jnp.float32)
    self.fn = jax.jit(jnp.matmul)
    self.flops = 2.0 * m * k * n
    self()

  def __call__(self):
    return jax.block_until_ready(self.fn(self.a, self.b))


def matmul_shapes(cfg, b: int, t: int, quick: bool):
  squares = [(n, n, n) for n in ((256, 512) if quick else (512, 1024, 2048))]
  d, f = cfg.text.embed_dim, cfg.text.hidden_dim
  model = [(b * t, d, f), (b * t, f, d)]
  return squares + model


def full_unroll(model: Model) -> Model:
  """The same model with every layer scan unrolled (for FLOP counting)."""
  c = model.cfg
  return dataclasses.replace(model, unroll=max(
      c.text.num_layers, c.vision.depth if c.vision else 1))


def build_prefill(model: Model, params, b: int, t: int):
  """A jitted prefill over B x T random prompt tokens, and its FLOPs."""
  batch = sft_batch(model.cfg, b, t, 1)
  tokens, images = batch["tokens"], batch.get("images")
  ones = jnp.ones((b, t), bool)

  def program(m):
    def prefill(p, x, im):
      emb = m.embed(p, x, ones, ones.astype(jnp.int32), im)
      return m.prefill(p, emb, t)[0]
    return jax.jit(prefill).lower(params, tokens, images).compile()

  compiled = program(model)
  flops = compiled_flops(program(full_unroll(model)))
  return (lambda: jax.block_until_ready(compiled(params, tokens, images)),
          flops)


def image_tokens(cfg) -> int:
  """M: soft tokens one image takes in the sequence."""
  v = cfg.vision
  grid = v.image_size // v.patch_size
  pool = cfg.pool if cfg.projector == "pool_norm" else 1
  return (grid // pool) ** 2


def sft_batch(cfg, b: int, t: int, k: int) -> dict:
  """A causal batch whose last K-1 tokens are the answer; for vision archs
  the first M positions are one image's placeholders."""
  rng = np.random.default_rng(2)
  loss_mask = np.zeros((b, t), np.int32)
  loss_mask[:, t - k + 1:] = 1
  tokens = rng.integers(3, cfg.text.vocab_size, (b, t)).astype(np.int32)
  batch = {"mask_ar": np.ones((b, t), np.int32),
           "input_mask": np.ones((b, t), bool), "loss_mask": loss_mask}
  if cfg.vision is not None:
    tokens[:, :image_tokens(cfg)] = cfg.image_token_id
    s = cfg.vision.image_size
    batch["images"] = rng.uniform(-1, 1, (b, 1, s, s, 3)).astype(np.float32)
  batch["tokens"] = tokens
  return batch


class SftStep:
  """The project's jitted train step; state is threaded (it is donated)."""

  def __init__(self, model: Model, b: int, t: int, k: int):
    config = TrainConfig(arch=model.cfg.name, batch_size=b, max_len=t,
                         max_target_len=k, total_steps=10**6, lr=1e-5,
                         weight_decay=0.0, progress=False)
    self.step = step_lib.make_train_step(model, config)
    self.state = state_lib.create_state(model, config)
    self.batch = self.step.put_batch(sft_batch(model.cfg, b, t, k))
    counted = step_lib.TrainStep(full_unroll(model), config)
    self.flops = compiled_flops(counted._jitted.lower(  # pylint: disable=protected-access
        self.state, self.batch).compile())
    self()  # Compile through the step's own cache.

  def __call__(self):
    self.state, metrics = self.step(self.state, self.batch)
    return jax.block_until_ready(metrics)


def markdown(results: dict) -> str:
  m = results["machine"]
  c = results["ceiling"]
  lines = [
      "# Arithmetic rate vs the JAX matmul ceiling",
      "",
      f"Machine: {m['cpu_count']} CPUs, {m['platform']}; jax {m['jax']} "
      f"({m['backend']}). f32; layer scans unrolled {results['unroll']}x; "
      f"medians of {results['repeats']} interleaved runs; FLOPs from XLA's "
      f"cost analysis of each program with its layers unrolled.",
      "",
      f"Matmul ceiling: **{c['gflops']:.1f} GFLOP/s** "
      f"(best of {len(results['matmuls'])} shapes, at "
      f"{'x'.join(map(str, c['shape']))}).",
      "",
      "| program | arch | B | T | GFLOP | median s | min s | max s | "
      "GFLOP/s | of ceiling | target |",
      "|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for name in ("prefill", "sft_step"):
    r = results[name]
    lines.append(
        f"| {name} | {results['arch']} | {results['batch']} | "
        f"{results['length']} | {r['flops'] / 1e9:.1f} | "
        f"{r['seconds']['median']:.3f} | {r['seconds']['min']:.3f} | "
        f"{r['seconds']['max']:.3f} | {r['gflops']:.1f} | "
        f"**{r['fraction']:.0%}** | ≥ 40% |")
  lines += ["", "Matmul shapes (m x k x n): "
            + ", ".join(f"{'x'.join(map(str, r['shape']))} "
                        f"{r['gflops']:.0f}" for r in results["matmuls"])
            + " GFLOP/s (median)."]
  return "\n".join(lines) + "\n"


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--arch", default="gemma3_100m_text")
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--length", type=int, default=256)
  p.add_argument("--answer", type=int, default=32,
                 help="K: answer positions scored by the SFT loss")
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--unroll", type=int, default=1,
                 help="layers per scan iteration of the timed programs")
  p.add_argument("--quick", action="store_true")
  p.add_argument("--out", default=str(RESULTS / "arith_rate"))
  args = p.parse_args()
  if args.quick:
    args.repeats = 2
  cfg = arch.get(args.arch)
  b, t = args.batch, args.length

  t0 = time.perf_counter()
  matmuls = [Matmul(*s) for s in matmul_shapes(cfg, b, t, args.quick)]
  model = Model(cfg, unroll=args.unroll)
  params = model.init(jax.random.key(0))
  prefill, prefill_flops = build_prefill(model, params, b, t)
  prefill()
  sft = SftStep(model, b, t, args.answer)
  compile_s = time.perf_counter() - t0

  times = timed(matmuls + [prefill, sft], args.repeats)
  mm = [{"shape": list(m.shape),
         "gflops": m.flops / statistics.median(ts) / 1e9,
         "seconds": stats(ts)} for m, ts in zip(matmuls, times)]
  best = max(mm, key=lambda r: r["gflops"])

  def rate(flops, ts):
    g = flops / statistics.median(ts) / 1e9
    return {"flops": flops, "seconds": stats(ts), "gflops": g,
            "fraction": g / best["gflops"]}

  results = {
      "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                  "jax": jax.__version__, "backend": jax.default_backend()},
      "arch": cfg.name, "unroll": args.unroll, "batch": b, "length": t, "answer": args.answer,
      "repeats": args.repeats, "setup_and_compile_s": compile_s,
      "matmuls": mm, "ceiling": {"gflops": best["gflops"],
                                 "shape": best["shape"]},
      "prefill": rate(prefill_flops, times[-2]),
      "sft_step": rate(sft.flops, times[-1]),
  }
  print(write_results(args.out, results, markdown))


if __name__ == "__main__":
  main()

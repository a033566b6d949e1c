"""Prefill time and greedy decode throughput: our sampler vs transformers.

Same random weights (built in transformers, converted with
`auditdm_jax.convert.hf_reference`), same CPU, f32, greedy, no EOS, so
every row makes exactly N new tokens. For each architecture and batch size:

  prefill_s   one prompt forward that fills the KV cache (ours: jitted
              `Model.prefill`; transformers: `model(ids, use_cache=True)`)
  decode_tps  new tokens per second of the whole generate call after the
              prefill: B * N / (generate_s - prefill_s)

Roofline: a decode step must read every weight once, so at batch B the
step rate cannot beat read_GBps / weight_bytes (read_GBps: the best rate
of a jitted f32 sum over 512 MB on this machine, measured in the same run),
i.e. decode_tps <= B * read_GBps / weight_bytes. `weight_GBps` is the
weight bytes each side actually streamed per second while decoding
(weight_bytes * decode_tps / B), and `roofline_fraction` = ours / bound.

Our compile time is reported separately and excluded (it is paid once per
bucket). Each measurement is the median of --repeats runs (min and max are
kept in the JSON); runs of ours and theirs alternate so load from other
processes hits both alike. The greedy tokens of both are compared.

  python benchmarks/sampler_vs_transformers.py            # tiny + ~100M, B=1,8
  python benchmarks/sampler_vs_transformers.py --archs gemma3_tiny_text --quick

Writes benchmarks/results/sampler_vs_transformers.{json,md}.

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
import jax.numpy as jnp
import numpy as np
import torch
import transformers

from bench_util import stats, timed, write_results

from auditdm_jax import sampling
from auditdm_jax.convert import hf_reference
from auditdm_jax.models import arch
from auditdm_jax.models.vlm import Model

RESULTS = pathlib.Path(__file__).parent / "results"


def build_hf(cfg):
  """A random f32 eval-mode transformers Gemma3ForCausalLM (sdpa attention)."""
  if cfg.vision is not None:
    raise SystemExit(f"{cfg.name}: the benchmark covers text-only archs")
  return hf_reference.build_hf(cfg, attn_implementation="sdpa")


def run_case(cfg, model, params, hf_model, b, t, n, repeats):
  rng = np.random.default_rng(b)
  prompts = rng.integers(3, cfg.text.vocab_size, (b, t)).astype(np.int32)
  mask = np.ones((b, t), bool)
  buckets = sampling.Buckets(length=t, batch=b, min_length=1)
  config = sampling.SamplingConfig(temperature=0, max_new_tokens=n)
  ids = torch.from_numpy(prompts.astype(np.int64))

  prefill = jax.jit(lambda p, x: model.prefill(
      p, model.embed(p, x, jnp.ones(x.shape, bool), jnp.ones(x.shape, jnp.int32)),
      t + n)[0])

  def ours_prefill():
    return jax.block_until_ready(prefill(params, prompts))

  def ours_generate():
    out = sampling.sample(model, params, prompts, mask, mask.astype(np.int32),
                          key=jax.random.key(0), config=config, buckets=buckets)
    return np.asarray(out.tokens)

  def theirs_prefill():
    with torch.no_grad():
      return hf_model(ids, attention_mask=torch.ones_like(ids), use_cache=True)

  def theirs_generate():
    with torch.no_grad():
      return hf_model.generate(
          ids, attention_mask=torch.ones_like(ids), do_sample=False,
          max_new_tokens=n, min_new_tokens=n, eos_token_id=None,
          pad_token_id=0)[:, t:].numpy()

  t0 = time.perf_counter()
  ours_prefill()
  our_tokens = ours_generate()
  compile_s = time.perf_counter() - t0
  their_tokens = theirs_generate()
  pre_o, gen_o, pre_t, gen_t = timed(
      [ours_prefill, ours_generate, theirs_prefill, theirs_generate], repeats)
  med = statistics.median
  ours_tps = b * n / max(med(gen_o) - med(pre_o), 1e-9)
  theirs_tps = b * n / max(med(gen_t) - med(pre_t), 1e-9)
  return {
      "arch": cfg.name, "batch": b, "prompt_len": t, "new_tokens": n,
      "ours": {"compile_s": compile_s, "prefill_s": stats(pre_o),
               "generate_s": stats(gen_o), "decode_tps": ours_tps},
      "transformers": {"prefill_s": stats(pre_t), "generate_s": stats(gen_t),
                       "decode_tps": theirs_tps},
      "decode_speedup": ours_tps / theirs_tps,
      "prefill_speedup": med(pre_t) / med(pre_o),
      "greedy_tokens_equal": float((our_tokens == their_tokens).mean()),
  }


def read_bandwidth(repeats: int = 5, nbytes: int = 512 << 20) -> float:
  """GB/s of the best jitted f32 sum over `nbytes` (a memory read ceiling)."""
  x = jnp.ones((nbytes // 4,), jnp.float32)
  total = jax.jit(jnp.sum)
  total(x).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    total(x).block_until_ready()
    best = min(best, time.perf_counter() - t0)
  return nbytes / best / 1e9


def add_roofline(r: dict, weight_bytes: int, read_gbps: float) -> None:
  b = r["batch"]
  bound = b * read_gbps * 1e9 / weight_bytes
  r["weight_bytes"] = weight_bytes
  r["roofline_decode_tps"] = bound
  r["roofline_fraction"] = r["ours"]["decode_tps"] / bound
  for side in ("ours", "transformers"):
    r[side]["weight_GBps"] = weight_bytes * r[side]["decode_tps"] / b / 1e9


def markdown(results: dict) -> str:
  m = results["machine"]
  lines = [
      "# Sampler vs transformers generate",
      "",
      f"Machine: {m['cpu_count']} CPUs, {m['platform']}; jax {m['jax']}, "
      f"torch {m['torch']} ({m['torch_threads']} threads), transformers "
      f"{m['transformers']}. f32, greedy, medians of {results['repeats']} runs. "
      f"Memory read ceiling (jitted f32 sum over 512 MB): "
      f"{results['read_GBps']:.1f} GB/s; the roofline column is the decode "
      "rate if every step streamed the weights at that rate.",
      "",
      "| arch | B | T | N | ours prefill ms | HF prefill ms | ours decode tok/s "
      "| HF decode tok/s | decode speed-up | tokens equal | weight GB/s ours / HF "
      "| roofline tok/s | ours / roofline |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for r in results["cases"]:
    lines.append(
        f"| {r['arch']} | {r['batch']} | {r['prompt_len']} | {r['new_tokens']} "
        f"| {r['ours']['prefill_s']['median'] * 1e3:.1f} "
        f"| {r['transformers']['prefill_s']['median'] * 1e3:.1f} "
        f"| {r['ours']['decode_tps']:.1f} | {r['transformers']['decode_tps']:.1f} "
        f"| {r['decode_speedup']:.2f}x | {r['greedy_tokens_equal']:.0%} "
        f"| {r['ours']['weight_GBps']:.1f} / "
        f"{r['transformers']['weight_GBps']:.1f} "
        f"| {r['roofline_decode_tps']:.1f} | {r['roofline_fraction']:.0%} |")
  return "\n".join(lines) + "\n"


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--archs", nargs="+",
                  default=["gemma3_tiny_text", "gemma3_100m_text"])
  ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
  ap.add_argument("--prompt-len", type=int, default=32)
  ap.add_argument("--new-tokens", type=int, default=64)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--quick", action="store_true", help="one repeat")
  ap.add_argument("--out", default=str(RESULTS / "sampler_vs_transformers"))
  args = ap.parse_args()
  repeats = 1 if args.quick else args.repeats

  results = {
      "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                  "jax": jax.__version__, "torch": torch.__version__,
                  "transformers": transformers.__version__,
                  "torch_threads": torch.get_num_threads(),
                  "backend": jax.default_backend()},
      "repeats": repeats, "read_GBps": read_bandwidth(), "cases": []}
  for name in args.archs:
    cfg = arch.get(name)
    model = Model(cfg)
    hf_model = build_hf(cfg)
    params = jax.tree.map(jnp.asarray, hf_reference.params_of(hf_model, cfg))
    weight_bytes = sum(x.nbytes for x in jax.tree.leaves(params))
    for b in args.batches:
      r = run_case(cfg, model, params, hf_model, b, args.prompt_len,
                   args.new_tokens, repeats)
      add_roofline(r, weight_bytes, results["read_GBps"])
      results["cases"].append(r)
      print(f"{name} B={b}: decode {r['ours']['decode_tps']:.1f} vs "
            f"{r['transformers']['decode_tps']:.1f} tok/s "
            f"({r['decode_speedup']:.2f}x), prefill "
            f"{r['ours']['prefill_s']['median'] * 1e3:.1f} vs "
            f"{r['transformers']['prefill_s']['median'] * 1e3:.1f} ms, "
            f"tokens equal {r['greedy_tokens_equal']:.0%}", flush=True)
  print(write_results(args.out, results, markdown))


if __name__ == "__main__":
  main()

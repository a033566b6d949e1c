"""Greedy decode throughput: our jitted sampler vs transformers `generate`.

Both run the same random weights (built in transformers, converted with
`auditdm_jax.convert.hf.params_from_hf`) on the same CPU, f32, greedy, with
no EOS so every row makes exactly --new-tokens tokens. Our compile time is
reported separately and excluded from the throughput (it is paid once per
bucket). The tokens of both are compared as a sanity check.

  python benchmarks/sampler_vs_transformers.py                  # 100M text model
  python benchmarks/sampler_vs_transformers.py --arch gemma3_tiny_text --quick

Also prints the length scaling of our decode (--new-tokens vs 4x that), which
should stay near 4x with a KV cache (DESIGN.md target: <= 4.5x).

Letters: B batch, T prompt length, N new tokens.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers

from auditdm_jax import sampling
from auditdm_jax.convert import hf as hf_convert
from auditdm_jax.convert.hf_config import hf_config_from_arch
from auditdm_jax.models import arch
from auditdm_jax.models.vlm import Model


def build_hf(cfg, seed: int = 0, scale: float = 0.05):
  """A random f32 eval-mode transformers model for a text-only arch."""
  if cfg.vision is not None:
    raise SystemExit(f"{cfg.name}: the benchmark covers text-only archs")
  d = hf_config_from_arch(cfg)
  config = transformers.CONFIG_MAPPING[d["model_type"]](**d)
  config._attn_implementation = "eager"  # pylint: disable=protected-access
  torch.manual_seed(seed)
  model = transformers.Gemma3ForCausalLM(config).float().eval()
  with torch.no_grad():
    for p in model.parameters():
      p.copy_(torch.randn_like(p) * scale)
  return model


def best_of(fns, repeats: int) -> list[float]:
  """Best wall time of each function. Runs alternate between the functions,
  so load from other processes hits them alike."""
  times = [[] for _ in fns]
  for _ in range(repeats):
    for fn, ts in zip(fns, times):
      t0 = time.perf_counter()
      fn()
      ts.append(time.perf_counter() - t0)
  return [min(ts) for ts in times]


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--arch", default="gemma3_100m_text")
  ap.add_argument("--batch", type=int, default=4)
  ap.add_argument("--prompt-len", type=int, default=32)
  ap.add_argument("--new-tokens", type=int, default=64)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--threads", type=int, default=0,
                  help="torch intra-op threads (0: torch's default)")
  ap.add_argument("--quick", action="store_true",
                  help="one repeat, no length-scaling run")
  args = ap.parse_args()
  if args.threads:
    torch.set_num_threads(args.threads)
  repeats = 1 if args.quick else args.repeats

  cfg = arch.get(args.arch)
  model = Model(cfg)
  hf_model = build_hf(cfg)
  tensors = {k: v.detach().numpy() for k, v in hf_model.state_dict().items()}
  params = jax.tree.map(jnp.asarray, hf_convert.params_from_hf(tensors, cfg))

  b, t, n = args.batch, args.prompt_len, args.new_tokens
  rng = np.random.default_rng(0)
  prompts = rng.integers(3, cfg.text.vocab_size, (b, t)).astype(np.int32)
  mask = np.ones((b, t), bool)
  # Exact buckets: the prompt is not padded, so both sides do the same work.
  buckets = sampling.Buckets(length=t, batch=b, min_length=1)

  def ours(new_tokens):
    config = sampling.SamplingConfig(temperature=0, max_new_tokens=new_tokens)
    out = sampling.sample(model, params, prompts, mask, mask.astype(np.int32),
                          key=jax.random.key(0), config=config, buckets=buckets)
    return jax.block_until_ready(out.tokens)

  def theirs():
    with torch.no_grad():
      ids = torch.from_numpy(prompts.astype(np.int64))
      return hf_model.generate(
          ids, attention_mask=torch.ones_like(ids), do_sample=False,
          max_new_tokens=n, min_new_tokens=n, eos_token_id=None,
          pad_token_id=0)[:, t:].numpy()

  t0 = time.perf_counter()
  our_tokens = np.asarray(ours(n))
  compile_s = time.perf_counter() - t0
  their_tokens = theirs()
  our_s, their_s = best_of([lambda: ours(n), theirs], repeats)

  print(f"arch={cfg.name} B={b} T={t} N={n} backend={jax.default_backend()} "
        f"torch_threads={torch.get_num_threads()}")
  print(f"  ours (jit, first call incl. compile): {compile_s:8.2f} s")
  print(f"  ours:         {our_s:8.3f} s  {b * n / our_s:10.1f} tok/s")
  print(f"  transformers: {their_s:8.3f} s  {b * n / their_s:10.1f} tok/s")
  print(f"  speed-up: {their_s / our_s:.2f}x (target >= 3x)")
  same = (our_tokens == their_tokens).mean()
  print(f"  greedy tokens equal: {same:.1%}")

  if not args.quick:
    ours(4 * n)  # compile the longer buffers
    our_s, long_s = best_of([lambda: ours(n), lambda: ours(4 * n)], repeats)
    print(f"  our decode N={4 * n} / N={n}: {long_s / our_s:.2f}x "
          f"(target <= 4.5x)")


if __name__ == "__main__":
  main()

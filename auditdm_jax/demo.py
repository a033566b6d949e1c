"""`make demo`: what the project can do today, end to end, on this CPU.

Today (foundation stage) the demo walks the real-checkpoint path on tiny
random models, so it needs no download:

  1. builds a tiny PaliGemma-2 and a tiny Gemma-3 in transformers and saves
     them as HF checkpoints (safetensors + config.json);
  2. converts each with `auditdm_jax.convert` to an Orbax checkpoint and
     restores it sharded over a ('data', 'fsdp', 'tensor') mesh;
  3. compares our logits with transformers' on an image + text prompt;
  4. greedy-decodes 24 tokens with our sampler and with `generate`;
  5. prints a summary table.

The scene-world audit loop (audit -> harvest -> rectify -> evaluate -> report)
replaces this walkthrough as the world, auditor and loop issues land.
"""

from __future__ import annotations

import os
import pathlib
import sys
import tempfile
import time

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from auditdm_jax import sampling  # pylint: disable=g-import-not-at-top,wrong-import-position
from auditdm_jax.convert import hf_reference, orbax_io, safetensors_io  # pylint: disable=g-import-not-at-top,wrong-import-position
from auditdm_jax.models import arch  # pylint: disable=g-import-not-at-top,wrong-import-position
from auditdm_jax.models.vlm import Model  # pylint: disable=g-import-not-at-top,wrong-import-position
from auditdm_jax.sharding import mesh as mesh_lib, strategy  # pylint: disable=g-import-not-at-top,wrong-import-position

NEW_TOKENS = 24


def _prompt(cfg, rng):
  """Image placeholders + text, laid out the family's way (see prompts.py)."""
  text = rng.integers(3, cfg.text.vocab_size - 2, (2, 6))
  img = np.full((2, cfg.tokens_per_image), cfg.image_token_id)
  if cfg.family == "paligemma2":
    tokens = np.concatenate([img, text], 1)
    mask_ar = np.zeros_like(tokens)
    token_type = mask_ar
  else:
    tokens = np.concatenate([text[:, :2], img, text[:, 2:]], 1)
    mask_ar = np.ones_like(tokens)
    mask_ar[:, 3:2 + cfg.tokens_per_image] = 0
    token_type = (tokens == cfg.image_token_id).astype(np.int64)
  s = cfg.vision.image_size
  images = rng.uniform(-1, 1, (2, 1, s, s, 3)).astype(np.float32)
  return tokens, mask_ar, token_type, images


def run(name: str, workdir: pathlib.Path, mesh) -> dict:
  import torch  # pylint: disable=g-import-not-at-top
  cfg = arch.get(name)
  hf_model = hf_reference.build_hf(cfg, seed=0, scale=0.1)
  hf_dir, ckpt_dir = workdir / f"{name}_hf", workdir / f"{name}_orbax"
  hf_model.save_pretrained(hf_dir)

  t0 = time.perf_counter()
  loaded_cfg, params = safetensors_io.load_hf_checkpoint(hf_dir)
  orbax_io.save_params(params, ckpt_dir, loaded_cfg)
  shardings = strategy.param_shardings(Model(loaded_cfg).abstract_params(),
                                       mesh, strategy.DEFAULT_STRATEGY)
  _, params = orbax_io.load_checkpoint(ckpt_dir, shardings=shardings)
  convert_s = time.perf_counter() - t0
  sharded = sum(1 for a in jax.tree.leaves(params)
                if len(a.sharding.device_set) > 1
                and a.addressable_shards[0].data.shape != a.shape)

  model = Model(loaded_cfg)
  tokens, mask_ar, token_type, images = _prompt(cfg, np.random.default_rng(1))
  ones = np.ones(tokens.shape, bool)
  forward = jax.jit(lambda p, t, m, i: model.forward(p, model.embed(p, t, ones, m, i)))
  ours = np.asarray(forward(params, tokens, mask_ar, images))
  pixels = torch.from_numpy(images[:, 0].transpose(0, 3, 1, 2).copy())
  kwargs = dict(input_ids=torch.from_numpy(tokens),
                attention_mask=torch.ones(tokens.shape, dtype=torch.long),
                pixel_values=pixels, token_type_ids=torch.from_numpy(token_type))
  with torch.no_grad():
    ref = hf_model(**kwargs).logits.numpy()
    ref_tokens = hf_model.generate(**kwargs, max_new_tokens=NEW_TOKENS,
                                   min_new_tokens=NEW_TOKENS, do_sample=False,
                                   eos_token_id=None, pad_token_id=0)
  ref_tokens = ref_tokens[:, tokens.shape[1]:].numpy()
  out = sampling.sample(model, params, tokens, ones, mask_ar, images,
                        key=jax.random.key(0),
                        config=sampling.SamplingConfig(
                            temperature=0.0, max_new_tokens=NEW_TOKENS))
  return {
      "arch": name, "params": arch.param_count(loaded_cfg),
      "convert_s": convert_s, "sharded_leaves": sharded,
      "leaves": len(jax.tree.leaves(params)),
      "max_logit_diff": float(np.abs(ours - ref).max()),
      "tokens_equal": float((np.asarray(out.tokens) == ref_tokens).mean()),
  }


def main() -> int:
  mesh = mesh_lib.make_mesh([("data", 2), ("fsdp", 2), ("tensor", 2)])
  print(f"devices: {len(jax.devices())} x {jax.devices()[0].platform}, "
        f"mesh {dict(mesh.shape)}")
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for name in ("paligemma2_tiny", "gemma3_tiny"):
      rows.append(run(name, pathlib.Path(tmp), mesh))
  print()
  print(f"{'arch':<18} {'params':>9} {'sharded':>9} {'max |dlogit|':>13} "
        f"{'greedy == HF':>13} {'convert s':>10}")
  for r in rows:
    print(f"{r['arch']:<18} {r['params']:>9,} "
          f"{r['sharded_leaves']:>4}/{r['leaves']:<4} "
          f"{r['max_logit_diff']:>13.2e} {r['tokens_equal']:>13.0%} "
          f"{r['convert_s']:>10.2f}")
  ok = all(r["max_logit_diff"] < 1e-4 and r["tokens_equal"] == 1.0
           for r in rows)
  print("\nparity with transformers:", "OK" if ok else "FAILED")
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())

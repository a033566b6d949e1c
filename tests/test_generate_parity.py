"""Greedy decoding equals transformers `generate`, token for token.

Same weights (converted from the HF reference), f32, 32 new tokens, both
families, with an image for the VLMs.
"""

import jax
import numpy as np
import pytest
import torch

import hf_reference
from auditdm_jax.models import arch
from auditdm_jax.models.vlm import Model
from auditdm_jax.sampling.sampler import sample
from auditdm_jax.sampling.strategies import SamplingConfig

NEW_TOKENS = 32


def _prompt(cfg, rng, batch=2, text_len=7):
  """Tokens, mask_ar, images and HF kwargs of a prompt (no suffix)."""
  text = rng.integers(3, cfg.text.vocab_size - 2, (batch, text_len))
  if cfg.vision is None:
    return text, np.ones_like(text), None, {}
  s = cfg.vision.image_size
  images = rng.normal(size=(batch, 1, s, s, 3)).astype(np.float32)
  pixels = hf_reference.to_torch(images[:, 0].transpose(0, 3, 1, 2))
  img = np.full((batch, cfg.tokens_per_image), cfg.image_token_id)
  if cfg.family == "paligemma2":
    tokens = np.concatenate([img, text], 1)
    mask_ar = np.zeros_like(tokens)        # the whole prompt is the prefix
    tt = mask_ar
  else:
    tokens = np.concatenate([text[:, :2], img, text[:, 2:]], 1)
    mask_ar = np.ones_like(tokens)
    mask_ar[:, 3:2 + cfg.tokens_per_image] = 0
    tt = (tokens == cfg.image_token_id).astype(np.int64)
  return tokens, mask_ar, images, {
      "pixel_values": pixels, "token_type_ids": torch.from_numpy(tt.copy())}


@pytest.mark.parametrize("name", ["paligemma2_tiny", "gemma3_tiny",
                                  "gemma3_tiny_text"])
def test_greedy_equals_transformers_generate(name):
  cfg = arch.get(name)
  hf_model = hf_reference.build_hf(cfg, seed=2, scale=0.1)
  params = hf_reference.params_of(hf_model, cfg)
  tokens, mask_ar, images, hf_kwargs = _prompt(cfg, np.random.default_rng(5))
  with torch.no_grad():
    ref = hf_model.generate(
        input_ids=torch.from_numpy(tokens),
        attention_mask=torch.ones(tokens.shape, dtype=torch.long),
        max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
        eos_token_id=None, pad_token_id=0, **hf_kwargs)
  ref = ref[:, tokens.shape[1]:].numpy()
  out = sample(Model(cfg), params, tokens, np.ones(tokens.shape, bool),
               mask_ar, images, key=jax.random.key(0),
               config=SamplingConfig(temperature=0.0,
                                     max_new_tokens=NEW_TOKENS))
  ours = np.asarray(out.tokens)
  assert ref.shape == ours.shape == (2, NEW_TOKENS)
  # Random tiny models repeat themselves; still require that the two prompts
  # lead to different continuations, so the check is not vacuous.
  assert not np.array_equal(ref[0], ref[1])
  np.testing.assert_array_equal(ours, ref)

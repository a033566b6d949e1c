"""Logit parity with transformers (eager, f32) on tiny random configs.

Covered: GQA with several query heads per KV head, head_dim != D / N, more
than one global layer, soft-capping (PaliGemma-2), QK-norm and linear RoPE
scaling (Gemma-3), prompts shorter and longer than the sliding window, with
an image: PaliGemma's prefix-LM over image + prefix, Gemma-3's bidirectional
image block in the middle of text.
"""

import jax
import numpy as np
import pytest
import torch

import hf_reference
from auditdm_jax.models import arch
from auditdm_jax.models.vlm import Model

TOL = 1e-4
ARCHS = ("paligemma2_tiny", "gemma3_tiny", "gemma3_tiny_text")


@pytest.fixture(scope="module", params=ARCHS)
def setup(request):
  cfg = arch.get(request.param)
  hf_model = hf_reference.build_hf(cfg, seed=1)
  return cfg, hf_model, hf_reference.params_of(hf_model, cfg), Model(cfg)


def forward(model, params, tokens, mask_ar, images):
  """Jitted embed + forward (eager linen dispatch is far slower to run)."""
  fn = jax.jit(lambda p, t, m, i: model.forward(
      p, model.embed(p, t, jax.numpy.ones(t.shape, bool), m, i)))
  return np.asarray(fn(params, tokens, mask_ar, images))


def make_inputs(cfg, text_len, batch=2, seed=0):
  """Tokens, mask_ar, images and the HF kwargs for one prompt layout.

  PaliGemma-2: [image tokens][text prefix][suffix]; mask_ar 0 on the prefix.
  Gemma-3: [text][image block][text]; mask_ar 0 inside the image block after
  its first token. Text-only: causal.
  """
  rng = np.random.default_rng(seed)
  vocab = cfg.text.vocab_size - 2
  text = rng.integers(3, vocab, (batch, text_len))
  images = hf_kwargs = None
  hf_kwargs = {}
  if cfg.vision is None:
    tokens = text
    mask_ar = np.ones_like(tokens)
  else:
    n = cfg.tokens_per_image
    img = np.full((batch, n), cfg.image_token_id)
    s = cfg.vision.image_size
    images = rng.normal(size=(batch, 1, s, s, 3)).astype(np.float32)
    hf_kwargs["pixel_values"] = hf_reference.to_torch(
        images[:, 0].transpose(0, 3, 1, 2))
    if cfg.family == "paligemma2":
      tokens = np.concatenate([img, text], 1)
      mask_ar = np.zeros_like(tokens)
      mask_ar[:, -max(2, text_len // 3):] = 1   # suffix
      hf_kwargs["token_type_ids"] = torch.from_numpy(mask_ar.copy())
    else:
      tokens = np.concatenate([text[:, :3], img, text[:, 3:]], 1)
      mask_ar = np.ones_like(tokens)
      mask_ar[:, 4:3 + n] = 0
      hf_kwargs["token_type_ids"] = torch.from_numpy(
          (tokens == cfg.image_token_id).astype(np.int64))
  return tokens, mask_ar, images, hf_kwargs


@pytest.mark.parametrize("text_len", [6, 40], ids=["short", "beyond_window"])
def test_logits_match_transformers(setup, text_len):
  cfg, hf_model, params, model = setup
  tokens, mask_ar, images, hf_kwargs = make_inputs(cfg, text_len)
  assert tokens.shape[1] > 2 * cfg.text.sliding_window or text_len == 6
  with torch.no_grad():
    ref = hf_model(input_ids=torch.from_numpy(tokens),
                   attention_mask=torch.ones(tokens.shape, dtype=torch.long),
                   **hf_kwargs).logits.numpy()
  ours = forward(model, params, tokens, mask_ar, images)
  assert ours.shape == ref.shape
  np.testing.assert_allclose(ours, ref, atol=TOL, rtol=0)


def test_unrolled_layer_scans_match_transformers(setup):
  """`unroll` changes how the layer loop runs, never the numbers or params."""
  cfg, hf_model, params, _ = setup
  unrolled = Model(cfg, unroll=cfg.text.num_layers)
  assert (jax.tree.structure(unrolled.abstract_params())
          == jax.tree.structure(params))
  tokens, mask_ar, images, hf_kwargs = make_inputs(cfg, 6, seed=4)
  with torch.no_grad():
    ref = hf_model(input_ids=torch.from_numpy(tokens),
                   attention_mask=torch.ones(tokens.shape, dtype=torch.long),
                   **hf_kwargs).logits.numpy()
  ours = forward(unrolled, params, tokens, mask_ar, images)
  np.testing.assert_allclose(ours, ref, atol=TOL, rtol=0)


def test_vision_features_match_transformers(setup):
  cfg, hf_model, params, model = setup
  if cfg.vision is None:  # text-only: its logit test above is the whole check
    assert not any(k.startswith("img") for k in params)
    return
  _, _, images, hf_kwargs = make_inputs(cfg, 4)
  with torch.no_grad():
    out = hf_model.model.get_image_features(hf_kwargs["pixel_values"])
    ref = getattr(out, "pooler_output", out).numpy()
  encode = jax.jit(lambda p, i: model.module.apply(
      {"params": p}, i, method=model.module.encode_images))
  ours = np.asarray(encode(params, images))
  np.testing.assert_allclose(ours.reshape(ref.shape), ref, atol=TOL, rtol=0)


def test_prefill_then_decode_equals_forward(setup):
  """The cached path reproduces the full forward, token by token."""
  cfg, _, params, model = setup
  tokens, mask_ar, images, _ = make_inputs(cfg, 20, batch=1, seed=3)
  split = tokens.shape[1] - 5   # last 5 tokens decoded one at a time
  full = forward(model, params, tokens, mask_ar, images)
  ar = np.asarray(mask_ar)[:, :split]
  prefill = jax.jit(lambda p, t, m, i: model.prefill(
      p, model.embed(p, t, jax.numpy.ones(t.shape, bool), m, i),
      cache_size=tokens.shape[1] + 3))
  decode = jax.jit(model.decode_step)
  # The sampler's path: each layer's params split out once (same numbers).
  decode_split = jax.jit(lambda p, t, c: model.decode_step(
      model.split_layers(p), t, c))
  logits, cache = prefill(params, tokens[:, :split], ar, images)
  np.testing.assert_allclose(np.asarray(logits), full[:, split - 1], atol=TOL)
  cache_split = cache
  for t in range(split, tokens.shape[1]):
    tok = np.asarray(tokens[:, t], np.int32)
    logits, cache = decode(params, tok, cache)
    np.testing.assert_allclose(np.asarray(logits), full[:, t], atol=TOL)
    logits, cache_split = decode_split(params, tok, cache_split)
    np.testing.assert_allclose(np.asarray(logits), full[:, t], atol=TOL)
  assert cache_split.is_split and len(cache_split.k) == cfg.text.num_layers
  np.testing.assert_allclose(np.stack(cache_split.k), np.asarray(cache.k),
                             atol=TOL)


def test_out_of_vocabulary_tokens_are_rejected(setup):
  cfg, _, params, model = setup
  tokens = np.array([[2, 5, cfg.text.vocab_size + 7]])
  with pytest.raises(ValueError, match="outside the vocabulary"):
    model.embed(params, tokens, np.ones(tokens.shape, bool), np.ones_like(tokens))

"""Tests of `auditdm_jax.sampling`: strategies, the jitted sampler, log-probs.

The sampler is checked against a reference that has no KV cache: a greedy
loop that re-runs the full forward pass on the growing sequence. Compiles
dominate the run time, so one model and param set per architecture is shared
(module fixtures) and the configs are chosen so that each compiled program
serves several checks: the sampler compiles 4 times in all.

Letters: B prompts, n samples per prompt, N new tokens, V vocab.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from auditdm_jax import sampling
from auditdm_jax.models import arch
from auditdm_jax.models.vlm import Model
from auditdm_jax.sampling import sampler as sampler_lib
from auditdm_jax.sampling import strategies
from auditdm_jax.sampling.strategies import SamplingConfig

N_GREEDY = 32    # new tokens in the greedy runs (crosses the window of 8)
N_SAMPLED = 16   # new tokens in the sampled runs
# Batches of up to 4 prompts share one program, so single prompts and the
# 3-prompt batch compile once.
BUCKETS = sampling.Buckets(length="pow2", batch=4, min_length=16)
PROMPTS = [[2, 5, 7, 9, 11], [2, 8, 9],
           [2, 300, 301, 302, 303, 304, 305, 306, 307]]


def _random_params(model, seed=0, scale=0.05):
  """Every parameter N(0, scale) (norm weights too), drawn on the host.

  Host numpy is much faster here than jitting `model.init`, and random norm
  weights exercise more of the numerics than zeros.
  """
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda a: jnp.asarray(rng.standard_normal(a.shape) * scale, a.dtype),
      model.abstract_params())


@pytest.fixture(scope="module")
def text():
  model = Model(arch.get("gemma3_tiny_text"))
  return model, _random_params(model)


@pytest.fixture(scope="module")
def pali():
  model = Model(arch.get("paligemma2_tiny"))
  return model, _random_params(model, seed=1)


def _naive_greedy(model, params, prompt, n_new, prompt_ar=None, images=None,
                  buf_len=64):
  """Greedy decoding with no cache and no left padding: the prompt starts at
  column 0 of a fixed buffer whose not-yet-generated columns are masked out,
  and every step re-runs `model.forward` on the whole sequence."""
  t = len(prompt)
  tokens = np.zeros((1, buf_len), np.int32)
  tokens[0, :t] = prompt
  mask = np.zeros((1, buf_len), bool)
  mask[0, :t] = True
  ar = np.ones((1, buf_len), np.int32)
  if prompt_ar is not None:
    ar[0, :t] = prompt_ar
  fwd = _jit_forward(model)
  for i in range(n_new):
    logits = fwd(params, tokens, mask, ar, images)
    tokens[0, t + i] = int(jnp.argmax(logits[0, t + i - 1]))
    mask[0, t + i] = True
  return tokens[0, t:t + n_new]


@functools.cache
def _jit_forward(model):
  return jax.jit(
      lambda p, t, m, a, i: model.forward(p, model.embed(p, t, m, a, i)))


@functools.cache
def _jit_token_logprobs(model, temperature, top_k, top_p):
  return jax.jit(lambda p, prompt, comp, lengths: sampling.token_logprobs(
      model, p, prompt, comp, temperature, top_k, top_p, lengths=lengths,
      chunk_size=8))


def _run(model, params, prompts, config, *, key=0, mask_ar=None, images=None):
  tokens, input_mask, ar = sampling.left_pad(prompts, mask_ar)
  out = sampling.sample(model, params, tokens, input_mask, ar, images,
                        key=jax.random.key(key), config=config, buckets=BUCKETS)
  return jax.tree.map(np.asarray, out)


# --- Strategies (eager, no model) --------------------------------------------

def _hf_top_p_keep(logits, p):
  """transformers' TopPLogitsWarper rule, in numpy: bool[B, V] kept."""
  order = np.argsort(logits, axis=-1)                        # ascending
  sorted_logits = np.take_along_axis(logits, order, -1)
  probs = np.exp(sorted_logits - sorted_logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  remove_sorted = np.cumsum(probs, -1) <= 1 - p
  remove_sorted[:, -1] = False
  keep = np.ones_like(logits, bool)
  np.put_along_axis(keep, order, ~remove_sorted, -1)
  return keep


# Each test jits its JAX work as one function: one compile instead of one per
# eager op.

def test_strategies_match_numpy_references():
  rng = np.random.default_rng(0)
  logits = (rng.standard_normal((4, 50)) * 3).astype(np.float32)
  both = SamplingConfig(temperature=0.7, top_k=10, top_p=0.8)

  @jax.jit
  def run(x):
    get = strategies.get
    return dict(
        greedy=get("greedy")(x), top5=get("top_k")(x, k=5),
        p03=get("top_p")(x, p=0.3), p09=get("top_p")(x, p=0.9),
        p_tiny=strategies.top_p(x, 1e-6),
        scaled=get("temperature")(x, temperature=0.5),
        both=strategies.process_logits(x, both),
        # top-k then top-p over the whole vocabulary (no max_candidates).
        both_ref=strategies.top_p(strategies.top_k(x / 0.7, 10), 0.8))

  out = jax.tree.map(np.asarray, run(logits))
  kept = {k: np.isfinite(v) for k, v in out.items()}
  np.testing.assert_array_equal(kept["greedy"].argmax(-1), logits.argmax(-1))
  assert kept["greedy"].sum() == 4
  np.testing.assert_array_equal(
      kept["top5"], logits >= np.sort(logits, -1)[:, -5][:, None])
  assert (kept["top5"].sum(-1) == 5).all()
  np.testing.assert_array_equal(kept["p03"], _hf_top_p_keep(logits, 0.3))
  np.testing.assert_array_equal(kept["p09"], _hf_top_p_keep(logits, 0.9))
  assert kept["p_tiny"].sum() == 4  # the top token always survives
  np.testing.assert_allclose(out["scaled"], logits * 2, rtol=1e-6)
  np.testing.assert_allclose(out["both"], out["both_ref"])
  assert [s for s, _ in both.steps()] == ["temperature", "top_k", "top_p"]
  assert strategies.names() == ["greedy", "temperature", "top_k", "top_p"]


def test_choose_logprobs_are_under_the_sampling_distribution():
  logits = np.random.default_rng(1).standard_normal((3, 20)).astype(np.float32)
  config = SamplingConfig(temperature=0.5, top_k=4)
  greedy = SamplingConfig(temperature=0)

  @jax.jit
  def run(x, key):
    rows = jnp.arange(3)
    tok, logp = strategies.choose(x, key, config)
    ref = jax.nn.log_softmax(strategies.top_k(x / 0.5, 4))[rows, tok]
    g_tok, g_logp = strategies.choose(x, key, greedy)
    g_ref = jax.nn.log_softmax(x)[rows, g_tok]
    return tok, logp, ref, g_tok, g_logp, g_ref

  tok, logp, ref, g_tok, g_logp, g_ref = run(logits, jax.random.key(0))
  assert tok.dtype == jnp.int32 and tok.shape == (3,)
  np.testing.assert_allclose(logp, ref, rtol=1e-6)
  top4 = np.argsort(logits, -1)[:, -4:]
  assert all(int(t) in row for t, row in zip(tok, top4))
  # Greedy: the argmax, scored under temperature 1.
  np.testing.assert_array_equal(g_tok, logits.argmax(-1))
  np.testing.assert_allclose(g_logp, g_ref, rtol=1e-6)


@pytest.mark.parametrize("kwargs", [
    dict(temperature=-0.1), dict(top_k=-1), dict(top_p=0.0), dict(top_p=1.5),
    dict(max_new_tokens=0), dict(n_per_prompt=0)])
def test_sampling_config_rejects_bad_values(kwargs):
  with pytest.raises(ValueError):
    SamplingConfig(**kwargs)


def test_sampling_config_is_hashable_and_normalised():
  a = SamplingConfig(eos_ids=[1, 106], temperature=1)
  b = SamplingConfig(eos_ids=(1, 106), temperature=1.0)
  assert a == b and hash(a) == hash(b) and a.eos_ids == (1, 106)
  assert SamplingConfig(eos_ids=1).eos_ids == (1,)


def test_bucket_and_left_pad():
  assert [sampling.bucket(n, "pow2") for n in (1, 5, 16, 17)] == [1, 8, 16, 32]
  assert [sampling.bucket(n, 16) for n in (1, 16, 17)] == [16, 16, 32]
  assert sampling.bucket(9, (4, 8, 32)) == 32
  with pytest.raises(ValueError):
    sampling.bucket(33, (4, 8, 32))
  assert sampling.Buckets(length=16).prompt_length(3) == 16
  tokens, mask, ar = sampling.left_pad([[5, 6], [7]], [[0, 1], [1]])
  np.testing.assert_array_equal(tokens, [[5, 6], [0, 7]])
  np.testing.assert_array_equal(mask, [[True, True], [False, True]])
  np.testing.assert_array_equal(ar, [[0, 1], [0, 1]])
  assert sampling.left_pad([[5]], length=3)[0].tolist() == [[0, 0, 5]]


# --- Greedy against the no-cache reference (a), (b), (f) ---------------------

@pytest.fixture(scope="module")
def text_greedy(text):
  model, params = text
  return _run(model, params, PROMPTS,
              SamplingConfig(temperature=0, max_new_tokens=N_GREEDY))


def test_greedy_matches_full_forward_loop_gemma3(text, text_greedy):
  model, params = text
  out = text_greedy
  assert out.tokens.shape == (3, N_GREEDY) and out.tokens.dtype == np.int32
  assert out.logprobs.shape == (3, N_GREEDY)
  assert out.logprobs.dtype == np.float32
  np.testing.assert_array_equal(out.lengths, N_GREEDY)
  assert not out.done.any()
  for i, prompt in enumerate(PROMPTS):
    np.testing.assert_array_equal(
        out.tokens[i], _naive_greedy(model, params, prompt, N_GREEDY),
        err_msg=f"prompt {i}")


def test_greedy_matches_full_forward_loop_paligemma_and_repeats(pali):
  """PaliGemma prefix-LM with an image; n_per_prompt=4 greedy copies agree."""
  model, params = pali
  cfg = model.cfg
  img = [cfg.image_token_id] * cfg.tokens_per_image
  prompts = [img + [2, 40, 41], img + [2, 50, 51, 52, 53, 54, 55]]
  prompt_ar = [[0] * len(p) for p in prompts]
  s = cfg.vision.image_size
  images = jnp.asarray(np.random.default_rng(2).uniform(
      -1, 1, (2, 1, s, s, 3)), jnp.float32)
  out = _run(model, params, prompts,
             SamplingConfig(temperature=0, max_new_tokens=N_GREEDY,
                            n_per_prompt=4),
             mask_ar=prompt_ar, images=images)
  assert out.tokens.shape == (8, N_GREEDY)
  for i, prompt in enumerate(prompts):
    ref = _naive_greedy(model, params, prompt, N_GREEDY, prompt_ar[i],
                        images[i:i + 1])
    for j in range(4):
      np.testing.assert_array_equal(out.tokens[4 * i + j], ref,
                                    err_msg=f"prompt {i} sample {j}")
      np.testing.assert_array_equal(out.logprobs[4 * i + j],
                                    out.logprobs[4 * i])


def test_left_padded_batch_equals_each_prompt_alone_without_recompiling(
    text, text_greedy):
  model, params = text
  config = SamplingConfig(temperature=0, max_new_tokens=N_GREEDY)
  programs = sampler_lib._sample_jit._cache_size()
  traces = sampling.trace_count()
  assert programs >= 1
  for i, prompt in enumerate(PROMPTS):  # lengths 5, 3, 9: one length bucket
    alone = _run(model, params, [prompt], config)
    assert alone.tokens.shape == (1, N_GREEDY)
    np.testing.assert_array_equal(alone.tokens[0], text_greedy.tokens[i])
    np.testing.assert_allclose(alone.logprobs[0], text_greedy.logprobs[i],
                               atol=1e-5)
  # Two prompts, right-padded on input: re-packed to the left, same answer.
  tokens = np.array([[2, 8, 9, 0, 0], [2, 5, 7, 9, 11]], np.int32)
  mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
  out = sampling.sample(model, params, tokens, mask, np.ones_like(tokens),
                        key=jax.random.key(0), config=config, buckets=BUCKETS)
  np.testing.assert_array_equal(out.tokens, text_greedy.tokens[[1, 0]])
  # Batch sizes 1 and 2 and lengths 3..9 all reused the first program.
  assert sampler_lib._sample_jit._cache_size() == programs
  assert sampling.trace_count() == traces


# --- Sampled runs: log-probs (c), EOS (d), n samples (e) ---------------------

# Every 8th token ends a sample: with this near-uniform random model most rows
# end within N_SAMPLED tokens, at different steps.
EOS_IDS = tuple(range(3, 512, 8))
SAMPLED_CONFIGS = {
    # Temperature 0.7 and top-k, with EOS (lengths mask the recomputation).
    "temperature_top_k_eos": SamplingConfig(
        temperature=0.7, top_k=20, max_new_tokens=N_SAMPLED, eos_ids=EOS_IDS),
    # Nucleus over the whole vocabulary, 4 samples per prompt.
    "top_p_n4": SamplingConfig(top_p=0.9, max_new_tokens=N_SAMPLED,
                               n_per_prompt=4),
}


@pytest.fixture(scope="module")
def sampled(text):
  model, params = text
  return {name: _run(model, params, PROMPTS, cfg, key=1)
          for name, cfg in SAMPLED_CONFIGS.items()}


@pytest.mark.parametrize("name", ["greedy", *SAMPLED_CONFIGS])
def test_logprobs_equal_teacher_forced_recomputation(text, text_greedy,
                                                     sampled, name):
  model, params = text
  if name == "greedy":
    cfg, out = SamplingConfig(temperature=0), text_greedy
  else:
    cfg, out = SAMPLED_CONFIGS[name], sampled[name]
  tokens, mask, ar = sampling.left_pad(PROMPTS)
  n = cfg.n_per_prompt
  prompt = tuple(np.repeat(x, n, axis=0) for x in (tokens, mask, ar)) + (None,)
  recomputed = _jit_token_logprobs(model, cfg.temperature, cfg.top_k,
                                   cfg.top_p)(params, prompt, out.tokens,
                                              out.lengths)
  np.testing.assert_allclose(recomputed, out.logprobs, atol=1e-4)
  valid = np.arange(out.tokens.shape[1]) < out.lengths[:, None]
  assert (out.logprobs[valid] < 0).all() and (out.logprobs[~valid] == 0).all()


def test_n_per_prompt_samples_differ(sampled):
  out = sampled["top_p_n4"]
  assert out.tokens.shape == (3 * 4, N_SAMPLED)
  for i in range(3):
    rows = {tuple(r) for r in out.tokens[4 * i:4 * i + 4]}
    assert len(rows) == 4, f"prompt {i}: samples are not distinct"


def test_eos_ends_rows_with_pad_and_zero_logprobs(sampled):
  out = sampled["temperature_top_k_eos"]
  cfg = SAMPLED_CONFIGS["temperature_top_k_eos"]
  ended = 0
  for r in range(out.tokens.shape[0]):
    hits = np.flatnonzero(np.isin(out.tokens[r], EOS_IDS))
    # At most one EOS: the first one ends the row.
    assert hits.size <= 1, out.tokens[r]
    length = hits[0] + 1 if hits.size else N_SAMPLED
    ended += length < N_SAMPLED
    assert out.lengths[r] == length and out.done[r] == bool(hits.size)
    assert (out.tokens[r, length:] == cfg.pad_id).all()
    assert (out.logprobs[r, length:] == 0).all()
    assert (out.logprobs[r, :length] < 0).all()
  assert ended >= 2, out.tokens


def test_masked_logprobs_have_finite_gradients():
  """GRPO differentiates log-probs through the -inf masks of top-k / top-p."""
  logits = np.random.default_rng(3).standard_normal((2, 30)).astype(np.float32)
  tok = logits.argmax(-1)
  config = SamplingConfig(temperature=0.7, top_k=5, top_p=0.8)

  def logp(x):
    lp = jax.nn.log_softmax(strategies.process_logits(x, config))
    return lp[jnp.arange(2), tok].sum()

  grad, processed = jax.jit(lambda x: (
      jax.grad(logp)(x), strategies.process_logits(x, config)))(logits)
  grad, kept = np.asarray(grad), np.isfinite(np.asarray(processed))
  assert np.isfinite(grad).all()
  # Only kept tokens get gradient.
  assert (grad[~kept] == 0).all() and (grad[kept] != 0).any()


# --- Against transformers (optional: needs torch and the converter) ----------

def test_greedy_matches_transformers_generate(text, text_greedy):
  """Same weights in transformers: `generate(do_sample=False)` per prompt,
  unpadded, equals our left-padded batch. New params of the same shapes reuse
  the program compiled for `text_greedy`."""
  del text_greedy  # Only compiles the program first.
  torch = pytest.importorskip("torch")
  hf_reference = pytest.importorskip("hf_reference")
  model, _ = text
  hf_model = hf_reference.build_hf(model.cfg, seed=2)
  # On device like the fixture's params: numpy leaves would be a new jit
  # cache entry.
  params = jax.tree.map(jnp.asarray,
                        hf_reference.params_of(hf_model, model.cfg))
  programs = sampler_lib._sample_jit._cache_size()
  ours = _run(model, params, PROMPTS,
              SamplingConfig(temperature=0, max_new_tokens=N_GREEDY))
  assert sampler_lib._sample_jit._cache_size() == programs
  for i, prompt in enumerate(PROMPTS):
    ids = torch.tensor([prompt])
    with torch.no_grad():
      hf_out = hf_model.generate(
          ids, attention_mask=torch.ones_like(ids), do_sample=False,
          max_new_tokens=N_GREEDY, min_new_tokens=N_GREEDY, eos_token_id=None,
          pad_token_id=0)
    np.testing.assert_array_equal(
        ours.tokens[i], hf_out[0, len(prompt):].numpy(), err_msg=f"prompt {i}")

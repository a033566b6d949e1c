"""LoRA: layouts, merge / unmerge, and gradients through Model.forward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from auditdm_jax.models import arch
from auditdm_jax.models import lora as lora_lib
from auditdm_jax.models.vlm import Model
from auditdm_jax.sharding import mesh as mesh_lib
from auditdm_jax.sharding import strategy as strat

RANK = 4
# scale = alpha / rank is static in the Lora treedef: one value, one compile.
ALPHA = 8


def _get(tree, *keys):
  for k in keys:
    tree = tree[k]
  return tree


@pytest.fixture(scope="module")
def setup():
  """Text-only tiny Gemma-3 (LoRA only touches llm/), params, inputs, jits."""
  model = Model(arch.get("gemma3_tiny_text"))
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda a: jnp.asarray(
      rng.normal(0, 0.05, a.shape), a.dtype), model.abstract_params())
  tokens = jnp.asarray(rng.integers(0, 500, (2, 12)), jnp.int32)
  mask = jnp.ones(tokens.shape, bool)

  def loss_fn(lora, params):
    emb = model.embed(params, tokens, mask, mask.astype(jnp.int32))
    logits = model.forward(lora_lib.merge(params, lora), emb)
    logp = jax.nn.log_softmax(logits[:, :-1], -1)
    nll = -jnp.take_along_axis(logp, tokens[:, 1:, None], -1)
    return jnp.mean(nll), logits

  # One compile serves every test: ((loss, logits), d loss / d lora).
  run = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
  return dict(model=model, params=params, run=run,
              logits=lambda p, l: run(l, p)[0][1])


def _randomize_b(lora, seed=1, std=0.05):
  """Non-zero B factors (host random: no per-shape compiles)."""
  rng = np.random.default_rng(seed)
  def fill(path, x):
    if jax.tree_util.keystr(path).endswith("['b']"):
      return jnp.asarray(rng.normal(0, std, x.shape), x.dtype)
    return x
  return jax.tree_util.tree_map_with_path(fill, lora)


def test_layouts_and_count():
  params = Model(arch.get("paligemma2_tiny")).abstract_params()
  lora = lora_lib.init_lora(params, RANK, rng=jax.random.key(0), alpha=ALPHA)
  assert lora.scale == 2.0
  layers = lora.factors["llm"]["layers"]
  L, N, D, H, K, F = 4, 4, 64, 24, 2, 128
  want = {
      ("attn", "q_einsum", "w"): ((L, D, RANK), (L, RANK, N, H)),
      ("attn", "kv_einsum", "w"): ((L, 2, D, RANK), (L, 2, RANK, K, H)),
      ("attn", "attn_vec_einsum", "w"): ((L, N, H, RANK), (L, RANK, D)),
      ("mlp", "gating_einsum"): ((L, 2, D, RANK), (L, 2, RANK, F)),
      ("mlp", "linear"): ((L, F, RANK), (L, RANK, D)),
  }
  for path, (a, b) in want.items():
    f = _get(layers, *path)
    assert (f["a"].shape, f["b"].shape) == (a, b), path
    assert not np.any(np.asarray(f["b"]))
  assert {p for p, _ in lora.equations} == {("llm", "layers") + p for p in want}
  assert "img" not in lora.factors
  count = sum(np.prod(a) + np.prod(b) for a, b in want.values())
  assert lora_lib.lora_param_count(lora) == count


def test_delta_layouts_match_einsum_semantics():
  """A @ B acts on the input dims the model contracts with x."""
  params = Model(arch.get("paligemma2_tiny")).abstract_params()
  lora = _randomize_b(lora_lib.init_lora(params, RANK, alpha=ALPHA))
  # Each layout written out by hand: A's dims, B's dims, the weight's dims.
  cases = {
      ("attn", "q_einsum", "w"): "ldr,lrnh->lndh",           # [L, N, D, H]
      ("attn", "kv_einsum", "w"): "lcdr,lcrkh->lckdh",       # [L, 2, K, D, H]
      ("attn", "attn_vec_einsum", "w"): "lnhr,lrd->lnhd",    # [L, N, H, D]
      ("mlp", "gating_einsum"): "lcdr,lcrf->lcfd",           # [L, 2, F, D]
      ("mlp", "linear"): "lfr,lrd->lfd",                     # [L, F, D]
  }
  for sub, eqn in cases.items():
    path = ("llm", "layers") + sub
    f = _get(lora.factors, *path)
    want = lora.scale * np.einsum(eqn, f["a"], f["b"])
    np.testing.assert_allclose(lora_lib.delta(lora, path), want,
                               rtol=1e-5, atol=1e-7)


def test_plan_real_size_without_memory():
  abstract = Model(arch.get("gemma3_4b")).abstract_params()
  lora = jax.eval_shape(lambda: lora_lib.init_lora(abstract, 16))
  L, N, K, D, H, F = 34, 8, 4, 2560, 256, 10240
  r = 16
  want = L * r * ((D + N * H) + 2 * (D + K * H) + (N * H + D) + 2 * (D + F)
                  + (F + D))
  assert lora_lib.lora_param_count(lora) == want
  mesh = mesh_lib.make_mesh([("fsdp", -1)])
  s = strat.param_shardings(lora, mesh, strat.LORA_STRATEGY)
  paths = strat.tree_paths(s)
  assert "factors/llm/layers/attn/q_einsum/w/a" in paths
  assert all(x.spec == jax.sharding.PartitionSpec() for x in jax.tree.leaves(s))


def test_zero_b_merge_is_exact(setup):
  params = setup["params"]
  lora = lora_lib.init_lora(params, RANK, rng=jax.random.key(1), alpha=ALPHA)
  merged = lora_lib.merge(params, lora)
  for a, b in zip(jax.tree.leaves(merged), jax.tree.leaves(params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  base = setup["logits"](params, lora)
  # Same jitted function with B = 0 vs an all-zero-A LoRA: bitwise equal.
  zero = jax.tree.map(jnp.zeros_like, lora)
  np.testing.assert_array_equal(np.asarray(base),
                                np.asarray(setup["logits"](params, zero)))


def test_nonzero_lora_changes_logits(setup):
  params = setup["params"]
  lora = lora_lib.init_lora(params, RANK, rng=jax.random.key(1), alpha=ALPHA)
  base = np.asarray(setup["logits"](params, lora))
  tuned = np.asarray(setup["logits"](params, _randomize_b(lora)))
  assert np.all(np.isfinite(tuned))
  assert np.max(np.abs(tuned - base)) > 1e-3


def test_merge_unmerge_round_trip(setup):
  params = setup["params"]
  lora = _randomize_b(
      lora_lib.init_lora(params, RANK, rng=jax.random.key(2), alpha=ALPHA))
  merged = lora_lib.merge(params, lora)
  q = ("llm", "layers", "attn", "q_einsum", "w")
  assert np.max(np.abs(np.asarray(_get(merged, *q)) -
                       np.asarray(_get(params, *q)))) > 1e-4
  restored = lora_lib.unmerge(merged, lora)
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
  # Untargeted leaves are passed through untouched.
  merged = lora_lib.merge(params, lora)
  assert merged["llm"]["final_norm"] is params["llm"]["final_norm"]


def test_merge_keeps_weight_dtype(setup):
  params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), setup["params"])
  lora = _randomize_b(lora_lib.init_lora(params, RANK, alpha=ALPHA))
  merged = lora_lib.merge(params, lora)
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(merged))
  zero = lora_lib.init_lora(params, RANK, alpha=ALPHA)
  zero_merged = lora_lib.merge(params, zero)
  for a, b in zip(jax.tree.leaves(zero_merged), jax.tree.leaves(params)):
    np.testing.assert_array_equal(np.asarray(a, np.float32),
                                  np.asarray(b, np.float32))


def test_gradients_reach_a_and_b(setup):
  params = setup["params"]
  lora = lora_lib.init_lora(params, RANK, rng=jax.random.key(3), alpha=ALPHA)
  (loss0, _), g = setup["run"](lora, params)
  leaves = jax.tree_util.tree_leaves_with_path(g)
  # With B = 0 only B has a gradient (dL/dA goes through B).
  for path, x in leaves:
    assert np.all(np.isfinite(np.asarray(x)))
    norm = float(jnp.linalg.norm(x))
    assert (norm > 0) == jax.tree_util.keystr(path).endswith("['b']"), path
  lora = jax.tree.map(lambda p, d: p - 1.0 * d, lora, g)  # one SGD step
  (loss1, _), g = setup["run"](lora, params)
  assert float(loss1) < float(loss0)
  for path, x in jax.tree_util.tree_leaves_with_path(g):
    assert np.all(np.isfinite(np.asarray(x))), path
    assert float(jnp.linalg.norm(x)) > 0, path


def test_init_validation():
  params = Model(arch.get("gemma3_tiny_text")).abstract_params()
  with pytest.raises(ValueError, match="match no parameter"):
    lora_lib.init_lora(params, RANK, targets_regex=r"llm/nothing")
  with pytest.raises(ValueError, match="rank"):
    lora_lib.init_lora(params, 0)
  with pytest.raises(ValueError, match="no LoRA layout"):
    lora_lib.init_lora(params, RANK, targets_regex=r"llm/final_norm/scale")

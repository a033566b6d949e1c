"""Mesh, parameter strategy and logical activation rules on 8 fake CPU devices.

The parity tests run the whole protocol (embed, forward, prefill, 8 greedy
decode steps) in one jit per (model, placement) to keep compiles few.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from auditdm_jax.models import arch
from auditdm_jax.models.vlm import Model
from auditdm_jax.sharding import logical
from auditdm_jax.sharding import mesh as mesh_lib
from auditdm_jax.sharding import strategy as strat

MODELS = ("paligemma2_tiny", "gemma3_tiny")
BATCH, TEXT, STEPS = 4, 8, 8


@pytest.fixture(scope="module")
def mesh222():
  return mesh_lib.make_mesh([("data", 2), ("fsdp", 2), ("tensor", 2)])


@pytest.fixture(scope="module")
def mesh142():
  return mesh_lib.make_mesh([("data", -1), ("fsdp", 4), ("tensor", 2)])


def random_params(model, seed=0):
  """Host (numpy) f32 params of the model's shapes, N(0, 0.05) everywhere.

  Filled on the host from `abstract_params()` rather than `model.init`, which
  would compile the whole model once more; the values only need to be
  generic (non-zero norm scales included).
  """
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda a: rng.normal(0, 0.05, a.shape).astype(a.dtype),
      model.abstract_params())


@pytest.fixture(scope="module")
def models():
  """name -> (Model, host params)."""
  return {name: (Model(arch.get(name)), random_params(Model(arch.get(name)), i))
          for i, name in enumerate(MODELS)}


def make_inputs(cfg, seed=0):
  """tokens, input_mask, mask_ar, images for a batch with one image each."""
  rng = np.random.default_rng(seed)
  m = cfg.tokens_per_image
  text = rng.integers(0, cfg.text.vocab_size - 2, (BATCH, TEXT))
  img = np.full((BATCH, m), cfg.image_token_id)
  if cfg.family == "paligemma2":
    # [image x M][prompt x 4] prefix (bidirectional) + [suffix x 4] causal.
    tokens = np.concatenate([img, text], 1)
    mask_ar = np.concatenate([np.zeros((BATCH, m + TEXT // 2)),
                              np.ones((BATCH, TEXT // 2))], 1)
  else:
    # [text x 4][image x M][text x 4]: causal text, one bidirectional block.
    h = TEXT // 2
    tokens = np.concatenate([text[:, :h], img, text[:, h:]], 1)
    img_ar = np.zeros((BATCH, m))
    img_ar[:, 0] = 1
    mask_ar = np.concatenate([np.ones((BATCH, h)), img_ar,
                              np.ones((BATCH, TEXT - h))], 1)
  images = rng.uniform(-1, 1, (BATCH, 1, cfg.vision.image_size,
                               cfg.vision.image_size, 3)).astype(np.float32)
  return (jnp.asarray(tokens, jnp.int32), jnp.ones(tokens.shape, bool),
          jnp.asarray(mask_ar, jnp.int32), jnp.asarray(images))


def protocol_fn(model):
  """jit-able: forward logits, prefill logits, greedy tokens, step logits."""
  def run(params, tokens, input_mask, mask_ar, images):
    emb = model.embed(params, tokens, input_mask, mask_ar, images)
    logits = model.forward(params, emb)
    last, cache = model.prefill(params, emb, tokens.shape[1] + STEPS)

    def step(carry, _):
      prev, cache = carry
      tok = jnp.argmax(prev, -1).astype(jnp.int32)
      nxt, cache = model.decode_step(params, tok, cache)
      return (nxt, cache), (tok, nxt)

    _, (toks, step_logits) = jax.lax.scan(step, (last, cache), None,
                                          length=STEPS)
    return logits, last, toks, step_logits
  return run


# --- mesh ---------------------------------------------------------------------

def test_make_mesh_axes_and_fill():
  m = mesh_lib.make_mesh([("data", -1), ("fsdp", 2), ("tensor", 2)])
  assert m.axis_names == ("data", "fsdp", "tensor")
  assert dict(m.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
  assert all(t == jax.sharding.AxisType.Auto for t in m.axis_types)
  assert dict(mesh_lib.make_mesh({"fsdp": -1}).shape) == {
      "data": 1, "fsdp": 8, "tensor": 1}
  assert mesh_lib.replicated(m).spec == P()


@pytest.mark.parametrize("spec, match", [
    ([("data", 3), ("fsdp", 2)], "has 6 devices but there are 8"),
    ([("data", -1), ("fsdp", 3)], "multiply to 3.*8 devices"),
    ([("data", -1), ("fsdp", -1)], "at most one"),
    ([("model", 8)], "unknown mesh axis"),
    ([("data", 0)], "positive int"),
])
def test_make_mesh_rejects_impossible(spec, match):
  with pytest.raises(ValueError, match=match):
    mesh_lib.make_mesh(spec)


# --- parameter strategy -------------------------------------------------------

@pytest.mark.parametrize("name", MODELS)
def test_default_strategy_shards_params(models, mesh222, name):
  model, params = models[name]
  shardings = strat.param_shardings(params, mesh222, strat.DEFAULT_STRATEGY)
  sharded = strat.shard_params(params, shardings)
  q = sharded["llm"]["layers"]["attn"]["q_einsum"]["w"]        # [L, N, D, H]
  emb = sharded["llm"]["embedder"]["input_embedding"]          # [V, D]
  lin = sharded["llm"]["layers"]["mlp"]["linear"]              # [L, F, D]
  assert q.sharding.spec == P(None, "tensor", "fsdp")
  assert emb.sharding.spec == P("tensor", "fsdp")
  assert lin.sharding.spec == P(None, "tensor", "fsdp")
  L, N, D, H = q.shape
  V = emb.shape[0]
  for arr, want in ((q, (L, N // 2, D // 2, H)), (emb, (V // 2, D // 2))):
    shapes = {s.data.shape for s in arr.addressable_shards}
    assert shapes == {want}, shapes
    assert len(arr.addressable_shards) == 8
  kv = sharded["llm"]["layers"]["attn"]["kv_einsum"]["w"]      # [L, 2, K, D, H]
  if model.cfg.text.num_kv_heads % 2:  # gemma3_tiny K = 1: tensor skipped
    assert kv.sharding.spec == P(None, None, None, "fsdp")
  else:
    assert kv.sharding.spec == P(None, None, "tensor", "fsdp")
  # Small norms fall through to the min-size rule and stay whole.
  assert sharded["llm"]["final_norm"]["scale"].sharding.spec == P()
  np.testing.assert_array_equal(np.asarray(q), np.asarray(
      params["llm"]["layers"]["attn"]["q_einsum"]["w"]))


def test_default_strategy_fsdp4_tensor2(models, mesh142):
  for name in MODELS:
    _, params = models[name]
    sharded = strat.shard_params(
        params, strat.param_shardings(params, mesh142, strat.DEFAULT_STRATEGY))
    q = sharded["llm"]["layers"]["attn"]["q_einsum"]["w"]
    emb = sharded["llm"]["embedder"]["input_embedding"]
    assert q.sharding.spec == P(None, "tensor", "fsdp")
    assert emb.sharding.spec == P("tensor", "fsdp")
    L, N, D, H = q.shape
    shapes = {s.data.shape for s in q.addressable_shards}
    assert shapes == {(L, N // 2, D // 4, H)}
    assert {s.data.shape for s in emb.addressable_shards} == {
        (emb.shape[0] // 2, emb.shape[1] // 4)}


def test_plans_real_size_abstract(mesh142):
  """gemma3_4b (~16 GiB f32) planned without allocating: ~1/8 per device."""
  abstract = Model(arch.get("gemma3_4b")).abstract_params()
  shardings = strat.param_shardings(abstract, mesh142, strat.DEFAULT_STRATEGY)
  total = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(abstract))
  per_dev = strat.bytes_per_device(abstract, shardings)
  assert total / 8 <= per_dev < total / 8 * 1.05
  assert "per device" in strat.describe(abstract, shardings)
  structs = strat.abstract_with_shardings(abstract, shardings)
  q = structs["llm"]["layers"]["attn"]["q_einsum"]["w"]
  assert q.sharding.spec == P(None, "tensor", "fsdp")


def test_first_match_wins(mesh222):
  params = {"llm": {"w": jax.ShapeDtypeStruct((8, 16), jnp.float32),
                    "v": jax.ShapeDtypeStruct((8, 16), jnp.float32)}}
  strategy = [(r"llm/w", "shard_dim(0, 'tensor')"),
              (r"llm/.*", "fsdp('fsdp')"),        # also matches llm/w
              (r".*", "replicate")]
  s = strat.param_shardings(params, mesh222, strategy)
  assert s["llm"]["w"].spec == P("tensor")
  assert s["llm"]["v"].spec == P(None, "fsdp")  # largest dim (16)
  reordered = [strategy[1], strategy[0], strategy[2]]
  s = strat.param_shardings(params, mesh222, reordered)
  assert s["llm"]["w"].spec == P(None, "fsdp")


def test_rules_compose_and_validate(mesh222):
  def spec(shape, rule):
    return strat.partition_spec(shape, jnp.float32, rule, mesh222)

  assert spec((6, 8), "fsdp(('data', 'fsdp'))") == P(None, ("data", "fsdp"))
  assert spec((8, 8), "shard_dim(-1, 'tensor') + fsdp('fsdp')") == P(
      "fsdp", "tensor")
  # The tensor axis is taken: a second user of it is a no-op, not a clash.
  assert spec((8, 8), "shard_dim(0, 'tensor') + fsdp('tensor')") == P("tensor")
  assert spec((3, 5), "fsdp()") == P()                         # nothing divides
  assert spec((1024, 1024), "fsdp(min_size_mb=5)") == P()      # 4 MiB < 5
  assert spec((3, 8), "shard_dim(0, 'tensor', strict=False)") == P()
  with pytest.raises(ValueError, match="not divisible"):
    spec((3, 8), "shard_dim(0, 'tensor')")
  with pytest.raises(ValueError, match="unknown sharding rule"):
    spec((8,), "shard_everything()")
  with pytest.raises(ValueError, match="literals"):
    spec((8,), "fsdp(axis=__import__('os'))")


def test_unmatched_path_raises(models, mesh222):
  _, params = models["paligemma2_tiny"]
  with pytest.raises(ValueError) as e:
    strat.param_shardings(params, mesh222, [(r"llm/.*", "replicate")])
  assert "img/embedding/kernel" in str(e.value)
  assert "img/head/bias" in str(e.value)
  assert "llm/final_norm" not in str(e.value)


# --- logical activation rules -------------------------------------------------

def test_logical_to_spec():
  spec = logical.logical_to_spec(("act_batch", "act_len", "act_vocab"))
  assert spec == P(("data", "fsdp"), None, "tensor")
  rules = [("act_batch", "data"), ("act_batch", "fsdp"), ("act_emb", None)]
  assert logical.logical_to_spec(("act_batch", "act_emb"), rules) == P("data")
  # Batch 2 on data=2 x fsdp=2: keep the prefix that divides.
  assert logical.logical_to_spec(
      ("act_batch", None), shape=(2, 5),
      mesh_shape={"data": 2, "fsdp": 2, "tensor": 2}) == P("data")
  with pytest.raises(ValueError, match="both map to mesh axis 'tensor'"):
    logical.logical_to_spec(("act_heads", "act_vocab"))
  with pytest.raises(ValueError, match="no rule"):
    logical.logical_to_spec(("act_btach",))


def test_constrain(mesh222):
  x = jnp.arange(4 * 3 * 8, dtype=jnp.float32).reshape(4, 3, 8)
  names = ("act_batch", "act_len", "act_vocab")
  assert logical.constrain(x, names) is x  # no mesh: identity
  f = jax.jit(lambda x: logical.constrain(x * 2, names) + 1)
  with jax.set_mesh(mesh222):
    y = f(x)
  assert y.sharding.spec == P(("data", "fsdp"), None, "tensor")
  np.testing.assert_array_equal(np.asarray(y), np.asarray(x * 2 + 1))
  y = jax.jit(lambda x: logical.constrain(x, names, mesh=mesh222))(x)
  assert y.sharding.spec == P(("data", "fsdp"), None, "tensor")


# --- sharded == unsharded -----------------------------------------------------

@pytest.mark.parametrize("name", MODELS)
def test_sharded_protocol_matches_unsharded(models, mesh222, name):
  model, params = models[name]
  inputs = make_inputs(model.cfg)
  run = jax.jit(protocol_fn(model))
  want = jax.device_get(run(params, *inputs))

  shardings = strat.param_shardings(params, mesh222, strat.DEFAULT_STRATEGY)
  sparams = strat.shard_params(params, shardings)
  sinputs = [jax.device_put(a, mesh_lib.batch_sharding(mesh222, a.ndim))
             for a in inputs]
  with jax.set_mesh(mesh222):
    got = run(sparams, *sinputs)
  assert len(got[0].sharding.device_set) == 8
  got = jax.device_get(got)

  logits, last, toks, step_logits = got
  assert logits.shape == (BATCH, inputs[0].shape[1], model.cfg.text.vocab_size)
  np.testing.assert_allclose(logits, want[0], atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(last, want[1], atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(step_logits, want[3], atol=1e-5, rtol=1e-5)
  np.testing.assert_array_equal(toks, want[2])
  # The prefill's last logits are the forward's at the last position.
  np.testing.assert_allclose(last, logits[:, -1], atol=1e-5, rtol=1e-5)

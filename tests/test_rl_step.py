"""The jitted GRPO step and scorer (`rl/step.py`) on tiny models.

Compile time dominates on CPU, so one batch shape serves every test (R = 8
rows = 2 prompts x G 4, P = 8, C = 8, LM head in chunks of 4) and the
programs are few: the text scorer with and without LoRA, the LoRA step (KL
k3), the full fine-tuning step (β = 0, no reference pass), their sharded
twins for the full fine-tuning step and scorer, and one VLM scorer checked
against a naive full-logits forward. Params are drawn with numpy
(`Model.init` costs a compile).

Letters: R rows, G group size, P prompt length, C completion length.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from auditdm_jax.models import arch
from auditdm_jax.models.vlm import Model
from auditdm_jax.rl import grpo
from auditdm_jax.rl import step as step_lib
from auditdm_jax.rl.config import GrpoConfig
from auditdm_jax.sharding import mesh as mesh_lib
from auditdm_jax.train import state as state_lib
from auditdm_jax.train.config import TrainConfig

R, G, P, C = 8, 4, 8, 8
EOS = 1
_MESH = (("data", 2), ("fsdp", 2), ("tensor", 2))

TCFG = TrainConfig(arch="gemma3_tiny_text", batch_size=R, total_steps=10,
                   schedule="constant", lr=3e-3, grad_clip=1.0,
                   progress=False)
LORA = TCFG.replace(lora_rank=4, lora_alpha=8.0)
GCFG = GrpoConfig(group_size=G, kl_beta=0.04, kl_estimator="k3",
                  logits_chunk=4, max_new_tokens=C)
GCFG0 = GCFG.replace(kl_beta=0.0)


def _numpy_params(model, seed=0, scale=0.05):
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda a: (scale * rng.standard_normal(a.shape)).astype(np.float32),
      model.abstract_params())


def _host(tree):
  return jax.tree.map(np.asarray, jax.device_get(tree))


def _make_batch(seed=0, image_block=None, images=None):
  """R rows: 2 prompts (lengths 5 and 8, left-padded) x G completions that
  end at different EOS positions (or not at all).

  image_block: optional (placeholder id, M, start id, end id) inserting a
    Gemma-3 image block [<soi> I*M <eoi>] into each prompt (P grows by M+2).
  """
  rng = np.random.default_rng(seed)
  prompts = [list(rng.integers(3, 400, 5)), list(rng.integers(3, 400, 8))]
  ars = [[1] * len(p) for p in prompts]
  if image_block is not None:
    img, m, soi, eoi = image_block
    prompts = [p[:2] + [soi] + [img] * m + [eoi] + p[2:] for p in prompts]
    # <soi> and the first placeholder start groups; the other M - 1
    # placeholders join the first (one bidirectional group per image).
    ars = [[1] * 4 + [0] * (m - 1) + [1] * (len(p) - m - 3) for p in prompts]
  p_len = max(len(p) for p in prompts)
  tokens = np.zeros((R, p_len), np.int32)
  input_mask = np.zeros((R, p_len), bool)
  mask_ar = np.zeros((R, p_len), np.int32)
  for r in range(R):
    p, a = prompts[r // G], ars[r // G]
    tokens[r, p_len - len(p):] = p
    input_mask[r, p_len - len(p):] = True
    mask_ar[r, p_len - len(p):] = a
  lengths = np.array([8, 5, 3, 8, 6, 8, 2, 7])
  completion = rng.integers(3, 400, (R, C)).astype(np.int32)
  mask = (np.arange(C)[None] < lengths[:, None]).astype(np.float32)
  for r, n in enumerate(lengths):
    if n < C or r == 0:          # row 0 ends with EOS on its last token
      completion[r, n - 1] = EOS
    completion[r, n:] = 0
  batch = dict(prompt_tokens=tokens, prompt_input_mask=input_mask,
               prompt_mask_ar=mask_ar, completion=completion,
               completion_mask=mask,
               advantages=np.ones((R,), np.float32),
               old_logprobs=np.zeros((R, C), np.float32),
               ref_logprobs=np.zeros((R, C), np.float32))
  if images is not None:
    batch["images"] = images
  return batch


@pytest.fixture(scope="module")
def model():
  return state_lib.make_model(TCFG)


@pytest.fixture(scope="module")
def params0(model):
  return _numpy_params(model)


@pytest.fixture(scope="module")
def batch():
  return _make_batch()


def _masked_sum(logp, batch, weights=None):
  w = np.ones(R) if weights is None else weights
  return float(np.sum(np.asarray(logp) * batch["completion_mask"]
                      * w[:, None]))


# --- LoRA, KL k3: (a) and (e) -------------------------------------------------

@pytest.fixture(scope="module")
def lora_run(model, params0, batch):
  """Three LoRA steps on one batch, every advantage +1, KL to the base."""
  state = state_lib.create_state(model, LORA, params0)
  score = step_lib.make_logprob_fn(model, GCFG)
  ref0 = np.asarray(score(state.params, batch))
  old0 = np.asarray(score(state.params, batch, state.lora))
  lora0 = _host(state.lora.factors)
  b = dict(batch, old_logprobs=old0, ref_logprobs=ref0)
  step_fn = step_lib.make_grpo_step(model, LORA, GCFG)
  metrics, factors = [], []
  for _ in range(3):
    state, m = step_fn(state, b)
    metrics.append(_host(m))
    factors.append(_host(state.lora.factors))
  return dict(state=state, ref0=ref0, old0=old0, lora0=lora0,
              metrics=metrics, factors=factors, score=score)


def test_lora_step_trains_only_factors_and_raises_logprobs(lora_run, params0,
                                                           batch):
  run = lora_run
  state = run["state"]
  # The base stays bitwise the given params.
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(
      _host(state.params)), jax.tree.leaves(params0)):
    np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))
  # B starts at 0, so step 1 moves only B (dL/dA = 0); by step 3 both moved.
  for (path, a0), a1, a3 in zip(
      jax.tree_util.tree_leaves_with_path(run["lora0"]),
      jax.tree.leaves(run["factors"][0]), jax.tree.leaves(run["factors"][2])):
    key = jax.tree_util.keystr(path)
    assert key.endswith(("['a']", "['b']")), key
    assert not np.array_equal(a3, a0), key
    if key.endswith("['a']"):
      np.testing.assert_array_equal(a1, a0, err_msg=key)
    else:
      assert not np.array_equal(a1, a0), key
  losses = [float(m["loss"]) for m in run["metrics"]]
  assert losses[2] < losses[1] < losses[0], losses
  # Step 1 is on-policy and the policy is the reference: ρ = 1, KL = 0, and
  # the loss is -mean(A) = -1.
  m1 = run["metrics"][0]
  np.testing.assert_allclose(m1["ratio_mean"], 1.0, atol=1e-6)
  np.testing.assert_allclose(m1["kl"], 0.0, atol=1e-6)
  np.testing.assert_allclose(m1["loss"], -1.0, atol=1e-6)
  assert float(m1["completion_tokens"]) == batch["completion_mask"].sum()
  assert float(m1["grad_norm"]) > 0
  np.testing.assert_allclose(m1["lr"], LORA.lr, rtol=1e-6)
  assert float(run["metrics"][2]["kl"]) > 0
  assert float(run["metrics"][2]["ratio_mean"]) > 1
  assert int(state.step) == 3
  # Positive advantages: the sampled completions became more likely.
  new = run["score"](state.params, batch, state.lora)
  assert _masked_sum(new, batch) > _masked_sum(run["old0"], batch)


def test_lora_reference_is_base_with_lora_off(lora_run, batch):
  run = lora_run
  state = run["state"]
  # Before any step B = 0: policy and reference agree.
  np.testing.assert_allclose(run["old0"], run["ref0"], atol=1e-6)
  # After the steps the reference (base, LoRA off) is exactly what it was,
  # and the policy has moved away from it.
  ref = np.asarray(run["score"](state.params, batch))
  pol = np.asarray(run["score"](state.params, batch, state.lora))
  np.testing.assert_array_equal(ref, run["ref0"])
  valid = batch["completion_mask"] > 0
  assert np.abs(pol - ref)[valid].min() > 0
  assert (ref[~valid] == 0).all() and (pol[~valid] == 0).all()
  assert (ref[valid] < 0).all()


# --- Full fine-tuning, β = 0: (b), (c), (d) -----------------------------------

REWARDS = np.array([1, 0, 0, 1, 0, 1, 1, 1], np.float32)


@pytest.fixture(scope="module")
def full_batch(model, params0, batch):
  """β = 0: no ref_logprobs key at all; mixed group advantages; old
  log-probs from the (no-LoRA) scorer at params0."""
  score = step_lib.make_logprob_fn(model, GCFG0)
  params = jax.device_put(params0, jax.local_devices()[0])
  old = np.asarray(score(params, batch))
  b = {k: v for k, v in batch.items() if k != "ref_logprobs"}
  b["advantages"] = np.asarray(grpo.group_advantages(REWARDS, G))
  b["old_logprobs"] = old
  return b


@pytest.fixture(scope="module")
def full_run(model, params0, full_batch):
  state = state_lib.create_state(model, TCFG, params0)
  ref_params = step_lib.frozen_copy(state.params)
  step_fn = step_lib.make_grpo_step(model, TCFG, GCFG0)
  assert "ref_logprobs" not in step_fn.keys
  metrics, after_one = [], None
  for _ in range(2):
    state, m = step_fn(state, full_batch)
    metrics.append(_host(m))
    after_one = after_one or _host((state.params, state.opt_state))
  return dict(state=state, ref_params=ref_params, metrics=metrics,
              params=_host(state.params), after_one=after_one)


def test_full_finetuning_step_without_kl(full_run, full_batch, params0, model):
  m1, m2 = full_run["metrics"]
  # On-policy step 1 (β = 0): loss = policy loss = -Σ A m / Σ m.
  adv, mask = full_batch["advantages"], full_batch["completion_mask"]
  want = -np.sum(adv[:, None] * mask) / mask.sum()
  np.testing.assert_allclose(m1["loss"], want, atol=1e-6)
  np.testing.assert_allclose(m1["policy_loss"], m1["loss"])
  assert float(m1["kl"]) == 0.0 and float(m2["kl"]) == 0.0
  np.testing.assert_allclose(m1["ratio_mean"], 1.0, atol=1e-6)
  assert float(m2["loss"]) < float(m1["loss"])
  # Every param leaf trained; the reference copy survived the donations.
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(
      full_run["params"]), jax.tree.leaves(params0)):
    assert not np.array_equal(x, y), jax.tree_util.keystr(path)
  for x, y in zip(jax.tree.leaves(_host(full_run["ref_params"])),
                  jax.tree.leaves(params0)):
    np.testing.assert_array_equal(x, y)
  # Advantage-weighted log-likelihood rose: good completions up, bad down.
  score = step_lib.make_logprob_fn(model, GCFG0)
  new = score(full_run["state"].params, full_batch)
  assert (_masked_sum(new, full_batch, adv)
          > _masked_sum(full_batch["old_logprobs"], full_batch, adv))


def test_sharded_step_matches_unsharded(full_run, full_batch, params0, model):
  mesh = mesh_lib.make_mesh(_MESH)
  state = state_lib.create_state(model, TCFG, params0, mesh=mesh)
  score = step_lib.make_logprob_fn(model, GCFG0, mesh)
  old = score(state.params, full_batch)           # sharded like the step's
  np.testing.assert_allclose(old, full_batch["old_logprobs"], atol=1e-5)
  step_fn = step_lib.make_grpo_step(model, TCFG, GCFG0, mesh)
  assert old.sharding == step_fn.batch_shardings["old_logprobs"]
  metrics, after_one = [], None
  for _ in range(2):
    # The scorer's device output goes into the step as it is.
    state, m = step_fn(state, dict(full_batch, old_logprobs=old))
    metrics.append(_host(m))
    after_one = after_one or _host((state.params, state.opt_state))
  emb = state.params["llm"]["embedder"]["input_embedding"]
  assert len(emb.sharding.device_set) == 8
  assert not emb.sharding.is_fully_replicated
  # Both steps' metrics (step 2's loss is that of the updated params).
  for got, want in zip(metrics, full_run["metrics"]):
    for k in ("loss", "grad_norm", "ratio_mean", "clip_fraction"):
      np.testing.assert_allclose(got[k], want[k], rtol=0, atol=1e-5,
                                 err_msg=k)
  # After one step: Adam's moments are (1 - b1) g and (1 - b2) g², a direct
  # check of the gradients.
  (params1, opt1), (want_p, want_o) = after_one, full_run["after_one"]
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(opt1),
                          jax.tree.leaves(want_o)):
    np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-7,
                               err_msg=jax.tree_util.keystr(path))
  # The params: Adam's first update is lr * g / (|g| + eps), which is steep
  # around g = 0, so a gradient component within float noise of 0 (|g| of
  # order eps = 1e-8) may differ by a good part of lr between the two
  # reduction orders. Everywhere else the params agree to 1e-5.
  mu = optax.tree_utils.tree_get(want_o, "mu")
  for (path, x), y, m in zip(jax.tree_util.tree_leaves_with_path(params1),
                             jax.tree.leaves(want_p), jax.tree.leaves(mu)):
    key = jax.tree_util.keystr(path)
    g = np.abs(m) / (1 - TCFG.b1)
    np.testing.assert_allclose(x[g > 1e-6], y[g > 1e-6], rtol=0, atol=1e-5,
                               err_msg=key)
    np.testing.assert_allclose(x, y, rtol=0, atol=2 * TCFG.lr, err_msg=key)


# --- Batch errors (f): no compiles --------------------------------------------

def test_bad_batches_raise_clear_errors(model, batch):
  step_fn = step_lib.make_grpo_step(model, LORA, GCFG)
  score = step_lib.make_logprob_fn(model, GCFG)
  with pytest.raises(KeyError, match="old_logprobs"):
    step_fn.put_batch({k: v for k, v in batch.items() if k != "old_logprobs"})
  with pytest.raises(KeyError, match="ref_logprobs"):
    step_fn.put_batch({k: v for k, v in batch.items() if k != "ref_logprobs"})
  with pytest.raises(ValueError, match=r"completion_mask.*C axis is 7"):
    step_fn.put_batch(dict(batch,
                           completion_mask=batch["completion_mask"][:, :7]))
  with pytest.raises(ValueError, match=r"advantages.*1 dims"):
    step_fn.put_batch(dict(batch, advantages=batch["advantages"][:, None]))
  with pytest.raises(ValueError, match=r"prompt_mask_ar.*P axis"):
    step_fn.put_batch(dict(batch,
                           prompt_mask_ar=batch["prompt_mask_ar"][:, 1:]))
  with pytest.raises(ValueError, match="LEFT-padded"):
    right = batch["prompt_input_mask"][:, ::-1].copy()
    score(None, dict(batch, prompt_input_mask=right))
  half = {k: v[:4] for k, v in batch.items()}
  with pytest.raises(ValueError, match="batch_size = 8"):
    step_fn.put_batch(half)
  vlm = Model(arch.get("gemma3_tiny"))
  vstep = step_lib.make_grpo_step(vlm, LORA.replace(arch="gemma3_tiny"), GCFG)
  with pytest.raises(KeyError, match="images"):
    vstep.put_batch(batch)
  with pytest.raises(ValueError, match=r"images.*S axis is 16"):
    vstep.put_batch(dict(batch, images=np.zeros((R, 1, 16, 16, 3), np.float32)))
  with pytest.raises(ValueError, match="mesh size 4"):
    step_lib.make_grpo_step(model, TCFG.replace(batch_size=6), GCFG,
                            mesh_lib.make_mesh(_MESH))


def test_step_cache_ignores_host_only_fields(model):
  a = step_lib.make_grpo_step(model, LORA, GCFG)
  assert step_lib.make_grpo_step(
      model, LORA.replace(seed=3, log_every=5),
      GCFG.replace(group_size=16, advantage_scale="none")) is a
  other = GCFG.replace(clip_eps=0.1)
  assert step_lib.make_grpo_step(model, LORA, other) is not a
  assert (step_lib.make_logprob_fn(model, GCFG)
          is step_lib.make_logprob_fn(model, GCFG0.replace(clip_eps=0.3)))


# --- A vision model: images reach the scorer ----------------------------------

def test_vlm_scorer_matches_naive_forward():
  vlm = Model(arch.get("gemma3_tiny"))
  cfg = vlm.cfg
  params = jax.tree.map(jnp.asarray, _numpy_params(vlm, seed=2))
  rng = np.random.default_rng(1)
  images = rng.uniform(-1, 1, (R, 1, 32, 32, 3)).astype(np.float32)
  b = _make_batch(seed=3, images=images, image_block=(
      cfg.image_token_id, cfg.tokens_per_image, 255, 256))
  gcfg = GCFG.replace(temperature=0.7)
  got = np.asarray(step_lib.make_logprob_fn(vlm, gcfg)(params, b))

  @jax.jit
  def naive(params, b):
    ones = jnp.ones((R, C), bool)
    emb = vlm.embed(params,
                    jnp.concatenate([b["prompt_tokens"], b["completion"]], 1),
                    jnp.concatenate([b["prompt_input_mask"], ones], 1),
                    jnp.concatenate([b["prompt_mask_ar"],
                                     ones.astype(jnp.int32)], 1),
                    b["images"])
    p = b["prompt_tokens"].shape[1]
    logits = vlm.forward(params, emb)[:, p - 1:p + C - 1] / 0.7  # [R, C, V]
    logp = jax.nn.log_softmax(logits, -1)
    return jnp.take_along_axis(logp, b["completion"][..., None], -1)[..., 0]

  want = np.asarray(naive(params, b)) * b["completion_mask"]
  np.testing.assert_allclose(got, want, atol=2e-5)
  # The images matter: other images give other log-probs.
  other = np.asarray(step_lib.make_logprob_fn(vlm, gcfg)(
      params, dict(b, images=-images)))
  assert np.abs(other - got).max() > 1e-4

"""GRPO objective (`rl/grpo.py`) and its config, against hand-computed values.

No model here: every test runs small jnp arrays, so the module takes seconds.

The worked 2 x 3 example used by several tests (row 1's last token masked):

  log ratio d = logp - old   [[0.5, 0, -0.1], [-0.5, 0.1, *]]
  ratio ρ = exp(d)           [[1.648721, 1, 0.904837], [0.606531, 1.105171, *]]
  advantages A               [1, -2]
  x = ref - logp             [[0, 0.5, -0.5], [1, -0.2, *]]
  ε_low = 0.2, ε_high = 0.28 ρ clipped to [0.8, 1.28]

  policy -min(ρA, clip(ρ)A)  [[-1.28, -1, -0.904837], [1.6, 2.210342, *]]
    (0, 0): ρ = 1.649 > 1.28 with A > 0 -> clipped high: -1.28
    (1, 0): ρ = 0.607 < 0.8 with A < 0 -> clipped low: -min(-1.213, -1.6) = 1.6
  k1 = -x                    [[0, -0.5, 0.5], [-1, 0.2, *]]          sum -0.8
  k2 = x² / 2                [[0, 0.125, 0.125], [0.5, 0.02, *]]     sum 0.77
  k3 = e^x - x - 1           [[0, 0.148721, 0.106531], [0.718282, 0.018731, *]]
                                                                    sum 0.992265
Letters: R rows, C completion length.
"""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from auditdm_jax.rl import grpo
from auditdm_jax.rl.config import GrpoConfig

INF = np.float32(np.inf)
LOGP = np.array([[-1.0, -2.0, -0.5], [-0.3, -1.2, -INF]], np.float32)
OLD = np.array([[-1.5, -2.0, -0.4], [0.2, -1.3, np.nan]], np.float32)
REF = np.array([[-1.0, -1.5, -1.0], [0.7, -1.4, 50.0]], np.float32)
ADV = np.array([1.0, -2.0], np.float32)
MASK = np.array([[1, 1, 1], [1, 1, 0]], np.float32)
CFG = GrpoConfig(group_size=2, clip_eps=0.2, clip_eps_high=0.28, kl_beta=0.04)

POLICY = np.array([[-1.28, -1.0, -0.904837], [1.6, 2.210342, 0.0]])
KL_TOKEN_MEAN = {"k1": -0.8 / 5, "k2": 0.77 / 5, "k3": 0.992265 / 5}
# token:    (policy sum 0.625504 + 0.04 * kl sum) / 5 tokens
# sequence: mean of the row means of policy + 0.04 kl
#   policy row means: -3.184837 / 3 = -1.061612, 3.810342 / 2 = 1.905171
EXPECTED_LOSS = {
    ("k1", "token"): (0.625504 + 0.04 * -0.8) / 5,                 # 0.118701
    ("k2", "token"): (0.625504 + 0.04 * 0.77) / 5,                 # 0.131261
    ("k3", "token"): (0.625504 + 0.04 * 0.992265) / 5,             # 0.133039
    # row kl sums: k1 0, -0.8; k2 0.25, 0.52; k3 0.255252, 0.737013
    ("k1", "sequence"): ((-3.184837 + 0) / 3
                         + (3.810342 + 0.04 * -0.8) / 2) / 2,      # 0.413779
    ("k2", "sequence"): ((-3.184837 + 0.04 * 0.25) / 3
                         + (3.810342 + 0.04 * 0.52) / 2) / 2,      # 0.428646
    ("k3", "sequence"): ((-3.184837 + 0.04 * 0.255252) / 3
                         + (3.810342 + 0.04 * 0.737013) / 2) / 2,  # 0.430851
}


# --- Config -----------------------------------------------------------------

def test_config_defaults_roundtrip_and_errors():
  c = GrpoConfig()
  assert (c.eps_low, c.eps_high, c.kl_beta, c.kl_estimator) == (0.2, 0.2, 0.04,
                                                                "k3")
  assert c.use_kl and not c.replace(kl_beta=0).use_kl
  assert GrpoConfig(clip_eps_high=0.28).eps_high == 0.28
  assert GrpoConfig.from_dict(json.loads(json.dumps(CFG.to_dict()))) == CFG
  cd = ml_collections.ConfigDict({"group_size": 4, "kl_beta": 0,
                                  "aggregation": "sequence"})
  got = GrpoConfig.from_dict(cd)
  assert got.group_size == 4 and got.kl_beta == 0.0
  hash(got)  # jitted steps are cached on configs
  s = CFG.sampling_config(eos_ids=[1, 106], pad_id=0)
  assert (s.n_per_prompt, s.eos_ids, s.temperature) == (2, (1, 106), 1.0)
  bad = {
      "group_size": [1, 0, 2.5], "clip_eps": [0.0, 1.0, -0.1],
      "clip_eps_high": [0.0, -1.0], "kl_beta": [-0.1],
      "kl_estimator": ["k4", "KL"], "aggregation": ["mean"],
      "advantage_scale": ["mad"], "adv_eps": [0.0], "temperature": [0.0],
      "top_k": [-1], "top_p": [0.0, 1.5], "logits_chunk": [0],
      "max_new_tokens": [0]}
  for field, values in bad.items():
    for v in values:
      with pytest.raises(ValueError, match=f"GrpoConfig: {field}"):
        GrpoConfig(**{field: v})
  with pytest.raises(ValueError, match="unknown fields"):
    GrpoConfig.from_dict({"beta": 0.1})


# --- Advantages -------------------------------------------------------------

def test_group_advantages_hand_computed():
  r = np.array([1, 0, 0, 1, 0, 0, 0, 0], np.float32)
  # Group 0: mean 0.5, population std 0.5 -> ±0.5 / (0.5 + 1e-4);
  # group 1: all equal -> 0.
  a = 0.5 / 0.5001
  np.testing.assert_allclose(grpo.group_advantages(r, 4, "std", 1e-4),
                             [a, -a, -a, a, 0, 0, 0, 0], rtol=1e-6)
  np.testing.assert_allclose(grpo.group_advantages(r, 4, "none"),
                             [.5, -.5, -.5, .5, 0, 0, 0, 0], rtol=1e-6)
  assert float(grpo.zero_variance_fraction(r, 4)) == 0.5
  # G = 2, rewards (3, 1): mean 2, std 1 -> ±1 / 1.0001. Groups are
  # consecutive rows, not strided ones.
  r2 = np.array([3, 1, 0, 0, 5, 5], np.float32)
  np.testing.assert_allclose(grpo.group_advantages(r2, 2),
                             [1 / 1.0001, -1 / 1.0001, 0, 0, 0, 0], rtol=1e-6)
  np.testing.assert_allclose(grpo.zero_variance_fraction(r2, 2), 2 / 3)
  # G = 3, rewards (0, 0, 3): mean 1, std sqrt(2) -> (-1, -1, 2) / 1.41431.
  s = np.sqrt(2) + 1e-4
  np.testing.assert_allclose(grpo.group_advantages(np.array([0, 0, 3.]), 3),
                             [-1 / s, -1 / s, 2 / s], rtol=1e-6)
  with pytest.raises(ValueError, match="groups of 3"):
    grpo.group_advantages(r, 3)
  with pytest.raises(ValueError, match="scale"):
    grpo.group_advantages(r, 4, "mad")
  with pytest.raises(ValueError, match=r"f32\[R\]"):
    grpo.group_advantages(r.reshape(2, 4), 4)


# --- KL estimators ------------------------------------------------------------

def test_kl_estimators_hand_computed():
  logp = np.array([[-1.0, -1.5, -1.0, -0.3, -1.0]], np.float32)
  ref = logp + np.array([[0.0, 0.5, -0.5, 1.0, -0.2]], np.float32)
  np.testing.assert_allclose(grpo.kl_estimate(logp, ref, "k1"),
                             [[0, -0.5, 0.5, -1, 0.2]], atol=1e-6)
  np.testing.assert_allclose(grpo.kl_estimate(logp, ref, "k2"),
                             [[0, 0.125, 0.125, 0.5, 0.02]], atol=1e-6)
  np.testing.assert_allclose(
      grpo.kl_estimate(logp, ref, "k3"),
      [[0, 0.148721, 0.106531, 0.718282, 0.018731]], atol=1e-6)
  with pytest.raises(ValueError, match="estimator"):
    grpo.kl_estimate(logp, ref, "k4")


def test_kl_estimators_zero_when_equal():
  logp = np.log(np.random.default_rng(0).uniform(1e-6, 1, (3, 7))
                ).astype(np.float32)
  for est in ("k1", "k2", "k3"):
    assert (np.asarray(grpo.kl_estimate(logp, logp, est)) == 0).all(), est


# One fixed shape: every example reuses the same compiled ops.
_LOGPS = hnp.arrays(np.float32, (4, 6),
                    elements=st.floats(-30, 0, width=32))


@settings(max_examples=200, deadline=None)
@given(logp=_LOGPS, ref=_LOGPS)
def test_kl_k3_nonnegative(logp, ref):
  k3 = np.asarray(grpo.kl_estimate(logp, ref, "k3"))
  assert np.isfinite(k3).all() and (k3 >= 0).all(), (k3.min(), logp, ref)
  # Tiny differences (the common case) must stay >= 0 too.
  near = np.asarray(grpo.kl_estimate(logp, logp + 1e-5, "k3"))
  assert (near >= 0).all()


# --- Surrogate and aggregation ------------------------------------------------

def test_clipped_surrogate_both_sides():
  logp, old = LOGP[:, :2], OLD[:, :2]
  got = grpo.clipped_surrogate(logp, old, ADV, 0.2, 0.28)
  np.testing.assert_allclose(got, POLICY[:, :2], atol=1e-6)
  # Symmetric ε = 0.2: (0, 0) clips at 1.2 instead.
  got = grpo.clipped_surrogate(logp, old, ADV, 0.2, 0.2)
  np.testing.assert_allclose(got, [[-1.2, -1.0], [1.6, 2.210342]], atol=1e-6)
  # The ratio is unclipped where clipping would not lower the objective:
  # ρ = 1.649 with A < 0 gives -(1.649 * -1) = 1.649 (pessimistic bound).
  got = grpo.clipped_surrogate(LOGP[:1, :1], OLD[:1, :1], np.array([-1.0]),
                               0.2, 0.2)
  np.testing.assert_allclose(got, [[1.648721]], atol=1e-6)


def test_aggregate_hand_computed():
  x = np.array([[1, 2, 3], [4, 5, 6]], np.float32)
  m = np.array([[1, 1, 0], [1, 0, 0]], np.float32)
  np.testing.assert_allclose(grpo.aggregate(x, m, "token"), 7 / 3, rtol=1e-6)
  np.testing.assert_allclose(grpo.aggregate(x, m, "sequence"), 11 / 4,
                             rtol=1e-6)
  # An empty row is skipped by 'sequence' (not averaged in as 0), and NaN
  # under the mask does not leak.
  x3 = np.concatenate([x, [[np.nan, 1, 1]]]).astype(np.float32)
  m3 = np.concatenate([m, [[0, 0, 0]]]).astype(np.float32)
  np.testing.assert_allclose(grpo.aggregate(x3, m3, "sequence"), 11 / 4,
                             rtol=1e-6)
  np.testing.assert_allclose(grpo.aggregate(x3, m3, "token"), 7 / 3, rtol=1e-6)
  assert float(grpo.aggregate(x, np.zeros_like(m), "token")) == 0.0
  with pytest.raises(ValueError, match="mode"):
    grpo.aggregate(x, m, "batch")


# --- The loss -----------------------------------------------------------------

@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
@pytest.mark.parametrize("aggregation", ["token", "sequence"])
def test_grpo_loss_hand_computed(estimator, aggregation):
  cfg = CFG.replace(kl_estimator=estimator, aggregation=aggregation)
  loss, m = grpo.grpo_loss(LOGP, OLD, REF, ADV, MASK, cfg)
  np.testing.assert_allclose(loss, EXPECTED_LOSS[(estimator, aggregation)],
                             atol=2e-6)
  np.testing.assert_allclose(m["loss"], loss)
  np.testing.assert_allclose(m["kl"], KL_TOKEN_MEAN[estimator], atol=1e-6)
  want_policy = {"token": 0.625504 / 5,
                 "sequence": (-3.184837 / 3 + 3.810342 / 2) / 2}[aggregation]
  np.testing.assert_allclose(m["policy_loss"], want_policy, atol=1e-6)
  # Tokens (0, 0) (high) and (1, 0) (low) of 5 are clipped.
  np.testing.assert_allclose(
      [m["clip_fraction"], m["clip_low_fraction"], m["clip_high_fraction"]],
      [0.4, 0.2, 0.2], atol=1e-7)
  np.testing.assert_allclose(
      m["ratio_mean"], (1.648721 + 1 + 0.904837 + 0.606531 + 1.105171) / 5,
      atol=1e-6)
  np.testing.assert_allclose(m["entropy"], (1 + 2 + 0.5 + 0.3 + 1.2) / 5,
                             atol=1e-6)
  assert float(m["completion_tokens"]) == 5
  assert all(np.isfinite(v) for v in m.values())


def test_grpo_loss_beta_zero_and_missing_ref():
  cfg0 = CFG.replace(kl_beta=0.0)
  loss, m = grpo.grpo_loss(LOGP, OLD, None, ADV, MASK, cfg0)
  np.testing.assert_allclose(loss, 0.625504 / 5, atol=1e-6)
  assert float(m["kl"]) == 0.0
  # With β = 0 a given reference only feeds the metric.
  loss_r, m_r = grpo.grpo_loss(LOGP, OLD, REF, ADV, MASK, cfg0)
  assert float(loss_r) == float(loss)
  np.testing.assert_allclose(m_r["kl"], KL_TOKEN_MEAN["k3"], atol=1e-6)
  with pytest.raises(ValueError, match="needs ref_logp"):
    grpo.grpo_loss(LOGP, OLD, None, ADV, MASK, CFG)


def _grad_logp(logp, old, ref, adv, mask, cfg):
  fn = lambda lp: grpo.grpo_loss(lp, old, ref, adv, mask, cfg)[0]
  return np.asarray(jax.grad(fn)(jnp.asarray(logp)))


@pytest.mark.parametrize("aggregation", ["token", "sequence"])
def test_on_policy_gradient_is_minus_advantage_over_normaliser(aggregation):
  """At old == logp (ρ = 1, nothing clipped) d loss / d logp_it is
  -A_i / N on valid tokens (N = token count, or n_i * rows for 'sequence'),
  0 on masked ones; and the KL gradient vanishes at logp == ref."""
  rng = np.random.default_rng(0)
  logp = np.log(rng.uniform(0.05, 1, (3, 4))).astype(np.float32)
  adv = np.array([1.5, -0.5, 0.25], np.float32)
  mask = np.array([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]], np.float32)
  cfg = CFG.replace(aggregation=aggregation)
  for ref in (None, logp):
    c = cfg if ref is not None else cfg.replace(kl_beta=0.0)
    g = _grad_logp(logp, logp, ref, adv, mask, c)
    if aggregation == "token":
      want = -adv[:, None] * mask / mask.sum()
    else:
      want = -adv[:, None] * mask / (mask.sum(1, keepdims=True) * 3)
    np.testing.assert_allclose(g, want, atol=1e-7)


def test_gradient_zero_on_clipped_tokens_and_finite_under_mask():
  g = _grad_logp(LOGP, OLD, None, ADV, MASK, CFG.replace(kl_beta=0.0))
  assert np.isfinite(g).all()   # masked -inf / NaN inputs do not leak
  rho = np.exp(np.where(MASK > 0, LOGP - OLD, 0))
  want = -ADV[:, None] * rho / 5 * MASK
  want[0, 0] = want[1, 0] = 0.0  # the clipped tokens
  np.testing.assert_allclose(g, want, atol=1e-6)

"""GRPO objective as pure functions: advantages, KL estimators, the clipped
surrogate, aggregation, and the loss with its metrics.

  adv = group_advantages(rewards, gcfg.group_size, gcfg.advantage_scale,
                         gcfg.adv_eps)                            # f32[R]
  loss, metrics = grpo_loss(logp, old_logp, ref_logp, adv, mask, gcfg)

The objective (DeepSeekMath's GRPO, written as a loss to minimise), per
completion token t of row i, with ρ = π(y_t) / π_old(y_t):

  l_it = -min(ρ A_i, clip(ρ, 1 - ε_low, 1 + ε_high) A_i) + β KL_t(π || π_ref)

then averaged over the valid tokens ('token') or per row and then over rows
('sequence'). The advantage A_i is shared by every token of row i and comes
from the rewards of its group: the G completions sampled for one prompt are
rows i*G .. i*G + G - 1 (the sampler's order, `SampleOutput`).

Nothing here touches the model: the log-probs come from
`sampler.token_logprobs` (see `rl/step.py`). Every function is jnp-only and
traceable; shapes are static.

Masked positions (after EOS, `mask` = 0) may hold anything, even -inf: the
loss replaces them by 0 before any arithmetic, so neither the value nor the
gradient can pick up NaN from them (NaN * 0 is NaN, in the backward pass too).

Letters: R rows = prompts × group, G group size, C completion length.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from auditdm_jax.rl.config import (ADVANTAGE_SCALES, AGGREGATIONS,
                                   KL_ESTIMATORS, GrpoConfig)


def _groups(rewards: jax.Array, group_size: int) -> jax.Array:
  """f32[R] -> f32[R / G, G] (row i * G + j is member j of group i)."""
  rewards = jnp.asarray(rewards, jnp.float32)
  if rewards.ndim != 1:
    raise ValueError(f"rewards must be f32[R], got shape {rewards.shape}")
  if group_size < 1 or rewards.shape[0] % group_size:
    raise ValueError(f"{rewards.shape[0]} rewards do not split into groups "
                     f"of {group_size}")
  return rewards.reshape(-1, group_size)                        # [R/G, G]


def group_advantages(rewards: jax.Array, group_size: int,
                     scale: str = "std", eps: float = 1e-4) -> jax.Array:
  """Group-relative advantages.

  Args:
    rewards: f32[R]; rows i*G .. i*G+G-1 are the G completions of prompt i.
    group_size: G.
    scale: 'std': (r - mean_g) / (std_g + eps) (the paper's Â, with the
      population std, ddof = 0, so a group's advantages have unit RMS unless
      they are all equal); 'none': r - mean_g (Dr.GRPO: no std division,
      which would up-weight groups whose rewards barely differ).
    eps: added to the std.
  Returns:
    f32[R]. A group whose rewards are all equal gets 0 everywhere (it
    carries no signal: see `zero_variance_fraction`).

  Example: rewards [1, 0, 0, 1, 0, 0, 0, 0], G = 4: group 0 has mean 0.5 and
  std 0.5, so A = ±0.5 / 0.5001; group 1 is all 0.
  """
  if scale not in ADVANTAGE_SCALES:
    raise ValueError(f"scale must be one of {ADVANTAGE_SCALES}, got {scale!r}")
  r = _groups(rewards, group_size)                              # [R/G, G]
  centred = r - jnp.mean(r, axis=1, keepdims=True)              # [R/G, G]
  if scale == "std":
    centred = centred / (jnp.std(r, axis=1, keepdims=True) + eps)
  return centred.reshape(-1)                                    # [R]


def zero_variance_fraction(rewards: jax.Array, group_size: int) -> jax.Array:
  """f32[]: fraction of groups whose G rewards are all equal (zero advantage,
  so no gradient from the policy term); a health metric of a GRPO run."""
  r = _groups(rewards, group_size)                              # [R/G, G]
  flat = jnp.max(r, axis=1) == jnp.min(r, axis=1)               # [R/G]
  return jnp.mean(flat.astype(jnp.float32))


def kl_estimate(logp: jax.Array, ref_logp: jax.Array,
                estimator: str = "k3") -> jax.Array:
  """Per-token estimates of KL(π || π_ref) from tokens sampled from π.

  With x = ref_logp - logp = log(π_ref / π) (Schulman, "Approximating KL
  divergence", 2020):

    k1 = -x                 unbiased, can be negative
    k2 = x² / 2             biased, >= 0, low variance
    k3 = exp(x) - x - 1     unbiased, >= 0 (exp(x) >= 1 + x); DeepSeekMath

  All three are 0 where logp == ref_logp.

  Args:
    logp: f32[R, C] log π of the sampled tokens.
    ref_logp: f32[R, C] log π_ref of the same tokens.
    estimator: 'k1', 'k2' or 'k3'.
  Returns:
    f32[R, C].
  """
  x = ref_logp - logp                                           # [R, C]
  if estimator == "k1":
    return -x
  if estimator == "k2":
    return 0.5 * jnp.square(x)
  if estimator == "k3":
    # expm1(x) - x, not exp(x) - 1 - x: near x = 0 (policy close to the
    # reference, the common case) exp(x) rounds to 1 + x in f32 and the
    # difference could come out slightly negative; expm1 keeps the x²/2.
    return jnp.expm1(x) - x
  raise ValueError(f"estimator must be one of {KL_ESTIMATORS}, got "
                   f"{estimator!r}")


def clipped_surrogate(logp: jax.Array, old_logp: jax.Array,
                      advantages: jax.Array, eps_low: float,
                      eps_high: float) -> jax.Array:
  """PPO's clipped surrogate as a per-token loss.

  Args:
    logp: f32[R, C] log π (differentiated).
    old_logp: f32[R, C] log π_old, the policy that sampled the tokens.
    advantages: f32[R], one per row, broadcast over its tokens.
    eps_low, eps_high: the ratio is clipped to [1 - eps_low, 1 + eps_high].
  Returns:
    f32[R, C]: -min(ρ A, clip(ρ, 1 - eps_low, 1 + eps_high) A) with
    ρ = exp(logp - old_logp). Its gradient is -ρ A ∇logp where the min picks
    the unclipped term and 0 where the clipped one is flat.
  """
  ratio = jnp.exp(logp - old_logp)                              # [R, C]
  adv = advantages[:, None]                                     # [R, 1]
  clipped = jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high)
  return -jnp.minimum(ratio * adv, clipped * adv)               # [R, C]


def aggregate(per_token: jax.Array, mask: jax.Array,
              mode: str = "token") -> jax.Array:
  """Averages a per-token quantity over the valid tokens.

  Args:
    per_token: f32[R, C].
    mask: f32[R, C] (or bool), 1 on valid completion tokens.
    mode: 'token': sum over every valid token / their number;
      'sequence': each row's token mean, then the mean over rows that have
      at least one valid token (empty rows, e.g. batch padding, are skipped
      rather than counted as 0).
  Returns:
    f32[]; 0 when no token is valid.

  Example: per_token [[1, 2, 3], [4, 5, 6]], mask [[1, 1, 0], [1, 0, 0]]:
  token (1 + 2 + 4) / 3 = 7/3; sequence ((1 + 2) / 2 + 4) / 2 = 11/4.
  """
  m = jnp.asarray(mask).astype(jnp.float32)                     # [R, C]
  # where, not multiply: a masked -inf / NaN would survive `x * 0`.
  x = jnp.where(m > 0, per_token, 0.0)                          # [R, C]
  if mode == "token":
    return jnp.sum(x * m) / jnp.maximum(jnp.sum(m), 1.0)
  if mode == "sequence":
    n = jnp.sum(m, axis=1)                                      # [R]
    row_mean = jnp.sum(x * m, axis=1) / jnp.maximum(n, 1.0)     # [R]
    rows = jnp.sum(n > 0)
    return jnp.sum(row_mean) / jnp.maximum(rows, 1).astype(jnp.float32)
  raise ValueError(f"mode must be one of {AGGREGATIONS}, got {mode!r}")


def grpo_loss(logp: jax.Array, old_logp: jax.Array,
              ref_logp: jax.Array | None, advantages: jax.Array,
              mask: jax.Array, config: GrpoConfig):
  """The GRPO loss of a batch of scored completions, and its metrics.

  Args:
    logp: f32[R, C] log π of the completion tokens under the policy being
      trained (the only differentiated input).
    old_logp: f32[R, C] under the policy that sampled them (constant).
    ref_logp: f32[R, C] under the reference policy, or None. Required when
      `config.kl_beta > 0`; with β = 0 it only feeds the 'kl' metric.
    advantages: f32[R].
    mask: f32[R, C], 1 on completion tokens up to and including EOS.
    config: ε, β, the KL estimator and the aggregation.
  Returns:
    (loss f32[], metrics dict of f32[]): 'loss'; 'policy_loss' (the clipped
    surrogate alone, aggregated like the loss); 'kl' (token mean of the
    estimator, 0 without ref_logp); 'clip_fraction' (share of valid tokens
    whose clipped term is active, i.e. ρ < 1 - ε_low with A < 0 or
    ρ > 1 + ε_high with A > 0: the tokens that get no gradient), with its
    'clip_low_fraction' / 'clip_high_fraction' parts; 'ratio_mean' (token
    mean of ρ); 'entropy' (-token mean of logp: an estimate of the policy's
    entropy from its own samples); 'completion_tokens' (sum of mask).
  """
  if config.kl_beta > 0 and ref_logp is None:
    raise ValueError(f"kl_beta = {config.kl_beta} needs ref_logp")
  m = jnp.asarray(mask).astype(jnp.float32)                     # [R, C]
  valid = m > 0
  # Masked positions become 0 in every log-prob: the ratio there is 1, the
  # KL 0, and no NaN / inf from them reaches the loss or its gradient.
  zero = lambda x: jnp.where(valid, jnp.asarray(x, jnp.float32), 0.0)
  logp, old_logp = zero(logp), zero(old_logp)
  advantages = jnp.asarray(advantages, jnp.float32)             # [R]

  policy = clipped_surrogate(logp, old_logp, advantages, config.eps_low,
                             config.eps_high)                   # [R, C]
  per_token = policy
  kl = jnp.zeros_like(policy)
  if ref_logp is not None:
    kl = kl_estimate(logp, zero(ref_logp), config.kl_estimator)  # [R, C]
    if config.kl_beta > 0:
      per_token = policy + config.kl_beta * kl
  loss = aggregate(per_token, m, config.aggregation)

  # Metrics are diagnostics: no gradient through them.
  sg = jax.lax.stop_gradient
  logp, kl = sg(logp), sg(kl)
  tok_mean = lambda x: aggregate(x, m, "token")
  ratio = jnp.exp(logp - old_logp)                              # [R, C]
  adv = advantages[:, None]                                     # [R, 1]
  low = ((ratio < 1.0 - config.eps_low) & (adv < 0)).astype(jnp.float32)
  high = ((ratio > 1.0 + config.eps_high) & (adv > 0)).astype(jnp.float32)
  metrics = {
      "loss": loss,
      "policy_loss": sg(aggregate(policy, m, config.aggregation)),
      "kl": tok_mean(kl),
      "clip_fraction": tok_mean(low + high),
      "clip_low_fraction": tok_mean(low),
      "clip_high_fraction": tok_mean(high),
      "ratio_mean": tok_mean(ratio),
      "entropy": -tok_mean(logp),
      "completion_tokens": jnp.sum(m),
  }
  return loss, metrics

"""GRPO objective config: one frozen, validated dataclass.

  gcfg = GrpoConfig(group_size=8, kl_beta=0.04, kl_estimator="k3")
  gcfg = GrpoConfig.from_dict(config_dict)   # ml_collections ConfigDict too
  sampling = gcfg.sampling_config(eos_ids=(1, 106))   # rollouts, n = G

What GRPO adds on top of a `TrainConfig` (which keeps the optimiser,
schedule, LoRA, freezing and mesh): the group size, the clipped surrogate's
epsilons, the KL penalty and its estimator, how per-token losses are averaged,
how rewards become advantages, and the sampling distribution that rollouts
are drawn from and log-probs are scored under. The paper fixes none of these
(research/paper.md §4, §10.4); the defaults are DeepSeekMath's GRPO (ε 0.2,
β 0.04, k3, std-normalised advantages).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from auditdm_jax.sampling.strategies import SamplingConfig

KL_ESTIMATORS = ("k1", "k2", "k3")
AGGREGATIONS = ("token", "sequence")
ADVANTAGE_SCALES = ("std", "none")


@dataclasses.dataclass(frozen=True, kw_only=True)
class GrpoConfig:
  """The GRPO objective and its rollout distribution.

  Attributes:
    group_size: G, completions sampled per prompt (>= 2: advantages compare
      the completions of one prompt, so a group of 1 has nothing to compare).
    clip_eps: ε of the clipped surrogate; the ratio is clipped to
      [1 - clip_eps, 1 + clip_eps_high].
    clip_eps_high: upper ε; None = clip_eps. DAPO's "clip-higher" uses a
      larger upper bound (e.g. 0.28) so that unlikely tokens with positive
      advantage can still grow.
    kl_beta: β, weight of the per-token KL(π || π_ref) penalty in the loss;
      0 disables it and the reference log-prob pass.
    kl_estimator: 'k1' (log ratio), 'k2' (half squared log ratio) or 'k3'
      (exp(-x) + x - 1, unbiased and >= 0; DeepSeekMath's); `grpo.kl_estimate`.
    aggregation: 'token' (sum over every completion token of the batch /
      number of tokens: long completions weigh more, DAPO / Dr.GRPO) or
      'sequence' (mean over sequences of each sequence's token mean: the
      original GRPO).
    advantage_scale: 'std' ((r - mean_group) / (std_group + adv_eps), the
      paper's formula) or 'none' (r - mean_group, Dr.GRPO).
    adv_eps: ε added to the group std.
    temperature, top_k, top_p: the sampling distribution (`SamplingConfig`);
      rollouts are drawn from it and the policy, old and reference
      log-probs are all scored under it, so the ratio compares like with like.
    logits_chunk: completion positions per LM-head chunk when scoring
      (`sampler.token_logprobs`); bounds memory at [R, chunk, V] logits.
    max_new_tokens: C, the completion length budget of the rollouts.
  """
  group_size: int = 8
  clip_eps: float = 0.2
  clip_eps_high: Optional[float] = None
  kl_beta: float = 0.04
  kl_estimator: str = "k3"
  aggregation: str = "token"
  advantage_scale: str = "std"
  adv_eps: float = 1e-4
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  logits_chunk: int = 128
  max_new_tokens: int = 64

  def __post_init__(self):
    # ints and floats from JSON / ConfigDicts: normalise so that equal
    # configs hash equal (jitted steps are cached on configs).
    for name in ("clip_eps", "kl_beta", "adv_eps", "temperature", "top_p"):
      object.__setattr__(self, name, float(getattr(self, name)))
    if self.clip_eps_high is not None:
      object.__setattr__(self, "clip_eps_high", float(self.clip_eps_high))
    self._validate()

  def _validate(self):
    def need(ok: bool, msg: str):
      if not ok:
        raise ValueError(f"GrpoConfig: {msg}")

    need(isinstance(self.group_size, int) and self.group_size >= 2,
         f"group_size must be an int >= 2, got {self.group_size!r}")
    need(0 < self.clip_eps < 1, f"clip_eps must be in (0, 1), got "
         f"{self.clip_eps}")
    if self.clip_eps_high is not None:
      need(self.clip_eps_high > 0, f"clip_eps_high must be > 0 (or None), "
           f"got {self.clip_eps_high}")
    need(self.kl_beta >= 0, f"kl_beta must be >= 0, got {self.kl_beta}")
    need(self.kl_estimator in KL_ESTIMATORS, f"kl_estimator must be one of "
         f"{KL_ESTIMATORS}, got {self.kl_estimator!r}")
    need(self.aggregation in AGGREGATIONS, f"aggregation must be one of "
         f"{AGGREGATIONS}, got {self.aggregation!r}")
    need(self.advantage_scale in ADVANTAGE_SCALES, f"advantage_scale must be "
         f"one of {ADVANTAGE_SCALES}, got {self.advantage_scale!r}")
    need(self.adv_eps > 0, f"adv_eps must be > 0, got {self.adv_eps}")
    # Greedy rollouts would make every completion of a group identical (all
    # advantages 0), so temperature 0 is refused here although the sampler
    # allows it.
    need(self.temperature > 0, f"temperature must be > 0, got "
         f"{self.temperature}")
    need(isinstance(self.top_k, int) and self.top_k >= 0,
         f"top_k must be an int >= 0 (0 = off), got {self.top_k!r}")
    need(0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}")
    need(isinstance(self.logits_chunk, int) and self.logits_chunk >= 1,
         f"logits_chunk must be an int >= 1, got {self.logits_chunk!r}")
    need(isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1,
         f"max_new_tokens must be an int >= 1, got {self.max_new_tokens!r}")

  # --- derived ---------------------------------------------------------------

  @property
  def eps_low(self) -> float:
    return self.clip_eps

  @property
  def eps_high(self) -> float:
    return self.clip_eps if self.clip_eps_high is None else self.clip_eps_high

  @property
  def use_kl(self) -> bool:
    """Whether the loss has a KL term (and the batch reference log-probs)."""
    return self.kl_beta > 0

  def sampling_config(self, *, eos_ids=(), pad_id: int = 0) -> SamplingConfig:
    """The rollout `SamplingConfig`: this distribution, G samples per prompt."""
    return SamplingConfig(temperature=self.temperature, top_k=self.top_k,
                          top_p=self.top_p, max_new_tokens=self.max_new_tokens,
                          n_per_prompt=self.group_size, eos_ids=eos_ids,
                          pad_id=pad_id)

  # --- conversions -----------------------------------------------------------

  def to_dict(self) -> dict[str, Any]:
    """JSON-friendly dict."""
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: Any) -> "GrpoConfig":
    """From a dict or an ml_collections ConfigDict; unknown keys are errors."""
    if hasattr(d, "to_dict"):
      d = d.to_dict()
    d = dict(d)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
      raise ValueError(f"GrpoConfig: unknown fields {unknown}; known: "
                       f"{sorted(known)}")
    return cls(**d)

  def replace(self, **kw) -> "GrpoConfig":
    return dataclasses.replace(self, **kw)

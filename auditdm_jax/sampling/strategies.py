"""Sampling strategies: pure functions from logits to a sampling distribution.

Every strategy maps logits f32[..., V] to logits f32[..., V] whose softmax is
the distribution to sample from: scaled (temperature) and/or with excluded
tokens set to -inf (greedy, top-k, top-p). They compose left to right in the
order transformers uses (temperature, then top-k, then top-p), so the same
`SamplingConfig` means the same thing here and in `generate`:

  logits = process_logits(raw_logits, config)         # f32[B, V]
  token = choose(raw_logits, key, config)             # int32[B]
  logp = jax.nn.log_softmax(logits)[token]            # under the sampling dist.

Strategies are registered by name (`get("top_p")`) so run configs can name
them; `SamplingConfig.steps()` lists the active ones with their arguments.

Greedy convention: temperature 0 picks the argmax. Its log-probs are reported
under the temperature-1 distribution (with the same top-k / top-p masks), not
the degenerate point mass, whose log-prob would always be 0. The argmax is
always inside the top-k / top-p set, so the token is the same either way.

Letters: B batch, V vocab, C candidates (top-k size or V).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import jax
import jax.numpy as jnp

# Softmax weight of an excluded token. -inf (not a large finite number) so that
# excluded tokens have exactly zero probability and log-probs stay exact.
_EXCLUDED = -jnp.inf

Strategy = Callable[..., jax.Array]
_REGISTRY: dict[str, Strategy] = {}


def register(name: str):
  """Registers `fn(logits[..., V], **kwargs) -> logits[..., V]` (decorator)."""
  def wrap(fn):
    if name in _REGISTRY:
      raise ValueError(f"sampling strategy {name!r} registered twice")
    _REGISTRY[name] = fn
    return fn
  return wrap


def get(name: str) -> Strategy:
  try:
    return _REGISTRY[name]
  except KeyError:
    raise KeyError(f"unknown sampling strategy {name!r}; known: "
                   f"{', '.join(names())}") from None


def names() -> list[str]:
  return sorted(_REGISTRY)


@register("greedy")
def greedy(logits: jax.Array) -> jax.Array:
  """Keeps only the argmax (first one on ties, as `jnp.argmax`)."""
  best = jnp.argmax(logits, axis=-1)[..., None]                  # [..., 1]
  keep = jnp.arange(logits.shape[-1]) == best                    # [..., V]
  return jnp.where(keep, logits, _EXCLUDED)


@register("temperature")
def temperature(logits: jax.Array, temperature: float) -> jax.Array:
  """Divides by `temperature` > 0 (0 is greedy; use `greedy`)."""
  if temperature <= 0:
    raise ValueError(f"temperature must be > 0 here, got {temperature}")
  if temperature == 1.0:
    return logits
  return logits / jnp.asarray(temperature, logits.dtype)


@register("top_k")
def top_k(logits: jax.Array, k: int) -> jax.Array:
  """Keeps the k largest logits (and any tied with the k-th, as HF does)."""
  if k <= 0:
    raise ValueError(f"top_k must be > 0 here, got {k}")
  if k >= logits.shape[-1]:
    return logits
  kth = jax.lax.top_k(logits, k)[0][..., -1:]                    # [..., 1]
  return jnp.where(logits < kth, _EXCLUDED, logits)


@register("top_p")
def top_p(logits: jax.Array, p: float, max_candidates: Optional[int] = None
          ) -> jax.Array:
  """Nucleus: keeps the smallest set of top tokens whose mass reaches p.

  A token is kept when the mass of the tokens strictly more likely than it is
  < p (transformers' `TopPLogitsWarper` rule), so the top token is always
  kept. Tokens tied with the least likely kept one are kept too.

  Args:
    logits: f32[..., V], possibly with -inf already (e.g. after top-k).
    p: in (0, 1]; 1 keeps everything.
    max_candidates: when an earlier filter left at most this many finite
      logits (top-k), only that many are sorted instead of all V.
  """
  if not 0 < p <= 1:
    raise ValueError(f"top_p must be in (0, 1], got {p}")
  if p == 1.0:
    return logits
  v = logits.shape[-1]
  c = v if max_candidates is None else min(max_candidates, v)
  cand = jax.lax.top_k(logits, c)[0]                  # [..., C], descending
  probs = jax.nn.softmax(cand.astype(jnp.float32), axis=-1)
  mass_before = jnp.cumsum(probs, axis=-1) - probs               # exclusive
  kept = mass_before < p                                         # [..., C]
  # Candidates are sorted, so the kept ones form a prefix; its last value is
  # the threshold.
  n_kept = jnp.sum(kept, axis=-1, keepdims=True)                 # [..., 1] >= 1
  threshold = jnp.take_along_axis(cand, n_kept - 1, axis=-1)     # [..., 1]
  return jnp.where(logits < threshold, _EXCLUDED, logits)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SamplingConfig:
  """How to pick each new token. Frozen and hashable: the sampler compiles
  once per distinct config (it is a static argument of the jitted loop).

  temperature: >= 0; 0 is greedy (argmax).
  top_k: >= 0; 0 is off.
  top_p: in (0, 1]; 1 is off.
  max_new_tokens: > 0, size of the output buffers.
  eos_ids: tokens that end a sample (included in its length).
  n_per_prompt: >= 1 samples per prompt, from one prefill.
  pad_id: written after a sample ended.
  """
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  max_new_tokens: int = 64
  eos_ids: tuple[int, ...] = ()
  n_per_prompt: int = 1
  pad_id: int = 0

  def __post_init__(self):
    if self.temperature < 0:
      raise ValueError(f"temperature must be >= 0, got {self.temperature}")
    if self.top_k < 0:
      raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
    if not 0 < self.top_p <= 1:
      raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
    if self.max_new_tokens <= 0:
      raise ValueError(f"max_new_tokens must be > 0, got {self.max_new_tokens}")
    if self.n_per_prompt < 1:
      raise ValueError(f"n_per_prompt must be >= 1, got {self.n_per_prompt}")
    # Lists would make the config unhashable (and so unusable as a static
    # jit argument); normalise instead of failing on them.
    eos = (self.eos_ids,) if isinstance(self.eos_ids, int) else self.eos_ids
    object.__setattr__(self, "eos_ids", tuple(int(e) for e in eos))
    object.__setattr__(self, "temperature", float(self.temperature))
    object.__setattr__(self, "top_p", float(self.top_p))

  @property
  def is_greedy(self) -> bool:
    return self.temperature == 0

  def steps(self) -> list[tuple[str, dict]]:
    """Active strategies shaping the log-prob distribution, in order.

    Greedy scores under temperature 1 (see the module docstring), so it adds
    no step; its argmax is taken by `choose`.
    """
    out = []
    if self.temperature not in (0.0, 1.0):
      out.append(("temperature", {"temperature": self.temperature}))
    if self.top_k:
      out.append(("top_k", {"k": self.top_k}))
    if self.top_p < 1:
      kw = {"p": self.top_p}
      if self.top_k:
        kw["max_candidates"] = self.top_k
      out.append(("top_p", kw))
    return out


def process_logits(logits: jax.Array, config: SamplingConfig) -> jax.Array:
  """f32[..., V] -> logits of the sampling distribution (-inf = excluded)."""
  logits = logits.astype(jnp.float32)
  for name, kwargs in config.steps():
    logits = get(name)(logits, **kwargs)
  return logits


def choose(logits: jax.Array, key: jax.Array, config: SamplingConfig
           ) -> tuple[jax.Array, jax.Array]:
  """Picks one token per row and its log-prob under the sampling distribution.

  Args:
    logits: f32[B, V] raw model logits.
    key: PRNG key (unused when greedy).
    config: the sampling config.
  Returns:
    (tokens int32[B], logprobs f32[B]).
  """
  processed = process_logits(logits, config)                     # [B, V]
  if config.is_greedy:
    tokens = jnp.argmax(logits, axis=-1)
  else:
    tokens = jax.random.categorical(key, processed, axis=-1)
  logp = jax.nn.log_softmax(processed, axis=-1)
  logp = jnp.take_along_axis(logp, tokens[:, None], axis=-1)[:, 0]
  return tokens.astype(jnp.int32), logp

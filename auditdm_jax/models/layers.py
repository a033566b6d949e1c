"""Building blocks shared by the Gemma decoders and SigLIP.

Parameter names follow the gemma / big_vision layout (anchors.md §5) so that
checkpoints map onto them by table: Einsum weights are called `w`, RMSNorm
weights `scale` and are applied as (1 + scale).

Einsum letters: B batch, T length, N heads, H head dim, D model dim,
F MLP hidden dim.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def fan_in_normal(in_axes: Sequence[int]) -> nn.initializers.Initializer:
  """normal(1 / sqrt(fan_in)), fan_in = product of the `in_axes` dims.

  Why not Gemma's normal(0.02): that is 1/sqrt(D) at D ~ 2.5k, but at the
  world's D = 128 it is 4.4x too small, so attention logits start ~20x
  too flat (uniform attention) and a from-scratch model sits for hundreds
  of thousands of examples on the "global image statistics" plateau before
  it learns to attend to one object. Scaling by fan-in gives the same 0.02
  at real sizes (checkpoints overwrite it anyway) and lively attention at
  tiny ones.
  """
  def init(key, shape, dtype=jnp.float32):
    fan_in = 1
    for a in in_axes:
      fan_in *= shape[a]
    return jax.random.normal(key, shape, dtype) * (fan_in ** -0.5)
  return init


class Einsum(nn.Module):
  """A weight `w` of a fixed shape, contracted with the input by `eqn`.

  `in_axes`: the axes of `shape` that `eqn` contracts (for the init scale).
  """
  shape: Sequence[int]
  in_axes: Sequence[int] = (0,)
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, eqn: str, x: jax.Array) -> jax.Array:
    w = self.param("w", fan_in_normal(self.in_axes), tuple(self.shape),
                   self.dtype)
    return jnp.einsum(eqn, x, w.astype(x.dtype))


class RMSNorm(nn.Module):
  """x * rsqrt(mean(x^2) + eps) * (1 + scale), computed in float32.

  The (1 + scale) form and zero init match Gemma checkpoints; HF computes in
  float32 and casts back, which matters for bf16 parity.
  """
  eps: float = 1e-6
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    scale = self.param("scale", nn.initializers.zeros_init(), (x.shape[-1],),
                       self.param_dtype)
    x32 = x.astype(jnp.float32)
    var = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
    y = x32 * jax.lax.rsqrt(var + self.eps)
    y = y * (1.0 + scale.astype(jnp.float32))
    return y.astype(x.dtype)


def rope_tables(positions: jax.Array, head_dim: int, theta, scale
                ) -> tuple[jax.Array, jax.Array]:
  """Returns (sin, cos), each f32[B, T, H/2], for split-halves RoPE.

  Linear scaling divides positions by `scale` (Gemma-3 global layers, 4B+).
  `theta` and `scale` may be traced scalars.
  """
  half = head_dim // 2
  exponent = jnp.arange(half, dtype=jnp.float32) * 2.0 / head_dim
  inv_freq = 1.0 / (jnp.asarray(theta, jnp.float32) ** exponent)  # [H/2]
  inv_freq = inv_freq / jnp.asarray(scale, jnp.float32)
  angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, H/2]
  return jnp.sin(angles), jnp.cos(angles)


def apply_rope(x: jax.Array, sin: jax.Array, cos: jax.Array) -> jax.Array:
  """Rotates x[B, T, N, H] by split-halves RoPE with tables f32[B, T, H/2]."""
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  sin, cos = sin[:, :, None, :], cos[:, :, None, :]  # [B, T, 1, H/2]
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


def softcap(x: jax.Array, cap) -> jax.Array:
  """cap * tanh(x / cap); identity when cap is None."""
  if cap is None:
    return x
  return jnp.tanh(x / cap) * cap


class FeedForward(nn.Module):
  """GeGLU MLP: linear(gelu_tanh(x W_gate) * (x W_up)).

  gating_einsum is [2, F, D] (gate, up), linear is [F, D].
  """
  embed_dim: int
  hidden_dim: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    gating = self.param("gating_einsum", fan_in_normal((2,)),
                        (2, self.hidden_dim, self.embed_dim), self.dtype)
    h = jnp.einsum("BTD,CFD->CBTF", x, gating.astype(x.dtype))  # [2, B, T, F]
    h = jax.nn.gelu(h[0], approximate=True) * h[1]    # [B, T, F]
    w = self.param("linear", fan_in_normal((0,)),
                   (self.hidden_dim, self.embed_dim), self.dtype)
    return jnp.einsum("BTF,FD->BTD", h, w.astype(h.dtype))

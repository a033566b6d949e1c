"""SigLIP vision tower (ViT without the pooling head), big_vision layout.

Params: img/embedding/{kernel [P, P, 3, W], bias}, img/pos_embedding
[1, N, W], img/Transformer/encoderblock/... (scanned, leading axis = depth),
img/Transformer/encoder_norm, and optionally img/head (PaliGemma's linear
projector W -> D).

Letters: B images, N patches, W width, M heads, C head dim, P patch size.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from auditdm_jax.models.config import VisionConfig


class SelfAttention(nn.Module):
  """Bidirectional MHA; query/key/value kernels [W, M, C], out [M, C, W]."""
  cfg: VisionConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    m = self.cfg.num_heads
    c = self.cfg.width // m
    dense = lambda name: nn.DenseGeneral((m, c), dtype=self.dtype, name=name)
    q, k, v = dense("query")(x), dense("key")(x), dense("value")(x)  # [B, N, M, C]
    logits = jnp.einsum("BNMC,BKMC->BMNK", q, k) * (c ** -0.5)       # [B, M, N, N]
    probs = jax.nn.softmax(logits.astype(jnp.float32), -1).astype(v.dtype)
    out = jnp.einsum("BMNK,BKMC->BNMC", probs, v)                     # [B, N, M, C]
    return nn.DenseGeneral(self.cfg.width, axis=(-2, -1), dtype=self.dtype,
                           name="out")(out)


class MlpBlock(nn.Module):
  cfg: VisionConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = nn.Dense(self.cfg.mlp_dim, dtype=self.dtype, name="Dense_0")(x)
    x = jax.nn.gelu(x, approximate=True)
    return nn.Dense(self.cfg.width, dtype=self.dtype, name="Dense_1")(x)


class EncoderBlock(nn.Module):
  cfg: VisionConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, _):
    eps = self.cfg.norm_eps
    y = nn.LayerNorm(epsilon=eps, dtype=self.dtype, name="LayerNorm_0")(x)
    x = x + SelfAttention(self.cfg, self.dtype,
                          name="MultiHeadDotProductAttention_0")(y)
    y = nn.LayerNorm(epsilon=eps, dtype=self.dtype, name="LayerNorm_1")(x)
    x = x + MlpBlock(self.cfg, self.dtype, name="MlpBlock_0")(y)
    return x, None


class Transformer(nn.Module):
  cfg: VisionConfig
  dtype: Any = jnp.float32
  remat: bool = False
  unroll: int = 1  # Blocks per iteration of the block scan.

  @nn.compact
  def __call__(self, x):
    block = nn.remat(EncoderBlock) if self.remat else EncoderBlock
    x, _ = nn.scan(block, variable_axes={"params": 0},
                   split_rngs={"params": True}, in_axes=nn.broadcast,
                   length=self.cfg.depth, unroll=self.unroll)(self.cfg, self.dtype,
                                          name="encoderblock")(x, None)
    return nn.LayerNorm(epsilon=self.cfg.norm_eps, dtype=self.dtype,
                        name="encoder_norm")(x)


class SigLIP(nn.Module):
  """images f32[B, S, S, 3] in [-1, 1] -> features [B, N, W] (or [B, N, D]).

  head_dim: output width of the optional linear head (PaliGemma projector).
  """
  cfg: VisionConfig
  head_dim: Optional[int] = None
  dtype: Any = jnp.float32
  remat: bool = False
  unroll: int = 1

  @nn.compact
  def __call__(self, images):
    c = self.cfg
    if images.ndim != 4 or images.shape[1:] != (c.image_size, c.image_size, 3):
      raise ValueError(f"SigLIP expects images [B, {c.image_size}, "
                       f"{c.image_size}, 3], got {images.shape}")
    x = nn.Conv(c.width, (c.patch_size, c.patch_size),
                strides=(c.patch_size, c.patch_size), padding="VALID",
                dtype=self.dtype, name="embedding")(images.astype(self.dtype))
    b = x.shape[0]
    x = x.reshape(b, c.num_patches, c.width)                          # [B, N, W]
    # normal(1/sqrt(W)), as big_vision's learned position embedding.
    pos = self.param("pos_embedding", nn.initializers.normal(c.width ** -0.5),
                     (1, c.num_patches, c.width), jnp.float32)
    x = x + pos.astype(x.dtype)
    x = Transformer(c, self.dtype, self.remat, self.unroll,
                    name="Transformer")(x)
    if self.head_dim is not None:
      x = nn.Dense(self.head_dim, dtype=self.dtype, name="head")(x)
    return x

"""Gemma-2 / Gemma-3 decoder used by every auditdm_jax model.

One class covers both: behaviour comes from `TextConfig` (soft-capping,
QK-norm, per-layer-type window and RoPE). Layers are stacked with `nn.scan`,
so every layer parameter has a leading L axis (`llm/layers/attn/q_einsum/w`
is [L, N, D, H]), as in big_vision's PaliGemma checkpoints.

Einsum letters: B batch, T query length, S key length, N query heads,
K kv heads, G query heads per kv head, H head dim, D model dim, F MLP hidden,
V vocab, L layers.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from auditdm_jax.models import layers
from auditdm_jax.models.config import LOCAL, TextConfig

_NEG_INF = -2.3819763e38  # large negative, finite in f32 and bf16


class Attention(nn.Module):
  """GQA attention with optional QK-norm, soft-capping and a KV cache."""
  cfg: TextConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, sin, cos, mask, kv_cache, write_index):
    """x[B, T, D] -> (out[B, T, D], new (k, v) cache or None).

    Args:
      sin, cos: f32[B, T, H/2] RoPE tables of this layer's type.
      mask: bool[B, T, S]. S = T: attend over the new keys only (forward,
        prefill); S = cache length: attend over the whole cache (decode).
        The two coincide when a prefill fills the whole cache.
      kv_cache: None or (k [B, K, S, H], v [B, K, H, S]): the layouts the
        two attention dots read in place on CPU (contracting axis minor), so
        a decode step copies no cache; x's keys and values are written at
        slots [write_index, write_index + T).
      write_index: int32 scalar, cache slot of x's first token.
    """
    c = self.cfg
    n, k, h, d = c.num_heads, c.num_kv_heads, c.head_dim, c.embed_dim
    q = layers.Einsum((n, d, h), in_axes=(1,), dtype=self.dtype, name="q_einsum")(
        "BTD,NDH->BTNH", x)                                      # [B, T, N, H]
    kv = layers.Einsum((2, k, d, h), in_axes=(2,), dtype=self.dtype, name="kv_einsum")(
        "BSD,CKDH->CBSKH", x)                                    # [2, B, T, K, H]
    key, value = kv[0], kv[1]
    if c.qk_norm:
      q = layers.RMSNorm(c.norm_eps, name="_query_norm")(q)
      key = layers.RMSNorm(c.norm_eps, name="_key_norm")(key)
    q = layers.apply_rope(q, sin, cos)
    key = layers.apply_rope(key, sin, cos)
    q = q * jnp.asarray(c.query_pre_attn_scalar ** -0.5, q.dtype)
    key = key.transpose(0, 2, 1, 3)                              # [B, K, T, H]
    value = value.transpose(0, 2, 3, 1)                          # [B, K, H, T]

    new_cache = None
    if kv_cache is not None:
      ck, cv = kv_cache
      ck = jax.lax.dynamic_update_slice(ck, key.astype(ck.dtype),
                                        (0, 0, write_index, 0))
      cv = jax.lax.dynamic_update_slice(cv, value.astype(cv.dtype),
                                        (0, 0, 0, write_index))
      new_cache = (ck, cv)
      if mask.shape[-1] == ck.shape[2]:
        key, value = ck.astype(q.dtype), cv.astype(q.dtype)      # S slots

    b, t = q.shape[:2]
    q = q.reshape(b, t, k, c.queries_per_kv, h)                  # [B, T, K, G, H]
    logits = jnp.einsum("BTKGH,BKSH->BKGTS", q, key)             # [B, K, G, T, S]
    logits = layers.softcap(logits.astype(jnp.float32), c.attn_softcap)
    logits = jnp.where(mask[:, None, None, :, :], logits, _NEG_INF)
    probs = jax.nn.softmax(logits, axis=-1).astype(value.dtype)
    out = jnp.einsum("BKGTS,BKHS->BTKGH", probs, value)          # [B, T, K, G, H]
    out = out.reshape(b, t, n, h)
    out = layers.Einsum((n, h, d), in_axes=(0, 1), dtype=self.dtype, name="attn_vec_einsum")(
        "BTNH,NHD->BTD", out)                                    # [B, T, D]
    return out, new_cache


class Block(nn.Module):
  """Pre/post-norm residual block; scanned over layers by `Decoder`."""
  cfg: TextConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, layer_in, ropes, masks, write_index):
    """One layer. `layer_in` holds this layer's scanned inputs.

    Args:
      x: [B, T, D] residual stream (scan carry).
      layer_in: dict(is_local=bool[], k=[B,K,S,H] | None, v=[B,K,H,S] | None).
      ropes: (sin, cos) each f32[2, B, T, H/2], index 0 local, 1 global.
      masks: bool[2, B, T, S], index 0 local, 1 global.
    Returns:
      (x, dict(k=..., v=...)) — the updated cache of this layer, or None.
    """
    c = self.cfg
    kind = jnp.where(layer_in["is_local"], 0, 1)
    sin, cos = ropes[0][kind], ropes[1][kind]
    mask = masks[kind]
    kv_cache = None if layer_in.get("k") is None else (layer_in["k"], layer_in["v"])

    h = layers.RMSNorm(c.norm_eps, name="pre_attention_norm")(x)
    h, new_cache = Attention(c, self.dtype, name="attn")(
        h, sin, cos, mask, kv_cache, write_index)
    h = layers.RMSNorm(c.norm_eps, name="post_attention_norm")(h)
    x = x + h
    h = layers.RMSNorm(c.norm_eps, name="pre_ffw_norm")(x)
    h = layers.FeedForward(c.embed_dim, c.hidden_dim, self.dtype, name="mlp")(h)
    h = layers.RMSNorm(c.norm_eps, name="post_ffw_norm")(h)
    x = x + h
    out = None if new_cache is None else {"k": new_cache[0], "v": new_cache[1]}
    return x, out


class Embedder(nn.Module):
  """Token embedding (unscaled in storage) and, for Gemma-3, the image projector.

  Params: input_embedding [V, D]; with `mm_width`, mm_soft_embedding_norm/scale
  [W] and mm_input_projection/w [W, D].
  """
  cfg: TextConfig
  mm_width: Optional[int] = None
  mm_norm_eps: float = 1e-6
  dtype: Any = jnp.float32

  def setup(self):
    c = self.cfg
    self.input_embedding = self.param(
        # 1/sqrt(D): Gemma's 0.02 at real sizes, unit-scale inputs (after
        # the sqrt(D) scaling) and logits at tiny ones.
        "input_embedding", nn.initializers.normal(c.embed_dim ** -0.5),
        (c.vocab_size, c.embed_dim), jnp.float32)
    if self.mm_width is not None:
      self.mm_soft_embedding_norm = layers.RMSNorm(self.mm_norm_eps)
      self.mm_input_projection = layers.Einsum(
          (self.mm_width, c.embed_dim), dtype=self.dtype)

  def encode(self, ids: jax.Array) -> jax.Array:
    """int[B, T] -> [B, T, D], scaled by sqrt(D) (rounded to dtype, as HF)."""
    ids = jnp.clip(ids, 0, self.cfg.vocab_size - 1)
    x = jnp.take(self.input_embedding, ids, axis=0).astype(self.dtype)
    return x * jnp.asarray(self.cfg.embed_dim ** 0.5, self.dtype)

  def decode(self, x: jax.Array) -> jax.Array:
    """[..., D] -> logits [..., V] with the tied embedding."""
    emb = self.input_embedding.astype(x.dtype)
    return jnp.einsum("...D,VD->...V", x, emb)

  def project_image(self, feats: jax.Array) -> jax.Array:
    """Pooled vision features [B, M, W] -> soft tokens [B, M, D] (Gemma-3)."""
    feats = self.mm_soft_embedding_norm(feats)
    return self.mm_input_projection("BMW,WD->BMD", feats)


class Decoder(nn.Module):
  """Embedder + scanned blocks + final norm.

  `__call__` runs the blocks on already-embedded inputs; see `vlm.py` for the
  model protocol built on it.
  """
  cfg: TextConfig
  mm_width: Optional[int] = None
  mm_norm_eps: float = 1e-6
  dtype: Any = jnp.float32
  remat: bool = False
  # Layers per iteration of the layer scan (nn.scan's `unroll`); the
  # stacked param layout is the same for every value.
  unroll: int = 1

  def setup(self):
    c = self.cfg
    self.embedder = Embedder(c, self.mm_width, self.mm_norm_eps, self.dtype)
    self.final_norm = layers.RMSNorm(c.norm_eps)
    self.is_local = jnp.array([t == LOCAL for t in c.layer_types])
    block = nn.remat(Block) if self.remat else Block
    self.layers = nn.scan(
        block, variable_axes={"params": 0}, split_rngs={"params": True},
        in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast),
        length=c.num_layers, unroll=self.unroll)(c, self.dtype)

  def rope(self, positions: jax.Array):
    """(sin, cos), each f32[2, B, T, H/2]: index 0 local, 1 global RoPE."""
    c = self.cfg
    local = layers.rope_tables(positions, c.head_dim, c.rope_local.theta,
                               c.rope_local.scale)
    glob = layers.rope_tables(positions, c.head_dim, c.rope_global.theta,
                              c.rope_global.scale)
    return jnp.stack([local[0], glob[0]]), jnp.stack([local[1], glob[1]])

  def __call__(self, x, positions, masks, cache=None, write_index=0):
    """Runs all layers.

    Args:
      x: [B, T, D] embedded inputs.
      positions: int32[B, T].
      masks: (local, global) bool[B, T, S]; S = T or the cache length (see
        `Attention`).
      cache: None or dict(k=[L, B, K, S, H], v=[L, B, K, H, S]).
      write_index: int32 scalar cache slot of x[:, 0].
    Returns:
      (hidden [B, T, D] after the final norm, new cache dict or None).
    """
    layer_in = {"is_local": self.is_local}
    if cache is not None:
      layer_in.update(k=cache["k"], v=cache["v"])
    masks = jnp.stack(masks)
    x, new_cache = self.layers(x, layer_in, self.rope(positions), masks,
                         jnp.asarray(write_index, jnp.int32))
    return self.final_norm(x), new_cache

  def run_split(self, x, positions, masks, layer_params, cache, write_index):
    """`__call__` with each layer's params as its own arrays, layers unrolled.

    The scanned path slices every layer's weights out of the stacked
    [L, ...] params on each call; on CPU each slice is a copy of the
    weights, which doubles the memory traffic of a decode step. Sampling
    splits the params once per call (`Model.split_layers`) and runs its
    decode steps through here. Same numbers as `__call__`.

    Args:
      x, positions, masks, write_index: as `__call__`.
      layer_params: L per-layer param trees (the stacked tree's slices).
      cache: dict(k=(L arrays [B, K, S, H]), v=(L x [B, K, H, S])): one
        buffer per layer,
        so a step writes its slot in place (a stacked cache would be copied
        whole per layer).
    Returns:
      (hidden [B, T, D] after the final norm, new cache dict of tuples).
    """
    c = self.cfg
    if len(layer_params) != c.num_layers:
      raise ValueError(f"{len(layer_params)} layer param trees for "
                       f"{c.num_layers} layers")
    ropes, masks = self.rope(positions), jnp.stack(masks)
    write_index = jnp.asarray(write_index, jnp.int32)
    block = Block(c, self.dtype, parent=None)
    ks, vs = list(cache["k"]), list(cache["v"])
    for i, params in enumerate(layer_params):
      layer_in = {"is_local": jnp.asarray(c.layer_types[i] == LOCAL),
                  "k": ks[i], "v": vs[i]}
      x, new = block.apply({"params": params}, x, layer_in, ropes, masks,
                           write_index)
      ks[i], vs[i] = new["k"], new["v"]
    return self.final_norm(x), {"k": tuple(ks), "v": tuple(vs)}

"""PaliGemma-2 and Gemma-3 behind one model protocol.

Both families take the same inputs: `tokens` int32[B, T] in which every
image soft token is a placeholder `image_token_id` (PaliGemma: all image
tokens first; Gemma-3: a block between <start_of_image>/<end_of_image> per
image), `images` f32[B, I, S, S, 3] in [-1, 1], `input_mask` bool[B, T] and
`mask_ar` int32[B, T] (see `masks.py`). `auditdm_jax.prompts` builds them.
The embedder replaces the placeholders, in order, by the I * M soft tokens.

  model = Model(arch.get("paligemma2_tiny"))
  params = model.init(jax.random.key(0))
  emb = model.embed(params, tokens, input_mask, mask_ar, images)
  logits = model.forward(params, emb)                       # [B, T, V]
  last, cache = model.prefill(params, emb, cache_size=64)   # [B, V]
  logits, cache = model.decode_step(params, next_tokens, cache)

Callers (sampler, SFT, GRPO, eval) use only these methods and never branch
on the family.

Letters: B batch, T length, S cache length, I images per example, M soft
tokens per image, W vision width, D model dim, V vocab, L layers, K kv heads,
H head dim.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from auditdm_jax.models import masks as masks_lib
from auditdm_jax.models.config import ArchConfig
from auditdm_jax.models.gemma import Decoder
from auditdm_jax.models.layers import softcap
from auditdm_jax.models.siglip import SigLIP

# How the sliding window composes with bidirectional groups, per family,
# matching the reference implementation (transformers).
_WINDOW_COMPOSITION = {"paligemma2": "or", "gemma3": "and"}


class VLM(nn.Module):
  """The linen module; `Model` wraps it as pure functions of params."""
  cfg: ArchConfig
  dtype: Any = jnp.float32
  remat: bool = False
  unroll: int = 1

  def setup(self):
    c = self.cfg
    pool_norm = c.projector == "pool_norm"
    self.llm = Decoder(
        c.text, mm_width=c.vision.width if pool_norm else None,
        mm_norm_eps=c.vision.norm_eps if c.vision else 1e-6,
        dtype=self.dtype, remat=self.remat, unroll=self.unroll)
    if c.vision is not None:
      self.img = SigLIP(
          c.vision, head_dim=c.text.embed_dim if c.projector == "linear" else None,
          dtype=self.dtype, remat=self.remat, unroll=self.unroll)

  def encode_images(self, images: jax.Array) -> jax.Array:
    """images f32[B, I, S, S, 3] -> soft tokens [B, I * M, D]."""
    c = self.cfg
    if c.vision is None:
      raise ValueError(f"{c.name} is text-only but images were given")
    if images.ndim != 5:
      raise ValueError(f"images must be [B, I, S, S, 3], got {images.shape}")
    b, i = images.shape[:2]
    feats = self.img(images.reshape((b * i,) + images.shape[2:]))  # [BI, N, W|D]
    if c.projector == "pool_norm":
      g, p = c.vision.grid, c.pool
      feats = feats.reshape(b * i, g, g, -1)
      feats = nn.avg_pool(feats.astype(jnp.float32), (p, p), strides=(p, p))
      feats = feats.reshape(b * i, (g // p) ** 2, -1).astype(self.dtype)
      feats = self.llm.embedder.project_image(feats)                # [BI, M, D]
    return feats.reshape(b, i * feats.shape[1], -1)

  def embed(self, tokens: jax.Array, images: Optional[jax.Array] = None):
    """-> [B, T, D]: text embeddings with image placeholders replaced."""
    x = self.llm.embedder.encode(tokens)
    if images is None:
      return x
    soft = self.encode_images(images).astype(x.dtype)                # [B, IM, D]
    is_img = tokens == self.cfg.image_token_id
    idx = jnp.clip(jnp.cumsum(is_img, axis=1) - 1, 0, soft.shape[1] - 1)
    gathered = jnp.take_along_axis(soft, idx[..., None], axis=1)     # [B, T, D]
    return jnp.where(is_img[..., None], gathered, x)

  def run(self, x, positions, masks, cache=None, write_index=0):
    return self.llm(x, positions, masks, cache, write_index)

  def run_split(self, x, positions, masks, layer_params, cache, write_index):
    return self.llm.run_split(x, positions, masks, layer_params, cache,
                              write_index)

  def unembed(self, hidden: jax.Array) -> jax.Array:
    logits = self.llm.embedder.decode(hidden)
    return softcap(logits, self.cfg.text.final_softcap)

  def __call__(self, tokens, input_mask, mask_ar, images=None):
    """Full forward (used for init): logits [B, T, V]."""
    x = self.embed(tokens, images)
    pos = masks_lib.positions_from_mask(input_mask)
    m = masks_lib.attention_masks(input_mask, mask_ar, pos,
                                  self.cfg.text.sliding_window,
                                  _WINDOW_COMPOSITION[self.cfg.family])
    h, _ = self.run(x, pos, (m[1], m[0]))
    return self.unembed(h)


def _check_token_range(tokens: jax.Array, cfg: ArchConfig) -> None:
  """Rejects out-of-vocabulary ids when the tokens are concrete.

  Inside jit the embedder clips ids (it must, for PaliGemma's placeholder,
  which lies past the vocabulary); outside jit a wrong tokenizer / model pair
  would otherwise train or sample on silently wrong tokens.
  """
  if isinstance(tokens, jax.core.Tracer):
    return
  ids = np.asarray(tokens)
  bad = (ids < 0) | (ids >= cfg.text.vocab_size)
  if cfg.image_token_id is not None:
    bad &= ids != cfg.image_token_id
  if bad.any():
    raise ValueError(
        f"{cfg.name}: token ids {sorted(set(ids[bad].tolist()))[:8]} are outside "
        f"the vocabulary [0, {cfg.text.vocab_size}); is the tokenizer the "
        "model's?")


@flax.struct.dataclass
class Embedded:
  """Embedded inputs. x [B, T, D]; input_mask bool[B, T]; mask_ar, positions int32[B, T]."""
  x: jax.Array
  input_mask: jax.Array
  mask_ar: jax.Array
  positions: jax.Array


@flax.struct.dataclass
class Cache:
  """KV cache. k [L, B, K, S, H], v [L, B, K, H, S] (or, split, L arrays
  [B, K, S, H] / [B, K, H, S]; see `gemma.Attention` for why);
  positions int32[B, S]; valid bool[B, S]; index: int32 next slot to write;
  next_pos int32[B] position of the next token."""
  k: jax.Array
  v: jax.Array
  positions: jax.Array
  valid: jax.Array
  index: jax.Array
  next_pos: jax.Array

  @property
  def size(self) -> int:
    return self.positions.shape[1]

  @property
  def is_split(self) -> bool:
    return isinstance(self.k, tuple)

  def split_layers(self) -> "Cache":
    """k and v as L separate arrays (the `SplitParams` decode
    path writes each layer's new slot in place instead of copying the
    stacked cache every step)."""
    if self.is_split:
      return self
    n = self.k.shape[0]
    return self.replace(k=tuple(self.k[i] for i in range(n)),
                        v=tuple(self.v[i] for i in range(n)))

  def repeat(self, n: int) -> "Cache":
    """Each batch row repeated n times (n samples from one prefill)."""
    rep = lambda a, axis: jnp.repeat(a, n, axis=axis)
    kv_axis = 0 if self.is_split else 1
    rep_kv = lambda t: jax.tree.map(lambda a: rep(a, kv_axis), t)
    return Cache(k=rep_kv(self.k), v=rep_kv(self.v),
                 positions=rep(self.positions, 0), valid=rep(self.valid, 0),
                 index=self.index, next_pos=rep(self.next_pos, 0))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SplitParams:
  """Params with the decoder layers as L separate trees (`split_layers`)."""
  rest: Any
  layers: tuple


@dataclasses.dataclass(frozen=True)
class Model:
  """Pure-function protocol over `VLM`: embed / forward / prefill / decode_step.

  dtype: compute (activation and cache) dtype; params keep their own dtype.
  remat: rematerialise blocks in the backward pass.
  unroll: layers per iteration of the layer scans (1 = a loop; the number
    of layers = straight-line code, which XLA:CPU runs faster for small
    models and whose cost analysis counts every layer). Params are the
    same for every value.
  """
  cfg: ArchConfig
  dtype: Any = jnp.float32
  remat: bool = False
  unroll: int = 1

  @property
  def module(self) -> VLM:
    return VLM(self.cfg, self.dtype, self.remat, self.unroll)

  @property
  def window_composition(self) -> str:
    return _WINDOW_COMPOSITION[self.cfg.family]

  def dummy_inputs(self, batch: int = 1, length: int = 8):
    """Minimal inputs that touch every parameter (for init / eval_shape)."""
    tokens = jnp.zeros((batch, length), jnp.int32)
    ones = jnp.ones((batch, length), bool)
    images = None
    if self.cfg.vision is not None:
      s = self.cfg.vision.image_size
      images = jnp.zeros((batch, 1, s, s, 3), jnp.float32)
    return tokens, ones, ones.astype(jnp.int32), images

  def init(self, rng: jax.Array):
    """Random params (f32), as a plain nested dict."""
    variables = self.module.init(rng, *self.dummy_inputs())
    return variables["params"]

  def abstract_params(self):
    """ShapeDtypeStruct tree of the params, built without memory."""
    return jax.eval_shape(self.init, jax.random.key(0))

  def _apply(self, params, *args, method):
    return self.module.apply({"params": params}, *args, method=method)

  def embed(self, params, tokens, input_mask, mask_ar, images=None) -> Embedded:
    tokens = jnp.asarray(tokens, jnp.int32)
    input_mask = jnp.asarray(input_mask, bool)
    if tokens.shape != input_mask.shape or tokens.shape != jnp.shape(mask_ar):
      raise ValueError(f"tokens {tokens.shape}, input_mask {input_mask.shape} and "
                       f"mask_ar {jnp.shape(mask_ar)} must have the same shape")
    _check_token_range(tokens, self.cfg)
    x = self._apply(params, tokens, images, method=VLM.embed)
    return Embedded(x=x, input_mask=input_mask,
                    mask_ar=jnp.asarray(mask_ar, jnp.int32),
                    positions=masks_lib.positions_from_mask(input_mask))

  def _masks(self, emb: Embedded):
    glob, local = masks_lib.attention_masks(
        emb.input_mask, emb.mask_ar, emb.positions,
        self.cfg.text.sliding_window, self.window_composition)
    return local, glob

  def hidden(self, params, emb: Embedded) -> jax.Array:
    """Final-norm hidden states [B, T, D]."""
    h, _ = self._apply(params, emb.x, emb.positions, self._masks(emb),
                       method=VLM.run)
    return h

  def unembed(self, params, hidden: jax.Array) -> jax.Array:
    """hidden [..., D] -> soft-capped logits [..., V]."""
    return self._apply(params, hidden, method=VLM.unembed)

  def forward(self, params, emb: Embedded) -> jax.Array:
    """Logits [B, T, V] (f32 when dtype is f32)."""
    return self.unembed(params, self.hidden(params, emb))

  def init_cache(self, batch: int, size: int) -> Cache:
    t = self.cfg.text
    k_shape = (t.num_layers, batch, t.num_kv_heads, size, t.head_dim)
    v_shape = (t.num_layers, batch, t.num_kv_heads, t.head_dim, size)
    return Cache(k=jnp.zeros(k_shape, self.dtype),
                 v=jnp.zeros(v_shape, self.dtype),
                 positions=jnp.zeros((batch, size), jnp.int32),
                 valid=jnp.zeros((batch, size), bool),
                 index=jnp.zeros((), jnp.int32),
                 next_pos=jnp.zeros((batch,), jnp.int32))

  def prefill(self, params, emb: Embedded, cache_size: int):
    """Runs a left-padded prompt, returns (last-token logits [B, V], Cache)."""
    b, t = emb.input_mask.shape
    if cache_size < t:
      raise ValueError(f"cache_size {cache_size} < prompt length {t}")
    cache = self.init_cache(b, cache_size)
    h, kv = self._apply(params, emb.x, emb.positions, self._masks(emb),
                        {"k": cache.k, "v": cache.v}, 0, method=VLM.run)
    logits = self.unembed(params, h[:, -1])
    pad = ((0, 0), (0, cache_size - t))
    cache = Cache(k=kv["k"], v=kv["v"],
                  positions=jnp.pad(emb.positions, pad),
                  valid=jnp.pad(emb.input_mask, pad),
                  index=jnp.asarray(t, jnp.int32),
                  next_pos=jnp.sum(emb.input_mask, -1).astype(jnp.int32))
    return logits, cache

  def split_layers(self, params) -> "SplitParams":
    """params -> SplitParams for `decode_step` (the layers' slices, once).

    Call it inside the jitted function that runs the decode loop, outside
    the loop: each layer's weights are then copied once per call instead of
    once per decode step (see `gemma.Decoder.run_split`).
    """
    llm = params["llm"]
    layers = llm["layers"]
    per_layer = tuple(jax.tree.map(lambda a, i=i: a[i], layers)
                      for i in range(self.cfg.text.num_layers))
    rest = dict(params, llm={k: v for k, v in llm.items() if k != "layers"})
    return SplitParams(rest=rest, layers=per_layer)

  def decode_step(self, params, tokens: jax.Array, cache: Cache):
    """One token per row: tokens int32[B] -> (logits [B, V], Cache).

    `params` is the param tree or `split_layers(params)` (same numbers;
    faster on CPU when this runs in a loop); with split params the cache is
    returned split (`Cache.split_layers`: split it once before the loop).
    """
    split = params if isinstance(params, SplitParams) else None
    if split is not None:
      params = split.rest
      cache = cache.split_layers()
    x = self._apply(params, tokens[:, None], None, method=VLM.embed)  # [B, 1, D]
    slot = cache.index
    q_pos = cache.next_pos[:, None]                                   # [B, 1]
    positions = jax.lax.dynamic_update_slice(cache.positions, q_pos, (0, slot))
    valid = jax.lax.dynamic_update_slice(
        cache.valid, jnp.ones_like(q_pos, bool), (0, slot))
    glob, local = masks_lib.decode_masks(q_pos, positions, valid,
                                         self.cfg.text.sliding_window)
    kv_in = {"k": cache.k, "v": cache.v}
    if split is None:
      h, kv = self._apply(params, x, q_pos, (local, glob), kv_in, slot,
                          method=VLM.run)
    else:
      h, kv = self._apply(params, x, q_pos, (local, glob), split.layers, kv_in,
                          slot, method=VLM.run_split)
    logits = self.unembed(params, h[:, 0])
    return logits, Cache(k=kv["k"], v=kv["v"], positions=positions,
                         valid=valid, index=slot + 1,
                         next_pos=cache.next_pos + 1)

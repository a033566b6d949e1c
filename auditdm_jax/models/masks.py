"""Attention masks for both VLM families, from per-token inputs.

Inputs are per token: `input_mask` bool[B, T] (False on padding), `mask_ar`
int[B, T] (1 starts a new attention group, 0 joins the previous one), and
`positions` int[B, T] (0-indexed, cumsum(input_mask) - 1).

  group = cumsum(mask_ar)          e.g. PaliGemma  mask_ar [0 0 0 1 1] -> group [0 0 0 1 2]
                                        Gemma-3    mask_ar [1 1 0 0 1] -> group [1 2 2 2 3]

Token q attends to key k when k is valid and (k is not after q, or k is in
q's group). Within a group attention is bidirectional: the PaliGemma prefix
(image + prompt), or one Gemma-3 image. Sliding-window layers add
k_pos > q_pos - window, composed as the reference implementation does:

  'and' (Gemma-3):   window AND (causal OR same group)
  'or'  (PaliGemma): (causal AND window) OR same group   (the prefix ignores the window)

Worked example, PaliGemma, 3-token prefix + 2 suffix, no window (row = query):
  1 1 1 0 0
  1 1 1 0 0
  1 1 1 0 0
  1 1 1 1 0
  1 1 1 1 1
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

WINDOW_COMPOSITIONS = ("and", "or")


def positions_from_mask(input_mask: jax.Array) -> jax.Array:
  """int32[B, T]: 0-indexed positions that skip padding (left padding safe)."""
  return jnp.cumsum(input_mask.astype(jnp.int32), axis=-1) - 1


def attention_masks(input_mask: jax.Array, mask_ar: jax.Array,
                    positions: jax.Array, window: int | None,
                    composition: str) -> tuple[jax.Array, jax.Array]:
  """Returns (global, local) bool[B, T, T] masks for a full sequence.

  When `window` is None the local mask equals the global one.
  """
  if composition not in WINDOW_COMPOSITIONS:
    raise ValueError(f"composition must be one of {WINDOW_COMPOSITIONS}")
  group = jnp.cumsum(mask_ar.astype(jnp.int32), axis=-1)     # [B, T]
  q_pos, k_pos = positions[:, :, None], positions[:, None, :]  # [B, T, 1], [B, 1, T]
  valid = input_mask[:, None, :] & input_mask[:, :, None]      # [B, T, T]
  causal = k_pos <= q_pos
  same_group = group[:, :, None] == group[:, None, :]
  full = valid & (causal | same_group)
  if window is None:
    return full, full
  in_window = k_pos > q_pos - window
  if composition == "and":
    local = full & in_window
  else:
    local = valid & ((causal & in_window) | same_group)
  return full, local


def decode_masks(q_positions: jax.Array, cache_positions: jax.Array,
                 cache_valid: jax.Array, window: int | None
                 ) -> tuple[jax.Array, jax.Array]:
  """Masks of new tokens against a KV cache: (global, local) bool[B, T, S].

  Decoded tokens are causal (each its own group), so both compositions agree.

  Args:
    q_positions: int32[B, T] positions of the new tokens.
    cache_positions: int32[B, S] positions of the cache slots.
    cache_valid: bool[B, S], True on written, non-padding slots (including
      the new tokens themselves once written).
  """
  q_pos, k_pos = q_positions[:, :, None], cache_positions[:, None, :]
  full = cache_valid[:, None, :] & (k_pos <= q_pos)
  if window is None:
    return full, full
  return full, full & (k_pos > q_pos - window)

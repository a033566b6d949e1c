"""Architecture configs: frozen dataclasses, validated on construction.

An architecture is everything needed to build the parameter tree and run the
numerics; run configs (ml_collections) only name one from `arch.py`'s registry.

Vocabulary of fields (shared with the HF spec sheets, anchors.md §5):
  D embed_dim, L num_layers, N num_heads, K num_kv_heads, H head_dim,
  F hidden_dim (MLP), V vocab_size; vision W width, P patch size.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

LOCAL = "local"    # sliding-window attention layer
GLOBAL = "global"  # full attention layer

FAMILIES = ("paligemma2", "gemma3")
PROJECTORS = ("linear", "pool_norm")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Rope:
  """Rotary embedding of one layer type: angle = (pos / scale) / theta^(2i/H)."""
  theta: float = 10_000.0
  scale: float = 1.0

  def __post_init__(self):
    if self.theta <= 0 or self.scale <= 0:
      raise ValueError(f"Rope theta and scale must be > 0, got {self}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TextConfig:
  """Gemma-2 / Gemma-3 decoder."""
  vocab_size: int
  embed_dim: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  hidden_dim: int
  layer_types: tuple[str, ...]
  sliding_window: Optional[int] = None
  rope_local: Rope = Rope()
  rope_global: Rope = Rope()
  qk_norm: bool = False
  query_pre_attn_scalar: float = 256.0
  attn_softcap: Optional[float] = None
  final_softcap: Optional[float] = None
  norm_eps: float = 1e-6

  def __post_init__(self):
    for name in ("vocab_size", "embed_dim", "num_layers", "num_heads",
                 "num_kv_heads", "head_dim", "hidden_dim"):
      if getattr(self, name) <= 0:
        raise ValueError(f"TextConfig.{name} must be > 0, got {getattr(self, name)}")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
          f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
          f"({self.num_kv_heads})")
    if self.head_dim % 2:
      raise ValueError(f"head_dim must be even for RoPE, got {self.head_dim}")
    if len(self.layer_types) != self.num_layers:
      raise ValueError(f"layer_types has {len(self.layer_types)} entries for "
                       f"{self.num_layers} layers")
    bad = set(self.layer_types) - {LOCAL, GLOBAL}
    if bad:
      raise ValueError(f"unknown layer types {sorted(bad)}; use {LOCAL!r}/{GLOBAL!r}")
    if LOCAL in self.layer_types and not self.sliding_window:
      raise ValueError("local layers need a sliding_window > 0")

  @property
  def queries_per_kv(self) -> int:
    return self.num_heads // self.num_kv_heads


@dataclasses.dataclass(frozen=True, kw_only=True)
class VisionConfig:
  """SigLIP ViT without the pooling head (as used by both VLM families)."""
  image_size: int
  patch_size: int
  width: int
  depth: int
  num_heads: int
  mlp_dim: int
  norm_eps: float = 1e-6

  def __post_init__(self):
    if self.image_size % self.patch_size:
      raise ValueError(f"image_size {self.image_size} is not a multiple of "
                       f"patch_size {self.patch_size}")
    if self.width % self.num_heads:
      raise ValueError(f"width {self.width} not divisible by heads {self.num_heads}")

  @property
  def grid(self) -> int:
    return self.image_size // self.patch_size

  @property
  def num_patches(self) -> int:
    return self.grid ** 2


@dataclasses.dataclass(frozen=True, kw_only=True)
class ArchConfig:
  """A whole model: decoder + optional vision tower + projector.

  family: 'paligemma2' (image tokens first, prefix-LM, linear projector) or
    'gemma3' (soft tokens at <image_soft_token> placeholders, bidirectional
    within each image, avg-pool + RMSNorm + projection).
  image_token_id: id of the placeholder the embedder replaces with image
    features. For PaliGemma-2 it lies outside the text vocabulary (HF: 257152),
    so the lookup clips it before the embedding gather.
  pool: side of the average-pooling window over the patch grid (gemma3).
  prompt_format: name of the prompt layout in `auditdm_jax.prompts`.
  """
  name: str
  family: str
  text: TextConfig
  vision: Optional[VisionConfig] = None
  projector: Optional[str] = None
  image_token_id: Optional[int] = None
  pool: int = 1
  prompt_format: str = "paligemma"

  def __post_init__(self):
    if self.family not in FAMILIES:
      raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
    if self.vision is not None:
      if self.projector not in PROJECTORS:
        raise ValueError(f"{self.name}: projector must be one of {PROJECTORS}")
      if self.image_token_id is None:
        raise ValueError(f"{self.name}: a vision model needs image_token_id")
      if self.vision.grid % self.pool:
        raise ValueError(f"{self.name}: patch grid {self.vision.grid} is not "
                         f"divisible by pool {self.pool}")
    if self.family == "paligemma2" and self.vision is None:
      raise ValueError(f"{self.name}: paligemma2 needs a vision tower")

  @property
  def has_vision(self) -> bool:
    return self.vision is not None

  @property
  def tokens_per_image(self) -> int:
    if self.vision is None:
      return 0
    return (self.vision.grid // self.pool) ** 2


def gemma2_layer_types(num_layers: int) -> tuple[str, ...]:
  """Gemma 2: even layers (0, 2, ...) local, odd layers global."""
  return tuple(LOCAL if i % 2 == 0 else GLOBAL for i in range(num_layers))


def gemma3_layer_types(num_layers: int, pattern: int = 6) -> tuple[str, ...]:
  """Gemma 3: every `pattern`-th layer global (5 local : 1 global)."""
  return tuple(GLOBAL if (i + 1) % pattern == 0 else LOCAL
               for i in range(num_layers))

"""Architecture registry: every real PaliGemma-2 / Gemma-3 size and tiny ones.

  arch.get("paligemma2_3b_224") -> ArchConfig
  arch.names() -> sorted names

Real hyperparameters follow the published HF configs (anchors.md §5.1, §5.4).
`python -m auditdm_jax.models.arch` lists every architecture with its
parameter count.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from auditdm_jax.models.config import (ArchConfig, Rope, TextConfig,
                                       VisionConfig, gemma2_layer_types,
                                       gemma3_layer_types)

_REGISTRY: dict[str, Callable[[], ArchConfig]] = {}


def register(name: str):
  """Registers a zero-argument factory under `name` (decorator)."""
  def wrap(fn):
    if name in _REGISTRY:
      raise ValueError(f"architecture {name!r} registered twice")
    _REGISTRY[name] = fn
    return fn
  return wrap


def get(name: str) -> ArchConfig:
  try:
    factory = _REGISTRY[name]
  except KeyError:
    raise KeyError(f"unknown architecture {name!r}; known: {', '.join(names())}"
                   ) from None
  cfg = factory()
  if cfg.name != name:
    cfg = dataclasses.replace(cfg, name=name)
  return cfg


def names() -> list[str]:
  return sorted(_REGISTRY)


# --- Vision towers -----------------------------------------------------------

def so400m(image_size: int) -> VisionConfig:
  """SigLIP So400m/14 (27 layers, width 1152) at the given resolution."""
  return VisionConfig(image_size=image_size, patch_size=14, width=1152,
                      depth=27, num_heads=16, mlp_dim=4304)


# --- PaliGemma 2 -------------------------------------------------------------

PALIGEMMA2_VOCAB = 257_216   # 256000 text + 1024 loc + 128 seg + 64 padding
PALIGEMMA2_IMAGE_TOKEN = 257_152

_PALIGEMMA2_TEXT = {
    # (D, L, N, K, H, F, query_pre_attn_scalar)
    "3b": (2304, 26, 8, 4, 256, 9216, 256),
    "10b": (3584, 42, 16, 8, 256, 14336, 256),
    "28b": (4608, 46, 32, 16, 128, 36864, 144),
}


def _paligemma2(size: str, res: int) -> ArchConfig:
  d, l, n, k, h, f, qpas = _PALIGEMMA2_TEXT[size]
  text = TextConfig(
      vocab_size=PALIGEMMA2_VOCAB, embed_dim=d, num_layers=l, num_heads=n,
      num_kv_heads=k, head_dim=h, hidden_dim=f,
      layer_types=gemma2_layer_types(l), sliding_window=4096,
      query_pre_attn_scalar=qpas, attn_softcap=50.0, final_softcap=30.0)
  return ArchConfig(name=f"paligemma2_{size}_{res}", family="paligemma2",
                    text=text, vision=so400m(res), projector="linear",
                    image_token_id=PALIGEMMA2_IMAGE_TOKEN,
                    prompt_format="paligemma")


for _size in _PALIGEMMA2_TEXT:
  for _res in (224, 448, 896):
    register(f"paligemma2_{_size}_{_res}")(
        lambda s=_size, r=_res: _paligemma2(s, r))


# --- Gemma 3 -----------------------------------------------------------------

GEMMA3_IMAGE_TOKEN = 262_144

_GEMMA3_TEXT = {
    # (D, L, N, K, H, F, query_pre_attn_scalar, vocab, window, global scale)
    "1b": (1152, 26, 4, 1, 256, 6912, 256, 262_144, 512, 1.0),
    "4b": (2560, 34, 8, 4, 256, 10240, 256, 262_208, 1024, 8.0),
    "12b": (3840, 48, 16, 8, 256, 15360, 256, 262_208, 1024, 8.0),
    "27b": (5376, 62, 32, 16, 128, 21504, 168, 262_208, 1024, 8.0),
}


def _gemma3(size: str) -> ArchConfig:
  d, l, n, k, h, f, qpas, vocab, window, scale = _GEMMA3_TEXT[size]
  text = TextConfig(
      vocab_size=vocab, embed_dim=d, num_layers=l, num_heads=n,
      num_kv_heads=k, head_dim=h, hidden_dim=f,
      layer_types=gemma3_layer_types(l), sliding_window=window,
      rope_local=Rope(theta=10_000.0),
      rope_global=Rope(theta=1_000_000.0, scale=scale),
      qk_norm=True, query_pre_attn_scalar=qpas)
  if size == "1b":  # text only
    return ArchConfig(name="gemma3_1b", family="gemma3", text=text,
                      prompt_format="gemma3_chat")
  return ArchConfig(name=f"gemma3_{size}", family="gemma3", text=text,
                    vision=so400m(896), projector="pool_norm",
                    image_token_id=GEMMA3_IMAGE_TOKEN, pool=4,
                    prompt_format="gemma3_chat")


for _size in _GEMMA3_TEXT:
  register(f"gemma3_{_size}")(lambda s=_size: _gemma3(s))


# --- Tiny sizes for tests ----------------------------------------------------
# Chosen to exercise what the real sizes do: GQA with several query heads per
# KV head, head_dim != embed_dim / num_heads, more than one global layer,
# sliding windows short enough that test prompts cross them, and linear RoPE
# scaling on global layers.

TINY_VOCAB = 512


def _tiny_vision(image_size=32, patch_size=8) -> VisionConfig:
  return VisionConfig(image_size=image_size, patch_size=patch_size, width=32,
                      depth=2, num_heads=2, mlp_dim=64)


@register("paligemma2_tiny")
def _paligemma2_tiny() -> ArchConfig:
  text = TextConfig(
      vocab_size=TINY_VOCAB, embed_dim=64, num_layers=4, num_heads=4,
      num_kv_heads=2, head_dim=24, hidden_dim=128,
      layer_types=gemma2_layer_types(4), sliding_window=8,
      query_pre_attn_scalar=20, attn_softcap=50.0, final_softcap=30.0)
  return ArchConfig(name="paligemma2_tiny", family="paligemma2", text=text,
                    vision=_tiny_vision(), projector="linear",
                    image_token_id=TINY_VOCAB, prompt_format="paligemma")


def _gemma3_tiny_text(**kw) -> TextConfig:
  args = dict(
      vocab_size=TINY_VOCAB, embed_dim=64, num_layers=6, num_heads=4,
      num_kv_heads=1, head_dim=32, hidden_dim=128,
      layer_types=gemma3_layer_types(6, pattern=3), sliding_window=8,
      rope_local=Rope(theta=10_000.0),
      rope_global=Rope(theta=1_000_000.0, scale=8.0),
      qk_norm=True, query_pre_attn_scalar=32.0)
  args.update(kw)
  return TextConfig(**args)


@register("gemma3_tiny")
def _gemma3_tiny() -> ArchConfig:
  # 32 px / patch 4 = 8x8 patches, pooled 2x2 -> 16 soft tokens per image.
  return ArchConfig(name="gemma3_tiny", family="gemma3",
                    text=_gemma3_tiny_text(),
                    vision=_tiny_vision(patch_size=4), projector="pool_norm",
                    image_token_id=TINY_VOCAB - 1, pool=2,
                    prompt_format="gemma3_chat")


@register("gemma3_tiny_text")
def _gemma3_tiny_text_only() -> ArchConfig:
  return ArchConfig(name="gemma3_tiny_text", family="gemma3",
                    text=_gemma3_tiny_text(), prompt_format="gemma3_chat")


@register("gemma3_100m_text")
def _gemma3_100m_text() -> ArchConfig:
  """~100M-parameter text model for benchmarks (not a published size)."""
  text = TextConfig(
      vocab_size=32_768, embed_dim=768, num_layers=12, num_heads=12,
      num_kv_heads=4, head_dim=64, hidden_dim=3072,
      layer_types=gemma3_layer_types(12), sliding_window=512,
      rope_local=Rope(theta=10_000.0), rope_global=Rope(theta=1_000_000.0),
      qk_norm=True, query_pre_attn_scalar=64.0)
  return ArchConfig(name="gemma3_100m_text", family="gemma3", text=text,
                    prompt_format="gemma3_chat")


# --- Scene-world sizes (DESIGN.md §4) ----------------------------------------
# 64 px images on a 4x4 grid of 16-px cells; patch 16 puts one object in one
# patch (world_feasibility.md: this is what tiny models learn within minutes
# on a CPU). Tokens come from the world SentencePiece model; the image
# placeholder sits just past its vocabulary, as PaliGemma-2's does.

WORLD_VOCAB = 512
WORLD_IMAGE_TOKEN = WORLD_VOCAB
# Local layers still slide, but over more than the longest world prompt
# (104 tokens, the auditor's): as with the real models' 4k windows over 256
# image tokens, every layer sees the whole image. A 32-token window hid the
# first image rows from the answer in half the layers.
WORLD_WINDOW = 128


def _world_vision(width: int, depth: int) -> VisionConfig:
  return VisionConfig(image_size=64, patch_size=16, width=width, depth=depth,
                      num_heads=4, mlp_dim=4 * width)


def _world_text(d: int, layers: int, family: str, **kw) -> TextConfig:
  heads = 4
  args = dict(vocab_size=WORLD_VOCAB, embed_dim=d, num_layers=layers,
              num_heads=heads, num_kv_heads=2, head_dim=d // heads,
              hidden_dim=4 * d, sliding_window=WORLD_WINDOW,
              query_pre_attn_scalar=d // heads)
  if family == "gemma3":
    args.update(layer_types=gemma3_layer_types(layers, pattern=2),
                rope_global=Rope(theta=1_000_000.0), qk_norm=True)
  else:
    args.update(layer_types=gemma2_layer_types(layers), attn_softcap=50.0,
                final_softcap=30.0)
  args.update(kw)
  return TextConfig(**args)


def _world(name: str, family: str, d: int, layers: int, vision_depth: int
           ) -> ArchConfig:
  if family == "paligemma2":
    return ArchConfig(name=name, family=family,
                      text=_world_text(d, layers, family),
                      vision=_world_vision(d, vision_depth), projector="linear",
                      image_token_id=WORLD_IMAGE_TOKEN,
                      prompt_format="paligemma")
  return ArchConfig(name=name, family=family, text=_world_text(d, layers, family),
                    vision=_world_vision(d, vision_depth),
                    projector="pool_norm", image_token_id=WORLD_IMAGE_TOKEN,
                    pool=1, prompt_format="gemma3_chat")


for _name, _family, _d, _layers, _vdepth in (
    ("paligemma2_world_s", "paligemma2", 128, 3, 3),   # target, reference
    ("paligemma2_world_m", "paligemma2", 160, 4, 3),   # reference
    ("gemma3_world_s", "gemma3", 128, 4, 3),           # reference
    ("gemma3_world_m", "gemma3", 160, 4, 3),           # auditor
):
  register(_name)(lambda n=_name, f=_family, d=_d, l=_layers, v=_vdepth:
                  _world(n, f, d, l, v))


# --- Listing -----------------------------------------------------------------

def param_count(cfg: ArchConfig) -> int:
  """Number of parameters, from abstract shapes (no memory is allocated)."""
  import math  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from auditdm_jax.models.vlm import Model  # pylint: disable=g-import-not-at-top
  leaves = jax.tree_util.tree_leaves(Model(cfg).abstract_params())
  return sum(math.prod(a.shape) for a in leaves)


def main(argv=None) -> None:
  """Prints every architecture with its parameter count and shape summary."""
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(description=main.__doc__)
  parser.add_argument("names", nargs="*", help="architectures (default: all)")
  args = parser.parse_args(argv)
  print(f"{'architecture':<22} {'params':>16}  {'D':>5} {'L':>3} {'N':>3} "
        f"{'K':>3} {'H':>4} {'F':>6} {'vision':>10}")
  for name in args.names or names():
    cfg = get(name)
    t = cfg.text
    vision = (f"{cfg.vision.image_size}px/{cfg.tokens_per_image}tok"
              if cfg.vision else "text")
    print(f"{name:<22} {param_count(cfg):>16,}  {t.embed_dim:>5} "
          f"{t.num_layers:>3} {t.num_heads:>3} {t.num_kv_heads:>3} "
          f"{t.head_dim:>4} {t.hidden_dim:>6} {vision:>10}")


if __name__ == "__main__":
  main()

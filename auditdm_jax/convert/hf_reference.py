"""transformers reference models for our architectures (parity, demo, benchmarks).

  model = build_hf(arch.get("paligemma2_tiny"), seed=0)   # every param random
  params = params_of(model, cfg)                           # the same weights, ours

Needs the `torch` extra (transformers + torch); imported lazily so the rest
of `convert` works without it.
"""

from __future__ import annotations

import numpy as np

from auditdm_jax.convert import hf as hf_convert
from auditdm_jax.convert.hf_config import hf_config_from_arch
from auditdm_jax.models.config import ArchConfig


def hf_config(cfg: ArchConfig, attn_implementation: str = "eager"):
  """The transformers config object for `cfg` (eager attention: exact numerics)."""
  import transformers  # pylint: disable=g-import-not-at-top
  d = hf_config_from_arch(cfg)
  config = transformers.CONFIG_MAPPING[d["model_type"]](**d)
  for c in (config, getattr(config, "text_config", None),
            getattr(config, "vision_config", None)):
    if c is not None:
      c._attn_implementation = attn_implementation  # pylint: disable=protected-access
  return config


def hf_model_class(cfg: ArchConfig):
  import transformers  # pylint: disable=g-import-not-at-top
  if cfg.vision is None:
    return transformers.Gemma3ForCausalLM
  if cfg.family == "paligemma2":
    return transformers.PaliGemmaForConditionalGeneration
  return transformers.Gemma3ForConditionalGeneration


def build_hf(cfg: ArchConfig, seed: int = 0, scale: float = 0.05,
             attn_implementation: str = "eager"):
  """A float32 eval-mode HF model whose every parameter is random.

  HF zero-initialises RMSNorm weights; randomising all of them exercises the
  (1 + w) convention and every transpose of the converter.
  """
  import torch  # pylint: disable=g-import-not-at-top
  torch.manual_seed(seed)
  model = hf_model_class(cfg)(hf_config(cfg, attn_implementation))
  model = model.float().eval()
  with torch.no_grad():
    for p in model.parameters():
      p.copy_(torch.randn_like(p) * scale)
  return model


def params_of(model, cfg: ArchConfig):
  """Our params (numpy) from an HF model's in-memory state dict."""
  tensors = {k: v.detach().numpy() for k, v in model.state_dict().items()}
  return hf_convert.params_from_hf(tensors, cfg)


def to_torch(x):
  import torch  # pylint: disable=g-import-not-at-top
  return torch.from_numpy(np.asarray(x).copy())

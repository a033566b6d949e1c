"""Builds transformers reference models matching our architectures (tests only)."""

from __future__ import annotations

import numpy as np
import torch
import transformers

from auditdm_jax.convert import hf as hf_convert
from auditdm_jax.convert.hf_config import hf_config_from_arch
from auditdm_jax.models.config import ArchConfig


def hf_config(cfg: ArchConfig) -> transformers.PretrainedConfig:
  d = hf_config_from_arch(cfg)
  config = transformers.CONFIG_MAPPING[d["model_type"]](**d)
  config._attn_implementation = "eager"  # exact reference numerics
  for sub in ("text_config", "vision_config"):
    if hasattr(config, sub):
      getattr(config, sub)._attn_implementation = "eager"
  return config


def hf_model_class(cfg: ArchConfig):
  if cfg.vision is None:
    return transformers.Gemma3ForCausalLM
  if cfg.family == "paligemma2":
    return transformers.PaliGemmaForConditionalGeneration
  return transformers.Gemma3ForConditionalGeneration


def build_hf(cfg: ArchConfig, seed: int = 0, scale: float = 0.05):
  """A float32 eval-mode HF model whose every parameter is random.

  HF zero-initialises RMSNorm weights; randomising all of them exercises the
  (1 + w) convention and every transpose of the converter.
  """
  torch.manual_seed(seed)
  model = hf_model_class(cfg)(hf_config(cfg)).float().eval()
  with torch.no_grad():
    for p in model.parameters():
      p.copy_(torch.randn_like(p) * scale)
  return model


def params_of(model, cfg: ArchConfig):
  """Our params from an HF model's in-memory state dict."""
  tensors = {k: v.detach().numpy() for k, v in model.state_dict().items()}
  return hf_convert.params_from_hf(tensors, cfg)


def to_torch(x) -> torch.Tensor:
  return torch.from_numpy(np.asarray(x).copy())

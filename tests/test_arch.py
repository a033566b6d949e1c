"""Architecture registry: configs validate, counts equal transformers' counts."""

import dataclasses

import pytest
import torch

import hf_reference
from auditdm_jax.models import arch
from auditdm_jax.models.config import ArchConfig, TextConfig


def test_every_real_size_is_registered():
  expected = {f"paligemma2_{s}_{r}" for s in ("3b", "10b", "28b")
              for r in (224, 448, 896)}
  expected |= {"gemma3_1b", "gemma3_4b", "gemma3_12b", "gemma3_27b"}
  assert expected <= set(arch.names())


@pytest.mark.parametrize("name", arch.names())
def test_param_count_equals_transformers(name):
  """Our abstract param count == the HF model built on the meta device."""
  cfg = arch.get(name)
  with torch.device("meta"):
    model = hf_reference.hf_model_class(cfg)(hf_reference.hf_config(cfg))
  hf_count = sum(p.numel() for p in model.parameters())  # tied head counted once
  assert arch.param_count(cfg) == hf_count


def test_known_sizes():
  # Sanity anchors from the model cards: ~3.0B, ~4.3B (with SigLIP), ~1.0B.
  assert 3.0e9 < arch.param_count(arch.get("paligemma2_3b_224")) < 3.1e9
  assert 4.2e9 < arch.param_count(arch.get("gemma3_4b")) < 4.4e9
  assert 0.99e9 < arch.param_count(arch.get("gemma3_1b")) < 1.01e9


def test_unknown_arch_lists_known_ones():
  with pytest.raises(KeyError, match="paligemma2_3b_224"):
    arch.get("paligemma3_1b")


def test_invalid_configs_are_rejected():
  base = arch.get("gemma3_tiny_text").text
  with pytest.raises(ValueError, match="multiple of num_kv_heads"):
    dataclasses.replace(base, num_kv_heads=3)
  with pytest.raises(ValueError, match="layer_types"):
    dataclasses.replace(base, num_layers=5)
  with pytest.raises(ValueError, match="sliding_window"):
    dataclasses.replace(base, sliding_window=None)
  cfg = arch.get("paligemma2_tiny")
  with pytest.raises(ValueError, match="image_token_id"):
    dataclasses.replace(cfg, image_token_id=None)
  with pytest.raises(ValueError, match="family"):
    dataclasses.replace(cfg, family="llava")
  assert isinstance(cfg, ArchConfig) and isinstance(base, TextConfig)

"""HF `config.json` <-> `ArchConfig`.

Reads both config generations: rope given as `rope_parameters` (per layer
type, transformers >= 5) or as `rope_theta` / `rope_local_base_freq` /
`rope_scaling` (older hub files), layer types as `layer_types` or
`sliding_window_pattern`.

Hub config.json files are sparse: transformers writes only the values that
differ from its config classes' defaults (gemma-3-4b-it omits
`num_attention_heads`, PaliGemma-2 224 omits `image_size`, softcaps and
`head_dim`). Missing keys are therefore filled from those defaults
(transformers 5.24), never from ours.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from auditdm_jax.models.config import (GLOBAL, LOCAL, ArchConfig, Rope,
                                       TextConfig, VisionConfig,
                                       gemma2_layer_types, gemma3_layer_types)

_HF_LAYER_TYPE = {LOCAL: "sliding_attention", GLOBAL: "full_attention"}
_OUR_LAYER_TYPE = {v: k for k, v in _HF_LAYER_TYPE.items()}


class ConfigError(ValueError):
  """A config.json that cannot be read into an architecture."""


def _require(d: Mapping[str, Any], key: str, where: str):
  if key not in d:
    raise ConfigError(f"{where} is missing required key {key!r}")
  return d[key]


# transformers 5.24 class defaults for the keys read here (see module doc).
_CLASS_DEFAULTS: dict[str, dict[str, Any]] = {
    "gemma2": dict(  # Gemma2Config
        vocab_size=256_000, hidden_size=2304, intermediate_size=9216,
        num_hidden_layers=26, num_attention_heads=8, num_key_value_heads=4,
        head_dim=256, hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6,
        query_pre_attn_scalar=256, sliding_window=4096,
        final_logit_softcapping=30.0, attn_logit_softcapping=50.0),
    "gemma3_text": dict(  # Gemma3TextConfig
        vocab_size=262_208, hidden_size=2304, intermediate_size=9216,
        num_hidden_layers=26, num_attention_heads=8, num_key_value_heads=4,
        head_dim=256, hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6,
        query_pre_attn_scalar=256, sliding_window=4096,
        final_logit_softcapping=None, attn_logit_softcapping=None),
    "siglip_vision_model": dict(  # SiglipVisionConfig
        hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
        num_attention_heads=12, image_size=224, patch_size=16,
        layer_norm_eps=1e-6),
}


def _with_defaults(d: Mapping[str, Any], model_type: str) -> dict[str, Any]:
  return {**_CLASS_DEFAULTS[model_type], **d}


def _rope(text: Mapping[str, Any], kind: str, family: str) -> Rope:
  """RoPE of one layer type ('sliding_attention' / 'full_attention')."""
  gemma3 = family == "gemma3"
  params = text.get("rope_parameters") or {}
  if kind in params and isinstance(params[kind], Mapping):
    p = params[kind]
  elif "rope_theta" in params or "rope_type" in params:   # one dict for all layers
    p = params
  elif gemma3 and kind == "sliding_attention":
    # Legacy Gemma 3: local layers have their own base and are never scaled;
    # `rope_theta` / `rope_scaling` describe the global layers only.
    p = {"rope_theta": text.get("rope_local_base_freq", 10_000.0)}
  else:
    p = dict(text.get("rope_scaling") or {})
    if "rope_theta" in text:
      p["rope_theta"] = text["rope_theta"]
  rope_type = p.get("rope_type", p.get("type", "default"))
  if rope_type not in ("default", "linear"):
    raise ConfigError(f"unsupported rope_type {rope_type!r} for {kind}")
  scale = float(p.get("factor", 1.0)) if rope_type == "linear" else 1.0
  default_theta = 1_000_000.0 if gemma3 and kind == "full_attention" else 10_000.0
  return Rope(theta=float(p.get("rope_theta", default_theta)), scale=scale)


def _text_config(text: Mapping[str, Any], family: str) -> TextConfig:
  where = "text_config"
  text = _with_defaults(text, "gemma3_text" if family == "gemma3" else "gemma2")
  layers = int(_require(text, "num_hidden_layers", where))
  if text.get("layer_types"):
    layer_types = tuple(_OUR_LAYER_TYPE[t] for t in text["layer_types"])
  elif family == "gemma3":
    pattern = text.get("sliding_window_pattern",
                       text.get("_sliding_window_pattern", 6))
    layer_types = gemma3_layer_types(layers, int(pattern))
  else:
    layer_types = gemma2_layer_types(layers)
  hidden = int(_require(text, "hidden_size", where))
  heads = int(_require(text, "num_attention_heads", where))
  gemma3 = family == "gemma3"
  return TextConfig(
      vocab_size=int(_require(text, "vocab_size", where)),
      embed_dim=hidden, num_layers=layers, num_heads=heads,
      num_kv_heads=int(text.get("num_key_value_heads", heads)),
      head_dim=int(text.get("head_dim", hidden // heads)),
      hidden_dim=int(_require(text, "intermediate_size", where)),
      layer_types=layer_types, sliding_window=text.get("sliding_window"),
      rope_local=_rope(text, "sliding_attention", family),
      rope_global=_rope(text, "full_attention", family),
      qk_norm=gemma3,
      query_pre_attn_scalar=float(text.get("query_pre_attn_scalar", 256)),
      attn_softcap=text.get("attn_logit_softcapping"),
      final_softcap=text.get("final_logit_softcapping"),
      norm_eps=float(text.get("rms_norm_eps", 1e-6)))


def _vision_config(v: Mapping[str, Any]) -> VisionConfig:
  where = "vision_config"
  v = _with_defaults(v, "siglip_vision_model")
  return VisionConfig(
      image_size=int(_require(v, "image_size", where)),
      patch_size=int(_require(v, "patch_size", where)),
      width=int(_require(v, "hidden_size", where)),
      depth=int(_require(v, "num_hidden_layers", where)),
      num_heads=int(_require(v, "num_attention_heads", where)),
      mlp_dim=int(_require(v, "intermediate_size", where)),
      norm_eps=float(v.get("layer_norm_eps", 1e-6)))


def arch_from_hf_config(config: Mapping[str, Any],
                        name: Optional[str] = None) -> ArchConfig:
  """Reads a transformers config.json dict into an `ArchConfig`."""
  model_type = config.get("model_type")
  if model_type == "paligemma":
    text = dict(_require(config, "text_config", "config"))
    # PaliGemmaConfig builds a Gemma (1) decoder when text_config names no type.
    text_type = text.get("model_type", "gemma")
    if text_type != "gemma2":
      raise ConfigError(f"PaliGemma with a {text_type!r} decoder is not supported "
                        "(only PaliGemma 2, text_config.model_type 'gemma2')")
    if config.get("vocab_size") is not None:
      text.setdefault("vocab_size", config["vocab_size"])
    vision = _vision_config(_require(config, "vision_config", "config"))
    cfg = ArchConfig(
        name=name or "paligemma2_from_hf", family="paligemma2",
        text=_text_config(text, "paligemma2"), vision=vision,
        projector="linear",
        image_token_id=int(config.get("image_token_index", 257_152)),
        prompt_format="paligemma")
  elif model_type == "gemma3":
    text = _text_config(_require(config, "text_config", "config"), "gemma3")
    vision = _vision_config(_require(config, "vision_config", "config"))
    per_side = int(round(int(config.get("mm_tokens_per_image", 256)) ** 0.5))
    cfg = ArchConfig(
        name=name or "gemma3_from_hf", family="gemma3", text=text,
        vision=vision, projector="pool_norm",
        image_token_id=int(config.get("image_token_index", 262_144)),
        pool=vision.grid // per_side, prompt_format="gemma3_chat")
  elif model_type == "gemma3_text":
    cfg = ArchConfig(name=name or "gemma3_text_from_hf", family="gemma3",
                     text=_text_config(config, "gemma3"),
                     prompt_format="gemma3_chat")
  else:
    raise ConfigError(f"unsupported model_type {model_type!r}; expected "
                      "'paligemma', 'gemma3' or 'gemma3_text'")
  if cfg.text.hidden_dim and config.get("text_config", config).get(
      "hidden_activation", "gelu_pytorch_tanh") not in ("gelu_pytorch_tanh", None):
    raise ConfigError("only hidden_activation='gelu_pytorch_tanh' is supported")
  return cfg


def _text_dict(t: TextConfig, family: str) -> dict[str, Any]:
  qpas = t.query_pre_attn_scalar
  d = {
      "vocab_size": t.vocab_size, "hidden_size": t.embed_dim,
      "intermediate_size": t.hidden_dim, "num_hidden_layers": t.num_layers,
      "num_attention_heads": t.num_heads,
      "num_key_value_heads": t.num_kv_heads, "head_dim": t.head_dim,
      "hidden_activation": "gelu_pytorch_tanh", "rms_norm_eps": t.norm_eps,
      "query_pre_attn_scalar": int(qpas) if float(qpas).is_integer() else qpas,
      "sliding_window": t.sliding_window,
      "layer_types": [_HF_LAYER_TYPE[x] for x in t.layer_types],
      "attn_logit_softcapping": t.attn_softcap,
      "final_logit_softcapping": t.final_softcap,
  }

  def rope(r: Rope):
    p = {"rope_type": "linear" if r.scale != 1.0 else "default",
         "rope_theta": r.theta}
    if r.scale != 1.0:
      p["factor"] = r.scale
    return p

  if family == "gemma3":
    d["model_type"] = "gemma3_text"
    d["rope_parameters"] = {"sliding_attention": rope(t.rope_local),
                            "full_attention": rope(t.rope_global)}
  else:
    if t.rope_local != t.rope_global:
      raise ConfigError("Gemma 2 uses one RoPE for all layers")
    d["model_type"] = "gemma2"
    d["rope_parameters"] = rope(t.rope_global)
  return d


def hf_config_from_arch(cfg: ArchConfig) -> dict[str, Any]:
  """The transformers config.json dict describing `cfg`."""
  text = _text_dict(cfg.text, cfg.family)
  if cfg.vision is None:
    if cfg.family != "gemma3":
      raise ConfigError(f"{cfg.name}: text-only export is Gemma-3 only")
    return dict(text, architectures=["Gemma3ForCausalLM"])
  v = cfg.vision
  vision = {
      "model_type": "siglip_vision_model", "hidden_size": v.width,
      "intermediate_size": v.mlp_dim, "num_hidden_layers": v.depth,
      "num_attention_heads": v.num_heads, "image_size": v.image_size,
      "patch_size": v.patch_size, "layer_norm_eps": v.norm_eps,
      "vision_use_head": False, "hidden_act": "gelu_pytorch_tanh",
  }
  if cfg.family == "paligemma2":
    vision["projection_dim"] = cfg.text.embed_dim
    return {
        "model_type": "paligemma", "architectures": [
            "PaliGemmaForConditionalGeneration"],
        "text_config": text, "vision_config": vision,
        "image_token_index": cfg.image_token_id,
        "vocab_size": cfg.text.vocab_size,
        "projection_dim": cfg.text.embed_dim,
        "hidden_size": cfg.text.embed_dim,
    }
  return {
      "model_type": "gemma3", "architectures": [
          "Gemma3ForConditionalGeneration"],
      "text_config": text, "vision_config": vision,
      "mm_tokens_per_image": cfg.tokens_per_image,
      "image_token_index": cfg.image_token_id,
  }

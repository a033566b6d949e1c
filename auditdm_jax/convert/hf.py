"""HF transformers state dicts <-> auditdm_jax params, by table.

Saved HF files use several key layouts; `canonical_key` folds them into one:

  language_model.model.X | model.language_model.X | model.X (text-only)  -> lm.X
  vision_tower.vision_model.X | vision_tower.X | model.vision_tower.X    -> vis.X
  multi_modal_projector.X | model.multi_modal_projector.X                -> proj.X
  lm_head.weight | language_model.lm_head.weight                         -> lm_head

Each `_Rule` maps one canonical key pattern to one param path (optionally a
slot of a stacked tensor: k/v into kv_einsum, gate/up into gating_einsum) with
a forward transform and its inverse. Layer-indexed keys fill the leading L
axis of the scanned params. Everything is validated against the abstract
param tree of the architecture before anything is returned: missing,
unexpected and mis-shaped keys are all listed in one `CheckpointMismatch`.

Letters: N heads, K kv heads, H head dim, D model dim, F MLP hidden,
W vision width, M vision heads, C vision head dim, P patch.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Callable, Mapping, Optional

import numpy as np

from auditdm_jax.models.config import ArchConfig


class CheckpointMismatch(ValueError):
  """Missing, unexpected or mis-shaped checkpoint entries (all listed)."""

  def __init__(self, missing=(), unexpected=(), misshaped=(), other=()):
    self.missing, self.unexpected = list(missing), list(unexpected)
    self.misshaped, self.other = list(misshaped), list(other)
    parts = []
    for title, items in (("missing", self.missing),
                         ("unexpected", self.unexpected),
                         ("mis-shaped", self.misshaped),
                         ("other", self.other)):
      if items:
        shown = "\n    ".join(str(x) for x in items[:50])
        more = f"\n    ... and {len(items) - 50} more" if len(items) > 50 else ""
        parts.append(f"  {len(items)} {title}:\n    {shown}{more}")
    super().__init__("checkpoint does not match the architecture:\n" +
                     "\n".join(parts))


_PREFIXES = (
    ("language_model.lm_head.weight", "lm_head"),
    ("lm_head.weight", "lm_head"),
    ("model.language_model.", "lm."),
    ("language_model.model.", "lm."),
    ("model.vision_tower.vision_model.", "vis."),
    ("model.vision_tower.", "vis."),
    ("vision_tower.vision_model.", "vis."),
    ("vision_tower.", "vis."),
    ("model.multi_modal_projector.", "proj."),
    ("multi_modal_projector.", "proj."),
    ("model.", "lm."),
)


def canonical_key(key: str) -> str:
  for prefix, repl in _PREFIXES:
    if key == prefix or (prefix.endswith(".") and key.startswith(prefix)):
      return repl + key[len(prefix):] if prefix.endswith(".") else repl
  return key


@dataclasses.dataclass(frozen=True)
class _Rule:
  hf: str                       # canonical key, `{i}` = layer index
  path: str                     # param path ('/'-joined)
  fwd: Callable                 # HF array -> param array (one layer / slot)
  inv: Callable                 # inverse
  slot: Optional[int] = None    # index in a stacked leading axis (kv, gating)
  layered: bool = False


def _t(x):
  return np.ascontiguousarray(x.T)


def _rules(cfg: ArchConfig) -> list[_Rule]:
  t = cfg.text
  n, k, h, d = t.num_heads, t.num_kv_heads, t.head_dim, t.embed_dim
  ident = lambda x: x
  L = "llm/layers/"
  lm = "lm.layers.{i}."
  rules = [
      _Rule("lm.embed_tokens.weight", "llm/embedder/input_embedding", ident, ident),
      _Rule("lm.norm.weight", "llm/final_norm/scale", ident, ident),
      _Rule(lm + "self_attn.q_proj.weight", L + "attn/q_einsum/w",
            lambda x: x.reshape(n, h, d).transpose(0, 2, 1),
            lambda y: y.transpose(0, 2, 1).reshape(n * h, d), layered=True),
      _Rule(lm + "self_attn.o_proj.weight", L + "attn/attn_vec_einsum/w",
            lambda x: x.reshape(d, n, h).transpose(1, 2, 0),
            lambda y: y.transpose(2, 0, 1).reshape(d, n * h), layered=True),
      _Rule(lm + "mlp.gate_proj.weight", L + "mlp/gating_einsum", ident, ident,
            slot=0, layered=True),
      _Rule(lm + "mlp.up_proj.weight", L + "mlp/gating_einsum", ident, ident,
            slot=1, layered=True),
      _Rule(lm + "mlp.down_proj.weight", L + "mlp/linear", _t, _t, layered=True),
  ]
  for slot, name in enumerate(("k_proj", "v_proj")):
    rules.append(_Rule(
        lm + f"self_attn.{name}.weight", L + "attn/kv_einsum/w",
        lambda x: x.reshape(k, h, d).transpose(0, 2, 1),
        lambda y: y.transpose(0, 2, 1).reshape(k * h, d), slot=slot,
        layered=True))
  norms = {"input_layernorm": "pre_attention_norm",
           "post_attention_layernorm": "post_attention_norm",
           "pre_feedforward_layernorm": "pre_ffw_norm",
           "post_feedforward_layernorm": "post_ffw_norm"}
  for hf, ours in norms.items():
    rules.append(_Rule(lm + f"{hf}.weight", L + f"{ours}/scale", ident, ident,
                       layered=True))
  if t.qk_norm:
    rules += [
        _Rule(lm + "self_attn.q_norm.weight", L + "attn/_query_norm/scale",
              ident, ident, layered=True),
        _Rule(lm + "self_attn.k_norm.weight", L + "attn/_key_norm/scale",
              ident, ident, layered=True),
    ]
  if cfg.vision is not None:
    rules += _vision_rules(cfg)
  return rules


def _vision_rules(cfg: ArchConfig) -> list[_Rule]:
  v = cfg.vision
  w, m = v.width, v.num_heads
  c = w // m
  ident = lambda x: x
  B = "img/Transformer/encoderblock/"
  vl = "vis.encoder.layers.{i}."
  rules = [
      _Rule("vis.embeddings.patch_embedding.weight", "img/embedding/kernel",
            lambda x: x.transpose(2, 3, 1, 0), lambda y: y.transpose(3, 2, 0, 1)),
      _Rule("vis.embeddings.patch_embedding.bias", "img/embedding/bias",
            ident, ident),
      _Rule("vis.embeddings.position_embedding.weight", "img/pos_embedding",
            lambda x: x[None], lambda y: y[0]),
      _Rule("vis.post_layernorm.weight", "img/Transformer/encoder_norm/scale",
            ident, ident),
      _Rule("vis.post_layernorm.bias", "img/Transformer/encoder_norm/bias",
            ident, ident),
  ]
  for hf, ours in (("layer_norm1", "LayerNorm_0"), ("layer_norm2", "LayerNorm_1")):
    rules += [
        _Rule(vl + f"{hf}.weight", B + f"{ours}/scale", ident, ident, layered=True),
        _Rule(vl + f"{hf}.bias", B + f"{ours}/bias", ident, ident, layered=True),
    ]
  att = B + "MultiHeadDotProductAttention_0/"
  for hf, ours in (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value")):
    rules += [
        _Rule(vl + f"self_attn.{hf}.weight", att + f"{ours}/kernel",
              lambda x: x.T.reshape(w, m, c), lambda y: _t(y.reshape(w, w)),
              layered=True),
        _Rule(vl + f"self_attn.{hf}.bias", att + f"{ours}/bias",
              lambda x: x.reshape(m, c), lambda y: y.reshape(w), layered=True),
    ]
  rules += [
      _Rule(vl + "self_attn.out_proj.weight", att + "out/kernel",
            lambda x: x.T.reshape(m, c, w), lambda y: _t(y.reshape(w, w)),
            layered=True),
      _Rule(vl + "self_attn.out_proj.bias", att + "out/bias", ident, ident,
            layered=True),
  ]
  for hf, ours in (("fc1", "Dense_0"), ("fc2", "Dense_1")):
    rules += [
        _Rule(vl + f"mlp.{hf}.weight", B + f"MlpBlock_0/{ours}/kernel", _t, _t,
              layered=True),
        _Rule(vl + f"mlp.{hf}.bias", B + f"MlpBlock_0/{ours}/bias", ident,
              ident, layered=True),
    ]
  if cfg.projector == "linear":
    rules += [
        _Rule("proj.linear.weight", "img/head/kernel", _t, _t),
        _Rule("proj.linear.bias", "img/head/bias", ident, ident),
    ]
  else:
    rules += [
        _Rule("proj.mm_input_projection_weight",
              "llm/embedder/mm_input_projection/w", ident, ident),
        _Rule("proj.mm_soft_emb_norm.weight",
              "llm/embedder/mm_soft_embedding_norm/scale", ident, ident),
    ]
  return rules


def _compile(rule: _Rule):
  pattern = re.escape(rule.hf).replace(re.escape("{i}"), r"(\d+)")
  return re.compile(pattern + r"\Z")


def flatten(tree, prefix: str = "") -> dict[str, object]:
  """Nested dict -> {'a/b/c': leaf}."""
  out = {}
  for key, val in tree.items():
    path = f"{prefix}/{key}" if prefix else str(key)
    if isinstance(val, Mapping):
      out.update(flatten(val, path))
    else:
      out[path] = val
  return out


def unflatten(flat: Mapping[str, object]) -> dict:
  tree: dict = {}
  for path, val in flat.items():
    node = tree
    *parents, leaf = path.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = val
  return tree


def _abstract_shapes(cfg: ArchConfig) -> dict[str, tuple[int, ...]]:
  return dict(_cached_shapes(cfg))


@functools.lru_cache(maxsize=32)
def _cached_shapes(cfg: ArchConfig) -> tuple[tuple[str, tuple[int, ...]], ...]:
  # Tracing the model costs ~0.5 s; every load and save needs the shapes.
  from auditdm_jax.models.vlm import Model  # pylint: disable=g-import-not-at-top
  return tuple((p, tuple(a.shape)) for p, a in
               flatten(Model(cfg).abstract_params()).items())


def param_shapes(cfg: ArchConfig) -> dict[str, tuple[int, ...]]:
  """{'/'-joined param path: shape} of an architecture (cached per cfg)."""
  return dict(_cached_shapes(cfg))


def check_params(params, cfg: ArchConfig) -> None:
  """Raises CheckpointMismatch unless `params` has exactly `cfg`'s paths/shapes.

  Leaves may be arrays or anything with a `.shape` (e.g. ShapeDtypeStruct).
  """
  compare_shapes(param_shapes(cfg),
                 {p: tuple(np.shape(a)) for p, a in flatten(params).items()})


def compare_shapes(want: Mapping[str, tuple[int, ...]],
                   got: Mapping[str, tuple[int, ...]]) -> None:
  """Raises CheckpointMismatch listing every path missing, extra or mis-shaped."""
  missing = sorted(set(want) - set(got))
  unexpected = sorted(set(got) - set(want))
  misshaped = [f"{p}: expected {want[p]}, got {got[p]}"
               for p in sorted(set(want) & set(got)) if want[p] != got[p]]
  if missing or unexpected or misshaped:
    raise CheckpointMismatch(missing, unexpected, misshaped)


def _hf_shape(rule: _Rule, param_shape: tuple[int, ...]) -> tuple[int, ...]:
  """Shape of the HF tensor one rule reads, from the param it fills."""
  piece = param_shape[1:] if rule.layered else param_shape
  if rule.slot is not None:
    piece = piece[1:]
  # int8 zeros: transforms are transposes/reshapes, so only the shape matters.
  return tuple(np.shape(rule.inv(np.zeros(piece, np.int8))))


def _num_layers(cfg: ArchConfig, path: str) -> int:
  return cfg.vision.depth if path.startswith("img/") else cfg.text.num_layers


def params_from_hf(tensors: Mapping[str, np.ndarray], cfg: ArchConfig,
                   dtype=None) -> dict:
  """HF tensors (any saved layout) -> nested params, strictly validated.

  Args:
    tensors: HF key -> numpy array (bf16 arrays as ml_dtypes.bfloat16 are fine).
    cfg: the architecture the params are for.
    dtype: cast every param to this dtype (default: keep the file's).
  Raises:
    CheckpointMismatch listing every missing / unexpected / mis-shaped key
    and every tensor of a non-floating dtype.
  """
  rules = [(r, _compile(r)) for r in _rules(cfg)]
  shapes = _abstract_shapes(cfg)
  # Checked before any transform: a reshape accepts any tensor of the right
  # size, so a transposed [D, N*H] for [N*H, D] would otherwise load silently.
  hf_shapes = {id(r): _hf_shape(r, shapes[r.path]) for r, _ in rules
               if r.path in shapes}
  # path -> {(layer, slot): array}
  parts: dict[str, dict] = {}
  unexpected, misshaped, other = [], [], []
  reported = set()   # (path, layer, slot) already listed as mis-shaped
  lm_head = None
  for key, arr in tensors.items():
    ckey = canonical_key(key)
    if ckey == "lm_head":
      lm_head = (key, arr)
      continue
    for rule, rx in rules:
      mo = rx.match(ckey)
      if mo:
        break
    else:
      unexpected.append(key)
      continue
    layer = int(mo.group(1)) if rule.layered else None
    if layer is not None and layer >= _num_layers(cfg, rule.path):
      unexpected.append(key)
      continue
    kind = np.dtype(getattr(arr, "dtype", np.float32)).kind
    # "f" numpy floats, "V" ml_dtypes' (bfloat16, float8); integer or bool
    # weights are a broken export, and stacking them with float layers
    # would silently give float64 params.
    if kind not in "fV":
      other.append(f"{key}: dtype {arr.dtype} is not a floating type")
      reported.add((rule.path, layer, rule.slot))
      continue
    want = hf_shapes.get(id(rule))
    if want is not None and tuple(np.shape(arr)) != want:
      misshaped.append(f"{key}: expected {want}, got {tuple(np.shape(arr))}")
      reported.add((rule.path, layer, rule.slot))   # not "missing" as well
      continue
    try:
      val = rule.fwd(np.asarray(arr))
    except ValueError as e:  # reshape of a wrongly sized tensor
      misshaped.append(f"{key}: {tuple(np.shape(arr))} ({e})")
      reported.add((rule.path, layer, rule.slot))
      continue
    slot_map = parts.setdefault(rule.path, {})
    if (layer, rule.slot) in slot_map:   # e.g. one tensor under two layouts
      other.append(f"{key} and {slot_map[(layer, rule.slot)][0]} are the same "
                   "tensor under two names")
      continue
    slot_map[(layer, rule.slot)] = (key, val)

  flat, missing = {}, []
  for path, shape in shapes.items():
    got = parts.get(path, {})
    matching = [r for r, _ in rules if r.path == path]
    if not matching:
      other.append(f"no conversion rule for param {path}")
      continue
    rule = matching[0]
    slots = sorted({r.slot for r in matching}, key=lambda s: -1 if s is None else s)
    layers_ = range(_num_layers(cfg, path)) if rule.layered else [None]
    pieces, ok = [], True
    for layer in layers_:
      slot_vals = []
      for slot in slots:
        if (layer, slot) not in got:
          r = next(r for r in matching if r.slot == slot)
          if (path, layer, slot) not in reported:
            missing.append(r.hf.replace("{i}", str(layer)) if layer is not None
                           else r.hf)
          ok = False
          continue
        slot_vals.append(got[(layer, slot)][1])
      if ok:
        pieces.append(np.stack(slot_vals) if slots != [None] else slot_vals[0])
    if not ok:
      continue
    val = np.stack(pieces) if rule.layered else pieces[0]
    if tuple(val.shape) != shape:
      keys = sorted({k for k, _ in got.values()})[:2]
      misshaped.append(f"{path}: expected {shape}, got {tuple(val.shape)} "
                       f"(from {', '.join(keys)}...)")
      continue
    flat[path] = val.astype(dtype) if dtype is not None else val

  if lm_head is not None and "llm/embedder/input_embedding" in flat:
    key, arr = lm_head
    emb = flat["llm/embedder/input_embedding"]
    if np.shape(arr) != emb.shape or not np.array_equal(
        np.asarray(arr).astype(np.float32), emb.astype(np.float32)):
      other.append(f"{key} is not tied to the input embedding; untied heads "
                   "are not supported")
  if missing or unexpected or misshaped or other:
    raise CheckpointMismatch(missing, unexpected, misshaped, other)
  return unflatten(flat)


def _export_prefix(cfg: ArchConfig) -> dict[str, str]:
  """Canonical prefix -> key prefix of `save_pretrained` files (transformers 5)."""
  if cfg.vision is None:
    return {"lm.": "model."}
  return {"lm.": "language_model.model.", "vis.": "vision_tower.",
          "proj.": "multi_modal_projector."}


def params_to_hf(params, cfg: ArchConfig) -> dict[str, np.ndarray]:
  """Params -> HF tensors in the layout `save_pretrained` writes (tied head omitted)."""
  flat = {p: np.asarray(a) for p, a in flatten(params).items()}
  prefixes = _export_prefix(cfg)
  out = {}
  for rule in _rules(cfg):
    if rule.path not in flat:
      raise CheckpointMismatch(missing=[rule.path])
    val = flat[rule.path]
    layers_ = range(val.shape[0]) if rule.layered else [None]
    for layer in layers_:
      piece = val[layer] if layer is not None else val
      if rule.slot is not None:
        piece = piece[rule.slot]
      ckey = rule.hf.replace("{i}", str(layer)) if layer is not None else rule.hf
      head, rest = ckey.split(".", 1)
      out[prefixes[head + "."] + rest] = np.ascontiguousarray(rule.inv(piece))
  return out

r"""Per-device memory estimates for real runs on named TPU topologies.

  topo = topology.get("v5e-8")
  est = memory.estimate([memory.Training(config=train_config)], topo,
                        mesh=(("data", 1), ("fsdp", -1)))
  print(est.table())
  memory.fits(est)       # raises DoesNotFit (need vs HBM, top items)

Nothing is allocated: params come from `jax.eval_shape` (cached per arch),
the train state from `train.state.abstract_state`, and shardings from the
real plan (`train.state.state_shardings`, `strategy.DEFAULT_STRATEGY`) over
a `jax.sharding.AbstractMesh` with the topology's device count, so a
v5p-32 plan runs on a laptop with one CPU device.

A run is a list of workloads on ONE shared mesh (DESIGN.md: every model of
an audit is colocated): `Training` (an SFT or GRPO step of one model) and
`Inference` (prefill + decode of one model). Each item is either resident
(held for the whole run) or belongs to its workload's phase; phases run one
after another, so

  need = sum(resident items) + max over phases (sum of that phase's items)

What is counted, in bytes of one device (shards are even):

  resident
    params       every model's params in its dtype, DEFAULT_STRATEGY
    lora         LoRA factors (replicated, LORA_STRATEGY)
    optimizer    optimiser state, sharded like its leaf; frozen leaves have
                 none (their optax.set_to_zero branch keeps no moments)
    ref_copy     GRPO full fine-tuning with a KL term: the frozen reference
                 policy is a second copy of the params
  phases of a Training: backward (forward + backward pass), update, and
  encode (the forward of a frozen vision tower, done before the backward)
    gradients    one per TRAIN leaf (trainable dtype and sharding); frozen
                 leaves are stop-gradiented and their backward pruned
    updates      update phase: the optimiser's update tree (same size as
                 the gradients), alive with them after the activations
                 are freed; for big models with small activations this
                 phase is the peak
    lora_merge   LoRA merges W + BA for every target and its backward takes
                 a full-shape dW (models/lora.py): 2 x the targeted weights
                 plus the f32 delta A @ B (4 bytes per targeted element)
    activations  see below
    logits       f32 [b, K, V/t] and its gradient (x2): K positions through
                 the LM head at once (logits_chunk, else all targets)
    inputs       the batch (tokens, masks, f32 images)
  phase of an Inference
    kv_cache     [L, b, K/t, S, H] keys + [L, b, K/t, H, S] values,
                 S = prompt + new tokens
    activations  one layer of prefill (text + vision) and the masks
    logits       f32 [b, V/t] at the last position, and its log-softmax
    inputs       prompts and images

Activations. b = rows per device = batch / (data x fsdp) (the batch is
split over both), t = 'tensor' size (head and hidden dims only, when it
divides them), s = compute dtype bytes, T tokens per row including image
tokens (PaliGemma places them in the sequence), D, L, N, K, H, F, V as in
the arch:

  per token, one text layer   16 D + (6 N H + 6 K H + 8 F) / t  elements
      (what autodiff keeps for the backward pass: f32 RMSNorm inputs and
      outputs, q / k / v before and after norm and RoPE, the attention
      output, gate and up, gelu(gate) * up, residuals)
  attention scores, one layer  b (N / t) T^2 (8 + s) bytes
      (f32 soft-capped logits and softmax, probabilities in s)
  one_layer = b T (per token) s + scores
  trained, remat        L b T D s  (the scan's carried inputs)
                        + one_layer  (the layer being recomputed)
  trained, no remat     L one_layer
  frozen / inference    one layer's live forward tensors, per token
                        4 D + (2 N H + 2 K H + 3 F) / t, + scores
                        (a forward pass keeps nothing for later)
  masks                 2 b T^2 bytes (bool local + global), once

Calibration. The constants were fitted to XLA's own buffer assignment
(`jit(step).lower(abstract).compile().memory_analysis()`, one CPU device,
f32 compute; XLA:CPU upcasts bf16 and keeps both copies, so bf16 numbers
there say nothing about TPU). Estimated / XLA temp bytes of the SFT step:

  gemma3_100m_text  8 x 128 and 8 x 256, no remat; 8 x 256 remat  1.01-1.04
  paligemma2_3b_224 2 x 320 full FT, remat or not (update peak)    1.00-1.02
  gemma3_4b         1-2 x 320 LoRA, remat, 896-px images           1.01-1.08
  paligemma2_3b_224 4 x 320 LoRA, no remat                          0.87
  paligemma2_3b_224 4 x 320 LLM frozen, vision trained, no remat     1.31

The SigLIP tower is counted the same way, by analogy (not fitted on its
own: in the checks above it was never the peak), with W, M, F_v, P patches
per image and b x images rows: per token 16 W + (12 W + 4 F_v) / t
(forward only: 4 W + (4 W + 2 F_v) / t), scores b (M / t) P^2 (4 + 2 s)
(logits in s before the f32 softmax). It counts as trained when any 'img/'
parameter or LoRA factor trains. At 896 px (Gemma-3) P = 4096, so its
[b, M, P, P] scores dominate everything else: keep b small there.

These are estimates, not XLA's buffer assignment: fusion removes some
per-token tensors and the compiler adds scratch and fragmentation, which is
why `fits` only lets a run use `margin` (default 90%) of the HBM.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AbstractMesh, AxisType

from auditdm_jax.models import arch as arch_lib
from auditdm_jax.models.config import ArchConfig
from auditdm_jax.models.vlm import Model
from auditdm_jax.sharding import mesh as mesh_lib
from auditdm_jax.sharding import strategy as strategy_lib
from auditdm_jax.sharding.topology import GiB, Topology
from auditdm_jax.train import state as state_lib
from auditdm_jax.train.config import TRAIN, TrainConfig

RESIDENT = "resident"
_DTYPE_SHORT = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}
PARAM_MODES = ("resident", "phase", "shared")
DEFAULT_MARGIN = 0.9

MeshSpec = mesh_lib.MeshSpec


# --- Abstract shapes, cached --------------------------------------------------

@functools.lru_cache(maxsize=None)
def abstract_params(arch: str):
  """f32 ShapeDtypeStruct params of `arch` (eval_shape of init, cached).

  The real 28B abstract init takes ~1 s; tests plan many configs of the
  same archs, so one trace per arch is kept for the process.
  """
  return Model(arch_lib.get(arch)).abstract_params()


@dataclasses.dataclass(frozen=True)
class PlannedModel(Model):
  """A `Model` whose `abstract_params` comes from the per-arch cache.

  `train.state.abstract_state` / `state_shardings` only ever ask the model
  for its abstract params, so handing them this subclass shares the trace.
  """

  def abstract_params(self):
    return abstract_params(self.cfg.name)


def planned_model(config: TrainConfig) -> PlannedModel:
  """The model `config` trains (same dtype / remat as `make_model`)."""
  return PlannedModel(config.arch_config, dtype=jnp.dtype(config.dtype),
                      remat=config.remat)


def abstract_mesh(spec: MeshSpec, topology: Topology) -> AbstractMesh:
  """A device-free mesh of the topology's size with axes ('data', 'fsdp',
  'tensor') and Auto axis types, like `mesh.make_mesh`.

  Raises:
    ValueError: a spec that does not cover the topology's devices.
  """
  try:
    shape = mesh_lib.resolve_mesh_shape(spec, topology.devices)
  except ValueError as e:
    raise ValueError(f"mesh {list(spec)} does not fit {topology.name} "
                     f"({topology.devices} devices): {e}") from None
  return AbstractMesh(shape, mesh_lib.AXES,
                      axis_types=(AxisType.Auto,) * len(mesh_lib.AXES))


def _nbytes(shape: Sequence[int], dtype) -> int:
  # PRNG keys have an extended dtype without an itemsize; they are tiny.
  if jax.dtypes.issubdtype(dtype, jax.dtypes.extended):
    return 0
  return math.prod(shape) * np.dtype(dtype).itemsize


def device_bytes(tree, shardings) -> int:
  """Bytes of `tree` (ShapeDtypeStructs) held by one device."""
  leaves, sh = jax.tree.leaves(tree), jax.tree.leaves(shardings)
  if len(leaves) != len(sh):
    raise ValueError(f"{len(leaves)} leaves but {len(sh)} shardings")
  return sum(_nbytes(s.shard_shape(tuple(x.shape)), x.dtype)
             for x, s in zip(leaves, sh))


def count(tree) -> int:
  """Number of elements of every leaf."""
  return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


# --- Workloads ----------------------------------------------------------------

@dataclasses.dataclass(frozen=True, kw_only=True)
class Training:
  """One model trained by a jitted step (SFT or GRPO).

  Attributes:
    config: the TrainConfig (arch, dtypes, remat, LoRA, freeze rules,
      batch_size = global rows per step, max_len, max_target_len,
      logits_chunk).
    name: label in the report (default: the arch).
    seq_len: tokens per row T (default `config.max_len`; GRPO: prompt +
      completion).
    loss_positions: positions through the LM head at once (default
      `config.logits_chunk` or else `config.max_target_len`).
    images_per_row: images per row (default `config.num_images`; ignored
      for text-only archs).
    reference_copy: keep a frozen copy of the params (GRPO KL reference of
      a fully fine-tuned policy).
  """
  config: TrainConfig
  name: str = ""
  seq_len: Optional[int] = None
  loss_positions: Optional[int] = None
  images_per_row: Optional[int] = None
  reference_copy: bool = False

  def __post_init__(self):
    if not isinstance(self.config, TrainConfig):
      raise TypeError(f"Training.config must be a TrainConfig, got "
                      f"{type(self.config).__name__}")
    for field in ("seq_len", "loss_positions", "images_per_row"):
      value = getattr(self, field)
      if value is not None and value < (0 if field == "images_per_row"
                                        else 1):
        raise ValueError(f"Training.{field} must be positive, got {value}")

  @property
  def label(self) -> str:
    return self.name or self.config.arch


@dataclasses.dataclass(frozen=True, kw_only=True)
class Inference:
  """One frozen model answering or sampling (prefill + decode with a cache).

  Attributes:
    arch: architecture name.
    batch_size: global rows decoded together.
    prompt_len: prompt tokens per row, image tokens included.
    max_new_tokens: decode steps (cache length = prompt_len + this).
    name: label in the report (default: the arch).
    param_dtype, dtype: params and compute / cache dtype names.
    images_per_row: images per row (ignored for text-only archs).
    params: 'resident' (held for the whole run, e.g. audit references),
      'phase' (loaded only for this phase, e.g. checkpoints evaluated one
      after another) or 'shared' (already counted by a Training of the
      same model, e.g. the auditor sampling its own rollouts).
  """
  arch: str
  batch_size: int
  prompt_len: int
  max_new_tokens: int
  name: str = ""
  param_dtype: str = "bfloat16"
  dtype: str = "bfloat16"
  images_per_row: int = 1
  params: str = "resident"

  def __post_init__(self):
    try:
      arch_lib.get(self.arch)
    except KeyError as e:
      raise ValueError(f"Inference: {e.args[0]}") from None
    for field in ("batch_size", "prompt_len"):
      if getattr(self, field) < 1:
        raise ValueError(f"Inference.{field} must be >= 1, got "
                         f"{getattr(self, field)}")
    if self.max_new_tokens < 0 or self.images_per_row < 0:
      raise ValueError("Inference: max_new_tokens and images_per_row must "
                       "be >= 0")
    if self.params not in PARAM_MODES:
      raise ValueError(f"Inference.params must be one of {PARAM_MODES}, got "
                       f"{self.params!r}")
    for field in ("param_dtype", "dtype"):
      jnp.dtype(getattr(self, field))  # raises on an unknown name

  @property
  def label(self) -> str:
    return self.name or self.arch


Workload = Union[Training, Inference]


# --- The estimate -------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Item:
  """Bytes one device holds for one thing of one model."""
  model: str
  kind: str
  phase: str
  bytes: int
  note: str = ""


@dataclasses.dataclass(frozen=True)
class ModelInfo:
  """Parameter counts of one workload's model."""
  name: str
  arch: str
  params: int
  trainable: int
  param_bytes: int      # whole model, in its dtype (all devices together)
  dtype: str = "float32"


@dataclasses.dataclass(frozen=True)
class Estimate:
  """Per-device memory of a run on a topology; see the module docstring."""
  topology: Topology
  mesh_shape: tuple[int, int, int]
  items: tuple[Item, ...]
  models: tuple[ModelInfo, ...]
  margin: float = DEFAULT_MARGIN

  def __post_init__(self):
    if not 0 < self.margin <= 1:
      raise ValueError(f"margin must be in (0, 1], got {self.margin}")

  @property
  def mesh(self) -> dict[str, int]:
    return dict(zip(mesh_lib.AXES, self.mesh_shape))

  @property
  def resident_bytes(self) -> int:
    return sum(i.bytes for i in self.items if i.phase == RESIDENT)

  def phase_bytes(self) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in self.items:
      if i.phase != RESIDENT:
        out[i.phase] = out.get(i.phase, 0) + i.bytes
    return out

  @property
  def peak_phase(self) -> Optional[str]:
    phases = self.phase_bytes()
    return max(phases, key=phases.get) if phases else None

  @property
  def total_bytes(self) -> int:
    """Peak bytes one device needs: resident + the largest phase."""
    return self.resident_bytes + max(self.phase_bytes().values(), default=0)

  @property
  def usable_bytes(self) -> int:
    return int(self.topology.hbm_bytes * self.margin)

  @property
  def fits(self) -> bool:
    return self.total_bytes <= self.usable_bytes

  def peak_items(self) -> list[Item]:
    """Items counted in the peak (resident + peak phase), largest first."""
    peak = self.peak_phase
    return sorted((i for i in self.items if i.phase in (RESIDENT, peak)),
                  key=lambda i: -i.bytes)

  def table(self) -> str:
    """Human-readable report: models, mesh, items, total vs HBM."""
    lines = [f"topology  {self.topology.describe()}",
             "mesh      " + " x ".join(f"{a}={n}" for a, n in
                                      self.mesh.items())]
    w = max(len(m.name) for m in self.models) + 2
    lines.append(f"{'model':<{w}} {'arch':<20} {'params':>16} "
                 f"{'trainable':>16} {'weights':>14}")
    for m in self.models:
      lines.append(f"{m.name:<{w}} {m.arch:<20} {m.params:>16,} "
                   f"{m.trainable:>16,} {m.param_bytes / 1e9:>7.2f} GB "
                   f"{_DTYPE_SHORT.get(m.dtype, m.dtype)}")
    lines.append("")
    pw = max([len(i.phase) for i in self.items] + [5]) + 2
    lines.append(f"{'per device':<{w}} {'item':<12} {'phase':<{pw}} "
                 f"{'GiB':>8}  note")
    peak = self.peak_phase
    for i in self.items:
      flag = "" if i.phase in (RESIDENT, peak) else " (not peak)"
      lines.append(f"{i.model:<{w}} {i.kind:<12} {i.phase:<{pw}} "
                   f"{i.bytes / GiB:>8.3f}  {i.note}{flag}")
    for phase, b in self.phase_bytes().items():
      lines.append(f"phase {phase:<{w + pw + 8}} {b / GiB:>8.3f} GiB"
                   f"{'  <- peak' if phase == peak else ''}")
    verdict = "fits" if self.fits else "DOES NOT FIT"
    lines.append(
        f"total     {self.total_bytes / GiB:.2f} GiB per device = resident "
        f"{self.resident_bytes / GiB:.2f} + peak phase "
        f"{(self.total_bytes - self.resident_bytes) / GiB:.2f}; usable "
        f"{self.usable_bytes / GiB:.2f} GiB ({self.margin:.0%} of "
        f"{self.topology.hbm_gib:g} GiB HBM): {verdict}")
    return "\n".join(lines)


class DoesNotFit(ValueError):
  """A run needs more memory per device than the topology has."""

  def __init__(self, estimate: Estimate):
    self.estimate = estimate
    top = estimate.peak_items()[:4]
    biggest = ", ".join(f"{i.kind} of {i.model} {i.bytes / GiB:.2f} GiB"
                        for i in top)
    super().__init__(
        f"does not fit on {estimate.topology.describe()}: needs "
        f"{estimate.total_bytes / GiB:.2f} GiB per device but only "
        f"{estimate.usable_bytes / GiB:.2f} GiB is usable "
        f"({estimate.margin:.0%} of {estimate.topology.hbm_gib:g} GiB HBM) "
        f"on mesh {estimate.mesh}. Biggest: {biggest}. Try a larger slice "
        f"or fsdp axis or fewer rows per device (batch size); when training, "
        f"also LoRA, remat or a smaller logits_chunk.")


def fits(estimate: Estimate) -> Estimate:
  """Returns `estimate` when it fits, else raises DoesNotFit."""
  if not estimate.fits:
    raise DoesNotFit(estimate)
  return estimate


# --- Pieces -------------------------------------------------------------------

def _split(n: int, t: int) -> float:
  """n / t when the tensor axis divides n, else n (replicated, as the
  strategy's strict=False rules do)."""
  return n / t if n % t == 0 else n


def _rows(batch: int, mesh_shape: tuple[int, int, int], *, strict: bool,
          what: str) -> int:
  n = mesh_shape[0] * mesh_shape[1]
  if batch % n and strict:
    raise ValueError(f"{what}: batch of {batch} rows does not split over "
                     f"data x fsdp = {n} devices")
  return -(-batch // n)


def text_layer_bytes(cfg: ArchConfig, rows: int, tokens: int, t: int,
                     s: int, *, backward: bool = True) -> float:
  """One decoder layer's activations for `rows` x `tokens` (formula above):
  what the backward pass keeps, or with backward=False the live tensors of
  a forward pass."""
  c = cfg.text
  if backward:
    per_token = (16 * c.embed_dim
                 + (6 * c.num_heads * c.head_dim
                    + 6 * c.num_kv_heads * c.head_dim
                    + 8 * c.hidden_dim) / t)
  else:
    per_token = (4 * c.embed_dim
                 + (2 * c.num_heads * c.head_dim
                    + 2 * c.num_kv_heads * c.head_dim
                    + 3 * c.hidden_dim) / t)
  scores = rows * _split(c.num_heads, t) * tokens**2 * (8 + s)
  return rows * tokens * per_token * s + scores


def vision_layer_bytes(cfg: ArchConfig, images: int, t: int, s: int, *,
                       backward: bool = True) -> float:
  """One SigLIP layer's activations for `images` images (see text)."""
  v = cfg.vision
  p = v.num_patches
  if backward:
    per_token = 16 * v.width + (12 * v.width + 4 * v.mlp_dim) / t
  else:
    per_token = 4 * v.width + (4 * v.width + 2 * v.mlp_dim) / t
  scores = images * _split(v.num_heads, t) * p**2 * (4 + 2 * s)
  return images * p * per_token * s + scores


def activation_bytes(cfg: ArchConfig, *, rows: int, tokens: int,
                     images_per_row: int, t: int, s: int, remat: bool,
                     text_trained: bool, vision_trained: bool) -> dict:
  """{'text', 'vision', 'masks'} activation bytes of one device."""
  c = cfg.text
  one = text_layer_bytes(cfg, rows, tokens, t, s)
  if not text_trained:
    text = text_layer_bytes(cfg, rows, tokens, t, s, backward=False)
  elif remat:
    text = c.num_layers * rows * tokens * c.embed_dim * s + one
  else:
    text = c.num_layers * one
  vision = 0.0
  if cfg.has_vision and images_per_row:
    v = cfg.vision
    images = rows * images_per_row
    one_v = vision_layer_bytes(cfg, images, t, s)
    if not vision_trained:
      vision = vision_layer_bytes(cfg, images, t, s, backward=False)
    elif remat:
      vision = v.depth * images * v.num_patches * v.width * s + one_v
    else:
      vision = v.depth * one_v
  masks = 2 * rows * tokens**2
  return {"text": int(text), "vision": int(vision), "masks": int(masks)}


def _input_bytes(cfg: ArchConfig, rows: int, tokens: int,
                 images_per_row: int) -> int:
  # tokens int32, mask_ar int32, input_mask bool, loss_mask int32.
  out = rows * tokens * 13
  if cfg.has_vision:
    out += rows * images_per_row * cfg.vision.image_size**2 * 3 * 4
  return out


def _training_items(w: Training, mesh: AbstractMesh,
                    mesh_shape: tuple[int, int, int]):
  config = w.config
  name = w.label
  phase, update = f"backward:{name}", f"update:{name}"
  model = planned_model(config)
  cfg = model.cfg
  abstract = state_lib.abstract_state(model, config)
  sh = state_lib.state_shardings(model, config, mesh, abstract)
  t = mesh_shape[2]
  s = jnp.dtype(config.dtype).itemsize
  items = []

  params_b = device_bytes(abstract.params, sh.params)
  items.append(Item(name, "params", RESIDENT, params_b,
                    f"{count(abstract.params):,} x {config.param_dtype}"))
  if abstract.lora is not None:
    items.append(Item(name, "lora", RESIDENT,
                      device_bytes(abstract.lora, sh.lora),
                      f"rank {config.lora_rank}, replicated"))
  items.append(Item(name, "optimizer", RESIDENT,
                    device_bytes(abstract.opt_state, sh.opt_state),
                    "AdamW moments of the trainable leaves"))
  if w.reference_copy:
    items.append(Item(name, "ref_copy", RESIDENT, params_b,
                      "frozen KL reference (full fine-tuning)"))

  trainable = abstract.trainable
  trainable_sh = sh.params if abstract.lora is None else sh.lora
  labels = state_lib.trainable_labels(config, trainable)
  grads = 0
  for x, s_, label in zip(jax.tree.leaves(trainable),
                          jax.tree.leaves(trainable_sh),
                          jax.tree.leaves(labels)):
    if label == TRAIN:
      grads += _nbytes(s_.shard_shape(tuple(x.shape)), x.dtype)
  items.append(Item(name, "gradients", phase, grads,
                    "TRAIN leaves only, sharded like them"))
  # The optimiser step holds the gradients and a same-size update tree at
  # once, after the activations are gone.
  items.append(Item(name, "gradients", update, grads, "kept for the update"))
  items.append(Item(name, "updates", update, grads,
                    "AdamW update before it is applied"))

  if abstract.lora is not None:
    targets = {tuple(p) for p, _ in abstract.lora.equations}
    merged = 0
    for (path, x), s_ in zip(
        jax.tree_util.tree_leaves_with_path(abstract.params),
        jax.tree.leaves(sh.params)):
      if tuple(str(k.key) for k in path) in targets:
        merged += _nbytes(s_.shard_shape(tuple(x.shape)), x.dtype)
    # W + BA and its full-shape gradient dW in the param dtype, and the f32
    # delta A @ B (and its gradient, one at a time) of the targets.
    elements = merged // jnp.dtype(config.param_dtype).itemsize
    items.append(Item(name, "lora_merge", phase, 2 * merged + 4 * elements,
                      "W + BA, dW and the f32 delta of the targets"))
    vision_trained = any(p and p[0] == "img" for p, _ in
                         abstract.lora.equations)
  else:
    paths = strategy_lib.tree_paths(trainable)
    vision_trained = any(p.startswith("img/") and l == TRAIN
                         for p, l in zip(paths, jax.tree.leaves(labels)))

  rows = _rows(config.batch_size, mesh_shape, strict=True, what=name)
  tokens = w.seq_len or config.max_len
  images = (w.images_per_row if w.images_per_row is not None
            else config.num_images) if cfg.has_vision else 0
  act = activation_bytes(cfg, rows=rows, tokens=tokens, images_per_row=images,
                         t=t, s=s, remat=config.remat, text_trained=True,
                         vision_trained=vision_trained)
  how = "remat" if config.remat else "no remat"
  items.append(Item(name, "activations", phase, act["text"] + act["masks"],
                    f"text: {rows} rows x {tokens} tokens, {how}"))
  if act["vision"]:
    # A frozen tower's forward is over (its buffers freed) before the
    # backward pass starts: its own phase, not part of the backward peak.
    items.append(Item(
        name, "vision_act", phase if vision_trained else f"encode:{name}",
        act["vision"],
        f"{rows * images} images x {cfg.vision.num_patches} patches, "
        f"{'trained, ' + how if vision_trained else 'frozen forward'}"))
  k = w.loss_positions or config.logits_chunk or config.max_target_len
  vocab = _split(cfg.text.vocab_size, t)
  items.append(Item(name, "logits", phase, int(rows * k * vocab * 4 * 2),
                    f"f32 [{rows}, {k}, {int(vocab)}] + gradient"))
  items.append(Item(name, "inputs", phase,
                    _input_bytes(cfg, rows, tokens, images), "the batch"))
  info = ModelInfo(
      name=name, arch=config.arch, params=count(abstract.params),
      trainable=sum(math.prod(x.shape) for x, l in zip(
          jax.tree.leaves(trainable), jax.tree.leaves(labels))
                    if l == TRAIN),
      param_bytes=sum(_nbytes(x.shape, x.dtype)
                      for x in jax.tree.leaves(abstract.params)),
      dtype=config.param_dtype)
  return items, info


def _inference_items(w: Inference, mesh: AbstractMesh,
                     mesh_shape: tuple[int, int, int]):
  name = w.label
  phase = f"{'eval' if w.params == 'phase' else 'infer'}:{name}"
  cfg = arch_lib.get(w.arch)
  dtype = jnp.dtype(w.param_dtype)
  params = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, dtype),
                        abstract_params(w.arch))
  sh = strategy_lib.param_shardings(params, mesh,
                                    strategy_lib.DEFAULT_STRATEGY)
  t = mesh_shape[2]
  s = jnp.dtype(w.dtype).itemsize
  items = []
  params_b = device_bytes(params, sh)
  if w.params != "shared":
    items.append(Item(name, "params", RESIDENT if w.params == "resident"
                      else phase, params_b,
                      f"{count(params):,} x {w.param_dtype}"))
  rows = _rows(w.batch_size, mesh_shape, strict=False, what=name)
  cache_len = w.prompt_len + w.max_new_tokens
  c = cfg.text
  kv = (c.num_layers * rows * cache_len * _split(c.num_kv_heads, t)
        * c.head_dim * 2 * s)
  items.append(Item(name, "kv_cache", phase, int(kv),
                    f"{rows} rows x {cache_len} positions"))
  images = w.images_per_row if cfg.has_vision else 0
  act = activation_bytes(cfg, rows=rows, tokens=w.prompt_len,
                         images_per_row=images, t=t, s=s, remat=False,
                         text_trained=False, vision_trained=False)
  # Prefill masks are [b, T, S] against the whole cache.
  masks = 2 * rows * w.prompt_len * cache_len
  items.append(Item(name, "activations", phase, act["text"] + act["vision"]
                    + masks, "one layer of prefill (text + vision)"))
  vocab = _split(c.vocab_size, t)
  items.append(Item(name, "logits", phase, int(rows * vocab * 4 * 2),
                    "f32 last-position logits + log-softmax"))
  items.append(Item(name, "inputs", phase,
                    _input_bytes(cfg, rows, w.prompt_len, images), "prompts"))
  info = ModelInfo(name=name, arch=w.arch, params=count(params), trainable=0,
                   param_bytes=sum(_nbytes(x.shape, x.dtype)
                                   for x in jax.tree.leaves(params)),
                   dtype=w.param_dtype)
  return items, info


def estimate(workloads: Sequence[Workload], topology: Topology,
             mesh: MeshSpec = (("fsdp", -1),), *,
             margin: float = DEFAULT_MARGIN) -> Estimate:
  """Per-device bytes of `workloads` colocated on `topology` with `mesh`.

  Args:
    workloads: Training / Inference entries (see their docstrings).
    topology: the slice (`topology.get(name)`).
    mesh: [(axis, size), ...] over ('data', 'fsdp', 'tensor'), one -1.
    margin: fraction of HBM a run may use (compiler scratch, fragmentation).
  Raises:
    ValueError: a mesh that does not cover the topology, a training batch
      the (data x fsdp) devices cannot split, duplicate workload labels.
  """
  if not workloads:
    raise ValueError("estimate needs at least one workload")
  labels = [w.label for w in workloads]
  dupes = sorted({l for l in labels if labels.count(l) > 1})
  if dupes:
    raise ValueError(f"workload names must be unique, repeated: {dupes}; "
                     "give them distinct `name`s")
  amesh = abstract_mesh(mesh, topology)
  shape = tuple(amesh.shape[a] for a in mesh_lib.AXES)
  items: list[Item] = []
  infos: list[ModelInfo] = []
  for w in workloads:
    if isinstance(w, Training):
      new, info = _training_items(w, amesh, shape)
    elif isinstance(w, Inference):
      new, info = _inference_items(w, amesh, shape)
    else:
      raise TypeError(f"unknown workload {type(w).__name__}")
    items.extend(new)
    infos.append(info)
  return Estimate(topology=topology, mesh_shape=shape, items=tuple(items),
                  models=tuple(infos), margin=margin)


def estimate_train(config: TrainConfig, topology: Topology,
                   mesh: Optional[MeshSpec] = None, **kw: Any) -> Estimate:
  """Shorthand: one SFT Training on `config.mesh` (or `mesh`)."""
  mesh = mesh or config.mesh or (("fsdp", -1),)
  return estimate([Training(config=config)], topology, mesh, **kw)

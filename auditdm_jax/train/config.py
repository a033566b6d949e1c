"""Supervised fine-tuning run config: one frozen, validated dataclass.

  cfg = TrainConfig(arch="paligemma2_tiny", lr=1e-3, total_steps=500,
                    freeze=("img/.*",))
  cfg = TrainConfig.from_dict(config_dict)   # ml_collections ConfigDict too

Everything a run needs except the data source and the tokenizer object lives
here, so a checkpoint directory plus this config reproduce a run. The same
config drives rectification (fine-tuning a target on harvested failures).

Which parameters train is decided by ordered regex rules over '/'-joined
param paths (big_vision's `schedule` idea, first match wins):

  freeze=("img/.*",)          -> [("img/.*", frozen), (".*", train)]
  trainable=("llm/layers/.*",) -> [("llm/layers/.*", train), (".*", frozen)]

With `lora_rank > 0` the base params are all frozen and only the LoRA
factors train; `freeze` / `trainable` must then be empty.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any, Optional

from auditdm_jax.models import arch as arch_lib
from auditdm_jax.models.lora import DEFAULT_TARGETS
from auditdm_jax.sharding.mesh import AXES

SCHEDULES = ("constant", "cosine", "linear")
DTYPES = ("float32", "bfloat16")
TRAIN, FROZEN = "train", "frozen"


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
  """A supervised fine-tuning run.

  Attributes:
    arch: architecture name in `auditdm_jax.models.arch`.
    dtype: compute (activation) dtype name.
    param_dtype: dtype of the base params; trainable params should stay
      float32 master weights (anchors §7.3.3), frozen LoRA bases may be bf16.
    remat: rematerialise blocks in the backward pass (less memory).
    unroll: layer-scan unroll factor (`Model.unroll`): on CPU, tiny models
      train ~15% faster unrolled (the per-layer slices of the stacked
      weights fuse); 1 keeps the compile small.
    tokenizer: path to a SentencePiece model or a directory holding
      `tokenizer.model`; may be None when `train` is given a tokenizer.
    init_from: a `convert.orbax_io.save_params` checkpoint to start from;
      None = random init (or params passed to `train`).
    lr: peak learning rate.
    schedule: 'constant', 'cosine' (warm-up then cosine to `end_lr`) or
      'linear' (warm-up then linear to `end_lr`).
    warmup_steps: linear warm-up from 0; exclusive with `warmup_fraction`.
    warmup_fraction: warm-up as a fraction of `total_steps`.
    end_lr: final learning rate of the cosine / linear decay.
    weight_decay: AdamW decoupled weight decay.
    b1, b2, eps: Adam moments and epsilon.
    grad_clip: clip the global norm of the trainable gradients; 0 = off.
    batch_size: global batch size B (split over processes and devices).
    total_steps: number of optimiser steps of the whole run.
    max_len: T, the fixed padded length of every batch (one compile).
    max_target_len: K, how many answer positions per example get logits;
      the batcher rejects examples with more answer tokens.
    logits_chunk: compute the K target logits in chunks of this many
      positions with rematerialisation (0 = all at once); for big vocabs.
    freeze: regexes of frozen params (exclusive with `trainable`).
    trainable: regexes of trained params, everything else frozen.
    lora_rank: 0 = full fine-tuning, else rank of LoRA adapters.
    lora_alpha: LoRA scale numerator (default: rank, i.e. scale 1).
    lora_targets: regex of the weights that get adapters.
    image_preprocess: preset of `data.image_preprocessing` ('siglip' or
      'gemma3'); the size is always the model's image size.
    num_images: images per example for vision models (0 for text-only).
    shuffle: shuffle the source (each epoch differently).
    log_every: write averaged train metrics every N steps.
    eval_every: call `eval_fn` every N steps (0 = only at the end).
    checkpoint_every: save every N steps (0 = only at the end).
    keep_checkpoints: how many checkpoints to keep.
    async_checkpointing: write checkpoints in a background thread.
    seed: param / LoRA init and data shuffle seed.
    mesh: [(axis, size), ...] over ('data', 'fsdp', 'tensor'); None = no
      mesh (single device).
    progress: show a tqdm progress bar.
  """
  arch: str = "paligemma2_tiny"
  dtype: str = "float32"
  param_dtype: str = "float32"
  remat: bool = False
  unroll: int = 1
  tokenizer: Optional[str] = None
  init_from: Optional[str] = None
  lr: float = 1e-3
  schedule: str = "cosine"
  warmup_steps: int = 0
  warmup_fraction: Optional[float] = None
  end_lr: float = 0.0
  weight_decay: float = 0.0
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  grad_clip: float = 1.0
  batch_size: int = 32
  total_steps: int = 1000
  max_len: int = 64
  max_target_len: int = 32
  logits_chunk: int = 0
  freeze: tuple[str, ...] = ()
  trainable: tuple[str, ...] = ()
  lora_rank: int = 0
  lora_alpha: Optional[float] = None
  lora_targets: str = DEFAULT_TARGETS
  image_preprocess: str = "siglip"
  num_images: int = 1
  shuffle: bool = True
  log_every: int = 10
  eval_every: int = 0
  checkpoint_every: int = 0
  keep_checkpoints: int = 3
  async_checkpointing: bool = True
  seed: int = 0
  mesh: Optional[tuple[tuple[str, int], ...]] = None
  progress: bool = True

  def __post_init__(self):
    # Normalise list-valued fields (ConfigDicts and JSON give lists) so the
    # config stays hashable: jitted steps are cached on it.
    for name in ("freeze", "trainable"):
      value = getattr(self, name)
      if isinstance(value, str):
        value = (value,)
      object.__setattr__(self, name, tuple(value))
    if self.mesh is not None:
      items = self.mesh.items() if isinstance(self.mesh, Mapping) else self.mesh
      try:
        mesh = tuple((str(a), int(s)) for a, s in items)
      except (TypeError, ValueError):
        raise ValueError(f"TrainConfig: mesh must be [(axis, size), ...] or "
                         f"None, got {self.mesh!r}") from None
      object.__setattr__(self, "mesh", mesh)
    self._validate()

  def _validate(self):
    def need(ok: bool, msg: str):
      if not ok:
        raise ValueError(f"TrainConfig: {msg}")

    try:
      arch_lib.get(self.arch)
    except KeyError as e:
      raise ValueError(f"TrainConfig: {e.args[0]}") from None
    need(self.dtype in DTYPES, f"dtype must be one of {DTYPES}, got "
         f"{self.dtype!r}")
    need(self.param_dtype in DTYPES, f"param_dtype must be one of {DTYPES}, "
         f"got {self.param_dtype!r}")
    need(self.unroll >= 1, f"unroll must be >= 1, got {self.unroll}")
    need(self.lr > 0, f"lr must be > 0, got {self.lr}")
    need(self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, "
         f"got {self.schedule!r}")
    need(0 <= self.end_lr <= self.lr, f"end_lr must be in [0, lr], got "
         f"{self.end_lr}")
    need(self.total_steps >= 1, f"total_steps must be >= 1, got "
         f"{self.total_steps}")
    need(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got "
         f"{self.warmup_steps}")
    if self.warmup_fraction is not None:
      need(self.warmup_steps == 0,
           "give warmup_steps or warmup_fraction, not both")
      need(0 <= self.warmup_fraction < 1, f"warmup_fraction must be in "
           f"[0, 1), got {self.warmup_fraction}")
    need(self.num_warmup_steps < self.total_steps,
         f"warm-up ({self.num_warmup_steps} steps) must be shorter than "
         f"total_steps ({self.total_steps})")
    need(self.weight_decay >= 0, f"weight_decay must be >= 0, got "
         f"{self.weight_decay}")
    need(0 <= self.b1 < 1 and 0 <= self.b2 < 1,
         f"b1, b2 must be in [0, 1), got {self.b1}, {self.b2}")
    need(self.eps > 0, f"eps must be > 0, got {self.eps}")
    need(self.grad_clip >= 0, f"grad_clip must be >= 0, got {self.grad_clip}")
    need(self.batch_size >= 1, f"batch_size must be >= 1, got "
         f"{self.batch_size}")
    need(self.max_len >= 2, f"max_len must be >= 2, got {self.max_len}")
    need(1 <= self.max_target_len < self.max_len,
         f"max_target_len must be in [1, max_len), got {self.max_target_len}")
    need(self.logits_chunk >= 0, f"logits_chunk must be >= 0, got "
         f"{self.logits_chunk}")
    if self.logits_chunk:
      need(self.max_target_len % self.logits_chunk == 0,
           f"logits_chunk ({self.logits_chunk}) must divide max_target_len "
           f"({self.max_target_len})")
    need(not (self.freeze and self.trainable),
         "give freeze or trainable regexes, not both")
    for rx in self.freeze + self.trainable + (self.lora_targets,):
      try:
        re.compile(rx)
      except re.error as e:
        raise ValueError(f"TrainConfig: bad regex {rx!r}: {e}") from None
    need(self.lora_rank >= 0, f"lora_rank must be >= 0, got {self.lora_rank}")
    need(not (self.lora_rank and (self.freeze or self.trainable)),
         "with lora_rank > 0 only the LoRA factors train; leave freeze and "
         "trainable empty")
    need(self.num_images >= 0, f"num_images must be >= 0, got "
         f"{self.num_images}")
    for name in ("log_every", "eval_every", "checkpoint_every"):
      need(getattr(self, name) >= 0, f"{name} must be >= 0")
    need(self.log_every >= 1, "log_every must be >= 1")
    need(self.keep_checkpoints >= 1, f"keep_checkpoints must be >= 1, got "
         f"{self.keep_checkpoints}")
    need(self.seed >= 0, f"seed must be >= 0, got {self.seed}")
    if self.mesh is not None:
      names = [a for a, _ in self.mesh]
      need(set(names) <= set(AXES) and len(set(names)) == len(names),
           f"mesh axes must be distinct names from {AXES}, got {names}")

  # --- derived ---------------------------------------------------------------

  @property
  def num_warmup_steps(self) -> int:
    if self.warmup_fraction is not None:
      return int(round(self.warmup_fraction * self.total_steps))
    return self.warmup_steps

  @property
  def rules(self) -> tuple[tuple[str, str], ...]:
    """Ordered (regex, TRAIN | FROZEN) rules; first full match wins."""
    if self.trainable:
      return tuple((rx, TRAIN) for rx in self.trainable) + ((".*", FROZEN),)
    return tuple((rx, FROZEN) for rx in self.freeze) + ((".*", TRAIN),)

  @property
  def arch_config(self):
    return arch_lib.get(self.arch)

  # --- conversions -----------------------------------------------------------

  def to_dict(self) -> dict[str, Any]:
    """JSON-friendly dict (tuples become lists)."""
    out = dataclasses.asdict(self)
    out["freeze"], out["trainable"] = list(self.freeze), list(self.trainable)
    if self.mesh is not None:
      out["mesh"] = [list(x) for x in self.mesh]
    return out

  @classmethod
  def from_dict(cls, d: Any) -> "TrainConfig":
    """From a dict or an ml_collections ConfigDict; unknown keys are errors."""
    if hasattr(d, "to_dict"):
      d = d.to_dict()
    d = dict(d)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
      raise ValueError(f"TrainConfig: unknown fields {unknown}; known: "
                       f"{sorted(known)}")
    return cls(**d)

  def replace(self, **kw) -> "TrainConfig":
    return dataclasses.replace(self, **kw)

"""Train state, optimiser and their shardings for supervised fine-tuning.

  model = Model(arch.get(cfg.arch))
  state = create_state(model, cfg)                   # random init
  state = create_state(model, cfg, params, mesh=m)   # given params, sharded

`TrainState` holds what changes during training: the step, the params, the
optimiser state and the base rng key, plus the LoRA factors when
`cfg.lora_rank > 0`. In LoRA mode `params` are the frozen base weights and
the optimiser sees only the factors; in full fine-tuning it sees `params`
and the regex rules of the config decide which leaves train.

Frozen leaves get `optax.set_to_zero` through `optax.multi_transform`, so no
Adam moments are kept for them (their slots in the trainable branch's state
are `optax.MaskedNode`s).

Everything here is plain data plus pure functions; shardings are built from
`jax.ShapeDtypeStruct` trees so a real-size state can be planned (and
restored into) without materialising anything on one device.
"""

from __future__ import annotations

import re
from typing import Any, Optional

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from auditdm_jax.models import lora as lora_lib
from auditdm_jax.models.vlm import Model
from auditdm_jax.sharding import mesh as mesh_lib
from auditdm_jax.sharding import strategy as strategy_lib
from auditdm_jax.train.config import FROZEN, TRAIN, TrainConfig


@flax.struct.dataclass
class TrainState:
  """Everything a step reads and writes.

  Attributes:
    step: int32[] number of optimiser steps taken.
    params: the model params (frozen base weights in LoRA mode).
    opt_state: optax state of the trainable tree.
    rng: typed PRNG key of the run. Steps derive per-step keys with
      `jax.random.fold_in(rng, step)` should they need randomness, so the
      key itself never changes and resuming needs nothing else.
    lora: LoRA factors (trained) or None for full fine-tuning.
  """
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array
  lora: Optional[lora_lib.Lora] = None

  @property
  def trainable(self):
    """The tree the optimiser updates: `lora` if present, else `params`."""
    return self.params if self.lora is None else self.lora

  def model_params(self):
    """Params to run the model with (LoRA merged in); for evaluation."""
    return self.params if self.lora is None else lora_lib.merge(
        self.params, self.lora)


def _dtype(name: str):
  return jnp.dtype(name)


def make_model(config: TrainConfig) -> Model:
  """The model a config trains (equal configs give equal, hashable models)."""
  return Model(config.arch_config, dtype=_dtype(config.dtype),
               remat=config.remat, unroll=config.unroll)


# --- Which leaves train -------------------------------------------------------

def param_labels(tree, rules) -> Any:
  """Tree like `tree` of TRAIN / FROZEN by ordered (regex, label) rules.

  Args:
    tree: params (arrays or ShapeDtypeStructs), keyed by dict keys.
    rules: [(regex, label)]; the first `re.fullmatch` on the '/'-joined path
      wins; the last rule should be a catch-all.
  Raises:
    ValueError: a path no rule matches, a user regex (all but the last rule)
      that matches no parameter path (usually a typo), or nothing to train.
  """
  leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
  paths = [strategy_lib.path_str(p) for p, _ in leaves]
  compiled = [(re.compile(rx), label) for rx, label in rules]
  labels = []
  for path in paths:
    for rx, label in compiled:
      if rx.fullmatch(path):
        labels.append(label)
        break
    else:
      raise ValueError(f"no train/freeze rule matches param {path!r}")
  # A regex matching no path at all is a typo; one shadowed by an earlier
  # rule is allowed (first match wins, as in big_vision).
  unused = [rx for rx, _ in rules[:-1]
            if not any(re.fullmatch(rx, p) for p in paths)]
  if unused:
    raise ValueError(f"train/freeze regexes {unused} match no parameter; "
                     f"paths look like {paths[:3]}")
  if TRAIN not in labels:
    raise ValueError("every parameter is frozen: nothing to train")
  return jax.tree_util.tree_unflatten(treedef, labels)


def trainable_labels(config: TrainConfig, trainable) -> Any:
  """Labels of the optimiser's tree (all TRAIN for LoRA factors)."""
  if config.lora_rank:
    return jax.tree.map(lambda _: TRAIN, trainable)
  return param_labels(trainable, config.rules)


def count_params(tree, labels=None) -> dict[str, int]:
  """{'total', 'trainable'} scalar counts (trainable: leaves labelled TRAIN)."""
  sizes = [int(np.prod(x.shape)) for x in jax.tree.leaves(tree)]
  total = sum(sizes)
  if labels is None:
    return {"total": total, "trainable": total}
  flags = jax.tree.leaves(labels)
  return {"total": total,
          "trainable": sum(s for s, l in zip(sizes, flags) if l == TRAIN)}


# --- Optimiser ----------------------------------------------------------------

def make_schedule(config: TrainConfig) -> optax.Schedule:
  """Learning rate per step: linear warm-up from 0, then the decay."""
  warm, total, peak = config.num_warmup_steps, config.total_steps, config.lr
  if config.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=peak, warmup_steps=warm,
        decay_steps=total, end_value=config.end_lr)
  if config.schedule == "linear":
    decay = optax.linear_schedule(peak, config.end_lr, total - warm)
  else:
    decay = optax.constant_schedule(peak)
  if not warm:
    return decay
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, warm), decay], [warm])


def make_optimizer(config: TrainConfig, labels) -> optax.GradientTransformation:
  """AdamW (+ global-norm clipping) on TRAIN leaves, zero updates on FROZEN.

  Clipping sits inside the trainable branch, so the clipped norm is that of
  the trainable gradients only.
  """
  parts = []
  if config.grad_clip:
    parts.append(optax.clip_by_global_norm(config.grad_clip))
  parts.append(optax.adamw(make_schedule(config), b1=config.b1, b2=config.b2,
                           eps=config.eps, weight_decay=config.weight_decay))
  inner = optax.chain(*parts)
  return optax.multi_transform(
      {TRAIN: inner, FROZEN: optax.set_to_zero()}, labels)


# --- Abstract state and shardings --------------------------------------------

def _cast_abstract(tree, dtype):
  return jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(
          a.shape, dtype if jnp.issubdtype(a.dtype, jnp.floating) else a.dtype),
      tree)


def _init_lora(config: TrainConfig, params, rng):
  return lora_lib.init_lora(
      params, config.lora_rank, config.lora_targets,
      rng=jax.random.fold_in(rng, 1), alpha=config.lora_alpha)


def abstract_state(model: Model, config: TrainConfig) -> TrainState:
  """ShapeDtypeStruct TrainState (no memory); the restore / sharding plan."""
  params = _cast_abstract(model.abstract_params(), _dtype(config.param_dtype))

  def build(params):
    rng = jax.random.key(config.seed)
    lora = _init_lora(config, params, rng) if config.lora_rank else None
    trainable = params if lora is None else lora
    tx = make_optimizer(config, trainable_labels(config, trainable))
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=tx.init(trainable), rng=rng, lora=lora)

  return jax.eval_shape(build, params)


def state_shardings(model: Model, config: TrainConfig, mesh: Mesh,
                    abstract: Optional[TrainState] = None) -> TrainState:
  """TrainState of NamedShardings.

  Params follow `DEFAULT_STRATEGY`, LoRA factors `LORA_STRATEGY`
  (replicated), optimiser moments the sharding of the leaf they belong to,
  and the step, counters and rng are replicated.
  """
  abstract = abstract_state(model, config) if abstract is None else abstract
  repl = mesh_lib.replicated(mesh)
  params_sh = strategy_lib.param_shardings(abstract.params, mesh,
                                           strategy_lib.DEFAULT_STRATEGY)
  lora_sh = None
  if abstract.lora is not None:
    lora_sh = strategy_lib.param_shardings(abstract.lora, mesh,
                                           strategy_lib.LORA_STRATEGY)
  trainable, trainable_sh = ((abstract.params, params_sh) if lora_sh is None
                             else (abstract.lora, lora_sh))
  tx = make_optimizer(config, trainable_labels(config, trainable))
  # Frozen leaves are MaskedNodes in the trainable branch's moments; taking
  # them as leaves keeps the two trees aligned, and they stay MaskedNodes.
  masked = lambda x: isinstance(x, optax.MaskedNode)
  opt_sh = optax.tree_map_params(
      tx, lambda x, s: x if masked(x) else s, abstract.opt_state,
      trainable_sh, transform_non_params=lambda _: repl, is_leaf=masked)
  return TrainState(step=repl, params=params_sh, opt_state=opt_sh, rng=repl,
                    lora=lora_sh)


# --- Creation -----------------------------------------------------------------

def create_state(model: Model, config: TrainConfig, params=None, *,
                 mesh: Optional[Mesh] = None) -> TrainState:
  """A fresh TrainState at step 0.

  Args:
    model: the model (its arch must be `config.arch`'s).
    config: the run config.
    params: starting params (numpy or jax arrays, e.g. a loaded checkpoint);
      None = random init from `config.seed`. Cast to `config.param_dtype`.
    mesh: place every leaf by `state_shardings`; random init then happens
      directly in the shardings (nothing whole on one device).
  Returns:
    TrainState; frozen / LoRA-base params are the given ones, unchanged.
  """
  if model.cfg.name != config.arch:
    raise ValueError(f"model is {model.cfg.name!r} but config.arch is "
                     f"{config.arch!r}")
  abstract = abstract_state(model, config)
  if mesh is None:
    # Committed to one device, as a restored checkpoint is: jit caches on
    # committedness, so a resumed run then reuses the compiled step.
    one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    shardings = jax.tree.map(lambda _: one, abstract)
  else:
    shardings = state_shardings(model, config, mesh, abstract)
  rng = jax.random.key(config.seed)
  pdtype = _dtype(config.param_dtype)
  cast = lambda t: jax.tree.map(lambda x: x.astype(pdtype) if jnp.issubdtype(
      x.dtype, jnp.floating) else x, t)

  if params is None:
    init = jax.jit(lambda k: cast(model.init(k)),
                   out_shardings=shardings.params)
    params = init(rng)
  else:
    got = jax.tree.structure(params)
    want = jax.tree.structure(abstract.params)
    if got != want:
      raise ValueError(f"params do not fit {config.arch}: tree {got} "
                       f"differs from {want}")
    for p, a in zip(jax.tree.leaves(params), jax.tree.leaves(abstract.params)):
      if tuple(np.shape(p)) != tuple(a.shape):
        raise ValueError(f"params do not fit {config.arch}: a leaf has shape "
                         f"{np.shape(p)}, expected {a.shape}")
    # Cast on the host so that no whole-tree copy lands on one device.
    params = jax.tree.map(
        lambda x, a: np.asarray(x).astype(a.dtype) if not isinstance(
            x, jax.Array) else x.astype(a.dtype), params, abstract.params)
    params = jax.device_put(params, shardings.params)

  lora = None
  if config.lora_rank:
    lora = jax.device_put(_init_lora(config, params, rng), shardings.lora)
  trainable = params if lora is None else lora
  tx = make_optimizer(config, trainable_labels(config, trainable))
  opt_state = jax.jit(tx.init, out_shardings=shardings.opt_state)(trainable)
  # Made by a jit rather than device_put: with several processes device_put
  # rejects a typed key array for a sharding over other hosts' devices.
  step, rng = jax.jit(lambda: (jnp.zeros((), jnp.int32),
                               jax.random.key(config.seed)),
                      out_shardings=(shardings.step, shardings.rng))()
  return TrainState(step=step, params=params, opt_state=opt_state, rng=rng,
                    lora=lora)

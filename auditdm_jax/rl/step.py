"""The jitted GRPO train step and the jitted log-prob scorer.

  step_fn = make_grpo_step(model, tcfg, gcfg, mesh)   # cached per arguments
  score = make_logprob_fn(model, gcfg, mesh)           # cached per arguments
  batch["old_logprobs"] = score(state.params, batch, state.lora)
  batch["ref_logprobs"] = score(ref_params, batch)    # only when kl_beta > 0
  state, metrics = step_fn(state, batch)              # batch: numpy dict

Batch (host numpy; R rows = prompts × group, every row carries its own copy
of its prompt; P prompt length, C completion length):

  prompt_tokens      int32[R, P]  LEFT-padded: the last column is the prompt's
                                  last token, whose logits score completion[0]
  prompt_input_mask  bool[R, P]   False on padding
  prompt_mask_ar     int32[R, P]  attention groups (`prompts` module docstring)
  images             f32[R, I, S, S, 3] in [-1, 1]; only for vision models
  completion         int32[R, C]  sampled tokens (`SampleOutput.tokens`)
  completion_mask    f32[R, C]    1 on tokens up to and including EOS
  advantages         f32[R]       `grpo.group_advantages` of the rewards
  old_logprobs       f32[R, C]    log π_old of `completion`: the policy that
                                  sampled it, scored before the update
  ref_logprobs       f32[R, C]    log π_ref; read only when kl_beta > 0

Which params score which log-probs (`score` is the `LogprobFn`):

  policy (in the step)  merge(params, lora) / params, differentiated
  old                   score(state.params, batch, state.lora), before the
                        step (or `SampleOutput.logprobs`, which is the same
                        distribution computed by the decode loop)
  reference, LoRA       score(state.params, batch): the base with LoRA off
                        (DESIGN.md §3: no second copy of the model)
  reference, full FT    score(ref_params, batch) with
                        ref_params = frozen_copy(state.params) taken before
                        the first step (steps donate, and so free, the state)

Every log-prob is under the sampling distribution of `gcfg` (temperature,
top-k, top-p), by `sampler.token_logprobs`: one teacher-forced pass over
prompt + completion whose LM head runs `gcfg.logits_chunk` positions at a
time under remat, so [R, P + C, V] logits never exist. Positions where
completion_mask is 0 are returned as 0.

The step mirrors `train/step.py`: the state is donated; with a mesh the state
is placed by `train.state.state_shardings` and the batch split over
('data', 'fsdp'); in LoRA mode only the factors train, in full fine-tuning
the config's freeze rules stop-gradient the frozen leaves; optimiser, clip
and schedule come from the `TrainConfig`. `TrainConfig.batch_size` is R,
the rows of one step (prompts × group); its SFT-only fields (max_len,
max_target_len, logits_chunk) are not read.

Letters: R rows, G group size, P prompt length, C completion length,
V vocab, I images per row, S image side.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from auditdm_jax.models import lora as lora_lib
from auditdm_jax.models.vlm import Model
from auditdm_jax.rl import grpo
from auditdm_jax.rl.config import GrpoConfig
from auditdm_jax.sampling.sampler import token_logprobs
from auditdm_jax.sharding import mesh as mesh_lib
from auditdm_jax.train import state as state_lib
from auditdm_jax.train import step as sft_step
from auditdm_jax.train.config import FROZEN, TrainConfig

PROMPT_KEYS = ("prompt_tokens", "prompt_input_mask", "prompt_mask_ar")
COMPLETION_KEYS = ("completion", "completion_mask")
LOSS_KEYS = ("advantages", "old_logprobs")
REF_KEY = "ref_logprobs"
IMAGE_KEY = "images"

# (dtype, dims) per key; dims name the axes the shape check compares.
_LAYOUT = {
    "prompt_tokens": (np.int32, "RP"),
    "prompt_input_mask": (np.bool_, "RP"),
    "prompt_mask_ar": (np.int32, "RP"),
    "images": (np.float32, "RISSc"),
    "completion": (np.int32, "RC"),
    "completion_mask": (np.float32, "RC"),
    "advantages": (np.float32, "R"),
    "old_logprobs": (np.float32, "RC"),
    "ref_logprobs": (np.float32, "RC"),
}


def _vision(model: Model) -> tuple[str, ...]:
  return (IMAGE_KEY,) if model.cfg.vision is not None else ()


def scoring_keys(model: Model) -> tuple[str, ...]:
  """The batch keys `LogprobFn` reads for this model."""
  return PROMPT_KEYS + _vision(model) + COMPLETION_KEYS


def batch_keys(model: Model, config: GrpoConfig) -> tuple[str, ...]:
  """The batch keys the GRPO step reads (ref_logprobs only when kl_beta > 0)."""
  return (scoring_keys(model) + LOSS_KEYS
          + ((REF_KEY,) if config.use_kl else ()))


def check_batch(batch: dict, keys, model: Model) -> tuple[int, int, int]:
  """Raises on a missing key or a shape that does not fit the layout.

  Args:
    batch: the batch (numpy or jax arrays); keys beyond `keys` are ignored.
    keys: the keys that must be present.
    model: the model (image side and channels for 'images').
  Returns:
    (R, P, C).
  Raises:
    KeyError: a key is missing.
    ValueError: a wrong rank, a size that disagrees with the other arrays,
      or (for host arrays) a prompt that is not LEFT-padded.
  """
  missing = [k for k in keys if k not in batch]
  if missing:
    raise KeyError(f"GRPO batch lacks {missing}; has {sorted(batch)}")
  sizes: dict[str, tuple[int, str]] = {}
  if model.cfg.vision is not None:
    sizes["S"] = (model.cfg.vision.image_size, "the model's image size")
  sizes["c"] = (3, "RGB")
  for k in keys:
    dims = _LAYOUT[k][1]
    shape = tuple(np.shape(batch[k]))
    if len(shape) != len(dims):
      raise ValueError(f"GRPO batch[{k!r}] must have {len(dims)} dims "
                       f"[{', '.join(dims)}], got shape {shape}")
    for d, n in zip(dims, shape):
      want, source = sizes.setdefault(d, (n, k))
      if n != want:
        raise ValueError(
            f"GRPO batch[{k!r}] has shape {shape}: its {d} axis is {n} but "
            f"{source} gives {want} (letters: R rows, P prompt length, "
            "C completion length, I images, S image side)")
  last = batch["prompt_input_mask"]
  if not isinstance(last, jax.Array) and not np.asarray(last)[:, -1].all():
    rows = np.flatnonzero(~np.asarray(last, bool)[:, -1])[:8].tolist()
    raise ValueError(f"GRPO prompts must be LEFT-padded: prompt_input_mask"
                     f"[:, -1] is False on rows {rows}")
  return sizes["R"][0], sizes["P"][0], sizes["C"][0]


def completion_logprobs(model: Model, params, batch: dict,
                        config: GrpoConfig) -> jax.Array:
  """f32[R, C] log-probs of batch['completion'] under `config`'s sampling
  distribution; 0 where completion_mask is 0. Pure, traceable (jit / grad).

  `params` are the params to score with (LoRA already merged).
  """
  prompt = (batch["prompt_tokens"], batch["prompt_input_mask"],
            batch["prompt_mask_ar"], batch.get(IMAGE_KEY))
  logp = token_logprobs(model, params, prompt, batch["completion"],
                        config.temperature, config.top_k, config.top_p,
                        chunk_size=config.logits_chunk)         # [R, C]
  # Positions after EOS hold pad tokens, which top-k / top-p may exclude
  # (log-prob -inf): report 0 there, as the sampler does.
  return jnp.where(jnp.asarray(batch["completion_mask"]) > 0, logp, 0.0)


def grpo_objective(model: Model, params, batch: dict, config: GrpoConfig):
  """The GRPO loss of `params` on a batch: (loss f32[], metrics)."""
  logp = completion_logprobs(model, params, batch, config)      # [R, C]
  ref = batch[REF_KEY] if config.use_kl else None
  return grpo.grpo_loss(logp, batch["old_logprobs"], ref,
                        batch["advantages"], batch["completion_mask"], config)


def frozen_copy(params):
  """A copy of a params tree (same shardings) that later donating steps
  cannot free: the full fine-tuning reference policy."""
  return jax.tree.map(lambda x: jnp.array(x, copy=True), params)


# --- Shared host -> device placement ------------------------------------------

def _batch_shardings(mesh: Mesh, keys) -> dict:
  return {k: mesh_lib.batch_sharding(mesh, len(_LAYOUT[k][1])) for k in keys}


def _put(batch: dict, keys, mesh: Optional[Mesh], shardings) -> dict:
  """Host or device arrays -> device arrays in `shardings` (cast to the
  layout dtypes). Arrays already on device are resharded only if needed,
  so the scorer's outputs go straight back into the step."""
  out = {}
  for k in keys:
    v, dtype = batch[k], _LAYOUT[k][0]
    if isinstance(v, jax.Array):
      v = v.astype(dtype)
      if mesh is not None and v.sharding != shardings[k]:
        v = jax.device_put(v, shardings[k])
      out[k] = v
    elif mesh is None:
      out[k] = jax.device_put(np.asarray(v, dtype))
    else:
      # Each process passes its own R / num_processes rows.
      out[k] = jax.make_array_from_process_local_data(
          shardings[k], np.asarray(v, dtype))
  return out


def _check_rows(rows: int, mesh: Optional[Mesh], what: str):
  if mesh is None:
    return
  data = mesh_lib.axis_size(mesh, ("data", "fsdp"))
  if rows % data:
    raise ValueError(f"{what} {rows} must be divisible by the data x fsdp "
                     f"mesh size {data}")


# --- The train step -----------------------------------------------------------

def _grpo_step(state: state_lib.TrainState, batch: dict, *, model: Model,
               train_config: TrainConfig, grpo_config: GrpoConfig):
  """One optimiser step on the GRPO loss; pure. -> (new state, metrics)."""
  labels = state_lib.trainable_labels(train_config, state.trainable)
  tx = state_lib.make_optimizer(train_config, labels)
  lr = state_lib.make_schedule(train_config)(state.step)

  if state.lora is None:
    def loss_of(params):
      # stop_gradient on frozen leaves lets XLA drop their backward pass.
      params = jax.tree.map(
          lambda p, l: jax.lax.stop_gradient(p) if l == FROZEN else p,
          params, labels)
      return grpo_objective(model, params, batch, grpo_config)
  else:
    base = jax.lax.stop_gradient(state.params)

    def loss_of(lora):
      return grpo_objective(model, lora_lib.merge(base, lora), batch,
                            grpo_config)

  trainable = state.trainable
  (_, metrics), grads = jax.value_and_grad(loss_of, has_aux=True)(trainable)
  updates, opt_state = tx.update(grads, state.opt_state, trainable)
  stepped = optax.apply_updates(trainable, updates)
  # Frozen leaves keep their exact old arrays (p + 0 is not bitwise p for
  # p = -0.0).
  new = jax.tree.map(lambda l, old, upd: old if l == FROZEN else upd,
                     labels, trainable, stepped)
  metrics = dict(metrics, grad_norm=optax.global_norm(grads),
                 lr=jnp.asarray(lr, jnp.float32))
  if state.lora is None:
    state = state.replace(params=new, opt_state=opt_state)
  else:
    state = state.replace(lora=new, opt_state=opt_state)
  return state.replace(step=state.step + 1), metrics


class GrpoStep:
  """The jitted GRPO step with its shardings; build with `make_grpo_step`.

  Attributes:
    keys: batch keys passed to the step (others are ignored).
    state_shardings: TrainState of NamedShardings, or None without a mesh.
    batch_shardings: {key: NamedSharding}, or None without a mesh.
  """

  def __init__(self, model: Model, train_config: TrainConfig,
               grpo_config: GrpoConfig, mesh: Optional[Mesh] = None):
    self.model, self.mesh = model, mesh
    self.train_config, self.grpo_config = train_config, grpo_config
    self.keys = batch_keys(model, grpo_config)
    fn = functools.partial(_grpo_step, model=model, train_config=train_config,
                           grpo_config=grpo_config)
    if mesh is None:
      self.state_shardings = self.batch_shardings = None
      self._jitted = jax.jit(fn, donate_argnums=0)
      return
    _check_rows(train_config.batch_size, mesh, "batch_size")
    self.state_shardings = state_lib.state_shardings(model, train_config, mesh)
    self.batch_shardings = _batch_shardings(mesh, self.keys)
    repl = mesh_lib.replicated(mesh)
    self._jitted = jax.jit(
        fn, donate_argnums=0,
        in_shardings=(self.state_shardings, self.batch_shardings),
        out_shardings=(self.state_shardings, repl))

  def put_batch(self, batch: dict) -> dict:
    """Batch (this process's rows, host or device) -> device arrays in the
    step's shardings; validates keys and shapes first."""
    rows, _, _ = check_batch(batch, self.keys, self.model)
    want = self.train_config.batch_size
    if not isinstance(batch[self.keys[0]], jax.Array):
      want //= jax.process_count()
    if rows != want:
      raise ValueError(f"GRPO batch has {rows} rows but the step expects "
                       f"TrainConfig.batch_size = {want} (prompts x group)")
    return _put(batch, self.keys, self.mesh, self.batch_shardings)

  def __call__(self, state: state_lib.TrainState, batch: dict):
    """-> (new state, metrics). `state` is donated: do not reuse it."""
    batch = self.put_batch(batch)
    if self.mesh is None:
      return self._jitted(state, batch)
    with jax.set_mesh(self.mesh):
      return self._jitted(state, batch)


# Fields the step never reads (advantages and rollouts are made on the host):
# reset before caching, so configs differing only there share a compile.
_HOST_ONLY_FIELDS = ("group_size", "advantage_scale", "adv_eps",
                     "max_new_tokens")
# The only fields the scorer reads.
_SCORING_FIELDS = ("temperature", "top_k", "top_p", "logits_chunk")


def _keep_only(config: GrpoConfig, names) -> GrpoConfig:
  defaults = {f.name: f.default for f in dataclasses.fields(GrpoConfig)
              if f.name not in names}
  return config.replace(**defaults)


def step_grpo_config(config: GrpoConfig) -> GrpoConfig:
  """`config` with the host-only fields at their defaults (the cache key)."""
  return _keep_only(config, [f.name for f in dataclasses.fields(GrpoConfig)
                             if f.name not in _HOST_ONLY_FIELDS])


def make_grpo_step(model: Model, train_config: TrainConfig,
                   grpo_config: GrpoConfig,
                   mesh: Optional[Mesh] = None) -> GrpoStep:
  """The GrpoStep for (model, configs, mesh), cached (resumes, tests and
  auditor refreshes in one process reuse the compiled step)."""
  return _cached_step(model, sft_step.step_config(train_config),
                      step_grpo_config(grpo_config), mesh)


@functools.lru_cache(maxsize=16)
def _cached_step(model: Model, train_config: TrainConfig,
                 grpo_config: GrpoConfig, mesh: Optional[Mesh]) -> GrpoStep:
  return GrpoStep(model, train_config, grpo_config, mesh)


# --- The scorer ---------------------------------------------------------------

def _score(params, batch: dict, lora: Optional[lora_lib.Lora], *,
           model: Model, config: GrpoConfig):
  if lora is not None:
    params = lora_lib.merge(params, lora)
  return completion_logprobs(model, params, batch, config)


class LogprobFn:
  """Jitted `completion_logprobs`: fn(params, batch, lora=None) -> f32[R, C].

  With `lora` the factors are merged into `params` first (the policy);
  without, `params` are scored as they are (the LoRA-off reference, or any
  full params). Forward only, so old and reference passes cost no backward.
  With a mesh the batch is split over ('data', 'fsdp') like the step's, the
  params keep whatever sharding they have (e.g. the train state's), and the
  output comes back in the step's sharding for the [R, C] keys.
  """

  def __init__(self, model: Model, config: GrpoConfig,
               mesh: Optional[Mesh] = None):
    self.model, self.config, self.mesh = model, config, mesh
    self.keys = scoring_keys(model)
    fn = functools.partial(_score, model=model, config=config)
    if mesh is None:
      self.batch_shardings = None
      self._jitted = jax.jit(fn)
    else:
      self.batch_shardings = _batch_shardings(mesh, self.keys)
      self._jitted = jax.jit(
          fn, out_shardings=mesh_lib.batch_sharding(mesh, 2))

  def __call__(self, params, batch: dict,
               lora: Optional[lora_lib.Lora] = None) -> jax.Array:
    rows, _, _ = check_batch(batch, self.keys, self.model)
    _check_rows(rows, self.mesh, "GRPO batch rows")
    batch = _put(batch, self.keys, self.mesh, self.batch_shardings)
    if self.mesh is None:
      return self._jitted(params, batch, lora)
    with jax.set_mesh(self.mesh):
      return self._jitted(params, batch, lora)


def make_logprob_fn(model: Model, config: GrpoConfig,
                    mesh: Optional[Mesh] = None) -> LogprobFn:
  """The LogprobFn for (model, sampling fields of `config`, mesh), cached."""
  return _cached_logprob_fn(model, _keep_only(config, _SCORING_FIELDS), mesh)


@functools.lru_cache(maxsize=16)
def _cached_logprob_fn(model: Model, config: GrpoConfig,
                       mesh: Optional[Mesh]) -> LogprobFn:
  return LogprobFn(model, config, mesh)

"""Supervised loss and the jitted train step.

  step_fn = make_train_step(model, cfg, mesh)        # cached per arguments
  state, metrics = step_fn(state, batch)             # batch: numpy dict

Batch (host numpy, every array [B, T] with T = cfg.max_len, right-padded):

  tokens      int32[B, T]  ids (image positions hold the placeholder id)
  mask_ar     int32[B, T]  attention groups (`prompts` module docstring)
  input_mask  bool[B, T]   False on padding
  loss_mask   int32[B, T]  1 on answer tokens
  images      f32[B, I, S, S, 3] in [-1, 1]; only for vision models

Loss: next-token cross-entropy on answer tokens only. The logit at position
t predicts token t+1, so it is weighted by w[t] = loss_mask[t+1]; the loss
is sum(w * nll) / sum(w) over the batch (a mean over answer tokens). Worked
row (PaliGemma, I image, p prefix, a answer, E eos, _ padding):

  tokens     I I p p a a E _
  loss_mask  0 0 0 0 1 1 1 0
  w          0 0 0 1 1 1 0 0     (logit of the last p predicts the first a)

The logits are never built for every position: the K = cfg.max_target_len
positions with w = 1 are gathered from the final hidden states first
(stable argsort keeps their order), and only those go through the LM head;
with `cfg.logits_chunk` they go through it chunk by chunk under remat, so a
262k vocabulary costs [B, chunk, V] floats at a time.

The same function serves PaliGemma (prefix-LM, loss on the suffix) and
Gemma-3 chat (loss on the model turn): the prompt layouts encode both.

Letters: B batch, T length, K gathered target positions, D model dim,
V vocab, I images per example, S image side.
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
from auditdm_jax.sharding import mesh as mesh_lib
from auditdm_jax.train import state as state_lib
from auditdm_jax.train.config import FROZEN, TrainConfig

TEXT_KEYS = ("tokens", "mask_ar", "input_mask", "loss_mask")
IMAGE_KEY = "images"


def batch_keys(model: Model) -> tuple[str, ...]:
  """The batch keys the step reads for this model."""
  return TEXT_KEYS + ((IMAGE_KEY,) if model.cfg.has_vision else ())


def target_positions(loss_mask: jax.Array, k: int):
  """Positions whose logits are scored, and their weights.

  Args:
    loss_mask: int[B, T], 1 on answer tokens.
    k: K, positions kept per row.
  Returns:
    (idx int32[B, K], w f32[B, K], dropped f32[]): idx lists the positions t
    with loss_mask[t + 1] = 1 first, in order, then filler positions with
    weight 0; `dropped` counts weighted positions beyond K (0 when the
    batcher validated the answer lengths).
  """
  w = jnp.pad(loss_mask[:, 1:], ((0, 0), (0, 1))).astype(jnp.float32)
  idx = jnp.argsort(w == 0, axis=1, stable=True)[:, :k].astype(jnp.int32)
  wk = jnp.take_along_axis(w, idx, axis=1)
  return idx, wk, jnp.sum(w) - jnp.sum(wk)


def _token_nll(model: Model, params, hidden, targets):
  """hidden [..., D], targets int[...] -> (nll f32[...], correct bool[...])."""
  logits = model.unembed(params, hidden).astype(jnp.float32)   # [..., V]
  logz = jax.nn.logsumexp(logits, axis=-1)
  target_logit = jnp.take_along_axis(logits, targets[..., None], -1)[..., 0]
  correct = jnp.argmax(logits, axis=-1) == targets
  return logz - target_logit, correct


def sft_loss(model: Model, params, batch: dict, max_target_len: int,
             logits_chunk: int = 0):
  """Mean next-token cross-entropy over answer tokens, and metrics.

  Args:
    model: the model.
    params: its params (LoRA already merged, frozen leaves already
      stop-gradiented: this function does not care).
    batch: see the module docstring; arrays may be numpy or jax.
    max_target_len: K, see `target_positions`.
    logits_chunk: 0, or a divisor of K: the LM head runs on that many
      positions at a time, rematerialised in the backward pass.
  Returns:
    (loss f32[], metrics dict of f32[]: 'loss', 'accuracy' (argmax token
    accuracy), 'target_tokens' (sum of weights), 'dropped_targets').
  """
  tokens = jnp.asarray(batch["tokens"], jnp.int32)
  emb = model.embed(params, tokens, batch["input_mask"], batch["mask_ar"],
                    batch.get(IMAGE_KEY))
  hidden = model.hidden(params, emb)                                # [B, T, D]
  idx, w, dropped = target_positions(jnp.asarray(batch["loss_mask"]),
                                     max_target_len)
  h = jnp.take_along_axis(hidden, idx[..., None], axis=1)           # [B, K, D]
  # Zero the filler rows: a padding position's hidden state may be anything
  # (it attends to nothing), and NaN * 0 is NaN in the loss and its grad.
  h = jnp.where(w[..., None] > 0, h, jnp.zeros_like(h))
  t = tokens.shape[1]
  targets = jnp.take_along_axis(tokens, jnp.minimum(idx + 1, t - 1), axis=1)
  # Filler positions may point at image placeholders, whose id can lie
  # outside the vocabulary (PaliGemma); a gather there would give NaN.
  targets = jnp.where(w > 0, targets, 0)                            # [B, K]

  if logits_chunk and logits_chunk < max_target_len:
    b, k, d = h.shape
    n = k // logits_chunk
    hc = h.reshape(b, n, logits_chunk, d).swapaxes(0, 1)            # [n,B,c,D]
    tc = targets.reshape(b, n, logits_chunk).swapaxes(0, 1)         # [n,B,c]
    body = jax.checkpoint(lambda args: _token_nll(model, params, *args))
    nll, correct = jax.lax.map(body, (hc, tc))
    nll = nll.swapaxes(0, 1).reshape(b, k)
    correct = correct.swapaxes(0, 1).reshape(b, k)
  else:
    nll, correct = _token_nll(model, params, h, targets)            # [B, K]

  total = jnp.sum(w)
  denom = jnp.maximum(total, 1.0)
  loss = jnp.sum(nll * w) / denom
  metrics = {
      "loss": loss,
      "accuracy": jnp.sum(correct * w) / denom,
      "target_tokens": total,
      "dropped_targets": dropped,
  }
  return loss, metrics


def _train_step(state: state_lib.TrainState, batch: dict, *, model: Model,
                config: TrainConfig):
  """One optimiser step; pure. -> (new state, metrics dict of f32[])."""
  labels = state_lib.trainable_labels(config, state.trainable)
  tx = state_lib.make_optimizer(config, labels)
  lr = state_lib.make_schedule(config)(state.step)

  if state.lora is None:
    def loss_of(params):
      # stop_gradient on frozen leaves lets XLA drop their backward pass
      # (e.g. the whole vision tower when 'img/.*' is frozen).
      params = jax.tree.map(
          lambda p, l: jax.lax.stop_gradient(p) if l == FROZEN else p,
          params, labels)
      return sft_loss(model, params, batch, config.max_target_len,
                      config.logits_chunk)
  else:
    base = jax.lax.stop_gradient(state.params)

    def loss_of(lora):
      return sft_loss(model, lora_lib.merge(base, lora), batch,
                      config.max_target_len, config.logits_chunk)

  trainable = state.trainable
  (_, metrics), grads = jax.value_and_grad(loss_of, has_aux=True)(trainable)
  updates, opt_state = tx.update(grads, state.opt_state, trainable)
  stepped = optax.apply_updates(trainable, updates)
  # Frozen leaves keep their exact old arrays: p + 0 is not bitwise p for
  # p = -0.0, and this also skips the adds.
  new = jax.tree.map(lambda l, old, upd: old if l == FROZEN else upd,
                     labels, trainable, stepped)
  metrics = dict(metrics, grad_norm=optax.global_norm(grads),
                 lr=jnp.asarray(lr, jnp.float32))
  if state.lora is None:
    state = state.replace(params=new, opt_state=opt_state)
  else:
    state = state.replace(lora=new, opt_state=opt_state)
  return state.replace(step=state.step + 1), metrics


class TrainStep:
  """The jitted step with its shardings; build with `make_train_step`.

  Attributes:
    keys: batch keys passed to the step (others are ignored).
    state_shardings: TrainState of NamedShardings, or None without a mesh.
    batch_shardings: {key: NamedSharding}, or None without a mesh.
  """

  def __init__(self, model: Model, config: TrainConfig,
               mesh: Optional[Mesh] = None):
    self.model, self.config, self.mesh = model, config, mesh
    self.keys = batch_keys(model)
    fn = functools.partial(_train_step, model=model, config=config)
    if mesh is None:
      self.state_shardings = self.batch_shardings = None
      self._jitted = jax.jit(fn, donate_argnums=0)
      return
    data = mesh_lib.axis_size(mesh, ("data", "fsdp"))
    if config.batch_size % data:
      raise ValueError(f"batch_size {config.batch_size} must be divisible by "
                       f"the data x fsdp mesh size {data}")
    self.state_shardings = state_lib.state_shardings(model, config, mesh)
    ndims = {k: 2 for k in TEXT_KEYS} | {IMAGE_KEY: 5}
    self.batch_shardings = {k: mesh_lib.batch_sharding(mesh, ndims[k])
                            for k in self.keys}
    repl = mesh_lib.replicated(mesh)
    self._jitted = jax.jit(
        fn, donate_argnums=0,
        in_shardings=(self.state_shardings, self.batch_shardings),
        out_shardings=(self.state_shardings, repl))

  def put_batch(self, batch: dict) -> dict:
    """Host batch (this process's rows) -> device arrays in the shardings.

    With several processes each passes its own B / num_processes rows and
    gets back the global [B, ...] arrays.
    """
    batch = {k: batch[k] for k in self.keys}
    if self.mesh is None:
      return jax.device_put(batch)
    return {k: jax.make_array_from_process_local_data(
        self.batch_shardings[k], np.asarray(v)) for k, v in batch.items()}

  def __call__(self, state: state_lib.TrainState, batch: dict):
    """-> (new state, metrics). `state` is donated: do not reuse it."""
    missing = [k for k in self.keys if k not in batch]
    if missing:
      raise KeyError(f"batch lacks {missing}; has {sorted(batch)}")
    if not all(isinstance(batch[k], jax.Array) for k in self.keys):
      batch = self.put_batch(batch)
    else:
      batch = {k: batch[k] for k in self.keys}
    if self.mesh is None:
      return self._jitted(state, batch)
    with jax.set_mesh(self.mesh):
      return self._jitted(state, batch)


# Config fields the step never reads: reset before caching, so runs that
# differ only in logging, checkpointing, seeds or data order share a compile.
_LOOP_ONLY_FIELDS = ("tokenizer", "init_from", "shuffle", "log_every",
                     "eval_every", "checkpoint_every", "keep_checkpoints",
                     "async_checkpointing", "seed", "mesh", "progress")


def step_config(config: TrainConfig) -> TrainConfig:
  """`config` with the loop-only fields at their defaults (the cache key)."""
  defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)
              if f.name in _LOOP_ONLY_FIELDS}
  return config.replace(**defaults)


def make_train_step(model: Model, config: TrainConfig,
                    mesh: Optional[Mesh] = None) -> TrainStep:
  """The TrainStep for (model, config, mesh), cached.

  Cached so that restarting a run in the same process (resume, tests,
  rectification rounds) reuses the compiled step.
  """
  return _cached_step(model, step_config(config), mesh)


@functools.lru_cache(maxsize=16)
def _cached_step(model: Model, config: TrainConfig,
                 mesh: Optional[Mesh]) -> TrainStep:
  return TrainStep(model, config, mesh)


def compute_loss(model: Model, params, batch: dict, config: TrainConfig,
                 lora: Optional[lora_lib.Lora] = None):
  """Jitted `sft_loss` with `config`'s K / chunk (evaluation, tests)."""
  return _loss_jit(model, config.max_target_len, config.logits_chunk,
                   params, {k: batch[k] for k in batch_keys(model)}, lora)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _loss_jit(model, max_target_len, logits_chunk, params, batch, lora):
  if lora is not None:
    params = lora_lib.merge(params, lora)
  return sft_loss(model, params, batch, max_target_len, logits_chunk)


"""Batched sampling with a KV cache in one jitted function, plus teacher-forced
log-probs of completions under the same distribution (for GRPO).

  out = sample(model, params, tokens, input_mask, mask_ar, images,
               key=key,
               config=SamplingConfig(temperature=0.7, max_new_tokens=64))
  out.tokens     # int32[B * n, N]   sample j of prompt i is row i * n + j
  out.logprobs   # f32[B * n, N]     0 after EOS
  logp = token_logprobs(model, params, (tokens, input_mask, mask_ar, images),
                        out.tokens, 0.7, 0, 1.0, lengths=out.lengths)

How one call runs (`_sample_jit`, compiled once per model, config and bucket):
prefill the left-padded prompts once, repeat the cache n times, choose the
first token from the prefill logits, then a `lax.while_loop` of decode steps
that writes into fixed [B * n, N] buffers and stops when every row has ended
or N tokens were made. On the host, prompts are re-packed to the right (left
padding) and padded to a length bucket, and the batch is padded to a batch
bucket with copies of its last prompt, so calls whose shapes fall in the same
buckets reuse one compiled program; the padding rows are dropped from the
output.

Letters: B prompts, n samples per prompt, R = B * n rows, T prompt length
(bucketed), N max new tokens, C completion length, S cache length, V vocab,
D model dim, I images per prompt.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional, Sequence, Union

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from auditdm_jax.models import masks as masks_lib
from auditdm_jax.sampling import strategies
from auditdm_jax.sampling.strategies import SamplingConfig

BucketSpec = Union[int, str, Sequence[int]]


# --- Buckets -----------------------------------------------------------------

def bucket(n: int, spec: BucketSpec) -> int:
  """Rounds n >= 1 up to its bucket.

  Args:
    n: the size to round.
    spec: an int m (next multiple of m), "pow2" (next power of two) or a
      sorted sequence of sizes (the smallest >= n).
  """
  if n < 1:
    raise ValueError(f"cannot bucket size {n}")
  if isinstance(spec, str):
    if spec != "pow2":
      raise ValueError(
          f"unknown bucket spec {spec!r}; use an int, 'pow2' or sizes")
    return 1 << (n - 1).bit_length()
  if isinstance(spec, int):
    if spec < 1:
      raise ValueError(f"bucket multiple must be >= 1, got {spec}")
    return -(-n // spec) * spec
  for size in sorted(spec):
    if size >= n:
      return size
  raise ValueError(f"size {n} exceeds the largest bucket {max(spec)}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Buckets:
  """How prompt lengths and batch sizes are rounded up (see `bucket`).

  min_length: lengths below it share one bucket, so short prompts do not each
    get a program.
  """
  length: BucketSpec = "pow2"
  batch: BucketSpec = "pow2"
  min_length: int = 16

  def __post_init__(self):
    for name in ("length", "batch"):
      spec = getattr(self, name)
      if not isinstance(spec, (int, str)):
        # A tuple keeps the dataclass hashable, whatever sequence was given.
        object.__setattr__(self, name, tuple(sorted(int(s) for s in spec)))
      bucket(1, getattr(self, name))  # Validates the spec early.
    if self.min_length < 1:
      raise ValueError(f"min_length must be >= 1, got {self.min_length}")

  def prompt_length(self, t: int) -> int:
    return bucket(max(t, self.min_length), self.length)

  def batch_size(self, b: int) -> int:
    return bucket(b, self.batch)


# --- Host-side padding -------------------------------------------------------

def left_pad(seqs: Sequence[Sequence[int]],
             mask_ar: Optional[Sequence[Sequence[int]]] = None, *,
             length: Optional[int] = None, pad_id: int = 0
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Left-pads token lists into one batch.

  Args:
    seqs: B token lists (each non-empty).
    mask_ar: B lists like `seqs` (0 joins the previous attention group, see
      `models/masks.py`); default all 1s, i.e. causal (Gemma-3 text).
    length: output length T (default: the longest sequence).
    pad_id: token written on padding.
  Returns:
    (tokens int32[B, T], input_mask bool[B, T], mask_ar int32[B, T]), with
    padding on the left: e.g. [[5, 6], [7]] -> tokens [[5 6] [0 7]],
    input_mask [[1 1] [0 1]].
  """
  if not seqs:
    raise ValueError("left_pad needs at least one sequence")
  longest = max(len(s) for s in seqs)
  t = longest if length is None else length
  if t < longest:
    raise ValueError(f"length {t} < longest sequence {longest}")
  tokens = np.full((len(seqs), t), pad_id, np.int32)
  input_mask = np.zeros((len(seqs), t), bool)
  ar = np.zeros((len(seqs), t), np.int32)
  for i, s in enumerate(seqs):
    if not len(s):
      raise ValueError(f"sequence {i} is empty")
    tokens[i, t - len(s):] = s
    input_mask[i, t - len(s):] = True
    a = np.ones(len(s), np.int32) if mask_ar is None else np.asarray(mask_ar[i])
    if a.shape != (len(s),):
      raise ValueError(f"mask_ar[{i}] has length {a.shape}, tokens {len(s)}")
    ar[i, t - len(s):] = a
  return tokens, input_mask, ar


def _repack_left(tokens, input_mask, mask_ar, length, pad_id):
  """Moves every row's valid tokens to the right end of a [B, length] buffer.

  Padding carries no information (positions and masks skip it), so dropping
  it wherever it was and re-padding on the left changes no logit, and makes
  the prompt's last valid token sit at the last column, where `prefill` reads
  the next-token logits.
  """
  b = tokens.shape[0]
  out_t = np.full((b, length), pad_id, np.int32)
  out_m = np.zeros((b, length), bool)
  out_a = np.zeros((b, length), np.int32)
  for i in range(b):
    keep = input_mask[i]
    n = int(keep.sum())
    if n == 0:
      raise ValueError(f"prompt {i} has no valid tokens")
    out_t[i, length - n:] = tokens[i][keep]
    out_m[i, length - n:] = True
    out_a[i, length - n:] = mask_ar[i][keep]
  return out_t, out_m, out_a


def _pad_rows(x, rows: int):
  """Pads axis 0 to `rows` with copies of the last row (a valid prompt, so
  the padding rows run ordinary numerics)."""
  extra = rows - x.shape[0]
  if extra == 0:
    return x
  lib = np if isinstance(x, np.ndarray) else jnp
  return lib.concatenate([x, lib.repeat(x[-1:], extra, axis=0)], axis=0)


# --- The jitted loop ---------------------------------------------------------

@flax.struct.dataclass
class SampleOutput:
  """Samples, row i * n + j being sample j of prompt i.

  tokens: int32[R, N], pad after the first EOS.
  logprobs: f32[R, N], log-prob of each token under the sampling
    distribution (`strategies.choose`); 0 after the first EOS.
  lengths: int32[R], tokens up to and including the first EOS (N if none).
  done: bool[R], True where the row produced an EOS.
  """
  tokens: jax.Array
  logprobs: jax.Array
  lengths: jax.Array
  done: jax.Array


def _record(step, logits, key, tokens, logprobs, lengths, done, config):
  """Chooses the token at column `step` for every row and writes it.

  Rows already done get pad and log-prob 0; a row's length counts the tokens
  made while it was not done, so it includes its EOS.
  """
  tok, logp = strategies.choose(logits, jax.random.fold_in(key, step), config)
  tok = jnp.where(done, config.pad_id, tok)
  logp = jnp.where(done, 0.0, logp)
  tokens = jax.lax.dynamic_update_slice(tokens, tok[:, None], (0, step))
  logprobs = jax.lax.dynamic_update_slice(logprobs, logp[:, None], (0, step))
  lengths = lengths + (~done).astype(jnp.int32)
  if config.eos_ids:
    eos = jnp.asarray(config.eos_ids, jnp.int32)
    done = done | jnp.any(tok[:, None] == eos[None, :], axis=-1)
  return tok, tokens, logprobs, lengths, done


# Largest stacked layer weights (bytes) that `_decode_params` splits.
SPLIT_MAX_BYTES = 1 << 30


def _decode_params(model, params):
  """The params the decode loop reads: each layer split out once, on CPU.

  XLA:CPU copies a layer's weights out of the stacked [L, ...] params on
  every decode step (the dynamic slice is not fused into the dot); slicing
  them once before the loop (`Model.split_layers`) halves the memory
  traffic of a step. The price is a second copy of the layer weights while
  sampling, so it is done only up to SPLIT_MAX_BYTES of them (the
  research-scale models on CPU; a 3B model keeps one copy). Accelerators
  fuse the slice and keep the stacked params.
  """
  if jax.default_backend() != "cpu":
    return params
  layers = params["llm"]["layers"]
  nbytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(layers))
  return model.split_layers(params) if nbytes <= SPLIT_MAX_BYTES else params


# Incremented as a Python side effect of tracing; read via `trace_count`.
_trace_count = 0


def trace_count() -> int:
  """How many times the sampling loop has been traced (compiled) so far."""
  return _trace_count


@functools.partial(jax.jit, static_argnames=("model", "config"))
def _sample_jit(model, config: SamplingConfig, params, tokens, input_mask,
                mask_ar, images, row_valid, key) -> SampleOutput:
  """The whole sampling run for left-padded, bucketed inputs.

  Args:
    tokens, input_mask, mask_ar: [B, T], left-padded.
    images: f32[B, I, S, S, 3] or None.
    row_valid: bool[B], False on batch-padding rows: they start done, so they
      never keep the loop running.
  """
  global _trace_count
  _trace_count += 1
  n, max_new = config.n_per_prompt, config.max_new_tokens
  b, t = tokens.shape
  rows = b * n
  emb = model.embed(params, tokens, input_mask, mask_ar, images)
  # The last token is chosen from the last decode step's logits and is never
  # fed back, so its key/value needs no slot.
  logits, cache = model.prefill(params, emb, cache_size=t + max_new - 1)
  if n > 1:
    cache = cache.repeat(n)
    logits = jnp.repeat(logits, n, axis=0)                       # [R, V]
  done = ~jnp.repeat(row_valid, n)                               # [R]

  buffers = (jnp.full((rows, max_new), config.pad_id, jnp.int32),
             jnp.zeros((rows, max_new), jnp.float32),
             jnp.zeros((rows,), jnp.int32))
  tok, *state = _record(0, logits, key, *buffers, done, config)

  def cond(carry):
    step, _, _, _, _, _, done = carry
    return (step < max_new) & ~jnp.all(done)

  split = _decode_params(model, params)
  if split is not params:
    cache = cache.split_layers()

  def body(carry):
    step, tok, cache, tokens, logprobs, lengths, done = carry
    logits, cache = model.decode_step(split, tok, cache)
    tok, tokens, logprobs, lengths, done = _record(
        step, logits, key, tokens, logprobs, lengths, done, config)
    return step + 1, tok, cache, tokens, logprobs, lengths, done

  carry = (jnp.asarray(1, jnp.int32), tok, cache, *state)
  carry = jax.lax.while_loop(cond, body, carry)
  _, _, _, tokens, logprobs, lengths, done = carry
  # Batch-padding rows started done; report them as not done (they are
  # dropped by the caller anyway).
  done = done & jnp.repeat(row_valid, n)
  return SampleOutput(tokens=tokens, logprobs=logprobs, lengths=lengths,
                      done=done)


# --- Public entry points -----------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Sampler:
  """Samples from `model` with shapes bucketed so calls rarely recompile.

    sampler = Sampler(model, Buckets(length=32, batch=(1, 8, 32)))
    out = sampler(params, tokens, input_mask, mask_ar, images, key=key,
                  config=SamplingConfig(temperature=0))
  """
  model: Any
  buckets: Buckets = Buckets()

  def __call__(self, params, tokens, input_mask, mask_ar, images=None, *,
               key: jax.Array, config: SamplingConfig) -> SampleOutput:
    """Samples `config.n_per_prompt` continuations of every prompt.

    Args:
      params: the model's params.
      tokens: int[B, T] prompts (any padding; it is re-packed to the left).
      input_mask: bool[B, T], False on padding.
      mask_ar: int[B, T] attention groups (`models/masks.py`).
      images: f32[B, I, S, S, 3] or None.
      key: PRNG key.
      config: the sampling config.
    Returns:
      SampleOutput with R = B * n rows.
    """
    tokens = np.asarray(tokens)
    input_mask = np.asarray(input_mask, bool)
    mask_ar = np.asarray(mask_ar)
    if (tokens.ndim != 2
        or not tokens.shape == input_mask.shape == mask_ar.shape):
      raise ValueError(f"tokens {tokens.shape}, input_mask {input_mask.shape} "
                       f"and mask_ar {mask_ar.shape} must be the same [B, T]")
    b = tokens.shape[0]
    if images is not None and images.shape[0] != b:
      raise ValueError(f"images has batch {images.shape[0]}, tokens {b}")
    t = self.buckets.prompt_length(int(input_mask.sum(-1).max()))
    rows = self.buckets.batch_size(b)
    tokens, input_mask, mask_ar = _repack_left(
        tokens, input_mask, mask_ar, t, config.pad_id)
    row_valid = np.arange(rows) < b
    tokens, input_mask, mask_ar = (
        _pad_rows(x, rows) for x in (tokens, input_mask, mask_ar))
    if images is not None:
      images = _pad_rows(jnp.asarray(images), rows)
    out = _sample_jit(self.model, config, params, tokens, input_mask, mask_ar,
                      images, row_valid, key)
    if rows == b:
      return out
    return jax.tree.map(lambda x: x[:b * config.n_per_prompt], out)


def sample(model, params, tokens, input_mask, mask_ar, images=None, *,
           key: jax.Array, config: SamplingConfig,
           buckets: Buckets = Buckets()) -> SampleOutput:
  """Same as `Sampler(model, buckets)(...)`; see `Sampler.__call__`."""
  return Sampler(model, buckets)(params, tokens, input_mask, mask_ar, images,
                                 key=key, config=config)


# --- Teacher-forced log-probs ------------------------------------------------

def token_logprobs(model, params, prompt, completion_tokens: jax.Array,
                   temperature: float = 1.0, top_k: int = 0,
                   top_p: float = 1.0, *, lengths: Optional[jax.Array] = None,
                   chunk_size: int = 128) -> jax.Array:
  """Log-probs of completions under the sampling distribution, by one
  teacher-forced forward pass over prompt + completion.

  Pure and traceable (call it under `jit` / `grad`). Only the hidden states
  [B, P + C, D] of the whole sequence are kept; logits exist one time chunk
  [B, chunk, V] at a time (rematerialised in the backward pass), never as
  [B, P + C, V].

  Args:
    model: a `Model`.
    params: its params.
    prompt: an `Embedded` prompt, or (tokens, input_mask, mask_ar, images)
      with images possibly None. Must be LEFT-padded: the last column is the
      prompt's last token, whose logits score the first completion token.
    completion_tokens: int32[B, C], e.g. `SampleOutput.tokens` (rows then
      pair with a prompt batch repeated n times).
    temperature, top_k, top_p: as in `SamplingConfig` (temperature 0 scores
      under temperature 1, as the sampler does for greedy).
    lengths: optional int32[B]; log-probs at index >= length are set to 0.
    chunk_size: completion positions per logits chunk.
  Returns:
    f32[B, C].
  """
  config = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p,
                          max_new_tokens=1)
  if not hasattr(prompt, "x"):
    tokens, input_mask, mask_ar, images = prompt
    prompt = model.embed(params, tokens, input_mask, mask_ar, images)
  completion_tokens = jnp.asarray(completion_tokens, jnp.int32)
  b, c = completion_tokens.shape
  p = prompt.x.shape[1]
  # Completion tokens are causal (their own groups) and all valid: tokens
  # after an EOS only influence positions after themselves, which are masked
  # out below.
  ones = jnp.ones((b, c), bool)
  comp = model.embed(params, completion_tokens, ones, ones.astype(jnp.int32))
  input_mask = jnp.concatenate([prompt.input_mask, ones], axis=1)
  emb = type(prompt)(
      x=jnp.concatenate([prompt.x, comp.x.astype(prompt.x.dtype)], axis=1),
      input_mask=input_mask,
      mask_ar=jnp.concatenate([prompt.mask_ar, comp.mask_ar], axis=1),
      positions=masks_lib.positions_from_mask(input_mask))
  hidden = model.hidden(params, emb)[:, p - 1:p + c - 1]           # [B, C, D]

  chunk = min(chunk_size, c)
  n_chunks = -(-c // chunk)
  pad = n_chunks * chunk - c
  hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
  targets = jnp.pad(completion_tokens, ((0, 0), (0, pad)))
  hidden = hidden.reshape(b, n_chunks, chunk, -1).swapaxes(0, 1)  # [n, B, c, D]
  targets = targets.reshape(b, n_chunks, chunk).swapaxes(0, 1)    # [n, B, c]

  @jax.checkpoint
  def chunk_logprobs(args):
    h, tgt = args
    logits = model.unembed(params, h)                              # [B, c, V]
    logp = jax.nn.log_softmax(strategies.process_logits(logits, config), -1)
    return jnp.take_along_axis(logp, tgt[..., None], axis=-1)[..., 0]

  logp = jax.lax.map(chunk_logprobs, (hidden, targets))            # [n, B, c]
  logp = logp.swapaxes(0, 1).reshape(b, n_chunks * chunk)[:, :c]
  if lengths is not None:
    logp = jnp.where(jnp.arange(c)[None, :] < lengths[:, None], logp, 0.0)
  return logp

"""Host-side batcher: examples -> fixed-shape padded training batches.

  batcher = Batcher.from_config(source, tokenizer, cfg)
  batch = next(batcher)                  # dict of numpy arrays, see below
  state = batcher.get_state()            # {'index': ...}: JSON, checkpointed
  batcher.set_state(state)               # resume exactly there

`source` is anything indexable with a length (a list, a TFDS
`data_source`, a grain source) whose items are dicts:

  image     uint8[H, W, 3] (or PIL / any `to_rgb_uint8` input) or None;
            `images`: a list of up to cfg.num_images of them, instead
  prefix    str (or bytes); `question` is accepted as an alias
  suffix    str (or bytes); `answer` is accepted as an alias

Each example becomes the model's prompt layout (`prompts.build_prompt`,
picked by the arch's `prompt_format`), right-padded to T = max_len, and its
images are preprocessed to the model's size (`preprocess_image`; resizing is
the identity when the sizes already match). Batches are

  tokens      int32[B, T]         mask_ar     int32[B, T]
  input_mask  bool[B, T]          loss_mask   int32[B, T]
  images      f32[B, I, S, S, 3]  (vision models only; zeros where an
                                   example has fewer than I images)

where B is this process's share of the global batch.

The pipeline is a grain `MapDataset` (endless example stream -> map(encode)
-> batch), which is random-access: batch i is a pure function of (source,
seed, i). The iterator state is just the next batch index, so resuming is
exact and costs nothing. Element j of the stream is source[perm_e[j % N]]
with e = j // N and perm_e a numpy permutation seeded by (seed, e): every
epoch is shuffled differently. (grain's own `shuffle` uses an index cipher
that costs ~4.5 ms per element on sources of a few examples, more than a
tiny model's step; a cached permutation costs nothing.) With several
processes, process p reads local batch i * P + p at step i, so step i
covers the same B stream elements on any number of hosts.
The text arrays of each source index are cached (up to 256 MiB): laying
out a prompt costs ~0.5 ms, which every epoch would pay again. Images are
read and preprocessed every time.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence
from typing import Any, Optional

import grain
import jax
import numpy as np

from auditdm_jax import prompts
from auditdm_jax.data import image_preprocessing
from auditdm_jax.models.config import ArchConfig
from auditdm_jax.tokenizer import Tokenizer
from auditdm_jax.train.config import TrainConfig

_PREFIX_KEYS = ("prefix", "question")
_TEXT_CACHE_BYTES = 256 * 2**20
_SUFFIX_KEYS = ("suffix", "answer")


def _text(example: dict, keys: Sequence[str], required: bool) -> Optional[str]:
  for k in keys:
    if k in example and example[k] is not None:
      v = example[k]
      if isinstance(v, np.ndarray) and v.ndim == 0:
        v = v.item()
      return v.decode("utf-8") if isinstance(v, bytes) else str(v)
  if required:
    raise KeyError(f"example needs one of {list(keys)}; has {sorted(example)}")
  return None


def _images(example: dict) -> list:
  if example.get("images") is not None:
    return [im for im in example["images"] if im is not None]
  image = example.get("image")
  return [] if image is None else [image]


class ExampleEncoder:
  """One example dict -> fixed-length arrays (a grain map function).

  Raises ValueError naming the problem (too long a prompt, too many answer
  tokens, ids outside the model's vocabulary, too many images) rather than
  silently truncating: a truncated answer trains the wrong target.
  """

  def __init__(self, tokenizer: Tokenizer, arch: ArchConfig, *, max_len: int,
               max_target_len: int, num_images: int = 1,
               image_preprocess: str = "siglip"):
    self.tokenizer, self.arch = tokenizer, arch
    self.max_len, self.max_target_len = max_len, max_target_len
    self.num_images = num_images if arch.has_vision else 0
    self.layout = prompts.get_layout(arch.prompt_format)
    self.image_spec = None
    if arch.has_vision:
      self.image_spec = image_preprocessing.get_spec(
          image_preprocess, arch.vision.image_size)

  @property
  def has_images(self) -> bool:
    return self.image_spec is not None

  def text(self, example: dict) -> dict[str, np.ndarray]:
    """tokens, mask_ar, input_mask, loss_mask: each [T], right-padded."""
    prefix = _text(example, _PREFIX_KEYS, required=True)
    suffix = _text(example, _SUFFIX_KEYS, required=True)
    n_images = len(_images(example))
    if n_images > self.num_images:
      what = ("a text-only model" if not self.arch.has_vision
              else f"num_images={self.num_images}")
      raise ValueError(f"example has {n_images} images but {self.arch.name}"
                       f" takes {what}")
    p = self.layout(self.tokenizer, prefix, suffix, num_images=n_images,
                    tokens_per_image=self.arch.tokens_per_image,
                    image_token_id=self.arch.image_token_id)
    if len(p) > self.max_len:
      raise ValueError(f"example has {len(p)} tokens, more than max_len="
                       f"{self.max_len} (prefix {prefix!r})")
    n_answer = int(p.loss_mask.sum())
    if n_answer > self.max_target_len:
      raise ValueError(f"answer has {n_answer} tokens, more than "
                       f"max_target_len={self.max_target_len} (suffix "
                       f"{suffix!r})")
    text_ids = p.tokens[~p.image_mask]
    vocab = self.arch.text.vocab_size
    if text_ids.size and int(text_ids.max()) >= vocab:
      raise ValueError(f"token id {int(text_ids.max())} is outside "
                       f"{self.arch.name}'s vocabulary of {vocab}: the "
                       "tokenizer does not belong to this model")
    padded = prompts.pad_batch([p], self.max_len, side="right",
                               pad_id=self.tokenizer.pad_id)
    return {k: getattr(padded, k)[0] for k in
            ("tokens", "mask_ar", "input_mask", "loss_mask")}

  def images(self, example: dict) -> np.ndarray:
    """f32[I, S, S, 3]: the example's images, then zeros."""
    s = self.image_spec.size
    arr = np.zeros((self.num_images, s, s, 3), np.float32)
    for i, im in enumerate(_images(example)[:self.num_images]):
      arr[i] = image_preprocessing.preprocess(im, self.image_spec)
    return arr

  def __call__(self, example: dict) -> dict[str, np.ndarray]:
    out = self.text(example)
    if self.has_images:
      out["images"] = self.images(example)
    return out


class Batcher:
  """Endless iterator of padded batches with an exact, tiny state."""

  def __init__(self, source: Sequence[Any], encoder: ExampleEncoder, *,
               batch_size: int, seed: int = 0, shuffle: bool = True,
               process_index: Optional[int] = None,
               process_count: Optional[int] = None):
    """Args:
      source: indexable examples (see the module docstring).
      encoder: turns one example into arrays.
      batch_size: the GLOBAL batch size.
      seed: shuffle seed.
      shuffle: shuffle (differently each epoch) or keep the source order.
      process_index, process_count: default to jax's.
    """
    if len(source) == 0:
      raise ValueError("the training source is empty")
    self.process_index = (jax.process_index() if process_index is None
                          else process_index)
    self.process_count = (jax.process_count() if process_count is None
                          else process_count)
    if batch_size % self.process_count:
      raise ValueError(f"batch_size {batch_size} is not divisible by the "
                       f"{self.process_count} processes")
    self.batch_size = batch_size
    self.local_batch_size = batch_size // self.process_count
    self.source_len = len(source)
    self._source, self._encoder = source, encoder
    self._seed, self._shuffle = seed, shuffle
    self._perms: dict[int, np.ndarray] = {}
    # Tokenizing and laying out a prompt costs ~0.5 ms; every epoch repeats
    # it, so the text arrays are cached per source index (within a budget).
    per_example = 13 * encoder.max_len  # 3 x int32 + 1 x bool per position
    self._text_at = functools.lru_cache(
        maxsize=max(1, _TEXT_CACHE_BYTES // per_example))(
            lambda i: encoder.text(self._source[i]))
    self._dataset = (
        grain.MapDataset.range(sys.maxsize)
        .map(lambda j: self._encode_at(self._source_index(j)))
        .batch(self.local_batch_size, drop_remainder=True))
    self._index = 0

  def _permutation(self, epoch: int) -> np.ndarray:
    perm = self._perms.get(epoch)
    if perm is None:
      perm = np.random.default_rng([self._seed, epoch]).permutation(
          self.source_len)
      # A batch spans at most two epochs; keep the two latest.
      self._perms = {e: p for e, p in self._perms.items() if e == epoch - 1}
      self._perms[epoch] = perm
    return perm

  def _encode_at(self, i: int) -> dict[str, np.ndarray]:
    out = dict(self._text_at(i))
    if self._encoder.has_images:
      out["images"] = self._encoder.images(self._source[i])
    return out

  def _source_index(self, j: int) -> int:
    """Source index of stream element j (epoch-wise shuffled)."""
    epoch, pos = divmod(int(j), self.source_len)
    return int(self._permutation(epoch)[pos]) if self._shuffle else pos

  @classmethod
  def from_config(cls, source: Sequence[Any], tokenizer: Tokenizer,
                  config: TrainConfig, **kw) -> "Batcher":
    encoder = ExampleEncoder(
        tokenizer, config.arch_config, max_len=config.max_len,
        max_target_len=config.max_target_len, num_images=config.num_images,
        image_preprocess=config.image_preprocess)
    return cls(source, encoder, batch_size=config.batch_size,
               seed=config.seed, shuffle=config.shuffle, **kw)

  def batch(self, index: int) -> dict[str, np.ndarray]:
    """Batch number `index` of this process (random access, no side effect)."""
    return self._dataset[index * self.process_count + self.process_index]

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    out = self.batch(self._index)
    self._index += 1
    return out

  def get_state(self) -> dict[str, int]:
    """JSON-able position: the index of the next batch, plus a fingerprint."""
    return {"index": self._index, "batch_size": self.batch_size,
            "source_len": self.source_len}

  def set_state(self, state: dict[str, int]) -> None:
    """Continues from `get_state()`'s position.

    Raises:
      ValueError: the state was written with another batch size or source
        length (the position would then mean other examples).
    """
    for key in ("batch_size", "source_len"):
      if key in state and int(state[key]) != getattr(self, key):
        raise ValueError(f"data state has {key}={state[key]} but this "
                         f"batcher has {getattr(self, key)}")
    self._index = int(state["index"])

"""Prompt layouts: (text, images) -> token ids and per-token masks.

A layout is picked by name from the model's arch config
(`ArchConfig.prompt_format`), so callers never branch on the model family:

  layout = prompts.get_layout(arch.prompt_format)
  p = layout(tokenizer, "what is this?", "a cat", num_images=1,
             tokens_per_image=arch.tokens_per_image,
             image_token_id=arch.image_token_id)

Every layout returns a `PromptTokens` of four aligned [T] arrays:

  tokens      int32  ids; image positions hold the placeholder id.
  mask_ar     int32  1 starts a new attention group, 0 joins the previous
                     one. Query q sees key k iff
                     cumsum(mask_ar)[k] <= cumsum(mask_ar)[q].
  loss_mask   int32  1 on tokens the model is trained to predict (the answer).
  image_mask  bool   True on image placeholder positions.

Worked rows. I = image placeholder, B = <bos>, t = text, a = answer,
E = <eos> / <end_of_turn>, S = <start_of_turn>, [ ] = <start/end_of_image>:

  paligemma    tokens  I I I I B t t t a a E
               mask_ar 0 0 0 0 0 0 0 0 1 1 1    one bidirectional prefix
               loss    0 0 0 0 0 0 0 0 1 1 1
  gemma3_chat  tokens  B S t t [ I I I ] t t E t S t a a E
               mask_ar 1 1 1 1 1 1 0 0 1 1 1 1 1 1 1 1 1 1
               loss    0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 1 1 1
               (causal text, one bidirectional group per image)

Both layouts reproduce transformers' processors id for id (tests compare them):
`PaliGemmaProcessor(images, text, suffix)` and `Gemma3Processor` fed the output
of its Gemma-3 chat template.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Optional

import numpy as np

from auditdm_jax import tokenizer as tok_lib

Tokenizer = tok_lib.Tokenizer


@dataclasses.dataclass(frozen=True, eq=False)
class PromptTokens:
  """One example's tokens and masks; all four arrays have shape [T].

  Attributes:
    tokens: int32[T] token ids.
    mask_ar: int32[T] in {0, 1}; see the module docstring.
    loss_mask: int32[T] in {0, 1}; 1 on answer tokens.
    image_mask: bool[T]; True on image placeholder positions.
  """
  tokens: np.ndarray
  mask_ar: np.ndarray
  loss_mask: np.ndarray
  image_mask: np.ndarray

  def __post_init__(self):
    # Coerce so that callers may pass lists; frozen, hence object.__setattr__.
    for name, dtype in (("tokens", np.int32), ("mask_ar", np.int32),
                        ("loss_mask", np.int32), ("image_mask", np.bool_)):
      arr = np.asarray(getattr(self, name))
      if arr.ndim != 1:
        raise ValueError(
            f"PromptTokens.{name} must be 1-D, got shape {arr.shape}")
      object.__setattr__(self, name, arr.astype(dtype))
    lengths = {len(self.tokens), len(self.mask_ar), len(self.loss_mask),
               len(self.image_mask)}
    if len(lengths) != 1:
      raise ValueError(
          f"PromptTokens arrays differ in length: tokens {len(self.tokens)}, "
          f"mask_ar {len(self.mask_ar)}, loss_mask {len(self.loss_mask)}, "
          f"image_mask {len(self.image_mask)}")
    for name in ("mask_ar", "loss_mask"):
      if not np.isin(getattr(self, name), (0, 1)).all():
        raise ValueError(f"PromptTokens.{name} must hold only 0 and 1")
    if (self.loss_mask.astype(bool) & self.image_mask).any():
      raise ValueError("PromptTokens: loss_mask is set on image positions")

  def __len__(self) -> int:
    return len(self.tokens)


@dataclasses.dataclass(frozen=True, eq=False)
class PromptBatch:
  """A padded batch; every array has shape [B, L].

  Attributes:
    tokens: int32[B, L]; `pad_id` on padding.
    mask_ar: int32[B, L]; 0 on padding.
    loss_mask: int32[B, L]; 0 on padding.
    image_mask: bool[B, L]; False on padding.
    input_mask: bool[B, L]; False on padding.
  """
  tokens: np.ndarray
  mask_ar: np.ndarray
  loss_mask: np.ndarray
  image_mask: np.ndarray
  input_mask: np.ndarray

  def __post_init__(self):
    shapes = {f.name: np.shape(getattr(self, f.name))
              for f in dataclasses.fields(self)}
    if len(set(shapes.values())) != 1 or len(shapes["tokens"]) != 2:
      raise ValueError(
          f"PromptBatch arrays must share one [B, L] shape: {shapes}")

  def as_dict(self) -> dict[str, np.ndarray]:
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def pad_batch(prompts: Sequence[PromptTokens], length: Optional[int] = None, *,
              side: str = "left", pad_id: int = 0) -> PromptBatch:
  """Stacks prompts into [B, L] arrays, padding each to `length`.

  Left padding (the default) keeps every prompt's last token in the last
  column, which the sampler needs; training batches use `side='right'`.
  Positions must then come from `cumsum(input_mask) - 1`, never from the
  column index.

  Args:
    prompts: B examples.
    length: L; defaults to the longest prompt.
    side: 'left' or 'right'.
    pad_id: token id written on padding (Gemma: 0 = `<pad>`).

  Returns:
    PromptBatch with arrays of shape [B, L].

  Raises:
    ValueError: no prompts, a prompt longer than `length`, or a bad `side`.
  """
  if side not in ("left", "right"):
    raise ValueError(f"side must be 'left' or 'right', got {side!r}")
  if not prompts:
    raise ValueError("pad_batch needs at least one prompt")
  longest = max(len(p) for p in prompts)
  length = longest if length is None else int(length)
  if longest > length:
    i = max(range(len(prompts)), key=lambda j: len(prompts[j]))
    raise ValueError(f"prompt {i} has {len(prompts[i])} tokens, more than the "
                     f"padded length {length}")
  b = len(prompts)
  out = {
      "tokens": np.full((b, length), pad_id, np.int32),
      "mask_ar": np.zeros((b, length), np.int32),
      "loss_mask": np.zeros((b, length), np.int32),
      "image_mask": np.zeros((b, length), np.bool_),
      "input_mask": np.zeros((b, length), np.bool_),
  }
  for i, p in enumerate(prompts):
    n = len(p)
    cols = slice(length - n, length) if side == "left" else slice(0, n)
    out["tokens"][i, cols] = p.tokens
    out["mask_ar"][i, cols] = p.mask_ar
    out["loss_mask"][i, cols] = p.loss_mask
    out["image_mask"][i, cols] = p.image_mask
    out["input_mask"][i, cols] = True
  return PromptBatch(**out)


class _Builder:
  """Accumulates ids and masks; adjacent text with equal masks is merged.

  Merging matters: transformers tokenizes the text between two special tokens
  as one string, and BPE merges cross what we think of as parts:
  "user\\n" + "\\n\\n" is tokenized `user`, `\\n\\n`, `\\n` (not `user`, `\\n`,
  `\\n\\n`), and "this?" + "\\n" may give `?\\n`. Text with different masks
  (prompt vs answer) is tokenized apart, so the prompt tokens of a training
  example equal those the sampler sees.
  """

  def __init__(self, tokenizer: Tokenizer):
    self._tok = tokenizer
    self._pending: list[str] = []
    self._pending_masks = (0, 0)
    self._tokens: list[int] = []
    self._ar: list[int] = []
    self._loss: list[int] = []
    self._image: list[bool] = []

  def text(self, s: str, *, ar: int, loss: int = 0):
    if self._pending and self._pending_masks != (ar, loss):
      self._flush()
    self._pending.append(s)
    self._pending_masks = (ar, loss)

  def ids(self, ids: Sequence[int], *, ar: int, loss: int = 0,
          image: bool = False, ar_first: Optional[int] = None):
    self._flush()
    for k, i in enumerate(ids):
      self._tokens.append(int(i))
      self._ar.append(ar_first if (k == 0 and ar_first is not None) else ar)
      self._loss.append(loss)
      self._image.append(image)

  def _flush(self):
    if not self._pending:
      return
    ar, loss = self._pending_masks
    ids = self._tok.encode("".join(self._pending))
    self._pending = []  # Before self.ids(), which flushes again.
    self.ids(ids, ar=ar, loss=loss)

  def finish(self, image_token_id: Optional[int]) -> PromptTokens:
    self._flush()
    p = PromptTokens(tokens=self._tokens, mask_ar=self._ar,
                     loss_mask=self._loss, image_mask=self._image)
    if image_token_id is not None:
      # The text itself must not smuggle in placeholders: the model would
      # try to scatter more image features than there are images.
      n_placeholder = int((p.tokens == image_token_id).sum())
      if n_placeholder != int(p.image_mask.sum()):
        raise ValueError(
            f"prompt text encodes the image placeholder id {image_token_id} "
            f"({n_placeholder} placeholders for {int(p.image_mask.sum())} "
            "image positions)")
    return p


def _check_images(layout: str, num_images: int, tokens_per_image: int,
                  image_token_id: Optional[int]):
  if num_images < 0:
    raise ValueError(f"{layout}: num_images must be >= 0, got {num_images}")
  if num_images and tokens_per_image <= 0:
    raise ValueError(f"{layout}: tokens_per_image must be > 0 with images, "
                     f"got {tokens_per_image}")
  if num_images and image_token_id is None:
    raise ValueError(f"{layout}: image_token_id is needed with images")


LayoutFn = Callable[..., PromptTokens]
_LAYOUTS: dict[str, LayoutFn] = {}


def register_layout(name: str) -> Callable[[LayoutFn], LayoutFn]:
  """Decorator registering a layout under `name` (an arch `prompt_format`)."""
  def deco(fn: LayoutFn) -> LayoutFn:
    if name in _LAYOUTS:
      raise ValueError(f"prompt layout {name!r} is already registered")
    _LAYOUTS[name] = fn
    return fn
  return deco


def get_layout(name: str) -> LayoutFn:
  """The layout registered as `name`; raises ValueError listing known ones."""
  try:
    return _LAYOUTS[name]
  except KeyError:
    raise ValueError(f"unknown prompt layout {name!r}; known: "
                     f"{sorted(_LAYOUTS)}") from None


def layout_names() -> tuple[str, ...]:
  return tuple(sorted(_LAYOUTS))


def build_prompt(layout: str, tokenizer: Tokenizer, prefix: str,
                 suffix: Optional[str] = None, **kwargs) -> PromptTokens:
  """Shorthand for `get_layout(layout)(tokenizer, prefix, suffix, **kwargs)`."""
  return get_layout(layout)(tokenizer, prefix, suffix, **kwargs)


@register_layout("paligemma")
def paligemma_layout(tokenizer: Tokenizer, prefix: str,
                     suffix: Optional[str] = None, *, num_images: int = 0,
                     tokens_per_image: int = 0,
                     image_token_id: Optional[int] = None) -> PromptTokens:
  """PaliGemma prefix-LM: `[image]*N*tpi <bos> prefix \\n` then `suffix <eos>`.

  Matches `PaliGemmaProcessor`: it tokenizes `"<image>"*N + bos + prefix +
  "\\n"` (so "\\n" is tokenized together with the prefix) and passes
  `suffix + eos_token` as the second sequence of a text pair (so the suffix
  is tokenized on its own). Its `token_type_ids` are our `mask_ar`, and its
  `labels` are the ids where our `loss_mask` is 1.

  Args:
    tokenizer: the model's tokenizer.
    prefix: the task prompt, used verbatim.
    suffix: the answer for training, or None for a sampling prompt.
    num_images: N.
    tokens_per_image: image tokens per image (256 at 224 px).
    image_token_id: placeholder id (HF PaliGemma-2: 257152, outside the
      text vocabulary); required when N > 0.

  Returns:
    PromptTokens with mask_ar 0 on image + bos + prefix + "\\n" (one
    bidirectional block) and 1 on suffix + eos, where loss_mask is 1.
  """
  _check_images("paligemma", num_images, tokens_per_image, image_token_id)
  b = _Builder(tokenizer)
  b.ids([image_token_id] * (num_images * tokens_per_image), ar=0, image=True)
  b.ids([tokenizer.bos_id], ar=0)
  b.text(prefix + "\n", ar=0)
  if suffix is not None:
    b.text(suffix, ar=1, loss=1)
    b.ids([tokenizer.eos_id], ar=1, loss=1)
  return b.finish(image_token_id)


@register_layout("gemma3_chat")
def gemma3_chat_layout(tokenizer: Tokenizer, prefix: str,
                       suffix: Optional[str] = None, *, num_images: int = 0,
                       tokens_per_image: int = 0,
                       image_token_id: Optional[int] = None) -> PromptTokens:
  """One Gemma-3 user turn, then the model turn (with the answer if given).

    <bos><start_of_turn>user\\n{prefix}<end_of_turn>\\n<start_of_turn>model\\n
    [{suffix}<end_of_turn>]

  Each `<start_of_image>` in the prefix becomes, as `Gemma3Processor` expands
  it, "\\n\\n<start_of_image>" + tpi x placeholder + "<end_of_image>\\n\\n".
  With images and no marker in the text, the N markers go before the text,
  which is what the chat template renders for content
  `[image]*N + [text]`. The prefix and the answer are stripped of
  surrounding whitespace, as the template's `| trim` does.

  Differences from the template's full-conversation string, on purpose:
  the answer ends at `<end_of_turn>` (the template adds "\\n" after it, which
  no model turn predicts), and the answer is tokenized apart from
  "model\\n" so that training prompts equal sampling prompts.

  Args:
    tokenizer: a Gemma-3 tokenizer (needs the turn and image pieces).
    prefix: user text, optionally holding `<start_of_image>` markers.
    suffix: the model's answer for training, or None for a sampling prompt.
    num_images: N; must equal the number of markers if there are any.
    tokens_per_image: soft tokens per image (256 for Gemma-3).
    image_token_id: placeholder id; defaults to the tokenizer's
      `<image_soft_token>`.

  Returns:
    PromptTokens with mask_ar 1 on text, and 1 then 0s on each image's soft
    tokens (one bidirectional block per image); loss_mask 1 on the answer and
    its `<end_of_turn>`.
  """
  if num_images and image_token_id is None:
    image_token_id = tokenizer.image_soft_token_id
  _check_images("gemma3_chat", num_images, tokens_per_image, image_token_id)
  user = prefix.strip()
  n_markers = user.count(tok_lib.START_OF_IMAGE)
  if n_markers == 0:
    user = tok_lib.START_OF_IMAGE * num_images + user
  elif n_markers != num_images:
    raise ValueError(
        f"gemma3_chat: the text holds {n_markers} {tok_lib.START_OF_IMAGE} "
        f"markers for {num_images} images")
  sot, eot = tokenizer.start_of_turn_id, tokenizer.end_of_turn_id
  first, *after_images = user.split(tok_lib.START_OF_IMAGE)

  b = _Builder(tokenizer)
  b.ids([tokenizer.bos_id, sot], ar=1)
  b.text("user\n" + first, ar=1)
  for text in after_images:
    b.text("\n\n", ar=1)
    b.ids([tokenizer.start_of_image_id], ar=1)
    b.ids([image_token_id] * tokens_per_image, ar=0, ar_first=1, image=True)
    b.ids([tokenizer.end_of_image_id], ar=1)
    b.text("\n\n" + text, ar=1)
  b.ids([eot], ar=1)
  b.text("\n", ar=1)
  b.ids([sot], ar=1)
  b.text("model\n", ar=1)
  if suffix is not None:
    b.text(suffix.strip(), ar=1, loss=1)
    b.ids([eot], ar=1, loss=1)
  if image_token_id is None:  # Text only: still refuse smuggled soft tokens.
    image_token_id = tokenizer.maybe_token_id(tok_lib.IMAGE_SOFT_TOKEN)
  return b.finish(image_token_id)

"""Text in, text out: prompt texts + images -> decoded completions.

  texts = generate(model, params, tok, ["what colour is the circle"], [img],
                   max_new_tokens=4)                       # greedy
  enc = encode_prompts(model, tok, texts, images)           # for the sampler

The glue every evaluator, answerer and auditor shares: lay each prompt out in
the model's own format (`prompts.build_prompt` with the arch's
`prompt_format`, so callers never branch on the family), preprocess its
image to the vision tower's size, sample in batches with the bucketed
`Sampler` (one compile per bucket), decode.

Letters: B prompts, T prompt length, S image side.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from auditdm_jax import prompts as prompts_lib
from auditdm_jax.data import image_preprocessing
from auditdm_jax.sampling import sampler as sampler_lib
from auditdm_jax.sampling.strategies import SamplingConfig

DEFAULT_PREPROCESS = "siglip"


def encode_prompts(model, tokenizer, texts: Sequence[str],
                   images: Optional[Sequence[np.ndarray]], *,
                   side: str = "right", length: Optional[int] = None,
                   image_preprocess: str = DEFAULT_PREPROCESS):
  """(tokens, input_mask, mask_ar [B, T], images f32[B, 1, S, S, 3] | None).

  Args:
    model: a `Model`; its arch picks the layout and image size.
    tokenizer: the model's tokenizer.
    texts: B prompt texts (the user turn / prefix).
    images: B uint8[H, W, 3] images, or None for a text-only model.
    side: padding side ('left' for teacher-forced scoring of completions).
    length: padded length T (default: the longest prompt).
    image_preprocess: `image_preprocessing` preset name.
  """
  arch = model.cfg
  n_images = 1 if images is not None else 0
  if n_images and not arch.has_vision:
    raise ValueError(f"{arch.name} is text-only but images were given")
  if images is not None and len(images) != len(texts):
    raise ValueError(f"{len(texts)} texts but {len(images)} images")
  ps = [prompts_lib.build_prompt(
      arch.prompt_format, tokenizer, t, None, num_images=n_images,
      tokens_per_image=arch.tokens_per_image if n_images else 0,
      image_token_id=arch.image_token_id) for t in texts]
  padded = prompts_lib.pad_batch(ps, length, side=side,
                                 pad_id=tokenizer.pad_id)
  # The jitted embedder clips ids (it must, for PaliGemma's placeholder past
  # the vocabulary), so a tokenizer that is not the model's would sample on
  # silently wrong tokens: refuse it here, on the host.
  ids = padded.tokens[padded.input_mask.astype(bool)]
  if arch.image_token_id is not None:
    ids = ids[ids != arch.image_token_id]
  if ids.size and int(ids.max()) >= arch.text.vocab_size:
    raise ValueError(
        f"token id {int(ids.max())} is outside {arch.name}'s vocabulary of "
        f"{arch.text.vocab_size}: the tokenizer ({tokenizer.vocab_size} "
        "pieces) does not belong to this model")
  ims = None
  if images is not None:
    spec = image_preprocessing.get_spec(image_preprocess,
                                        arch.vision.image_size)
    ims = np.stack([image_preprocessing.preprocess(im, spec)
                    for im in images])[:, None]
  return padded.tokens, padded.input_mask, padded.mask_ar, ims


def sampling_config(tokenizer, *, max_new_tokens: int,
                    temperature: float = 0.0, top_k: int = 0,
                    top_p: float = 1.0, n_per_prompt: int = 1
                    ) -> SamplingConfig:
  """A SamplingConfig that stops at the tokenizer's stop ids."""
  return SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p,
                        max_new_tokens=max_new_tokens,
                        n_per_prompt=n_per_prompt,
                        eos_ids=tuple(tokenizer.stop_ids),
                        pad_id=tokenizer.pad_id)


def generate(model, params, tokenizer, texts: Sequence[str],
             images: Optional[Sequence[np.ndarray]], *,
             max_new_tokens: int = 4, temperature: float = 0.0,
             key: Optional[jax.Array] = None, batch_size: int = 256,
             image_preprocess: str = DEFAULT_PREPROCESS,
             buckets: sampler_lib.Buckets = sampler_lib.Buckets()
             ) -> list[str]:
  """Decoded completions of (prompt text, image) pairs, in batches."""
  cfg = sampling_config(tokenizer, max_new_tokens=max_new_tokens,
                        temperature=temperature)
  key = jax.random.key(0) if key is None else key
  out: list[str] = []
  for s in range(0, len(texts), batch_size):
    key, sub = jax.random.split(key)
    tokens, input_mask, mask_ar, ims = encode_prompts(
        model, tokenizer, texts[s:s + batch_size],
        None if images is None else images[s:s + batch_size],
        image_preprocess=image_preprocess)
    res = sampler_lib.Sampler(model, buckets)(
        params, tokens, input_mask, mask_ar,
        None if ims is None else jnp.asarray(ims), key=sub, config=cfg)
    vocab = tokenizer.vocab_size
    for row in np.asarray(jax.device_get(res.tokens)):
      # A model's embedding table may be larger than its tokenizer (Gemma-3:
      # 262,208 rows for 262,144 pieces); the extra ids have no text.
      out.append(tokenizer.decode(row[row < vocab]))
  return out

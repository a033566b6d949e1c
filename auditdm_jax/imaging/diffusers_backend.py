"""Diffusers pipelines as image backends (torch, in-process).

  # The paper's G and E: FLUX.1-dev generates, FLUX.1-Kontext-dev edits.
  backend = get_backend("flux", generator="/ckpt/FLUX.1-dev",
                        editor="/ckpt/FLUX.1-Kontext-dev", device="cuda")
  # Lighter: Stable Diffusion generates, InstructPix2Pix edits.
  backend = get_backend("stable_diffusion", generator="/ckpt/sd-1.5",
                        editor="/ckpt/instruct-pix2pix", device="cuda")
  # Or from pipelines already built (tests, custom components):
  backend = DiffusersBackend("flux", editor=kontext_pipeline)

  backend.edit([picture], ["make the cat orange"], seed=0)  # [ImageResult]
  backend.generate(["a red car at night"], seed=0)

torch and diffusers are imported when a backend is built, so importing
`auditdm_jax.imaging` works without them. A path goes to the family's
pipeline class `from_pretrained(path, dtype=...)` (a local directory or, when
the hub is reachable, a repo id); a pipeline object is used as given (moved
to `device`). Either way every torch module is put in eval mode: dropout
left on would make the output depend on torch's global RNG.

Seeding and batching: item i gets a CPU `torch.Generator` seeded with
`item_seed(seed, op, text, input hash)`; CPU generators make the starting
noise identical on any device. `batch_size` items go through the pipeline
at once, grouped by input size (a pipeline resizes a batch to its first
image). The default of 1 makes item i's output independent of its batch
exactly. Larger batches are faster on a GPU, but batched kernels round
differently, so an item can change by a level in a few pixels with its
batch (measured on CPU: 1 level in 0.03% of the pixels); caches keyed on the
item would then hold whichever variant came first.

Sizes (all PIL images are RGB uint8; outputs are Pictures with scene=None):
  generate  `height` x `width` when set, else the pipeline's default
            (1024 for FLUX.1-dev, 512 for SD 1.5).
  edit      the pipeline works at `height` x `width` when set (the input is
            resized to it), else at its own choice for the input: Kontext
            keeps the input's aspect ratio at ~1 megapixel (its training
            resolutions), InstructPix2Pix the input size rounded down to a
            multiple of 8. With `keep_input_size` (default) the output is
            resized back (bicubic) to the input's size, so I* can replace I
            wherever I was used (the world's 64x64 pictures, a target's
            preprocessing, a side-by-side report).
"""

from __future__ import annotations

import inspect
import json
import os
import uuid
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np
from PIL import Image

from auditdm_jax.imaging import base
from auditdm_jax.imaging import registry

Picture = base.Picture
ImageResult = base.ImageResult

# family -> (generate pipeline class, edit pipeline class, dtype on cuda).
FAMILIES: dict[str, tuple[str, str, str]] = {
    "flux": ("FluxPipeline", "FluxKontextPipeline", "bfloat16"),
    "stable_diffusion": ("StableDiffusionPipeline",
                         "StableDiffusionInstructPix2PixPipeline", "float16"),
}
_DTYPES = ("float32", "bfloat16", "float16")


def _import_torch():
  try:
    # pylint: disable=g-import-not-at-top
    import diffusers
    import torch
    # pylint: enable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("the diffusers image backends need torch and diffusers "
                      "(pip install -e '.[torch]')") from e
  return torch, diffusers


def _positive(name: str, value: Any, allow_none: bool = True) -> None:
  if value is None and allow_none:
    return
  if type(value) is not int or value < 1:  # pylint: disable=unidiomatic-typecheck
    raise ValueError(f"{name} must be a positive int, got {value!r}")


def _chunks(items: list[int], n: int) -> list[list[int]]:
  return [items[i:i + n] for i in range(0, len(items), n)]


class DiffusersBackend(base.ImageBackend):
  """A diffusers text-to-image and/or instruction-edit pipeline pair."""

  def __init__(self, family: str = "flux", *, generator: Any = None,
               editor: Any = None, device: str = "cpu",
               torch_dtype: Optional[str] = None,
               num_inference_steps: Optional[int] = None,
               guidance_scale: Optional[float] = None,
               image_guidance_scale: Optional[float] = None,
               height: Optional[int] = None, width: Optional[int] = None,
               keep_input_size: bool = True, batch_size: int = 1,
               call_kwargs: Optional[dict[str, Any]] = None,
               load_kwargs: Optional[dict[str, Any]] = None,
               cache_tag: Optional[str] = None):
    """Loads or adopts the pipelines.

    Args:
      family: "flux" (FluxPipeline + FluxKontextPipeline) or
        "stable_diffusion" (StableDiffusionPipeline +
        StableDiffusionInstructPix2PixPipeline): the classes paths load with.
      generator: path (or repo id) or pipeline for `generate`; None: the
        backend cannot generate (NotImplementedError).
      editor: path or pipeline for `edit`; None: it cannot edit.
      device: torch device, e.g. "cpu", "cuda", "cuda:1".
      torch_dtype: "float32", "bfloat16" or "float16"; None: float32 on CPU,
        the family's usual dtype on an accelerator. Pipeline objects are
        cast only when this is given.
      num_inference_steps: denoising steps; None: the pipeline's default.
      guidance_scale: text guidance; None: the pipeline's default (note
        Kontext's recommended 2.5 differs from its 3.5 default).
      image_guidance_scale: InstructPix2Pix's image guidance; None: default.
      height: working height in pixels (with width); None: see the module
        docstring.
      width: working width.
      keep_input_size: resize edit outputs back to the input size.
      batch_size: items per pipeline call.
      call_kwargs: extra keyword arguments for every pipeline call (e.g.
        {"max_sequence_length": 256, "negative_prompt": "blurry"}).
      load_kwargs: extra keyword arguments for `from_pretrained` (e.g.
        {"variant": "fp16"} or {"safety_checker": None}).
      cache_tag: names pipeline objects in `cache_id` (paths name
        themselves); without it an object-built backend gets a random id, so
        a disk cache never mixes up two sets of weights.

    Raises:
      ValueError: for a bad option or a pipeline of the wrong kind.
      ImportError: if torch or diffusers is missing.
    """
    if family not in FAMILIES:
      raise ValueError(f"unknown diffusers family {family!r}; known: "
                       f"{sorted(FAMILIES)}")
    if generator is None and editor is None:
      raise ValueError("a diffusers backend needs a generator and/or an "
                       "editor (a path or a pipeline)")
    for n, v in (("num_inference_steps", num_inference_steps),
                 ("height", height), ("width", width)):
      _positive(n, v)
    _positive("batch_size", batch_size, allow_none=False)
    if (height is None) != (width is None):
      raise ValueError(f"give both height and width or neither, got "
                       f"height={height}, width={width}")
    if image_guidance_scale is not None and family != "stable_diffusion":
      # Checked again on the loaded editor; this fails before any loading.
      raise ValueError("image_guidance_scale applies to an InstructPix2Pix "
                       "editor only")
    if torch_dtype is not None and torch_dtype not in _DTYPES:
      raise ValueError(f"torch_dtype must be one of {_DTYPES}, got "
                       f"{torch_dtype!r}")
    torch, _ = _import_torch()
    try:
      self.device = torch.device(device)
    except (RuntimeError, TypeError) as e:
      raise ValueError(f"bad device {device!r}: {e}") from None
    self.name = family
    self.family = family
    self.dtype_name = torch_dtype or ("float32" if self.device.type == "cpu"
                                      else FAMILIES[family][2])
    self._dtype = getattr(torch, self.dtype_name)
    self._cast = torch_dtype is not None
    self.num_inference_steps = num_inference_steps
    self.guidance_scale = guidance_scale
    self.image_guidance_scale = image_guidance_scale
    self.height, self.width = height, width
    self.keep_input_size = bool(keep_input_size)
    self.batch_size = batch_size
    self.call_kwargs = dict(call_kwargs or {})
    self.load_kwargs = dict(load_kwargs or {})
    gen_cls, edit_cls, _ = FAMILIES[family]
    self._sources: dict[str, Optional[str]] = {}
    self.generate_pipe = self._adopt("generator", generator, gen_cls)
    self.edit_pipe = self._adopt("editor", editor, edit_cls)
    if self.edit_pipe is not None:
      if "image" not in inspect.signature(self.edit_pipe.__call__).parameters:
        raise ValueError(f"editor {type(self.edit_pipe).__name__} takes no "
                         "`image`: it is not an image-editing pipeline")
    if image_guidance_scale is not None and not self._is(
        "edit_pipe", "StableDiffusionInstructPix2PixPipeline"):
      raise ValueError("image_guidance_scale applies to an InstructPix2Pix "
                       "editor only")
    objects = [k for k, v in self._sources.items() if v is None]
    self._tag = cache_tag or (uuid.uuid4().hex if objects else None)

  # -- construction ------------------------------------------------------------

  def _adopt(self, role: str, spec: Any, class_name: str):
    """Loads a path with `class_name`, or takes a pipeline object."""
    if spec is None:
      return None
    torch, diffusers = _import_torch()
    if isinstance(spec, (str, os.PathLike)):
      cls = getattr(diffusers, class_name)
      pipe = cls.from_pretrained(os.fspath(spec), dtype=self._dtype,
                                 **self.load_kwargs)
      self._sources[role] = os.fspath(spec)
    elif isinstance(spec, diffusers.DiffusionPipeline):
      pipe = spec
      if self._cast:
        pipe.to(dtype=self._dtype)
      self._sources[role] = None
    else:
      raise ValueError(f"{role} must be a path or a diffusers pipeline, got "
                       f"{type(spec).__name__}")
    pipe.to(self.device)
    for comp in pipe.components.values():
      if isinstance(comp, torch.nn.Module):
        comp.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe

  def _is(self, attr: str, class_name: str) -> bool:
    _, diffusers = _import_torch()
    pipe = getattr(self, attr)
    return pipe is not None and isinstance(pipe, getattr(diffusers,
                                                         class_name))

  @property
  def cache_id(self) -> str:
    spec = {"family": self.family, "sources": self._sources, "tag": self._tag,
            "dtype": self.dtype_name, "steps": self.num_inference_steps,
            "guidance": self.guidance_scale,
            "image_guidance": self.image_guidance_scale,
            "size": [self.height, self.width],
            "keep_input_size": self.keep_input_size,
            "call_kwargs": self.call_kwargs}
    return "diffusers/" + json.dumps(spec, sort_keys=True, default=repr)

  # -- running -----------------------------------------------------------------

  def _call(self, pipe, op: str, prompts: list[str], seeds: list[int],
            **kwargs) -> list[np.ndarray]:
    """One pipeline call; returns uint8[H, W, 3] arrays in prompt order."""
    torch, _ = _import_torch()
    kw = dict(prompt=prompts, output_type="pil",
              generator=[torch.Generator("cpu").manual_seed(s)
                         for s in seeds])
    if self.num_inference_steps is not None:
      kw["num_inference_steps"] = self.num_inference_steps
    if self.guidance_scale is not None:
      kw["guidance_scale"] = self.guidance_scale
    kw.update(kwargs)
    kw.update(self.call_kwargs)
    try:
      images = pipe(**kw).images
    except Exception as e:
      msg = (f"{self.name} {op}: {type(pipe).__name__} failed on a batch of "
             f"{len(prompts)}: {type(e).__name__}: {e}")
      # Bad options stay ValueErrors (the service answers 400, and clients
      # do not retry them); the rest (out of memory, ...) may be transient.
      if isinstance(e, (ValueError, TypeError)):
        raise ValueError(msg) from e
      raise RuntimeError(msg) from e
    if len(images) != len(prompts):
      raise RuntimeError(f"{self.name} {op}: {type(pipe).__name__} returned "
                         f"{len(images)} images for {len(prompts)} prompts")
    return [np.asarray(im.convert("RGB"), dtype=np.uint8) for im in images]

  def _edit_chunk(self, pics: list[Picture], texts: list[str],
                  seeds: list[int]) -> list[np.ndarray]:
    h, w = pics[0].height, pics[0].width  # The chunk shares one size.
    images = [Image.fromarray(p.pixels, "RGB") for p in pics]
    kw: dict[str, Any] = {}
    if self._is("edit_pipe", "FluxKontextPipeline"):
      if self.height is not None:
        # max_area fixes the output area; without it Kontext rescales any
        # height x width to ~1 MP.
        kw = dict(height=self.height, width=self.width,
                  max_area=self.height * self.width, _auto_resize=False)
      else:
        kw = dict(height=h, width=w)  # The input's aspect ratio at ~1 MP.
    elif self._is("edit_pipe", "StableDiffusionInstructPix2PixPipeline"):
      # It works at the input's size: resize the input to change that.
      if self.height is not None:
        images = [im.resize((self.width, self.height), Image.BICUBIC)
                  for im in images]
      if self.image_guidance_scale is not None:
        kw["image_guidance_scale"] = self.image_guidance_scale
    elif self.height is not None:
      params = inspect.signature(self.edit_pipe.__call__).parameters
      if "height" in params and "width" in params:
        kw = dict(height=self.height, width=self.width)
    out = self._call(self.edit_pipe, "edit", texts, seeds, image=images, **kw)
    if self.keep_input_size:
      out = [a if a.shape[:2] == (h, w) else
             np.asarray(Image.fromarray(a).resize((w, h), Image.BICUBIC))
             for a in out]
    return out

  def edit(self, pictures: Sequence[Picture], instructions: Sequence[str], *,
           seed: int = 0) -> list[ImageResult]:
    base.check_edit_args(pictures, instructions)
    base.check_seed(seed)
    if self.edit_pipe is None:
      raise NotImplementedError(f"this {self.name} backend has no edit "
                                "pipeline; build it with editor=<path or "
                                "pipeline>")
    seeds = [base.item_seed(seed, "edit", t, p.content_hash())
             for p, t in zip(pictures, instructions)]
    groups: dict[tuple[int, int], list[int]] = {}
    for i, p in enumerate(pictures):
      groups.setdefault((p.height, p.width), []).append(i)
    out: list[Optional[ImageResult]] = [None] * len(pictures)
    for idx in groups.values():
      for chunk in _chunks(idx, self.batch_size):
        arrays = self._edit_chunk([pictures[i] for i in chunk],
                                  [instructions[i] for i in chunk],
                                  [seeds[i] for i in chunk])
        for i, a in zip(chunk, arrays):
          out[i] = ImageResult(Picture(a))
    return out

  def generate(self, captions: Sequence[str], *,
               seed: int = 0) -> list[ImageResult]:
    base.check_texts("captions", captions)
    base.check_seed(seed)
    if self.generate_pipe is None:
      raise NotImplementedError(f"this {self.name} backend has no generation "
                                "pipeline; build it with generator=<path or "
                                "pipeline>")
    seeds = [base.item_seed(seed, "generate", c) for c in captions]
    kw = ({} if self.height is None else
          dict(height=self.height, width=self.width))
    out: list[ImageResult] = []
    for chunk in _chunks(list(range(len(captions))), self.batch_size):
      arrays = self._call(self.generate_pipe, "generate",
                          [captions[i] for i in chunk],
                          [seeds[i] for i in chunk], **kw)
      out += [ImageResult(Picture(a)) for a in arrays]
    return out

  def __repr__(self) -> str:
    return (f"DiffusersBackend({self.family!r}, generator="
            f"{self._sources.get('generator', '-')!r}, editor="
            f"{self._sources.get('editor', '-')!r}, device={self.device})")


@registry.register("flux")
def flux(**kwargs: Any) -> DiffusersBackend:
  """FLUX.1 generates and FLUX.1 Kontext edits (the paper's G and E)."""
  return DiffusersBackend("flux", **kwargs)


@registry.register("stable_diffusion")
def stable_diffusion(**kwargs: Any) -> DiffusersBackend:
  """Stable Diffusion generates and InstructPix2Pix edits (lighter)."""
  return DiffusersBackend("stable_diffusion", **kwargs)

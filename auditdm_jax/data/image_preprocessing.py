"""Image preprocessing equal to transformers' PIL image processors.

Output is float32[H, W, 3], channels last (our models are NHWC), values in
[-1, 1]. Steps, as `SiglipImageProcessorPil` / `Gemma3ImageProcessorPil` do
them in transformers 5.24 (the classes it falls back to without torchvision):

  1. convert to RGB uint8: transparency is composited onto WHITE, not dropped;
     grayscale is repeated to 3 channels;
  2. resize to size x size with PIL (no aspect-ratio preservation, no crop);
  3. rescale: uint8 -> float64 * (1/255) -> float32;
  4. normalise: (x - 0.5) / 0.5 in float32.

Presets (the filters are the transformers class defaults, and what the hub
`preprocessor_config.json` files set: "resample": 3 / 2):

  'siglip'  PaliGemma / PaliGemma-2: 224 (or 448, 896), BICUBIC
  'gemma3'  Gemma-3: 896, BILINEAR; pan-and-scan off (its default)

Note the class default size of `Gemma3ImageProcessor` is 224; checkpoints set
896. With torchvision installed transformers would use its torch backend
instead, whose resize is not bit-equal to PIL's; we match the PIL one.
big_vision's PaliGemma pipeline (TF bilinear, antialias) differs again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Optional, Union

import numpy as np
from PIL import Image

RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}

ImageLike = Union[Image.Image, np.ndarray]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ImageSpec:
  """How to turn an image into model input.

  Attributes:
    size: output height = width, in pixels.
    resample: PIL filter name, one of `RESAMPLE`.
    mean: per-channel mean subtracted after rescaling.
    std: per-channel std divided by after subtracting the mean.
    rescale_factor: multiplier taking uint8 to [0, 1].
  """
  size: int
  resample: str
  mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
  std: tuple[float, float, float] = (0.5, 0.5, 0.5)
  rescale_factor: float = 1 / 255

  def __post_init__(self):
    if not isinstance(self.size, int) or self.size <= 0:
      raise ValueError(f"size must be a positive int, got {self.size!r}")
    if self.resample not in RESAMPLE:
      raise ValueError(f"resample must be one of {sorted(RESAMPLE)}, "
                       f"got {self.resample!r}")
    if len(self.mean) != 3 or len(self.std) != 3:
      raise ValueError(
          f"mean and std need 3 values, got {self.mean}, {self.std}")
    if any(s == 0 for s in self.std):
      raise ValueError(f"std must be non-zero, got {self.std}")


PRESETS = {
    "siglip": ImageSpec(size=224, resample="bicubic"),
    "gemma3": ImageSpec(size=896, resample="bilinear"),
}


def get_spec(name: str, size: Optional[int] = None) -> ImageSpec:
  """The preset `name` ('siglip' or 'gemma3'), optionally at another size."""
  if name not in PRESETS:
    raise ValueError(
        f"unknown image preprocessing {name!r}; known: {sorted(PRESETS)}")
  spec = PRESETS[name]
  return spec if size is None else dataclasses.replace(spec, size=size)


def to_rgb_uint8(image: ImageLike) -> np.ndarray:
  """Converts an image to uint8[H, W, 3] the way transformers does.

  Args:
    image: a PIL image of any 8-bit mode (RGBA, LA and palette images with
      transparency are composited onto white with PIL; L, CMYK, YCbCr...
      are converted by PIL) or a 16-bit grayscale one (mode I;16*, or I
      with values in [0, 65535]: scaled to 8 bits, value >> 8, where PIL's
      own conversion, and so transformers', clips everything above 255 to
      white), or a uint8 array of shape [H, W], [H, W, 1], [H, W, 3] or
      [H, W, 4] (channels last; RGBA is composited onto white in float64 and
      rounded, as transformers' numpy path does). transformers rejects 2-D
      arrays; we read them as grayscale.

  Returns:
    uint8[H, W, 3].

  Raises:
    TypeError: not a PIL image or array, or an array that is not uint8.
    ValueError: an array of another shape, an empty image, or a PIL image
      of a mode without an 8-bit meaning (F, or I beyond 16 bits).
  """
  if isinstance(image, Image.Image):
    if image.width == 0 or image.height == 0:
      raise ValueError(f"empty image of size {image.size}")
    if image.mode.startswith("I") or image.mode == "F":
      return _high_depth_to_rgb(image)
    has_alpha = ("A" in image.getbands()
                 or image.info.get("transparency") is not None)
    if has_alpha:
      rgba = image.convert("RGBA")
      white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
      image = Image.alpha_composite(white, rgba)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)

  if not isinstance(image, np.ndarray):
    # Accept array-likes such as jax arrays, but not arbitrary objects.
    if not hasattr(image, "__array__"):
      raise TypeError(f"expected a PIL image or a uint8 array, got "
                      f"{type(image).__name__}")
    image = np.asarray(image)
  if image.dtype != np.uint8:
    raise TypeError(f"image arrays must be uint8 in [0, 255], got dtype "
                    f"{image.dtype}; convert floats explicitly")
  if image.ndim == 2:
    image = image[:, :, None]
  if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
    raise ValueError(f"image array must have shape [H, W] or [H, W, C] with C "
                     f"in (1, 3, 4) (channels last), got shape {image.shape}")
  if image.shape[0] == 0 or image.shape[1] == 0:
    raise ValueError(f"empty image of shape {image.shape}")
  channels = image.shape[-1]
  if channels == 1:
    return np.repeat(image, 3, axis=-1)
  if channels == 4:
    alpha = image[..., 3:4] / 255.0                       # float64[H, W, 1]
    rgb = alpha * image[..., :3] + (1.0 - alpha) * 255.0  # onto white
    return np.round(rgb).astype(np.uint8)
  return image


def _high_depth_to_rgb(image: Image.Image) -> np.ndarray:
  """16-bit grayscale -> uint8[H, W, 3] (top 8 bits); other deep modes are
  refused rather than clipped into a white picture."""
  arr = np.asarray(image)
  if image.mode == "F" or arr.size and (int(arr.min()) < 0
                                         or int(arr.max()) > 65535):
    raise ValueError(f"image mode {image.mode} ({arr.dtype}, values "
                     f"{arr.min()}..{arr.max()}) has no 8-bit range; convert "
                     "it to L or RGB first")
  gray = (arr.astype(np.uint32) >> 8).astype(np.uint8)
  return np.repeat(gray[:, :, None], 3, axis=-1)


def preprocess(image: ImageLike, spec: ImageSpec) -> np.ndarray:
  """One image -> float32[spec.size, spec.size, 3], normalised.

  Args:
    image: see `to_rgb_uint8`.
    spec: size, filter and normalisation.

  Returns:
    float32[S, S, 3] with S = spec.size.
  """
  rgb = to_rgb_uint8(image)
  pil = Image.fromarray(rgb)  # uint8[H, W, 3] -> mode RGB
  resized = np.asarray(
      pil.resize((spec.size, spec.size), resample=RESAMPLE[spec.resample]))
  # Same arithmetic and dtypes as transformers, so results are bit-equal:
  # rescale in float64 then cast, normalise in float32.
  x = (resized.astype(np.float64) * spec.rescale_factor).astype(np.float32)
  mean = np.asarray(spec.mean, np.float32)
  std = np.asarray(spec.std, np.float32)
  return (x - mean) / std


def preprocess_image(image: ImageLike, name: str = "siglip",
                     size: Optional[int] = None) -> np.ndarray:
  """`preprocess` with a named preset; float32[S, S, 3]."""
  return preprocess(image, get_spec(name, size))


def preprocess_batch(images: Sequence[ImageLike], name: str = "siglip",
                     size: Optional[int] = None) -> np.ndarray:
  """Several images with one preset; float32[B, S, S, 3]."""
  if len(images) == 0:
    raise ValueError("preprocess_batch needs at least one image")
  spec = get_spec(name, size)
  return np.stack([preprocess(im, spec) for im in images])

"""Image bytes for benchmark records: decode, validate, keep PNG/JPEG as is.

  data = from_base64(cell)        # VLMEvalKit TSV cell -> raw bytes
  png_or_jpeg = encoded(data)     # validated; other formats -> PNG
  encoded_file("/coco/val2014/COCO_val2014_000000000042.jpg")
  size(png_or_jpeg)               # (width, height) without a full decode

Records store the original file's bytes when they are PNG or JPEG, so a
benchmark image reaches the model exactly as released; GIF, WebP, BMP, TIFF
and the like are re-encoded as lossless PNG in their own mode (RGBA keeps its
alpha: `image_preprocessing.to_rgb_uint8` composites it the way
transformers does, at read time). Every image is fully decoded once here, so
a truncated or corrupt file fails the build, not the evaluation.
"""

from __future__ import annotations

import base64
import binascii
import functools
import io
import os
from typing import Union

from PIL import Image

from auditdm_jax.data.bench import schema

# PNG can store these modes directly; others (CMYK, YCbCr, I;16, ...) go
# through RGB.
_PNG_MODES = frozenset({"1", "L", "LA", "P", "RGB", "RGBA", "I"})


def from_base64(text: str) -> bytes:
  """Strict base64 -> bytes (whitespace ignored).

  Raises:
    ValueError: not valid base64.
  """
  compact = "".join(text.split())
  try:
    return base64.b64decode(compact, validate=True)
  except (binascii.Error, ValueError) as e:
    raise ValueError(f"invalid base64 ({len(compact)} chars): {e}") from None


def encoded(data: Union[bytes, bytearray]) -> bytes:
  """Validated PNG/JPEG bytes for the image in `data` (any PIL format).

  Raises:
    ValueError: empty, or not an image PIL can fully decode.
  """
  data = bytes(data)
  if not data:
    raise ValueError("empty image")
  try:
    with Image.open(io.BytesIO(data)) as im:
      im.load()  # Full decode: catches truncated files.
      if schema.is_encoded_image(data):
        return data
      if im.mode not in _PNG_MODES:
        im = im.convert("RGB")
      buf = io.BytesIO()
      im.save(buf, format="png")
      return buf.getvalue()
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    # PIL raises UnidentifiedImageError (an OSError) for unknown data and
    # OSError / SyntaxError for damaged files.
    raise ValueError(f"not a readable image ({len(data)} bytes): {e}"
                     ) from None


def encoded_file(path: str) -> bytes:
  """`encoded` of a file's bytes.

  Cached, because the JSON layouts (VQA, GQA, RefCOCO) ask several questions
  about one image; the key holds the file's size and mtime, so a replaced
  file is read again.

  Raises:
    FileNotFoundError: no such file.
    ValueError: not a readable image.
  """
  try:
    st = os.stat(path)
  except OSError:
    raise FileNotFoundError(f"image file not found: {path}") from None
  return _encoded_file(path, st.st_size, st.st_mtime_ns)


# Questions about one image mostly come together (VQA, RefCOCO), and GQA's
# testdev has ~400 images: a small cache avoids most re-decodes while holding
# at most 128 images' bytes.
@functools.lru_cache(maxsize=128)
def _encoded_file(path: str, size: int, mtime_ns: int) -> bytes:
  del size, mtime_ns  # Cache key only.
  with open(path, "rb") as f:
    return encoded(f.read())


def size(data: bytes) -> tuple[int, int]:
  """(width, height) of encoded image bytes (reads the header only)."""
  with Image.open(io.BytesIO(data)) as im:
    return im.size

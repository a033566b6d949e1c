"""Pictures, results and the interface every image backend implements.

  pic = Picture.from_scene(scene)                    # world scene -> picture
  pic.pixels                                         # uint8[H, W, 3]
  res = backend.edit([pic], ["make the red circle blue"], seed=0)[0]
  res.ok, res.picture, res.error
  res = backend.generate(["two green triangles"], seed=0)[0]

A `Picture` is immutable: its pixels are a read-only copy, so its
`content_hash` (sha256 over shape, pixel bytes and scene) stays valid and can
key caches. `scene` is the world scene graph as JSON when the picture comes
from the world (the world editor needs it); other backends ignore it and
return pictures with `scene=None`.

Backends are batched and seeded: `edit(pictures, instructions, seed=s)`
returns one `ImageResult` per input, in input order, and item i depends only
on (s, item i's content), never on the batch around it, because every
backend draws item i's randomness from `item_seed(s, op, text, input hash)`.
So a result can be cached per item, and a rollout can send items in any
grouping. Per-item failures (a command the world cannot parse, an object that
is not there) are `ImageResult`s with an `error`; bad arguments (lengths that
do not match, a non-Picture) raise ValueError, and an operation a backend
does not offer raises NotImplementedError.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import io
import json
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np
from PIL import Image

_SEED_BITS = 63  # Fits torch.Generator.manual_seed and random.Random alike.


@dataclasses.dataclass(frozen=True)
class Picture:
  """An RGB image, optionally with the world scene graph it renders.

  Attributes:
    pixels: uint8[H, W, 3]; stored as a read-only copy of what was passed
      (anything np.asarray turns into such an array, e.g. a PIL RGB image).
    scene: the scene as JSON (`auditdm_jax.world.scene.Scene.to_json()`),
      or None when the picture does not come from the world.
  """
  pixels: np.ndarray
  scene: Optional[str] = None

  def __post_init__(self):
    px = self.pixels
    if not isinstance(px, np.ndarray):
      try:
        px = np.asarray(px)
      except Exception as e:  # pylint: disable=broad-except
        raise ValueError(f"Picture.pixels must be a uint8[H, W, 3] array, "
                         f"got {type(self.pixels).__name__}: {e}") from None
    if px.dtype != np.uint8 or px.ndim != 3 or px.shape[2] != 3:
      raise ValueError(f"Picture.pixels must be uint8[H, W, 3], got "
                       f"{px.dtype}{list(px.shape)}")
    if px.shape[0] < 1 or px.shape[1] < 1:
      raise ValueError(f"Picture.pixels must not be empty, got shape "
                       f"{px.shape}")
    if self.scene is not None and not isinstance(self.scene, str):
      raise ValueError(f"Picture.scene must be a JSON str or None, got "
                       f"{type(self.scene).__name__}")
    # A private copy: the caller's array may change later, the hash may not.
    px = np.array(px, dtype=np.uint8, order="C", copy=True)
    px.setflags(write=False)
    object.__setattr__(self, "pixels", px)

  @property
  def height(self) -> int:
    return self.pixels.shape[0]

  @property
  def width(self) -> int:
    return self.pixels.shape[1]

  def content_hash(self) -> str:
    """Hex sha256 over shape, pixel bytes and scene (memoised)."""
    h = self.__dict__.get("_hash")
    if h is None:
      d = hashlib.sha256(b"auditdm_jax.Picture/1\0")
      d.update(("%dx%dx3\0" % self.pixels.shape[:2]).encode())
      d.update(self.pixels.tobytes())
      # Pixel length follows from the shape, so this framing is unambiguous.
      d.update(b"\0noscene" if self.scene is None
               else b"\0scene:" + self.scene.encode("utf-8"))
      h = d.hexdigest()
      self.__dict__["_hash"] = h  # Not a field: frozen-safe memo.
    return h

  def to_png(self) -> bytes:
    """Lossless PNG bytes of the pixels (the scene is not included)."""
    buf = io.BytesIO()
    Image.fromarray(self.pixels, "RGB").save(buf, format="PNG")
    return buf.getvalue()

  @classmethod
  def from_png(cls, data: bytes, scene: Optional[str] = None) -> Picture:
    """Decodes PNG (or any PIL-readable) bytes; non-RGB modes become RGB
    as the models' preprocessing converts them
    (`image_preprocessing.to_rgb_uint8`: transparency onto white, 16-bit
    scaled, not clipped).

    Raises:
      ValueError: if the bytes are not a readable image.
    """
    # pylint: disable-next=g-import-not-at-top
    from auditdm_jax.data import image_preprocessing
    if not isinstance(data, (bytes, bytearray, memoryview)):
      raise ValueError(f"from_png needs bytes, got {type(data).__name__}")
    try:
      with Image.open(io.BytesIO(bytes(data))) as img:
        img.load()
        pixels = image_preprocessing.to_rgb_uint8(img)
    except Exception as e:  # pylint: disable=broad-except  # PIL raises many.
      raise ValueError(f"not a readable image ({len(data)} bytes): "
                       f"{type(e).__name__}: {e}") from None
    return cls(pixels, scene=scene)

  @classmethod
  def from_scene(cls, scene: Any) -> Picture:
    """Renders a world Scene (or its JSON) with `world.render.render`."""
    # Imported here: a picture does not need the world to exist.
    # pylint: disable=g-import-not-at-top
    from auditdm_jax.world import render as render_lib
    from auditdm_jax.world import scene as scene_lib
    # pylint: enable=g-import-not-at-top
    if isinstance(scene, str):
      scene = scene_lib.Scene.from_json(scene)
    if not isinstance(scene, scene_lib.Scene):
      raise ValueError(f"from_scene needs a Scene or its JSON, got "
                       f"{type(scene).__name__}")
    return cls(render_lib.render(scene), scene=scene.to_json())

  # ndarray fields break the generated __eq__/__hash__; compare by content.
  def __eq__(self, other: object) -> bool:
    if not isinstance(other, Picture):
      return NotImplemented
    return (self.scene == other.scene and
            self.pixels.shape == other.pixels.shape and
            np.array_equal(self.pixels, other.pixels))

  def __hash__(self) -> int:
    return hash(self.content_hash())

  def __repr__(self) -> str:
    scene = "None" if self.scene is None else f"<{len(self.scene)} chars>"
    return (f"Picture({self.height}x{self.width}, scene={scene}, "
            f"hash={self.content_hash()[:12]})")


@dataclasses.dataclass(frozen=True)
class ImageResult:
  """One backend output: a picture, or the reason there is none.

  Exactly one of `picture` and `error` is set. Errors read
  "<op>: <kind>: <message>", e.g. "edit: missing: no object matches 'the
  red circle'".
  """
  picture: Optional[Picture]
  error: Optional[str] = None

  def __post_init__(self):
    if self.picture is not None and not isinstance(self.picture, Picture):
      raise ValueError(f"ImageResult.picture must be a Picture or None, got "
                       f"{type(self.picture).__name__}")
    if self.error is not None and not isinstance(self.error, str):
      raise ValueError(f"ImageResult.error must be a str or None, got "
                       f"{type(self.error).__name__}")
    if (self.picture is None) == (self.error is None):
      raise ValueError("ImageResult needs exactly one of picture and error")

  @property
  def ok(self) -> bool:
    return self.picture is not None

  @classmethod
  def failure(cls, error: str) -> ImageResult:
    return cls(None, error=error)


def item_seed(seed: int, *parts: str) -> int:
  """The seed of one item: a 63-bit hash of (seed, parts).

  Backends call it with (seed, op, text, input content hash), so an item's
  randomness depends on its content only, not on its batch position.
  """
  check_seed(seed)
  d = hashlib.sha256(json.dumps([seed, *parts]).encode("utf-8")).digest()
  return int.from_bytes(d[:8], "little") & ((1 << _SEED_BITS) - 1)


def check_seed(seed: Any) -> None:
  # Exact type: bool is an int subclass and almost surely a mistake here.
  if type(seed) is not int:  # pylint: disable=unidiomatic-typecheck
    raise ValueError(f"seed must be an int, got {seed!r}")


def check_edit_args(pictures: Sequence[Picture],
                    instructions: Sequence[str]) -> None:
  """Raises ValueError unless pictures/instructions are matching lists."""
  for name, seq in (("pictures", pictures), ("instructions", instructions)):
    if isinstance(seq, (str, bytes)) or not isinstance(seq, Sequence):
      raise ValueError(f"{name} must be a sequence, got "
                       f"{type(seq).__name__}")
  if len(pictures) != len(instructions):
    raise ValueError(f"edit needs one instruction per picture, got "
                     f"{len(pictures)} pictures and {len(instructions)} "
                     "instructions")
  for i, p in enumerate(pictures):
    if not isinstance(p, Picture):
      raise ValueError(f"pictures[{i}] is a {type(p).__name__}, not a "
                       "Picture")
  check_texts("instructions", instructions)


def check_texts(name: str, texts: Sequence[str]) -> None:
  """Raises ValueError unless `texts` is a sequence of str."""
  if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
    raise ValueError(f"{name} must be a sequence of str, got "
                     f"{type(texts).__name__}")
  for i, t in enumerate(texts):
    if not isinstance(t, str):
      raise ValueError(f"{name}[{i}] is a {type(t).__name__}, not a str")


class ImageBackend(abc.ABC):
  """Counterfactual image editor E and generator G, batched and seeded.

  Subclasses set `name` (their registry name) and implement `edit` and
  `generate`; an operation they do not offer raises NotImplementedError.
  `cache_id` names everything that changes the output (weights, steps,
  sizes): CachedBackend keys on it, so override it where `name` alone is
  not enough.
  """
  name: str = "base"

  @property
  def cache_id(self) -> str:
    return self.name

  @abc.abstractmethod
  def edit(self, pictures: Sequence[Picture], instructions: Sequence[str], *,
           seed: int = 0) -> list[ImageResult]:
    """Applies instructions[i] to pictures[i]; one result per item."""

  @abc.abstractmethod
  def generate(self, captions: Sequence[str], *,
               seed: int = 0) -> list[ImageResult]:
    """Draws one picture per caption; one result per item."""

  def __repr__(self) -> str:
    return f"{type(self).__name__}(name={self.name!r})"


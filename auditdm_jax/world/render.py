"""Deterministic rendering of scenes to uint8 RGB images.

Each shape is drawn once per pixel size with PIL (`ImageDraw`, no
antialiasing) into a boolean mask; a cell tile per (shape, colour, size, cell
size) is cached and copied into a numpy canvas, the object centred in its
cell. Identical scenes give identical bytes on every machine
(no fonts, no float blending). `render_reference` draws the same picture
directly with PIL; the tests check the two agree.

Object sizes at cell size c (odd, so a shape has a centre pixel):
  small = odd(7c/16), large = odd(13c/16)  ->  7 and 13 px at c = 16.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from auditdm_jax.world import scene as scene_lib

Scene = scene_lib.Scene
Obj = scene_lib.Obj

_SIZE_FRACTION = {"small": 7 / 16, "large": 13 / 16}


def object_px(size: str, cell_size: int) -> int:
  """Side in pixels of an object of `size` in cells of `cell_size` px."""
  px = int(_SIZE_FRACTION[size] * cell_size)
  return max(1, px - 1 if px % 2 == 0 else px)


def object_box(obj: Obj, cell_size: int) -> tuple[int, int, int]:
  """Returns (y0, x0, px): top-left pixel and side of the object's square."""
  px = object_px(obj.size, cell_size)
  off = (cell_size - px) // 2
  return obj.row * cell_size + off, obj.col * cell_size + off, px


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, x0: int, y0: int,
                px: int, fill) -> None:
  m = px - 1
  h = m // 2
  if shape == "circle":
    draw.ellipse((x0, y0, x0 + m, y0 + m), fill=fill)
  elif shape == "square":
    draw.rectangle((x0, y0, x0 + m, y0 + m), fill=fill)
  elif shape == "triangle":  # Apex up.
    draw.polygon([(x0, y0 + m), (x0 + m, y0 + m), (x0 + h, y0)], fill=fill)
  elif shape == "diamond":
    draw.polygon([(x0 + h, y0), (x0 + m, y0 + h), (x0 + h, y0 + m),
                  (x0, y0 + h)], fill=fill)
  else:
    raise ValueError(f"unknown shape {shape!r}")


@functools.lru_cache(maxsize=None)
def shape_mask(shape: str, px: int) -> np.ndarray:
  """Returns a read-only bool[px, px] mask of `shape` drawn with PIL."""
  img = Image.new("L", (px, px), 0)
  _draw_shape(ImageDraw.Draw(img), shape, 0, 0, px, 255)
  mask = np.asarray(img) > 0
  mask.setflags(write=False)
  return mask


@functools.lru_cache(maxsize=None)
def _background(image_size: int) -> np.ndarray:
  bg = np.empty((image_size, image_size, 3), np.uint8)
  bg[...] = scene_lib.BACKGROUND
  bg.setflags(write=False)
  return bg


_RGB = {name: np.array(rgb, np.uint8)
        for name, rgb in scene_lib.COLOURS.items()}


@functools.lru_cache(maxsize=None)
def cell_tile(shape: str, colour: str, size: str, cell_size: int) -> np.ndarray:
  """Returns read-only uint8[cell, cell, 3]: one object centred on gray."""
  tile = _background(cell_size).copy()
  o = Obj(shape, colour, size, 0, 0)
  y0, x0, px = object_box(o, cell_size)
  tile[y0:y0 + px, x0:x0 + px][shape_mask(shape, px)] = _RGB[colour]
  tile.setflags(write=False)
  return tile


def render(scene: Scene) -> np.ndarray:
  """Returns the scene as uint8[H, W, 3] RGB, H = W = scene.image_size."""
  img = _background(scene.image_size).copy()
  c = scene.cell_size
  for o in scene.objects:
    y, x = o.row * c, o.col * c
    img[y:y + c, x:x + c] = cell_tile(o.shape, o.colour, o.size, c)
  return img


def render_batch(scenes: Sequence[Scene]) -> np.ndarray:
  """Returns uint8[B, H, W, 3]; all scenes must share image_size."""
  if not scenes:
    raise ValueError("render_batch needs at least one scene")
  size = scenes[0].image_size
  out = np.empty((len(scenes), size, size, 3), np.uint8)
  for i, s in enumerate(scenes):
    if s.image_size != size:
      raise ValueError(f"scene {i} has image_size {s.image_size}, not {size}")
    out[i] = render(s)
  return out


def to_pil(scene: Scene) -> Image.Image:
  """Returns the rendered scene as a PIL RGB image."""
  return Image.fromarray(render(scene), "RGB")


def render_reference(scene: Scene) -> np.ndarray:
  """Draws the scene directly with PIL; slow, equal to `render` (tested)."""
  img = Image.new("RGB", (scene.image_size,) * 2, scene_lib.BACKGROUND)
  draw = ImageDraw.Draw(img)
  for o in scene.objects:
    y0, x0, px = object_box(o, scene.cell_size)
    _draw_shape(draw, o.shape, x0, y0, px, scene_lib.COLOURS[o.colour])
  return np.asarray(img).copy()

"""A content-addressed cache in front of any image backend.

  backend = CachedBackend(get_backend("world"), cache_dir="/tmp/imgcache")
  backend.edit(pictures, instructions, seed=0)   # computes the misses only
  backend.hits, backend.misses, backend.stats()

Key of an item = sha256 over (inner.cache_id, op, seed, text, input
picture's content hash). Backends promise that an item's result depends only
on those (base.py), so the cache can send just the missing items to the
inner backend, deduplicated, in one batched call.

Two levels:
  memory  an LRU of ImageResults (bounded by `max_items` and `max_bytes` of
          pixels); errors are kept here too (they are deterministic: an
          unparseable command stays unparseable);
  disk    optional, successful results only: `<dir>/<key[:2]>/<key>.png`
          and a `<key>.json` sidecar (scene, shape, sha256 of the PNG).
          Each file is written to a temp file and `os.replace`d, and the
          sidecar last, so a crash leaves either no entry or a whole one.
          An unreadable or inconsistent entry is a miss (logged), then
          overwritten.
Thread-safe: the memory level is guarded by a lock; disk writes of one key
race harmlessly (same bytes, atomic replace).
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
import pathlib
import threading
from collections.abc import Sequence
from typing import Optional, Union

from auditdm_jax import atomic_io
from auditdm_jax.imaging import base

Picture = base.Picture
ImageResult = base.ImageResult
PathLike = Union[str, os.PathLike]

_FORMAT = 1


class CachedBackend(base.ImageBackend):
  """Wraps `inner`; same interface, same results, fewer inner calls."""

  def __init__(self, inner: base.ImageBackend,
               cache_dir: Optional[PathLike] = None, max_items: int = 1024,
               max_bytes: int = 1 << 30):
    """Builds the cache.

    Args:
      inner: the backend doing the work.
      cache_dir: directory of the disk level (created), or None for memory
        only.
      max_items: most results kept in memory (0 turns the memory level off).
      max_bytes: most pixel bytes kept in memory (a 1024x1024 picture is
        3 MiB).
    """
    if not isinstance(inner, base.ImageBackend):
      raise ValueError(f"CachedBackend wraps an ImageBackend, got "
                       f"{type(inner).__name__}")
    if max_items < 0 or max_bytes < 0:
      raise ValueError(f"max_items and max_bytes must be >= 0, got "
                       f"{max_items}, {max_bytes}")
    self.inner = inner
    self.name = inner.name
    self.max_items, self.max_bytes = int(max_items), int(max_bytes)
    self.cache_dir = None if cache_dir is None else pathlib.Path(cache_dir)
    if self.cache_dir is not None:
      self.cache_dir.mkdir(parents=True, exist_ok=True)
    self._mem: collections.OrderedDict[str, ImageResult] = (
        collections.OrderedDict())
    self._mem_bytes = 0
    self._lock = threading.Lock()
    self.hits = self.misses = 0      # Items served / items computed.
    self.disk_hits = self.corrupt = 0

  @property
  def cache_id(self) -> str:
    return self.inner.cache_id

  def stats(self) -> dict[str, int]:
    return {"hits": self.hits, "misses": self.misses,
            "disk_hits": self.disk_hits, "corrupt": self.corrupt,
            "memory_items": len(self._mem)}

  def key(self, op: str, seed: int, text: str,
          picture: Optional[Picture] = None) -> str:
    """The cache key of one item (hex sha256)."""
    return self._key(self.inner.cache_id, op, seed, text, picture)

  @staticmethod
  def _key(cache_id: str, op: str, seed: int, text: str,
           picture: Optional[Picture]) -> str:
    parts = [_FORMAT, cache_id, op, seed, text,
             None if picture is None else picture.content_hash()]
    return hashlib.sha256(json.dumps(parts).encode("utf-8")).hexdigest()

  # -- memory ------------------------------------------------------------------

  @staticmethod
  def _nbytes(r: ImageResult) -> int:
    return r.picture.pixels.nbytes if r.ok else 0

  def _mem_get(self, key: str) -> Optional[ImageResult]:
    with self._lock:
      r = self._mem.get(key)
      if r is not None:
        self._mem.move_to_end(key)
      return r

  def _mem_put(self, key: str, r: ImageResult) -> None:
    if self.max_items == 0 or self._nbytes(r) > self.max_bytes:
      return
    with self._lock:
      old = self._mem.pop(key, None)
      if old is not None:
        self._mem_bytes -= self._nbytes(old)
      self._mem[key] = r
      self._mem_bytes += self._nbytes(r)
      while len(self._mem) > self.max_items or self._mem_bytes > self.max_bytes:
        _, gone = self._mem.popitem(last=False)
        self._mem_bytes -= self._nbytes(gone)

  # -- disk --------------------------------------------------------------------

  def _paths(self, key: str) -> tuple[pathlib.Path, pathlib.Path]:
    d = self.cache_dir / key[:2]
    return d / f"{key}.png", d / f"{key}.json"

  def _disk_get(self, key: str) -> Optional[ImageResult]:
    png_path, meta_path = self._paths(key)
    if not meta_path.exists():  # The sidecar is written last: no entry yet.
      return None
    try:
      meta = json.loads(meta_path.read_text("utf-8"))
      data = png_path.read_bytes()
      if not isinstance(meta, dict) or meta.get("key") != key:
        raise ValueError("sidecar names another key")
      if hashlib.sha256(data).hexdigest() != meta.get("png_sha256"):
        raise ValueError("PNG does not match the sidecar's sha256")
      pic = Picture.from_png(data, scene=meta.get("scene"))
      if list(pic.pixels.shape) != meta.get("shape"):
        raise ValueError(f"PNG shape {list(pic.pixels.shape)} is not the "
                         f"sidecar's {meta.get('shape')}")
    except (OSError, ValueError, TypeError) as e:
      with self._lock:
        self.corrupt += 1
      logging.warning("image cache: corrupt entry %s (%s: %s); treating it "
                      "as a miss", meta_path, type(e).__name__, e)
      return None
    return ImageResult(pic)

  def _disk_put(self, key: str, r: ImageResult, op: str, text: str) -> None:
    png_path, meta_path = self._paths(key)
    data = r.picture.to_png()
    meta = {"format": _FORMAT, "key": key, "backend": self.inner.cache_id,
            "op": op, "text": text, "scene": r.picture.scene,
            "shape": list(r.picture.pixels.shape),
            "png_sha256": hashlib.sha256(data).hexdigest()}
    try:
      png_path.parent.mkdir(parents=True, exist_ok=True)
      atomic_io.write_bytes(png_path, data, durable=True)
      atomic_io.write_bytes(
          meta_path, json.dumps(meta, sort_keys=True).encode(), durable=True)
    except OSError as e:  # A cache that cannot write is slower, not wrong.
      logging.warning("image cache: cannot write %s: %s", meta_path, e)

  # -- the interface -----------------------------------------------------------

  def _run(self, op: str, seed: int, texts: Sequence[str],
           pictures: Optional[Sequence[Picture]]) -> list[ImageResult]:
    n = len(texts)
    pics = list(pictures) if pictures is not None else [None] * n
    cache_id = self.inner.cache_id  # Once: a remote one asks its server.
    keys = [self._key(cache_id, op, seed, t, p) for t, p in zip(texts, pics)]
    out: list[Optional[ImageResult]] = [None] * n
    todo: dict[str, list[int]] = {}  # Missing key -> its item indices.
    for i, k in enumerate(keys):
      if k in todo:
        todo[k].append(i)
        continue
      r = self._mem_get(k)
      if r is None and self.cache_dir is not None:
        r = self._disk_get(k)
        if r is not None:
          with self._lock:
            self.disk_hits += 1
          self._mem_put(k, r)
      if r is None:
        todo[k] = [i]
      else:
        out[i] = r
    if todo:
      first = [idx[0] for idx in todo.values()]
      if op == "edit":
        res = self.inner.edit([pics[i] for i in first],
                              [texts[i] for i in first], seed=seed)
      else:
        res = self.inner.generate([texts[i] for i in first], seed=seed)
      if len(res) != len(first):
        raise RuntimeError(f"{self.inner!r}.{op} returned {len(res)} results "
                           f"for {len(first)} items")
      for (k, idx), r in zip(todo.items(), res):
        self._mem_put(k, r)
        if r.ok and self.cache_dir is not None:
          self._disk_put(k, r, op, texts[idx[0]])
        for i in idx:
          out[i] = r
    with self._lock:
      self.misses += len(todo)
      self.hits += n - len(todo)
    return out

  def edit(self, pictures: Sequence[Picture], instructions: Sequence[str], *,
           seed: int = 0) -> list[ImageResult]:
    base.check_edit_args(pictures, instructions)
    base.check_seed(seed)
    return self._run("edit", seed, instructions, pictures)

  def generate(self, captions: Sequence[str], *,
               seed: int = 0) -> list[ImageResult]:
    base.check_texts("captions", captions)
    base.check_seed(seed)
    return self._run("generate", seed, captions, None)

  def __repr__(self) -> str:
    return (f"CachedBackend({self.inner!r}, cache_dir={self.cache_dir}, "
            f"hits={self.hits}, misses={self.misses})")

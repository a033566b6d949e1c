"""Source images for audits: indexable `SourceItem`s.

  sources = WorldSources(1000, seed=7)        # world images + their questions
  sources[3].picture.scene                    # the scene graph (JSON)
  sources = JsonlSources("pool/sources.jsonl") # real images (see the class)

World sources are training-side scenes (never `world_tfds.is_bench_scene`, so
nothing an audit finds is a benchmark image) with one question of the world
VQA distribution each — the dataset's own Q that the (Q, I*) mode
asks about a counterfactual image. Item i is a pure function of (seed, i)
and is rendered on access, so a pool of any size costs nothing up front.
"""

from __future__ import annotations

from auditdm_jax.audit.rollout import SourceItem
from auditdm_jax.data import world_tfds
from auditdm_jax.imaging.base import Picture

NAMESPACE = "world_audit"


class WorldSources:
  """`n` world source items; item i depends only on (seed, i)."""

  def __init__(self, n: int, seed: int = 0, *, namespace: str = NAMESPACE):
    if n < 1:
      raise ValueError(f"a source pool needs n >= 1, got {n}")
    self.n, self.seed, self.namespace = int(n), int(seed), namespace

  def __len__(self) -> int:
    return self.n

  def __getitem__(self, i: int) -> SourceItem:
    i = int(i)
    if not 0 <= i < self.n:
      raise IndexError(f"source {i} out of range [0, {self.n})")
    rng = world_tfds.example_rng(self.namespace, self.seed, i)
    ex = world_tfds.sample_example(rng, held_out=False)
    return SourceItem(
        id=f"{self.namespace}/{self.seed}/{i}",
        picture=Picture(pixels=ex["image"], scene=ex["scene"].to_json()),
        question=ex["question"], answer=ex["answer"])


class JsonlSources:
  """Source items from a JSON-lines file (real images).

  Each line: {"id": str, "image": path (relative to the file's directory),
  "question": str (optional), "answer": str (optional)}. The file is read
  and checked up front: a line that is not JSON, lacks a field, names a
  missing file, or a file PIL cannot identify as an image (or one past
  PIL's decompression-bomb limit) raises naming its line, before any work
  is done. Images are decoded on access, converted to RGB the way the
  models' preprocessing does (`image_preprocessing.to_rgb_uint8`:
  grayscale / CMYK converted, transparency onto white, 16-bit scaled), and
  an image that fails to decode then (a truncated file) raises ValueError
  naming its line.
  """

  def __init__(self, path, *, limit=None):
    import json  # pylint: disable=g-import-not-at-top
    import pathlib  # pylint: disable=g-import-not-at-top
    self.path = pathlib.Path(path)
    if not self.path.is_file():
      raise FileNotFoundError(f"no source list at {self.path}")
    self.rows = []
    for n, line in enumerate(self.path.read_text().splitlines(), 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except ValueError as e:
        raise ValueError(f"{self.path}:{n}: not JSON ({e})") from None
      for key in ("id", "image"):
        if not isinstance(row.get(key), str) or not row[key]:
          raise ValueError(f"{self.path}:{n}: needs a non-empty {key!r}")
      image = self.path.parent / row["image"]
      if not image.is_file():
        raise FileNotFoundError(f"{self.path}:{n}: no image file {image}")
      _check_image_header(image, f"{self.path}:{n}")
      self.rows.append({**row, "image": image, "line": n})
      if limit and len(self.rows) >= limit:
        break
    if not self.rows:
      raise ValueError(f"{self.path} lists no sources")

  def __len__(self) -> int:
    return len(self.rows)

  def __getitem__(self, i: int) -> SourceItem:
    from PIL import Image  # pylint: disable=g-import-not-at-top
    from auditdm_jax.data import image_preprocessing  # pylint: disable=g-import-not-at-top
    row = self.rows[int(i)]
    try:
      with Image.open(row["image"]) as im:
        pixels = image_preprocessing.to_rgb_uint8(im)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
      raise ValueError(f"{self.path}:{row['line']}: image {row['image']} "
                       f"cannot be decoded: {type(e).__name__}: {e}") from None
    return SourceItem(id=row["id"], picture=Picture(pixels=pixels),
                      question=row.get("question"), answer=row.get("answer"))


def _check_image_header(path, where: str) -> None:
  """Raises ValueError unless PIL identifies `path` as an image of a size it
  accepts (reads the header only)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(path) as im:
      w, h = im.size
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    # UnidentifiedImageError is an OSError; DecompressionBombError is
    # raised by open() for images past 2x Image.MAX_IMAGE_PIXELS.
    raise ValueError(f"{where}: {path} is not a readable image: "
                     f"{type(e).__name__}: {e}") from None
  if w < 1 or h < 1:
    raise ValueError(f"{where}: {path} is an empty image ({w}x{h})")

"""TFDS builder `real_bench` (array_record, no TensorFlow) and grain readers.

  src = formats.make_source("vlmeval_tsv", path="/data/MMBench_DEV_EN_V11.tsv")
  build("mmbench_v11", "dev", src, "/data/tfds")      # {split: tfds source}
  ds = bench_source("/data/tfds", "mmbench_v11", "dev")  # grain.MapDataset
  ds[0]["question"], ds[0]["options"], ds[0]["answer_letter"]
  exs = load_examples("/data/tfds", "mmbench_v11", "dev")  # [BenchExample]
  scorers.score(exs[0].metric, predictions, exs)        # auditdm_jax.eval

Layout: ONE builder for all 16 benchmarks, ONE config per (benchmark,
split), named "<benchmark>-<split>", holding one tfds split named <split>:

  <data_dir>/real_bench/<benchmark>-<split>/1.0.0/
      dataset_info.json  features.json  metadata.json
      real_bench-<split>.array_record-00000-of-00001

Every benchmark shares the feature dict below (the common schema of
`schema.BenchExample`), so one reader serves all of them; a config per split
(rather than a config per benchmark with all its splits) lets a split be
added later without rebuilding the others, and RefCOCO's val / testA / testB
come from one refs file read three times.

Features (tfds numpy records; `decode_record` turns them into python):

  id benchmark metric question hint answer_letter category l2_category
  group                      Text
  image                      bytes: the encoded PNG / JPEG
  extra_images               Sequence(bytes)
  answers options            Sequence(Text)
  bbox                       float32[0] or float32[4] (y0, x0, y1, x1)

Images are stored as the released bytes (a plain bytes feature, not
tfds.features.Image): benchmarks mix grayscale, RGBA and RGB files, which an
Image feature of fixed channels would refuse or alter. `decode_record(...,
decode_images=True)` decodes them to uint8 RGB the way
`image_preprocessing.to_rgb_uint8` (and transformers) do.

metadata.json records the benchmark, its title, task, metric and paper
table, the split, the source's `describe()` (format, files and their sizes)
and the rows the format skipped by design ("skipped_rows").

Atomic builds: the dataset is prepared in a staging folder inside data_dir
and renamed into place only when complete, so a bad row (BenchDataError,
naming the file and the row) leaves nothing behind. `build` is idempotent: a
prepared split is only opened, and one prepared from a different source
(other files, other sizes) is an error unless `overwrite=True`.

  python -m auditdm_jax.data.bench --data_dir DIR --benchmark mmbench_v11 \
      --split dev --format vlmeval_tsv --source '{"path": "MMBench.tsv"}'
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from typing import Any, Optional, Union

import grain
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from auditdm_jax.data import image_preprocessing
from auditdm_jax.data.bench import formats
from auditdm_jax.data.bench import schema
from auditdm_jax.data.bench.schema import BenchDataError, BenchExample

NAME = "real_bench"
VERSION = "1.0.0"
PathLike = Union[str, os.PathLike]
_SPLIT_RE = re.compile(r"^\w+$")  # tfds split names (no "-": it joins names).

_TEXT_FIELDS = ("id", "benchmark", "metric", "question", "hint",
                "answer_letter", "category", "l2_category", "group")


def config_name(benchmark: str, split: str) -> str:
  return f"{benchmark}-{split}"


def _check_split(split: str) -> None:
  if not isinstance(split, str) or not _SPLIT_RE.match(split):
    raise ValueError(f"split must be [A-Za-z0-9_]+, got {split!r}")


@dataclasses.dataclass(eq=False, kw_only=True)
class RealBenchConfig(tfds.core.BuilderConfig):
  """One (benchmark, split) read from `source`."""
  benchmark: str = ""
  split: str = ""
  source: Optional[formats.Source] = None

  def __post_init__(self):
    schema.get_benchmark(self.benchmark)
    _check_split(self.split)
    if not isinstance(self.source, formats.Source):
      raise TypeError("source must be a formats.Source, got "
                      f"{type(self.source).__name__}")

  def settings(self) -> dict[str, Any]:
    spec = schema.BENCHMARKS[self.benchmark]
    return {"benchmark": spec.name, "title": spec.title, "task": spec.task,
            "metric": spec.metric, "paper_table": spec.paper_table,
            "split": self.split, "source": self.source.describe()}


def features() -> tfds.features.FeaturesDict:
  """The common schema as TFDS features (see the module docstring)."""
  text = tfds.features.Text
  blob = lambda: tfds.features.Tensor(shape=(), dtype=np.object_)
  return tfds.features.FeaturesDict({
      **{k: text() for k in _TEXT_FIELDS},
      "image": blob(),
      "extra_images": tfds.features.Sequence(blob()),
      "answers": tfds.features.Sequence(text()),
      "options": tfds.features.Sequence(text()),
      "bbox": tfds.features.Tensor(shape=(None,), dtype=np.float32),
  })


def to_record(ex: BenchExample) -> dict[str, Any]:
  """A BenchExample -> the feature dict the writer encodes."""
  rec = {k: getattr(ex, k) for k in _TEXT_FIELDS}
  rec.update(image=ex.image, extra_images=list(ex.extra_images),
             answers=list(ex.answers), options=list(ex.options),
             bbox=np.asarray(ex.bbox if ex.bbox is not None else (),
                             np.float32))
  return rec


class RealBench(tfds.core.GeneratorBasedBuilder):
  """real_bench: the paper's 16 real benchmarks in one schema."""

  VERSION = tfds.core.Version(VERSION)
  RELEASE_NOTES = {str(VERSION): "First release."}
  # Configs are made per build (`make_config`): sources are local files.
  BUILDER_CONFIGS = []

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="AuditDM's 16 real benchmarks, read from their released "
                    "formats into one schema (auditdm_jax.data.bench).",
        features=features(), disable_shuffling=True,
        metadata=tfds.core.MetadataDict(self.builder_config.settings()))

  def _split_generators(self, dl_manager):
    del dl_manager  # Local files only.
    return {self.builder_config.split: self._generate_examples()}

  def _generate_examples(self) -> Iterator[tuple[int, dict[str, Any]]]:
    cfg = self.builder_config
    stats = {"skipped": 0}
    seen: dict[str, int] = {}
    for i, ex in enumerate(cfg.source.examples(cfg.benchmark, stats)):
      if ex.id in seen:
        raise BenchDataError(
            f"{', '.join(cfg.source.files())}: duplicate id {ex.id!r} "
            f"(examples {seen[ex.id]} and {i})")
      seen[ex.id] = i
      yield i, to_record(ex)
    if not seen:
      raise BenchDataError(f"{', '.join(cfg.source.files())}: no examples "
                           f"for {cfg.benchmark}/{cfg.split}")
    # Written with the rest of the info once generation has finished.
    self.info.metadata["skipped_rows"] = stats["skipped"]


def make_config(benchmark: str, split: str, source: formats.Source
                ) -> RealBenchConfig:
  return RealBenchConfig(name=config_name(benchmark, split), version=VERSION,
                         benchmark=benchmark, split=split, source=source,
                         description=f"{benchmark} {split}")


def _jsonable(x: Any) -> Any:
  return json.loads(json.dumps(x))


def build(benchmark: str, split: str, source: formats.Source,
          data_dir: PathLike, *, overwrite: bool = False) -> dict[str, Any]:
  """Prepares one benchmark split as array_record; returns its data source.

  Args:
    benchmark: a BENCHMARKS key.
    split: the split's name (e.g. "dev", "val", "testA").
    source: a `formats` source holding the split.
    data_dir: TFDS data dir.
    overwrite: replace a split prepared from a different source.

  Returns:
    {split: tfds data source} (random access, tfds numpy records).

  Raises:
    ValueError: unknown benchmark, bad split name, or the split was
      prepared from another source and overwrite is False.
    BenchDataError: bad input (the message names the file and row); nothing
      is left in data_dir.
  """
  cfg = make_config(benchmark, split, source)
  data_dir = os.fspath(data_dir)
  final = os.path.join(data_dir, NAME, cfg.name, VERSION)
  want = _jsonable(cfg.settings()["source"])
  if os.path.isfile(os.path.join(final, "dataset_info.json")):
    have = _read_metadata(final).get("source")
    if have == want:
      return {split: data_source(final, benchmark, split)}
    if not overwrite:
      raise ValueError(
          f"{final} was prepared from another source:\n  {have}\nnot\n  "
          f"{want}\n(pass overwrite=True to rebuild it)")
  os.makedirs(data_dir, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=f".{NAME}-staging-", dir=data_dir)
  try:
    builder = RealBench(config=cfg, data_dir=staging,
                        file_format="array_record")
    builder.download_and_prepare(
        file_format="array_record",
        download_dir=os.path.join(staging, "downloads"))
    os.makedirs(os.path.dirname(final), exist_ok=True)
    if os.path.exists(final):  # overwrite=True (checked above).
      shutil.rmtree(final)
    # One rename: readers see either no dataset or the complete one.
    try:
      os.rename(os.path.join(staging, NAME, cfg.name, VERSION), final)
    except OSError:
      if not os.path.isfile(os.path.join(final, "dataset_info.json")):
        raise
      # Another process prepared the same split meanwhile; keep its copy.
  finally:
    shutil.rmtree(staging, ignore_errors=True)
    _remove_empty_dirs(os.path.join(data_dir, NAME), data_dir)
  return {split: data_source(final, benchmark, split)}


def _remove_empty_dirs(path: str, stop: str) -> None:
  """Removes `path` and its parents up to (not including) `stop` while empty
  (a failed first build leaves no empty real_bench/ behind)."""
  path, stop = os.path.abspath(path), os.path.abspath(stop)
  while path.startswith(stop + os.sep) and os.path.isdir(path):
    try:
      os.rmdir(path)
    except OSError:
      return
    path = os.path.dirname(path)


def _read_metadata(path: str) -> dict[str, Any]:
  try:
    with open(os.path.join(path, "metadata.json")) as f:
      return json.load(f)
  except FileNotFoundError:
    return {}


def dataset_dir(data_dir: PathLike, benchmark: Optional[str] = None,
                split: Optional[str] = None) -> str:
  """The prepared directory of (benchmark, split) under a TFDS data dir.

  `data_dir` may also be that directory itself (holding dataset_info.json).

  Raises:
    FileNotFoundError: not prepared.
  """
  root = os.fspath(data_dir)
  if os.path.isfile(os.path.join(root, "dataset_info.json")):
    return root
  if benchmark is None or split is None:
    raise ValueError("name the benchmark and split (or pass the prepared "
                     "directory itself)")
  path = os.path.join(root, NAME, config_name(benchmark, split), VERSION)
  if not os.path.isfile(os.path.join(path, "dataset_info.json")):
    prepared = sorted(os.listdir(os.path.join(root, NAME))) if os.path.isdir(
        os.path.join(root, NAME)) else []
    raise FileNotFoundError(f"{benchmark}/{split} is not prepared in {root} "
                            f"(prepared: {prepared}); run build() first")
  return path


def data_source(data_dir: PathLike, benchmark: Optional[str] = None,
                split: Optional[str] = None):
  """The tfds data source of a prepared split (see `dataset_dir`)."""
  path = dataset_dir(data_dir, benchmark, split)
  builder = tfds.builder_from_directory(path)
  if split is None:
    (split,) = builder.info.splits.keys()
  return builder.as_data_source(split)


def metadata(data_dir: PathLike, benchmark: Optional[str] = None,
             split: Optional[str] = None) -> dict[str, Any]:
  """The split's metadata.json (benchmark, metric, source, skipped_rows)."""
  return _read_metadata(dataset_dir(data_dir, benchmark, split))


def _str(v: Any) -> str:
  return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def decode_image(data: bytes) -> np.ndarray:
  """Encoded image bytes -> uint8[H, W, 3] (alpha composited onto white, as
  `image_preprocessing.to_rgb_uint8` and transformers do)."""
  with Image.open(io.BytesIO(data)) as im:
    return image_preprocessing.to_rgb_uint8(im)


def decode_record(record: Mapping[str, Any], *, decode_images: bool = False
                  ) -> dict[str, Any]:
  """A tfds record -> python types (a grain map function).

  Returns:
    The BenchExample fields: str fields, tuples for answers / options /
    extra_images, bbox a 4-tuple or None, image the encoded bytes (or
    uint8[H, W, 3] with decode_images; extra_images likewise), plus "metric".
  """
  out = {k: _str(record[k]) for k in _TEXT_FIELDS}
  out["answers"] = tuple(_str(a) for a in record["answers"])
  out["options"] = tuple(_str(o) for o in record["options"])
  images = [bytes(record["image"])] + [bytes(b) for b in
                                       record["extra_images"]]
  if decode_images:
    images = [decode_image(b) for b in images]
  out["image"], out["extra_images"] = images[0], tuple(images[1:])
  box = np.asarray(record["bbox"], np.float32)
  out["bbox"] = tuple(float(v) for v in box) if box.size else None
  return out


def bench_source(data_dir: PathLike, benchmark: Optional[str] = None,
                 split: Optional[str] = None, *, decode_images: bool = False
                 ) -> grain.MapDataset:
  """A grain MapDataset over a prepared split, yielding `decode_record`s.

  Random access and a length; `.batch` needs the ragged fields dropped or a
  batch_fn, as with the world sources.
  """
  return grain.MapDataset.source(
      data_source(data_dir, benchmark, split)).map(
          functools.partial(decode_record, decode_images=decode_images))


def load_examples(data_dir: PathLike, benchmark: Optional[str] = None,
                  split: Optional[str] = None) -> list[BenchExample]:
  """Every example of a prepared split as BenchExample (for the scorers)."""
  src = data_source(data_dir, benchmark, split)
  return [BenchExample.from_record(decode_record(src[i]))
          for i in range(len(src))]

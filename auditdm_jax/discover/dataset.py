"""The harvested-failures TFDS dataset (array_record, no TensorFlow).

  write_dataset(examples, "/out/failures", metadata={...})   # atomic
  ds = read_failures("/out")           # grain.MapDataset of python dicts
  ds[0]["question"], ds[0]["consensus"], ds[0]["image"]   # str, str, uint8
  ds = read_failures("/out", decode_images=False)   # images as PNG bytes

`harvest.harvest` writes it from its shard files; anything else that has
example dicts in the schema below can too. The prepared directory is FLAT
(it holds dataset_info.json itself), so a harvest's dataset lives at
`<out>/failures/` and `tfds.builder_from_directory` opens it directly.

Features (one split, "train", in harvest order; tfds numpy records, text as
bytes; `decode_record` turns a record into python):

  id                Text   "f<16 hex>": sha256 of the dedup key (unique)
  source_id         Text   the source image's id (`SourceItem.id`)
  mode              Text   "question" (Q*, I) | "image" (Q, I*) | "both"
  kind              Text   the auditor's prompt kind: question | edit |
                           caption
  auditor           Text   the auditor's name (e.g. "trained", "untrained")
  auditor_step      int64  its GRPO step (0 = untrained)
  completion        Text   the auditor's raw completion
  question          Text   the question asked
  instruction       Text   the edit command or caption ("" in question mode)
  image             Image  PNG: the image asked about (the counterfactual
                           I* in image / both modes, else the original)
  original_image    Image  PNG: the source image I
  scene             Text   the asked image's world scene JSON ("" unknown)
  target_model      Text   the target's name
  target_answer     Text   the target's answer
  reference_models  Sequence(Text)  the references' names, in order
  reference_answers Sequence(Text)  their answers, same order
  consensus         Text   the references' normalised consensus answer:
                           the pseudo-label
  target_differs    bool   the target's answer differs from the consensus
                           (always true unless harvested with keep="agreed")
  truth             Text   the world oracle's answer ("" where unknown)
  skill             Text   the oracle's skill ("" where unknown)
  tags              Sequence(Text)  the oracle's slice tags (may be empty)

Atomic: the dataset is prepared in a staging folder next to the destination
and renamed into place only when complete, so a failure leaves nothing
half-written, and readers see either the old dataset or the new one.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Optional, Union

import grain
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from auditdm_jax import atomic_io

NAME = "audit_failures"
VERSION = "1.0.0"
DATASET_SUBDIR = "failures"   # <harvest out>/failures/ holds the dataset.
SPLIT = "train"
HARVEST_SUMMARY = "summary.json"  # harvest.SUMMARY (marks a finished run).
PathLike = Union[str, os.PathLike]

TEXT_FIELDS = ("id", "source_id", "mode", "kind", "auditor", "completion",
               "question", "instruction", "scene", "target_model",
               "target_answer", "consensus", "truth", "skill")
LIST_FIELDS = ("reference_models", "reference_answers", "tags")
IMAGE_FIELDS = ("image", "original_image")
FIELDS = TEXT_FIELDS + LIST_FIELDS + IMAGE_FIELDS + ("auditor_step",
                                                     "target_differs")


def features() -> tfds.features.FeaturesDict:
  """The feature dict of the module docstring."""
  text = tfds.features.Text
  image = lambda: tfds.features.Image(shape=(None, None, 3),
                                      encoding_format="png")
  return tfds.features.FeaturesDict({
      **{k: text() for k in TEXT_FIELDS},
      **{k: tfds.features.Sequence(text()) for k in LIST_FIELDS},
      **{k: image() for k in IMAGE_FIELDS},
      "auditor_step": tfds.features.Scalar(dtype=np.int64),
      "target_differs": tfds.features.Scalar(dtype=np.bool_),
  })


def check_example(ex: Mapping[str, Any]) -> None:
  """Raises ValueError unless `ex` holds every field with the right type.

  Images are PNG bytes here (the writer stores them as they are, so what
  was harvested is what is read back, byte for byte).
  """
  missing = [k for k in FIELDS if k not in ex]
  if missing:
    raise ValueError(f"failure example {ex.get('id')!r} lacks {missing}")
  for k in TEXT_FIELDS:
    if not isinstance(ex[k], str):
      raise ValueError(f"example {ex['id']!r}: {k} must be str, got "
                       f"{type(ex[k]).__name__}")
  for k in LIST_FIELDS:
    if (isinstance(ex[k], (str, bytes)) or
        not all(isinstance(x, str) for x in ex[k])):
      raise ValueError(f"example {ex['id']!r}: {k} must be a list of str")
  for k in IMAGE_FIELDS:
    if not isinstance(ex[k], bytes) or not ex[k].startswith(b"\x89PNG"):
      raise ValueError(f"example {ex['id']!r}: {k} must be PNG bytes")
  if len(ex["reference_models"]) != len(ex["reference_answers"]):
    raise ValueError(f"example {ex['id']!r}: one reference answer per "
                     "reference model expected")


@dataclasses.dataclass(eq=False, repr=False, kw_only=True)
class FailuresConfig(tfds.core.BuilderConfig):
  """One dataset write: where the examples come from and its metadata.

  Attributes:
    examples: a zero-argument callable yielding example dicts (called once,
      while the dataset is prepared), so the examples stream from their
      shard files instead of sitting in memory.
    settings: JSON-able metadata stored as the dataset's metadata.json.
  """
  examples: Optional[Callable[[], Iterable[Mapping[str, Any]]]] = None
  settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __repr__(self) -> str:
    # tfds logs the config; the settings would fill a screen.
    return f"FailuresConfig(name={self.name!r}, version={self.version!r})"


class AuditFailures(tfds.core.GeneratorBasedBuilder):
  """audit_failures: failures of a target found by auditors (see above)."""

  VERSION = tfds.core.Version(VERSION)
  RELEASE_NOTES = {str(VERSION): "First release."}
  BUILDER_CONFIGS = []  # One config per write (`write_dataset`).

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="Candidate failures of a target MLLM harvested by "
                    "AuditDM auditors, with full provenance "
                    "(auditdm_jax.discover).",
        features=features(), disable_shuffling=True,
        metadata=tfds.core.MetadataDict(dict(self.builder_config.settings)))

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {SPLIT: self._generate_examples()}

  def _generate_examples(self) -> Iterator[tuple[int, dict[str, Any]]]:
    seen: set[str] = set()
    for i, ex in enumerate(self.builder_config.examples()):
      check_example(ex)
      if ex["id"] in seen:
        raise ValueError(f"duplicate example id {ex['id']!r}")
      seen.add(ex["id"])
      yield i, {k: (list(ex[k]) if k in LIST_FIELDS else ex[k])
                for k in FIELDS}


def write_dataset(examples: Callable[[], Iterable[Mapping[str, Any]]],
                  dest: PathLike, *, metadata: Optional[Mapping[str, Any]]
                  = None) -> str:
  """Writes the examples as a prepared TFDS directory at `dest`, atomically.

  Args:
    examples: a zero-argument callable yielding example dicts in order
      (schema: module docstring; images as PNG bytes).
    dest: the directory to create or replace (it will hold
      dataset_info.json).
    metadata: JSON-able settings stored in metadata.json.

  Returns:
    `dest` as a str.

  Raises:
    ValueError: a bad example, or none at all (nothing is written).
  """
  dest = os.path.abspath(os.fspath(dest))
  parent = os.path.dirname(dest)
  os.makedirs(parent, exist_ok=True)
  meta = json.loads(json.dumps(dict(metadata or {})))  # JSON-able check.
  cfg = FailuresConfig(name="harvest", version=VERSION,
                       description="harvested failures", examples=examples,
                       settings=meta)
  staging = tempfile.mkdtemp(prefix=".failures-staging-", dir=parent)
  old = None
  try:
    builder = AuditFailures(config=cfg, data_dir=staging,
                            file_format="array_record")
    try:
      builder.download_and_prepare(
          file_format="array_record",
          download_dir=os.path.join(staging, "downloads"))
    except AssertionError as e:
      # TFDS cannot write an empty split; say so in our terms.
      if "No examples were yielded" in str(e):
        raise ValueError(f"no examples to write to {dest}") from None
      raise
    built = os.path.join(staging, NAME, cfg.name, VERSION)
    if os.path.exists(dest):
      # Move the old one aside first: a rename cannot replace a non-empty
      # directory. Readers see old, briefly nothing, then new.
      old = tempfile.mkdtemp(prefix=".failures-old-", dir=parent)
      os.rename(dest, os.path.join(old, "d"))
    os.rename(built, dest)
    atomic_io.fsync_dir(parent)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
    if old is not None:
      shutil.rmtree(old, ignore_errors=True)
  return dest


def dataset_dir(path: PathLike) -> str:
  """The prepared dataset directory of `path` (a harvest out dir or the
  dataset directory itself).

  Raises:
    FileNotFoundError: no prepared dataset there.
  """
  root = os.fspath(path)
  for cand in (root, os.path.join(root, DATASET_SUBDIR)):
    if os.path.isfile(os.path.join(cand, "dataset_info.json")):
      return cand
  raise FileNotFoundError(
      f"no harvested failures in {root} (expected {root}/{DATASET_SUBDIR}/"
      "dataset_info.json; run `python -m auditdm_jax.discover.harvest` "
      "first)")


def data_source(path: PathLike, *, decode_images: bool = True):
  """The tfds data source of a harvest (random access, tfds records).

  With decode_images=False the two images stay PNG bytes (no decoding).
  """
  builder = tfds.builder_from_directory(dataset_dir(path))
  decoders = None
  if not decode_images:
    decoders = {k: tfds.decode.SkipDecoding() for k in IMAGE_FIELDS}
  return builder.as_data_source(SPLIT, decoders=decoders)


def metadata(path: PathLike) -> dict[str, Any]:
  """The dataset's metadata.json (the harvest's settings and fingerprint)."""
  try:
    with open(os.path.join(dataset_dir(path), "metadata.json")) as f:
      return json.load(f)
  except FileNotFoundError:
    return {}


def _str(v: Any) -> str:
  return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def decode_record(record: Mapping[str, Any], *, decode_images: bool = True
                  ) -> dict[str, Any]:
  """A tfds record -> python types (a grain map function).

  Returns:
    The schema's fields: str for text, tuple[str, ...] for the sequences,
    int auditor_step, bool target_differs, and images as uint8[H, W, 3]
    (or PNG bytes when the source was opened with decode_images=False).
  """
  out: dict[str, Any] = {k: _str(record[k]) for k in TEXT_FIELDS}
  out.update({k: tuple(_str(x) for x in record[k]) for k in LIST_FIELDS})
  out["auditor_step"] = int(record["auditor_step"])
  out["target_differs"] = bool(record["target_differs"])
  for k in IMAGE_FIELDS:
    v = record[k]
    out[k] = (np.asarray(v, np.uint8) if decode_images
              else bytes(np.asarray(v).item() if isinstance(v, np.ndarray)
                         else v))
  return out


def read_failures(path: PathLike, *, decode_images: bool = True
                  ) -> grain.MapDataset:
  """A grain MapDataset over a harvest's failures, yielding `decode_record`
  dicts, in harvest order.

  Args:
    path: the harvest's out dir (or its `failures/` dataset directory). A
      finished harvest that kept nothing gives an empty dataset.
    decode_images: False keeps `image` / `original_image` as PNG bytes
      (cheap when only the text is needed, e.g. for the taxonomy).

  Raises:
    FileNotFoundError: nothing harvested there.
  """
  if _harvested_nothing(path):
    return grain.MapDataset.source([])
  return grain.MapDataset.source(
      data_source(path, decode_images=decode_images)).map(
          functools.partial(decode_record, decode_images=decode_images))


def _harvested_nothing(path: PathLike) -> bool:
  """A finished harvest that kept nothing has a summary and no dataset
  (TFDS cannot write an empty split)."""
  root = os.fspath(path)
  summary = os.path.join(root, HARVEST_SUMMARY)
  if (os.path.isdir(os.path.join(root, DATASET_SUBDIR)) or
      not os.path.isfile(summary)):
    return False
  with open(summary, encoding="utf-8") as f:
    return json.load(f).get("num_examples") == 0


def decode_png(data: bytes) -> np.ndarray:
  """PNG bytes -> uint8[H, W, 3]."""
  with Image.open(io.BytesIO(data)) as im:
    return np.asarray(im.convert("RGB"), np.uint8)

"""TFDS datasets of the scene world, written as array_record (no TensorFlow).

  sources = build(WorldVqa, "/data/tfds", num_examples=10_000,
                  slice_weights={"skill:colour&answer:purple": 0.05})
  sources["train"][0]        # tfds record: image uint8[64, 64, 3], bytes text
  ds = world_source("/data/tfds", "train")   # grain.MapDataset of python dicts
  ds[0]["question"], ds[0]["answer"]         # str, str

  python -m auditdm_jax.data.world_tfds --data_dir DIR [--bench] \
      [--train_examples N] [--slice_weights JSON]

Datasets (DESIGN.md §3 Data, §4):

  world_vqa/<config>    split "train": `questions.sample_example` draws with the
                        config's seed, skill weights and slice weights (a slice
                        weight below 1 under-represents a slice: a planted gap).
  world_bench/<config>  16 held-out splits of `examples_per_split` (500): one
                        per skill, plus `colour_purple` and `count_shape_ge5`,
                        the slices behind DESIGN §4's planted gaps.
                        BENCH_SPLITS maps each split to the tag conjunction
                        its examples all carry; the same strings work as
                        `slice_weights` keys, to plant the gap it measures.

Every record has the features

  image     Image uint8[S, S, 3], PNG (S = image_size, 64 by default)
  question  Text      answer  Text      skill  Text
  tags      Sequence(Text): the slice tags of `questions.sample_question`
  scene     Text: `Scene.to_json()`; `render.render(Scene.from_json(s))` is
            the image, pixel for pixel
  id        Text: "<dataset>/<config>/<split>/<index>"

Determinism and held-out scenes: example i of a split is a pure function of
(dataset, split, seed, i, config): its rng is `example_rng(namespace, seed, i)`.
Records are stored in generation order (shuffling disabled). The scene space is
cut in two by a hash of the scene JSON (`is_bench_scene`, 1/4 of it held out):
world_bench draws only held-out scenes and world_vqa never does, so no
benchmark image (hence no scene + question pair) is ever a training image,
whatever seeds and weights either side uses. Train code that samples the world
itself should reject `is_bench_scene` scenes too.

Reading needs no builder class: `world_source` / `data_source` open the
prepared directory with `tfds.builder_from_directory`. Config names are derived
from the settings (`WorldVqa.make_config`), so two settings never share a
directory; the settings are stored in the dataset's `metadata.json`.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import os
import random
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Optional, Union

import grain
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from auditdm_jax.world import _rng
from auditdm_jax.world import questions
from auditdm_jax.world import render as render_lib
from auditdm_jax.world import scene as scene_lib

VERSION = "1.0.0"
BENCH_SEED = 20_251_127        # The benchmark's fixed seed.
BENCH_EXAMPLES = 500           # Per split.
HELD_OUT_MODULUS = 4           # 1/4 of the scene space is benchmark-only.
_MAX_SCENE_TRIES = 10_000      # sample_example calls per held-out example.

# Split name -> the "&"-joined tags every example of the split carries.
BENCH_SPLITS: Mapping[str, str] = {
    **{s: f"skill:{s}" for s in questions.SKILLS},
    # "what colour is the circle?" -> "purple".
    "colour_purple": "skill:colour&answer:purple",
    # "how many squares are there?" -> 5..8.
    "count_shape_ge5": "skill:count_attr&by:shape&count>=5",
}
assert len(BENCH_SPLITS) == 16
# Scenes with fewer objects cannot hold the slice, so skipping them leaves the
# split's distribution exactly as it is (sample_example draws the object count
# uniformly, and rejection sampling conditions on the slice either way) and
# halves the scenes drawn per example.
_BENCH_MIN_OBJECTS = {"count_shape_ge5": 5}

PathLike = Union[str, os.PathLike]

# `python -m auditdm_jax.data.world_tfds` runs this file as __main__; its
# classes must not take the registry names from the package module's ones.
_SKIP_REGISTRATION = __name__ == "__main__"


# --- examples -----------------------------------------------------------------


def example_rng(namespace: str, seed: int, index: int) -> random.Random:
  """The rng of example `index`: sha256 of (namespace, seed, index)."""
  key = f"{namespace}:{int(seed)}:{int(index)}".encode()
  return random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))


def is_bench_scene(scene: scene_lib.Scene) -> bool:
  """Whether `scene` belongs to the benchmark's share of the scene space."""
  h = hashlib.sha256(scene.to_json().encode()).digest()
  return int.from_bytes(h[:8], "big") % HELD_OUT_MODULUS == 0


def sample_example(rng: random.Random, *, held_out: bool,
                   **kwargs) -> dict[str, Any]:
  """`questions.sample_example(rng, **kwargs)` on the held-out side or not.

  Draws examples until the scene's `is_bench_scene` equals `held_out`, then
  renders it.

  Returns:
    {"question", "answer", "skill", "tags", "scene": Scene,
     "image": uint8[S, S, 3]}.
  """
  for _ in range(_MAX_SCENE_TRIES):
    ex = questions.sample_example(rng, with_image=False, **kwargs)
    if is_bench_scene(ex["scene"]) == held_out:
      ex["image"] = render_lib.render(ex["scene"])
      return ex
  raise RuntimeError(f"no {'held-out' if held_out else 'training'} scene in "
                     f"{_MAX_SCENE_TRIES} examples ({kwargs})")


def _slice_skill(conjunction: str) -> tuple[str, tuple[str, ...]]:
  """'skill:colour&answer:purple' -> ('colour', (that conjunction,))."""
  skills = [t[len("skill:"):] for t in conjunction.split("&")
            if t.startswith("skill:")]
  if len(skills) != 1:
    raise ValueError(f"a benchmark slice names one skill: {conjunction!r}")
  return skills[0], (conjunction,)


def encode_png(image: np.ndarray) -> bytes:
  """uint8[H, W, 3] -> PNG bytes (lossless; what the Image feature stores)."""
  buf = io.BytesIO()
  Image.fromarray(np.asarray(image, np.uint8), "RGB").save(buf, format="png")
  return buf.getvalue()


def _record(ex: Mapping[str, Any], example_id: str) -> dict[str, Any]:
  return {"image": encode_png(ex["image"]), "question": ex["question"],
          "answer": ex["answer"], "skill": ex["skill"],
          "tags": list(ex["tags"]), "scene": ex["scene"].to_json(),
          "id": example_id}


# --- configs ------------------------------------------------------------------


def _check_world(grid: int, image_size: int) -> None:
  try:
    scene_lib.Scene((), grid=grid, image_size=image_size)
  except scene_lib.SceneError as e:
    raise ValueError(f"bad world size: {e}") from None


def _settings_name(prefix: str, defaults: Mapping[str, Any],
                   settings: Mapping[str, Any]) -> str:
  """'default' for default settings, else prefix + a hash of the others."""
  changed = {k: v for k, v in settings.items() if v != defaults[k]}
  if not changed:
    return "default"
  digest = hashlib.sha256(json.dumps(changed, sort_keys=True).encode())
  return f"{prefix}_{digest.hexdigest()[:8]}"


@dataclasses.dataclass(eq=False, kw_only=True)
class WorldVqaConfig(tfds.core.BuilderConfig):
  """Settings of a world_vqa training set.

  Attributes:
    num_examples: examples in "train".
    seed: example i is drawn with `example_rng("world_vqa", seed, i)`.
    skill_weights: {skill: weight} (missing: 1); None = uniform over SKILLS.
    slice_weights: `sample_example`'s {tag conjunction: weight}, e.g.
      {"skill:colour&answer:purple": 0.05} keeps 5% of those examples, 0
      removes the slice.
    grid: cells per side.
    image_size: pixels per side.
  """
  num_examples: int = 10_000
  seed: int = 0
  skill_weights: Optional[Mapping[str, float]] = None
  slice_weights: Optional[Mapping[str, float]] = None
  grid: int = scene_lib.DEFAULT_GRID
  image_size: int = scene_lib.DEFAULT_IMAGE_SIZE

  def __post_init__(self):
    if self.num_examples < 1:
      raise ValueError(f"num_examples must be >= 1, got {self.num_examples}")
    _rng.weights_for(questions.SKILLS, self.skill_weights)  # Validates.
    if any(w < 0 for w in (self.slice_weights or {}).values()):
      raise ValueError(f"slice weights must be >= 0: {self.slice_weights}")
    _check_world(self.grid, self.image_size)

  def settings(self) -> dict[str, Any]:
    """JSON-able settings (stored as the dataset's metadata)."""
    return {"num_examples": self.num_examples, "seed": self.seed,
            "skill_weights": _sorted_or_none(self.skill_weights),
            "slice_weights": _sorted_or_none(self.slice_weights),
            "grid": self.grid, "image_size": self.image_size}


@dataclasses.dataclass(eq=False, kw_only=True)
class WorldBenchConfig(tfds.core.BuilderConfig):
  """Settings of the world benchmark (keep the defaults for reported numbers).

  Attributes:
    examples_per_split: examples in each of the 16 splits.
    seed: split s, example i is drawn with
      `example_rng("world_bench/" + s, seed, i)`.
    grid: cells per side.
    image_size: pixels per side.
  """
  examples_per_split: int = BENCH_EXAMPLES
  seed: int = BENCH_SEED
  grid: int = scene_lib.DEFAULT_GRID
  image_size: int = scene_lib.DEFAULT_IMAGE_SIZE

  def __post_init__(self):
    if self.examples_per_split < 1:
      raise ValueError(
          f"examples_per_split must be >= 1, got {self.examples_per_split}")
    _check_world(self.grid, self.image_size)

  def settings(self) -> dict[str, Any]:
    return {"examples_per_split": self.examples_per_split, "seed": self.seed,
            "grid": self.grid, "image_size": self.image_size,
            "splits": dict(BENCH_SPLITS)}


def _sorted_or_none(m: Optional[Mapping[str, float]]):
  return None if m is None else {k: float(m[k]) for k in sorted(m)}


def _features(image_size: int) -> tfds.features.FeaturesDict:
  return tfds.features.FeaturesDict({
      "image": tfds.features.Image(shape=(image_size, image_size, 3),
                                   encoding_format="png"),
      "question": tfds.features.Text(),
      "answer": tfds.features.Text(),
      "skill": tfds.features.Text(),
      "tags": tfds.features.Sequence(tfds.features.Text()),
      "scene": tfds.features.Text(),
      "id": tfds.features.Text(),
  })


class _WorldBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared parts: features, metadata, `make_config`."""

  VERSION = tfds.core.Version(VERSION)
  RELEASE_NOTES = {str(VERSION): "First release."}
  _DESCRIPTION = ""
  _CONFIG_CLS = tfds.core.BuilderConfig

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    return tfds.core.DatasetInfo(
        builder=self, description=self._DESCRIPTION,
        features=_features(cfg.image_size), disable_shuffling=True,
        metadata=tfds.core.MetadataDict(cfg.settings()))

  @classmethod
  def _name_prefix(cls, cfg) -> str:
    raise NotImplementedError

  @classmethod
  def make_config(cls, **settings) -> tfds.core.BuilderConfig:
    """A config for `settings`, named after them ("default" if all default).

    Other settings give "<prefix>_<hash of the changed settings>", e.g.
    "n40_seed0_1a2b3c4d", so different settings never share a directory.
    The defaults give the class's own "default" config (tfds refuses a custom
    config named like a built-in one).

    Raises:
      ValueError: on invalid settings (see the config class).
    """
    cfg = cls._CONFIG_CLS(name="custom", version=VERSION, **settings)
    defaults = cls._CONFIG_CLS(name="custom", version=VERSION).settings()
    name = _settings_name(cls._name_prefix(cfg), defaults, cfg.settings())
    if name == "default":
      return cls.BUILDER_CONFIGS[0]
    return dataclasses.replace(cfg, name=name,
                               description=json.dumps(cfg.settings()))


class WorldVqa(_WorldBuilder, skip_registration=_SKIP_REGISTRATION):
  """world_vqa: scene-world VQA training data (see the module docstring)."""

  _DESCRIPTION = "Scene-world VQA with exact answers (auditdm_jax.world)."
  _CONFIG_CLS = WorldVqaConfig
  BUILDER_CONFIGS = [WorldVqaConfig(name="default", version=VERSION)]

  @classmethod
  def _name_prefix(cls, cfg: WorldVqaConfig) -> str:
    return f"n{cfg.num_examples}_seed{cfg.seed}"

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {"train": self._generate_examples()}

  def _generate_examples(self) -> Iterator[tuple[int, dict[str, Any]]]:
    cfg = self.builder_config
    for i in range(cfg.num_examples):
      yield i, _record(vqa_example(cfg, i),
                       f"{self.name}/{cfg.name}/train/{i}")


class WorldBench(_WorldBuilder, skip_registration=_SKIP_REGISTRATION):
  """world_bench: the 16 held-out benchmark splits (BENCH_SPLITS)."""

  _DESCRIPTION = ("Scene-world benchmark: 16 held-out splits, one per skill "
                  "plus planted-gap slices (auditdm_jax.world).")
  _CONFIG_CLS = WorldBenchConfig
  BUILDER_CONFIGS = [WorldBenchConfig(name="default", version=VERSION)]

  @classmethod
  def _name_prefix(cls, cfg: WorldBenchConfig) -> str:
    return f"n{cfg.examples_per_split}_seed{cfg.seed}"

  def _split_generators(self, dl_manager):
    del dl_manager
    return {s: self._generate_examples(s) for s in BENCH_SPLITS}

  def _generate_examples(self, split: str
                         ) -> Iterator[tuple[int, dict[str, Any]]]:
    cfg = self.builder_config
    for i in range(cfg.examples_per_split):
      yield i, _record(bench_example(cfg, split, i),
                       f"{self.name}/{cfg.name}/{split}/{i}")


def vqa_example(cfg: WorldVqaConfig, index: int) -> dict[str, Any]:
  """Example `index` of a world_vqa config, as `sample_example` returns it."""
  return sample_example(example_rng("world_vqa", cfg.seed, index),
                        held_out=False, skill_weights=cfg.skill_weights,
                        slice_weights=cfg.slice_weights, grid=cfg.grid,
                        image_size=cfg.image_size)


def bench_example(cfg: WorldBenchConfig, split: str, index: int
                  ) -> dict[str, Any]:
  """Example `index` of benchmark split `split` (as `sample_example` gives)."""
  skill, require = _slice_skill(BENCH_SPLITS[split])
  return sample_example(example_rng(f"world_bench/{split}", cfg.seed, index),
                        held_out=True, skill=skill, require=require,
                        grid=cfg.grid, image_size=cfg.image_size,
                        min_objects=_BENCH_MIN_OBJECTS.get(split, 1))


# --- building and reading -----------------------------------------------------

BUILDERS = {"world_vqa": WorldVqa, "world_bench": WorldBench}


def build(builder_cls: type[_WorldBuilder], data_dir: PathLike,
          **config) -> dict[str, Any]:
  """Prepares a world dataset (array_record) and returns its data sources.

  Idempotent: an already prepared config is only opened.

  Args:
    builder_cls: WorldVqa or WorldBench.
    data_dir: TFDS data dir; the dataset goes to
      `data_dir/<name>/<config>/<version>/`.
    **config: settings of the builder's config class (`WorldVqaConfig`:
      num_examples, seed, skill_weights, slice_weights, grid, image_size;
      `WorldBenchConfig`: examples_per_split, seed, grid, image_size).

  Returns:
    {split: tfds data source}; a source is random access (`len`, `[i]`) and
    gives tfds numpy records (image uint8[S, S, 3], text as bytes).
  """
  cfg = builder_cls.make_config(**config)
  builder = builder_cls(config=cfg, data_dir=os.fspath(data_dir),
                        file_format="array_record")
  builder.download_and_prepare(
      file_format="array_record",
      download_dir=os.path.join(os.fspath(data_dir), "downloads"))
  return {split: builder.as_data_source(split) for split in builder.info.splits}


def dataset_dir(data_dir: PathLike, dataset: Optional[str] = None,
                split: str = "train") -> str:
  """Finds a prepared dataset directory (the one holding dataset_info.json).

  Args:
    data_dir: a prepared dataset directory itself, or a TFDS data dir.
    dataset: "world_vqa" / "world_bench", optionally "/<config>" and
      "/<version>"; None picks world_bench for benchmark splits, else
      world_vqa. Without a config, "default" is used if prepared, else the
      only prepared config.
    split: used only to pick the dataset when `dataset` is None.

  Raises:
    FileNotFoundError: nothing prepared there, or several configs and none
      named.
  """
  root = os.fspath(data_dir)
  if os.path.isfile(os.path.join(root, "dataset_info.json")):
    return root
  if dataset is None:
    dataset = "world_bench" if split in BENCH_SPLITS else "world_vqa"
  parts = dataset.split("/")
  path = os.path.join(root, *parts)
  if len(parts) == 1:
    configs = sorted(c for c in _subdirs(path)
                     if _subdirs(os.path.join(path, c)))
    if "default" in configs:
      configs = ["default"]
    if len(configs) != 1:
      raise FileNotFoundError(
          f"{'no' if not configs else 'several'} prepared configs of "
          f"{dataset} in {root}: {configs}; name one as "
          f"dataset='{dataset}/<config>'")
    path = os.path.join(path, configs[0])
  if not os.path.isfile(os.path.join(path, "dataset_info.json")):
    versions = [v for v in _subdirs(path)
                if os.path.isfile(os.path.join(path, v, "dataset_info.json"))]
    if not versions:
      raise FileNotFoundError(f"no prepared dataset under {path}")
    path = os.path.join(path, max(versions, key=tfds.core.Version))
  return path


def _subdirs(path: str) -> list[str]:
  if not os.path.isdir(path):
    return []
  return [d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d))]


def data_source(data_dir: PathLike, split: str = "train", *,
                dataset: Optional[str] = None):
  """The tfds data source of a prepared split (see `dataset_dir`)."""
  builder = tfds.builder_from_directory(dataset_dir(data_dir, dataset, split))
  return builder.as_data_source(split)


def _str(v) -> str:
  return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def decode_record(record: Mapping[str, Any]) -> dict[str, Any]:
  """A tfds record -> python types (a grain map function).

  Returns:
    {"image": uint8[S, S, 3], "question", "answer", "skill", "scene", "id":
     str, "tags": tuple[str, ...]}.
  """
  out = {k: _str(record[k]) for k in ("question", "answer", "skill", "scene",
                                      "id")}
  out["tags"] = tuple(_str(t) for t in record["tags"])
  out["image"] = np.asarray(record["image"], np.uint8)
  return out


def world_source(data_dir: PathLike, split: str = "train", *,
                 dataset: Optional[str] = None) -> grain.MapDataset:
  """A grain MapDataset over a prepared split, yielding `decode_record` dicts.

  Random access and a length, so `train.data.Batcher` takes it as a source;
  `.shuffle(seed)`, `.to_iter_dataset()` work as usual. `.batch(n)` needs the
  ragged `tags` dropped first (or a `batch_fn`).

  Args:
    data_dir: a TFDS data dir (or a prepared dataset directory).
    split: "train", or a BENCH_SPLITS name.
    dataset: see `dataset_dir`.
  """
  return grain.MapDataset.source(
      data_source(data_dir, split, dataset=dataset)).map(decode_record)


# --- command line -------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Builds world_vqa (unless --train_examples 0), and world_bench (--bench)."""
  p = argparse.ArgumentParser(
      prog="python -m auditdm_jax.data.world_tfds",
      description="Prepare the scene-world TFDS datasets (array_record).")
  p.add_argument("--data_dir", required=True, help="TFDS data dir")
  p.add_argument("--bench", action="store_true",
                 help="also build world_bench (16 held-out splits)")
  p.add_argument("--train_examples", type=int, default=10_000,
                 help="world_vqa examples; 0 skips world_vqa")
  p.add_argument("--seed", type=int, default=0, help="world_vqa seed")
  p.add_argument("--slice_weights", type=json.loads, default=None,
                 help='JSON, e.g. \'{"skill:colour&answer:purple": 0.05}\'')
  p.add_argument("--skill_weights", type=json.loads, default=None,
                 help='JSON, e.g. \'{"count": 2}\'')
  p.add_argument("--bench_examples", type=int, default=BENCH_EXAMPLES,
                 help="world_bench examples per split")
  p.add_argument("--grid", type=int, default=scene_lib.DEFAULT_GRID)
  p.add_argument("--image_size", type=int,
                 default=scene_lib.DEFAULT_IMAGE_SIZE)
  args = p.parse_args(argv)
  world = {"grid": args.grid, "image_size": args.image_size}
  jobs = []
  if args.train_examples:
    jobs.append((WorldVqa, dict(num_examples=args.train_examples,
                                seed=args.seed,
                                slice_weights=args.slice_weights,
                                skill_weights=args.skill_weights, **world)))
  if args.bench:
    jobs.append((WorldBench, dict(examples_per_split=args.bench_examples,
                                  **world)))
  if not jobs:
    p.error("nothing to build: --train_examples 0 without --bench")
  for cls, settings in jobs:
    t0 = time.perf_counter()
    sources = build(cls, args.data_dir, **settings)
    dt = time.perf_counter() - t0
    cfg = cls.make_config(**settings)
    where = os.path.join(args.data_dir, cls.name, cfg.name, VERSION)
    sizes = ", ".join(f"{s}={len(src)}" for s, src in sources.items())
    print(f"{cls.name}/{cfg.name}: {sizes} in {dt:.1f} s -> {where}")
  return 0


if __name__ == "__main__":
  # Use the package module's (registered, importable) classes, not this
  # __main__ copy, so records and pickles name `auditdm_jax.data.world_tfds`.
  # pylint: disable-next=g-import-not-at-top
  from auditdm_jax.data import world_tfds as _world_tfds
  sys.exit(_world_tfds.main())

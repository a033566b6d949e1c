"""World TFDS builders (array_record, no TensorFlow) and the grain source."""

import glob
import json
import os
import subprocess
import sys

import grain
import numpy as np
import pytest
import tensorflow_datasets as tfds

from auditdm_jax.data import world_tfds as wt
from auditdm_jax.world import questions
from auditdm_jax.world import render
from auditdm_jax.world import scene as scene_lib

N_TRAIN = 40
N_BENCH = 8  # Per split.
GAP = {"skill:colour&answer:purple": 0.0}
COLOUR_ONLY = {s: 0.0 for s in questions.SKILLS if s != "colour"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("world_tfds"))


@pytest.fixture(scope="module")
def train(data_dir):
  return wt.build(wt.WorldVqa, data_dir, num_examples=N_TRAIN)


@pytest.fixture(scope="module")
def bench(data_dir):
  return wt.build(wt.WorldBench, data_dir, examples_per_split=N_BENCH)


def _no_tf():
  return "tensorflow" not in sys.modules


def test_sixteen_bench_splits(bench):
  assert len(wt.BENCH_SPLITS) == 16
  assert list(wt.BENCH_SPLITS)[:14] == list(questions.SKILLS)
  assert set(bench) == set(wt.BENCH_SPLITS)
  assert all(len(src) == N_BENCH for src in bench.values())


def test_build_writes_array_record_without_tf(data_dir, train, bench):
  del train, bench
  for name, n_files in (("world_vqa", 1), ("world_bench", 16)):
    cfg = wt.BUILDERS[name].make_config(
        **({"num_examples": N_TRAIN} if name == "world_vqa"
           else {"examples_per_split": N_BENCH}))
    d = os.path.join(data_dir, name, cfg.name, wt.VERSION)
    assert os.path.isfile(os.path.join(d, "dataset_info.json"))
    files = glob.glob(os.path.join(d, f"{name}-*.array_record-*"))
    assert len(files) == n_files
    assert not glob.glob(os.path.join(d, "*.tfrecord*"))
    # Settings are kept for provenance.
    with open(os.path.join(d, "metadata.json")) as f:
      assert json.load(f) == json.loads(json.dumps(cfg.settings()))
  assert _no_tf()


def test_records_have_the_feature_types(train):
  rec = train["train"][0]
  assert set(rec) == {"image", "question", "answer", "skill", "tags", "scene",
                      "id"}
  assert rec["image"].dtype == np.uint8 and rec["image"].shape == (64, 64, 3)
  for k in ("question", "answer", "skill", "scene", "id"):
    assert isinstance(rec[k], bytes)
  assert all(isinstance(t, bytes) for t in rec["tags"])


def test_tfds_data_source_reads_it(data_dir, train):
  cfg = wt.WorldVqa.make_config(num_examples=N_TRAIN)
  src = tfds.data_source(f"world_vqa/{cfg.name}", data_dir=data_dir,
                         split="train")
  assert len(src) == N_TRAIN
  assert src[5]["id"] == train["train"][5]["id"]


def test_records_equal_the_generator(train):
  cfg = wt.WorldVqa.make_config(num_examples=N_TRAIN)
  src = train["train"]
  for i in range(N_TRAIN):  # Stored in generation order.
    got = wt.decode_record(src[i])
    want = wt.vqa_example(cfg, i)
    assert got["id"] == f"world_vqa/{cfg.name}/train/{i}"
    assert got["question"] == want["question"]
    assert got["answer"] == want["answer"]
    assert got["skill"] == want["skill"]
    assert got["tags"] == tuple(want["tags"])
    scene = scene_lib.Scene.from_json(got["scene"])
    assert scene == want["scene"]
    np.testing.assert_array_equal(got["image"], want["image"])
    np.testing.assert_array_equal(got["image"], render.render(scene))
    # The oracle agrees with the stored answer.
    assert questions.answer(scene, got["question"]) == got["answer"]


def test_same_seed_same_examples_other_seed_others(tmp_path):
  a = wt.build(wt.WorldVqa, tmp_path / "a", num_examples=10, seed=3)["train"]
  b = wt.build(wt.WorldVqa, tmp_path / "b", num_examples=10, seed=3)["train"]
  c = wt.build(wt.WorldVqa, tmp_path / "c", num_examples=10, seed=4)["train"]
  for i in range(10):
    ra, rb = wt.decode_record(a[i]), wt.decode_record(b[i])
    assert ra["question"] == rb["question"] and ra["scene"] == rb["scene"]
    np.testing.assert_array_equal(ra["image"], rb["image"])
  assert ([wt.decode_record(a[i])["scene"] for i in range(10)]
          != [wt.decode_record(c[i])["scene"] for i in range(10)])
  # Example i does not depend on the dataset size.
  small = wt.WorldVqa.make_config(num_examples=10, seed=3)
  big = wt.WorldVqa.make_config(num_examples=1000, seed=3)
  assert wt.vqa_example(small, 7)["scene"] == wt.vqa_example(big, 7)["scene"]


def test_slice_weight_zero_removes_the_slice(tmp_path):
  n = 60  # Colour questions only: ~1/8 answer "purple" without the gap.
  settings = dict(num_examples=n, skill_weights=COLOUR_ONLY)
  ungapped = [wt.vqa_example(wt.WorldVqa.make_config(**settings), i)
              for i in range(n)]
  assert sum(ex["answer"] == "purple" for ex in ungapped) >= 2
  src = wt.build(wt.WorldVqa, tmp_path, slice_weights=GAP, **settings)["train"]
  recs = [wt.decode_record(src[i]) for i in range(n)]
  assert {r["skill"] for r in recs} == {"colour"}
  assert not any(r["answer"] == "purple" for r in recs)
  # A gap, not an unknown word: purple objects are still in the scenes.
  assert any(o.colour == "purple" for r in recs
             for o in scene_lib.Scene.from_json(r["scene"]).objects)


def test_each_bench_split_holds_only_its_slice(bench):
  for split, conj in wt.BENCH_SPLITS.items():
    skill = conj.split("&")[0][len("skill:"):]
    for i in range(N_BENCH):
      r = wt.decode_record(bench[split][i])
      assert r["skill"] == skill, (split, r)
      assert all(t in r["tags"] for t in conj.split("&")), (split, r)
      assert r["id"].endswith(f"/{split}/{i}")
      scene = scene_lib.Scene.from_json(r["scene"])
      assert questions.answer(scene, r["question"]) == r["answer"]
  answers = {wt.decode_record(bench["count_shape_ge5"][i])["answer"]
             for i in range(N_BENCH)}
  assert answers <= {"5", "6", "7", "8"}


def test_bench_is_disjoint_from_train(bench):
  cfg = wt.WorldVqa.make_config()
  train_scenes = set()
  for i in range(3000):
    ex = wt.vqa_example(cfg, i)
    assert not wt.is_bench_scene(ex["scene"])
    train_scenes.add(ex["scene"].to_json())
  bcfg = wt.WorldBench.make_config()
  bench_pairs = set()
  for split in wt.BENCH_SPLITS:
    for i in range(N_BENCH):
      r = wt.decode_record(bench[split][i])
      assert wt.is_bench_scene(scene_lib.Scene.from_json(r["scene"]))
      bench_pairs.add((r["scene"], r["question"]))
    for i in range(20):  # The default benchmark too.
      ex = wt.bench_example(bcfg, split, i)
      bench_pairs.add((ex["scene"].to_json(), ex["question"]))
  assert not {s for s, _ in bench_pairs} & train_scenes
  # Small scenes recur, so the partition is what keeps them apart: about 1/4
  # of all one-object scenes are benchmark-only.
  one = [scene_lib.Scene((scene_lib.Obj(sh, c, sz, r, col),))
         for sh in scene_lib.SHAPES for c in scene_lib.COLOUR_NAMES
         for sz in scene_lib.SIZES for r in range(4) for col in range(4)]
  share = np.mean([wt.is_bench_scene(s) for s in one])
  assert 0.2 < share < 0.3


def test_world_source_gives_python_types(data_dir, train, bench):
  del train, bench
  ds = wt.world_source(data_dir, "train",
                       dataset="world_vqa/" + wt.WorldVqa.make_config(
                           num_examples=N_TRAIN).name)
  assert isinstance(ds, grain.MapDataset) and len(ds) == N_TRAIN
  ex = ds[3]
  assert ex["image"].dtype == np.uint8 and ex["image"].shape == (64, 64, 3)
  for k in ("question", "answer", "skill", "scene", "id"):
    assert isinstance(ex[k], str)
  assert isinstance(ex["tags"], tuple) and all(
      isinstance(t, str) for t in ex["tags"])
  # tags are ragged: batch the rest (or pass a `batch_fn`).
  batches = list(ds.shuffle(seed=0)
                 .map(lambda e: {k: e[k] for k in ("image", "answer")})
                 .batch(8).to_iter_dataset())
  assert len(batches) == N_TRAIN // 8
  assert batches[0]["image"].shape == (8, 64, 64, 3)
  assert len(batches[0]["answer"]) == 8
  # Benchmark splits pick world_bench (its only prepared config) by name.
  b = wt.world_source(data_dir, "colour_purple")
  assert len(b) == N_BENCH and b[0]["answer"] == "purple"


def test_dataset_dir_needs_a_config_name_when_ambiguous(tmp_path):
  wt.build(wt.WorldVqa, tmp_path, num_examples=3)
  wt.build(wt.WorldVqa, tmp_path, num_examples=4)
  with pytest.raises(FileNotFoundError, match="several prepared configs"):
    wt.dataset_dir(tmp_path, "world_vqa")
  name = wt.WorldVqa.make_config(num_examples=4).name
  d = wt.dataset_dir(tmp_path, f"world_vqa/{name}")
  assert len(wt.world_source(d, "train")) == 4
  with pytest.raises(FileNotFoundError):
    wt.dataset_dir(tmp_path, "world_bench")


def test_config_names_follow_the_settings():
  assert wt.WorldVqa.make_config().name == "default"
  assert wt.WorldVqa.make_config() is wt.WorldVqa.BUILDER_CONFIGS[0]
  assert wt.WorldBench.make_config().name == "default"
  a = wt.WorldVqa.make_config(num_examples=40, slice_weights=GAP)
  b = wt.WorldVqa.make_config(num_examples=40, slice_weights=GAP)
  c = wt.WorldVqa.make_config(num_examples=40)
  assert a.name == b.name != c.name and a.name.startswith("n40_seed0_")
  with pytest.raises(ValueError):
    wt.WorldVqa.make_config(num_examples=0)
  with pytest.raises(ValueError):
    wt.WorldVqa.make_config(skill_weights={"juggling": 1.0})
  with pytest.raises(ValueError):
    wt.WorldVqa.make_config(image_size=63)
  with pytest.raises(ValueError):
    wt.WorldBench.make_config(examples_per_split=0)


def test_other_world_size(tmp_path):
  src = wt.build(wt.WorldVqa, tmp_path, num_examples=3, grid=3,
                 image_size=48)["train"]
  r = wt.decode_record(src[0])
  assert r["image"].shape == (48, 48, 3)
  assert scene_lib.Scene.from_json(r["scene"]).grid == 3


def test_cli(tmp_path, capsys):
  gap = json.dumps(GAP)
  assert wt.main(["--data_dir", str(tmp_path), "--train_examples", "6",
                  "--slice_weights", gap]) == 0
  out = capsys.readouterr().out
  name = wt.WorldVqa.make_config(num_examples=6, slice_weights=GAP).name
  assert f"world_vqa/{name}: train=6" in out
  assert len(wt.world_source(tmp_path, "train")) == 6


def test_cli_as_module(tmp_path):
  """`python -m` runs the file as __main__ next to the package module."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, PYTHONPATH=root)
  proc = subprocess.run(
      [sys.executable, "-m", "auditdm_jax.data.world_tfds", "--data_dir",
       str(tmp_path), "--train_examples", "3"],
      capture_output=True, text=True, env=env, timeout=120, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "world_vqa/n3_seed0_" in proc.stdout

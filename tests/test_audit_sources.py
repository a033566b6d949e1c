"""Audit source pools: world items are pure functions of (seed, i) and never
benchmark scenes; JSONL pools name the line of every problem."""

import json

import numpy as np
import pytest
from PIL import Image

from auditdm_jax.audit.sources import JsonlSources, WorldSources
from auditdm_jax.data import world_tfds
from auditdm_jax.world import render
from auditdm_jax.world import scene as scene_lib


def test_world_sources_are_deterministic_training_scenes():
  a, b = WorldSources(5, seed=2), WorldSources(5, seed=2)
  for i in range(5):
    x, y = a[i], b[i]
    assert x.id == y.id == f"world_audit/2/{i}"
    np.testing.assert_array_equal(x.picture.pixels, y.picture.pixels)
    scene = scene_lib.Scene.from_json(x.picture.scene)
    assert not world_tfds.is_bench_scene(scene)
    np.testing.assert_array_equal(render.render(scene), x.picture.pixels)
    assert x.question and x.answer
  assert WorldSources(5, seed=3)[0].id != a[0].id
  with pytest.raises(IndexError):
    a[5]
  with pytest.raises(ValueError, match="n >= 1"):
    WorldSources(0)


def _pool(tmp_path, rows):
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
  path = tmp_path / "s.jsonl"
  path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n"
                          for r in rows))
  return path


def test_jsonl_sources(tmp_path):
  path = _pool(tmp_path, [{"id": "x", "image": "a.png", "question": "q?"},
                          "", {"id": "y", "image": "a.png"}])
  s = JsonlSources(path)
  assert len(s) == 2 and s[0].question == "q?" and s[1].question is None
  assert s[0].picture.pixels.shape == (8, 8, 3)
  assert len(JsonlSources(path, limit=1)) == 1


@pytest.mark.parametrize("rows, error, match", [
    (["{not json"], ValueError, ":1: not JSON"),
    ([{"image": "a.png"}], ValueError, ":1: needs a non-empty 'id'"),
    ([{"id": "x", "image": "gone.png"}], FileNotFoundError, "no image file"),
    ([], ValueError, "lists no sources"),
])
def test_jsonl_sources_bad_input(tmp_path, rows, error, match):
  with pytest.raises(error, match=match):
    JsonlSources(_pool(tmp_path, rows))


def test_jsonl_sources_missing_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="no source list"):
    JsonlSources(tmp_path / "nope.jsonl")

"""Scene graph, JSON and rendering of the embedded world."""

import itertools
import json
import random

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from auditdm_jax.world import render as render_lib
from auditdm_jax.world import scene as scene_lib

Obj = scene_lib.Obj
Scene = scene_lib.Scene
SceneError = scene_lib.SceneError


def test_vocabulary_sizes():
  assert len(scene_lib.SHAPES) >= 4
  assert len(scene_lib.COLOURS) >= 8
  assert scene_lib.SIZES == ("small", "large")


def test_colours_far_apart_and_from_background():
  rgb = {k: np.array(v, float) for k, v in scene_lib.COLOURS.items()}
  bg = np.array(scene_lib.BACKGROUND, float)
  for a, b in itertools.combinations(rgb, 2):
    assert np.linalg.norm(rgb[a] - rgb[b]) >= 80, (a, b)
  for k, v in rgb.items():
    assert np.linalg.norm(v - bg) >= 120, k


@pytest.mark.parametrize("kwargs, msg", [
    (dict(shape="star"), "unknown shape 'star'"),
    (dict(colour="pink"), "unknown colour 'pink'"),
    (dict(size="medium"), "unknown size 'medium'"),
    (dict(row=-1), "row must be >= 0"),
    (dict(col=True), "col must be an int"),
    (dict(row=1.0), "row must be an int"),
])
def test_obj_validation(kwargs, msg):
  base = dict(shape="circle", colour="red", size="small", row=0, col=0)
  with pytest.raises(SceneError, match=msg):
    Obj(**{**base, **kwargs})


def _o(r, c, shape="circle", colour="red", size="small"):
  return Obj(shape, colour, size, r, c)


@pytest.mark.parametrize("build, msg", [
    (lambda: Scene((_o(0, 0), _o(0, 0, "square"))), "share a cell"),
    (lambda: Scene((_o(4, 0),)), "outside the 4x4 grid"),
    (lambda: Scene(tuple(_o(i // 4, i % 4) for i in range(9))), "at most 8"),
    (lambda: Scene((), grid=1, image_size=16), "grid must be in"),
    (lambda: Scene((), grid=4, image_size=66), "not a multiple"),
    (lambda: Scene((), grid=4, image_size=32), "cells must be >= 12"),
    (lambda: Scene(("circle",)), "not an Obj"),
    (lambda: Scene("abc"), "sequence of Obj"),
    (lambda: Scene((_o(0, 0),) * 1, grid=2, image_size=24).with_objects(
        [_o(i // 2, i % 2) for i in range(4)] + [_o(1, 1)]), "at most 4"),
])
def test_scene_validation(build, msg):
  with pytest.raises(SceneError, match=msg):
    build()


def test_scene_is_canonical():
  a = Scene((_o(2, 1), _o(0, 3, "square")))
  b = Scene([_o(0, 3, "square"), _o(2, 1)])
  assert a == b and hash(a) == hash(b) and a.to_json() == b.to_json()
  assert [o.cell for o in a.objects] == [(0, 3), (2, 1)]
  assert a.object_at(2, 1) == _o(2, 1) and a.object_at(1, 1) is None
  assert len(a.free_cells()) == 14 and (0, 0) in a.free_cells()
  assert Scene().objects == () and Scene().cell_size == 16


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32), grid=st.integers(2, 6),
       cell=st.sampled_from([12, 16, 20]))
def test_json_round_trip(seed, grid, cell):
  s = scene_lib.sample_scene(seed, grid=grid, image_size=grid * cell,
                             min_objects=0)
  text = s.to_json()
  assert Scene.from_json(text) == s
  assert Scene.from_dict(json.loads(text)) == s
  assert Scene.from_json(text).to_json() == text


@pytest.mark.parametrize("text, msg", [
    ("not json", "does not parse"),
    ("[]", "expected an object"),
    ('{"grid": 4}', "missing field 'objects'"),
    ('{"objects": [], "colour": 1}', "unknown field"),
    ('{"objects": {}}', "must be a list"),
    ('{"objects": [{"shape": "circle"}]}', r"objects\[0\]: missing field"),
    ('{"objects": [{"shape": "circle", "colour": "pink", "size": "small", '
     '"row": 0, "col": 0}]}', r"objects\[0\]: unknown colour 'pink'"),
    ('{"objects": [{"shape": "circle", "colour": "red", "size": "small", '
     '"row": 0, "col": 0, "x": 1}]}', r"objects\[0\]: unknown field"),
    ('{"objects": [], "grid": 4, "image_size": 50}', "not a multiple"),
])
def test_from_json_errors_name_the_problem(text, msg):
  with pytest.raises(SceneError, match=msg):
    Scene.from_json(text)


def test_sample_scene_deterministic():
  assert scene_lib.sample_scene(7) == scene_lib.sample_scene(7)
  g1, g2 = np.random.default_rng(3), np.random.default_rng(3)
  a = [scene_lib.sample_scene(g1) for _ in range(20)]
  b = [scene_lib.sample_scene(g2) for _ in range(20)]
  assert a == b and len(set(a)) > 15
  r1, r2 = random.Random(5), random.Random(5)
  assert ([scene_lib.sample_scene(r1) for _ in range(5)] ==
          [scene_lib.sample_scene(r2) for _ in range(5)])


def test_sample_scene_distribution_and_weights():
  counts = [len(scene_lib.sample_scene(i).objects) for i in range(800)]
  assert set(counts) == set(range(1, 9))
  assert all(len(scene_lib.sample_scene(i, 5).objects) == 5 for i in range(20))
  seen = set()
  for i in range(200):
    s = scene_lib.sample_scene(i, colour_weights={"red": 0, "blue": 0},
                               size_weights={"small": 0})
    seen |= {o.colour for o in s.objects}
    assert all(o.size == "large" for o in s.objects)
  assert "red" not in seen and "blue" not in seen and len(seen) == 6
  with pytest.raises(ValueError, match="unknown names"):
    scene_lib.sample_scene(0, colour_weights={"pink": 1})
  with pytest.raises(ValueError, match="n_objects"):
    scene_lib.sample_scene(0, 9)


def test_render_deterministic_bytes():
  s = scene_lib.sample_scene(11, 8)
  a = render_lib.render(s)
  b = render_lib.render(Scene.from_json(s.to_json()))
  assert a.dtype == np.uint8 and a.shape == (64, 64, 3)
  assert a.tobytes() == b.tobytes()
  assert render_lib.to_pil(s).tobytes() == a.tobytes()


@pytest.mark.parametrize("grid, cell", [(4, 16), (2, 12), (3, 16), (5, 20),
                                        (4, 32), (8, 16)])
def test_render_equals_direct_pil_drawing(grid, cell):
  for seed in range(25):
    s = scene_lib.sample_scene(seed, grid=grid, image_size=grid * cell)
    np.testing.assert_array_equal(render_lib.render(s),
                                  render_lib.render_reference(s))


@pytest.mark.parametrize("grid, cell", [(4, 16), (3, 12), (4, 32)])
def test_render_places_each_object_in_its_cell(grid, cell):
  bg = np.array(scene_lib.BACKGROUND, np.uint8)
  for seed in range(60):
    s = scene_lib.sample_scene(seed, grid=grid, image_size=grid * cell)
    img = render_lib.render(s)
    for r in range(grid):
      for c in range(grid):
        tile = img[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell]
        o = s.object_at(r, c)
        is_bg = (tile == bg).all(-1)
        if o is None:
          assert is_bg.all()
          continue
        rgb = np.array(scene_lib.COLOURS[o.colour], np.uint8)
        is_obj = (tile == rgb).all(-1)
        assert (is_bg | is_obj).all()  # Nothing but background and colour.
        assert is_obj[cell // 2 - 1, cell // 2 - 1]  # Covers the centre.
        px = render_lib.object_px(o.size, cell)
        assert is_obj.sum() == render_lib.shape_mask(o.shape, px).sum()
        # A one-pixel background frame: objects never touch neighbours.
        if cell >= 16:
          assert is_bg[0].all() and is_bg[-1].all()
          assert is_bg[:, 0].all() and is_bg[:, -1].all()


def test_sizes_and_shapes_distinguishable():
  assert render_lib.object_px("small", 16) == 7
  assert render_lib.object_px("large", 16) == 13
  for cell in (12, 16, 20, 32):
    masks = {(z, sh): render_lib.shape_mask(
        sh, render_lib.object_px(z, cell)).tobytes()
             for z in scene_lib.SIZES for sh in scene_lib.SHAPES}
    assert len(set(masks.values())) == len(masks), cell


def test_render_batch():
  scenes = [scene_lib.sample_scene(i) for i in range(5)]
  batch = render_lib.render_batch(scenes)
  assert batch.shape == (5, 64, 64, 3)
  for i, s in enumerate(scenes):
    np.testing.assert_array_equal(batch[i], render_lib.render(s))
  with pytest.raises(ValueError, match="image_size"):
    render_lib.render_batch([scenes[0], scene_lib.sample_scene(
        0, image_size=128)])


def test_empty_scene_renders_background():
  img = render_lib.render(Scene())
  assert (img == np.array(scene_lib.BACKGROUND, np.uint8)).all()

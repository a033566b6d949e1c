"""Tests of auditdm_jax.imaging: pictures, registry, world backend, cache.

The service and the diffusers backends are in test_imaging_service.py and
test_imaging_diffusers.py.
"""

import io
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from auditdm_jax import imaging
from auditdm_jax.imaging import registry
from auditdm_jax.world import oracle
from auditdm_jax.world import render as render_lib
from auditdm_jax.world import scene as scene_lib

from imaging_fixtures import ScriptedBackend

Picture = imaging.Picture
ImageResult = imaging.ImageResult
Obj = scene_lib.Obj
Scene = scene_lib.Scene


def _scene(*objs, grid=4, image_size=64):
  return Scene(tuple(Obj(*o) for o in objs), grid=grid, image_size=image_size)


SCENE = _scene(("circle", "red", "large", 0, 0),
               ("square", "blue", "small", 1, 2),
               ("triangle", "green", "large", 3, 3))


@pytest.fixture(name="pic")
def _pic():
  return Picture.from_scene(SCENE)


@pytest.fixture(name="world")
def _world():
  return imaging.get_backend("world")


# -- Picture / ImageResult / item_seed -----------------------------------------


@pytest.mark.parametrize("pixels, match", [
    (np.zeros((8, 8, 3), np.float32), r"uint8\[H, W, 3\].*float32\[8, 8, 3\]"),
    (np.zeros((8, 8), np.uint8), r"uint8\[8, 8\]"),
    (np.zeros((8, 8, 4), np.uint8), r"uint8\[8, 8, 4\]"),
    (np.zeros((0, 8, 3), np.uint8), "empty"),
])
def test_picture_rejects_bad_pixels(pixels, match):
  with pytest.raises(ValueError, match=match):
    Picture(pixels)


def test_picture_rejects_non_str_scene():
  with pytest.raises(ValueError, match="scene must be a JSON str"):
    Picture(np.zeros((4, 4, 3), np.uint8), scene={"objects": []})


def test_picture_is_an_immutable_copy():
  src = np.zeros((4, 5, 3), np.uint8)
  p = Picture(src)
  h = p.content_hash()
  src[0, 0, 0] = 7  # The caller's array changes; the picture does not.
  assert p.pixels[0, 0, 0] == 0 and p.content_hash() == h
  assert not p.pixels.flags.writeable
  with pytest.raises(ValueError):
    p.pixels[0, 0, 0] = 1
  assert (p.height, p.width) == (4, 5)


def test_picture_accepts_pil_images():
  img = Image.new("RGB", (6, 4), (1, 2, 3))
  p = Picture(img)
  assert p.pixels.shape == (4, 6, 3) and tuple(p.pixels[0, 0]) == (1, 2, 3)


def test_content_hash_covers_pixels_shape_and_scene(pic):
  assert pic.content_hash() == Picture(pic.pixels.copy(),
                                       scene=pic.scene).content_hash()
  other = pic.pixels.copy()
  other[5, 5, 1] ^= 1
  hashes = {pic.content_hash(), Picture(other, scene=pic.scene).content_hash(),
            Picture(pic.pixels).content_hash(),
            Picture(pic.pixels, scene="{}").content_hash(),
            Picture(pic.pixels.reshape(32, 128, 3)).content_hash()}
  assert len(hashes) == 5


def test_picture_equality_hash_and_repr(pic):
  same = Picture(pic.pixels.copy(), scene=pic.scene)
  assert pic == same and hash(pic) == hash(same) and len({pic, same}) == 1
  assert pic != Picture(pic.pixels)
  assert pic != "not a picture"
  r = repr(pic)
  assert r.startswith("Picture(64x64") and len(r) < 100  # No pixel dump.


def test_png_round_trip_is_lossless(pic):
  back = Picture.from_png(pic.to_png(), scene=pic.scene)
  assert back == pic
  rng = np.random.default_rng(0)
  noisy = Picture(rng.integers(0, 256, (7, 9, 3), dtype=np.uint8))
  assert Picture.from_png(noisy.to_png()) == noisy


def test_from_png_converts_modes_and_rejects_garbage():
  buf = io.BytesIO()
  Image.new("L", (3, 2), 200).save(buf, format="PNG")
  p = Picture.from_png(buf.getvalue())
  assert p.pixels.shape == (2, 3, 3) and (p.pixels == 200).all()
  with pytest.raises(ValueError, match="not a readable image"):
    Picture.from_png(b"\x89PNG\r\n\x1a\n garbage")
  with pytest.raises(ValueError, match="needs bytes"):
    Picture.from_png("a string")


def test_from_scene_renders_and_keeps_the_scene(pic):
  assert np.array_equal(pic.pixels, render_lib.render(SCENE))
  assert Scene.from_json(pic.scene) == SCENE
  assert Picture.from_scene(SCENE.to_json()) == pic
  with pytest.raises(ValueError, match="Scene or its JSON"):
    Picture.from_scene(42)


def test_image_result_needs_exactly_one_of_picture_and_error(pic):
  assert ImageResult(pic).ok and not ImageResult(None, error="x").ok
  assert ImageResult.failure("edit: parse: ?").error == "edit: parse: ?"
  with pytest.raises(ValueError, match="exactly one"):
    ImageResult(None)
  with pytest.raises(ValueError, match="exactly one"):
    ImageResult(pic, error="both")
  with pytest.raises(ValueError, match="must be a Picture"):
    ImageResult(pic.pixels)


def test_item_seed():
  s = imaging.item_seed(0, "edit", "make it red", "abc")
  assert s == imaging.item_seed(0, "edit", "make it red", "abc")
  assert 0 <= s < 2**63
  others = {imaging.item_seed(1, "edit", "make it red", "abc"),
            imaging.item_seed(0, "edit", "make it blue", "abc"),
            imaging.item_seed(0, "edit", "make it red", "abd"),
            imaging.item_seed(0, "generate", "make it red", "abc")}
  assert s not in others and len(others) == 4
  with pytest.raises(ValueError, match="seed must be an int"):
    imaging.item_seed(True, "x")


# -- registry ------------------------------------------------------------------


def test_registry_lists_and_builds_backends():
  assert {"world", "flux", "stable_diffusion", "remote"} <= set(imaging.names())
  b = imaging.get_backend("world", grid=2, image_size=32)
  assert isinstance(b, imaging.WorldBackend) and b.name == "world"
  with pytest.raises(KeyError, match=r"unknown image backend 'nope'.*world"):
    imaging.get_backend("nope")


def test_register_custom_backend_and_reject_duplicates():
  @imaging.register("test_imaging_custom")
  def factory(**kw):
    return ScriptedBackend(imaging.WorldBackend(**kw))
  try:
    b = imaging.get_backend("test_imaging_custom", grid=2, image_size=32)
    assert isinstance(b, ScriptedBackend)
    with pytest.raises(ValueError, match="already registered"):
      imaging.register("test_imaging_custom")(lambda: None)

    @imaging.register("test_imaging_bad")
    def bad():
      return "not a backend"
    with pytest.raises(TypeError, match="not an ImageBackend"):
      imaging.get_backend("test_imaging_bad")
  finally:
    for name in ("test_imaging_custom", "test_imaging_bad"):
      registry._FACTORIES.pop(name, None)  # pylint: disable=protected-access


def test_package_imports_without_torch():
  code = ("import sys, auditdm_jax.imaging as m; m.get_backend('world'); "
          "assert 'torch' not in sys.modules and 'diffusers' not in "
          "sys.modules and 'jax' not in sys.modules, 'heavy import'")
  subprocess.run([sys.executable, "-c", code], check=True, timeout=120,
                 cwd=os.path.dirname(os.path.dirname(__file__)))


# -- world backend -------------------------------------------------------------


def test_world_edit_applies_the_command(world, pic):
  res = world.edit([pic], ["make the red circle yellow"], seed=0)
  assert len(res) == 1 and res[0].ok, res[0].error
  out = res[0].picture
  new = Scene.from_json(out.scene)
  assert np.array_equal(out.pixels, render_lib.render(new))
  assert oracle.answer(new, "what colour is the large circle?") == "yellow"
  assert out.pixels.dtype == np.uint8 and out.pixels.shape == (64, 64, 3)
  # Everything else is kept.
  assert [o for o in new.objects if o.shape != "circle"] == [
      o for o in SCENE.objects if o.shape != "circle"]


@pytest.mark.parametrize("make, text, prefix", [
    (lambda p: Picture(p.pixels), "make the red circle blue",
     "edit: no_scene: "),
    (lambda p: Picture(p.pixels, scene="{not json"), "make the red circle blue",
     "edit: bad_scene: "),
    (lambda p: Picture(np.zeros_like(p.pixels), scene=p.scene),
     "make the red circle blue", "edit: mismatch: "),
    (lambda p: p, "paint everything in stripes", "edit: parse: "),
    (lambda p: p, "make the purple diamond red", "edit: missing: "),
    (lambda p: p, "make the red circle red", "edit: noop: "),
])
def test_world_edit_errors_are_results(world, pic, make, text, prefix):
  res = world.edit([make(pic), pic], [text, "remove the blue square"], seed=0)
  assert not res[0].ok and res[0].error.startswith(prefix), res[0].error
  assert res[1].ok  # One bad item does not spoil the batch.


def test_world_check_pixels_can_be_turned_off(pic):
  tampered = Picture(np.zeros_like(pic.pixels), scene=pic.scene)
  res = imaging.WorldBackend(check_pixels=False).edit(
      [tampered], ["remove the blue square"])
  assert res[0].ok


def test_world_edit_is_seeded_per_item(world, pic):
  # "add a circle" leaves colour, size and cell open: all drawn per item.
  text = "add a circle"
  empty = Picture.from_scene(Scene(()))
  a = world.edit([pic, empty, pic], [text, text, "remove the blue square"],
                 seed=5)
  b = world.edit([empty], [text], seed=5)
  c = world.edit([pic, pic], ["remove the blue square", text], seed=5)
  assert a[1].picture == b[0].picture  # Batch composition does not matter,
  assert a[0].picture == c[1].picture  # nor position.
  assert a[2].picture == c[0].picture
  outs = {world.edit([empty], [text], seed=s)[0].picture.content_hash()
          for s in range(6)}
  assert len(outs) > 1  # The seed does matter.


def test_world_generate(world):
  res = world.generate(["a large red circle at the top left",
                        "three blue squares", "a chair",
                        "five red circles and four blue squares"],
                       seed=3)
  assert res[0].ok and res[1].ok
  s0 = Scene.from_json(res[0].picture.scene)
  assert s0.objects == (Obj("circle", "red", "large", 0, 0),)
  assert oracle.answer(Scene.from_json(res[1].picture.scene),
                       "how many blue squares are there?") == "3"
  assert np.array_equal(res[1].picture.pixels, render_lib.render(
      Scene.from_json(res[1].picture.scene)))
  assert res[2].error.startswith("generate: parse: ")
  assert res[3].error.startswith("generate: full: ")
  again = world.generate(["three blue squares"], seed=3)
  assert again[0].picture == res[1].picture
  assert len({world.generate(["three blue squares"], seed=s)[0].picture
              for s in range(5)}) > 1


def test_world_generate_honours_grid_and_size():
  b = imaging.WorldBackend(grid=2, image_size=32)
  p = b.generate(["a red circle"])[0].picture
  assert p.pixels.shape == (32, 32, 3)
  assert Scene.from_json(p.scene).grid == 2
  with pytest.raises(ValueError, match="not a multiple"):
    imaging.WorldBackend(grid=3, image_size=64)


def test_world_bad_arguments_raise(world, pic):
  with pytest.raises(ValueError, match="2 pictures and 1 instructions"):
    world.edit([pic, pic], ["remove the blue square"])
  with pytest.raises(ValueError, match=r"pictures\[0\] is a ndarray"):
    world.edit([pic.pixels], ["remove the blue square"])
  with pytest.raises(ValueError, match=r"instructions\[0\] is a int"):
    world.edit([pic], [3])
  with pytest.raises(ValueError, match="captions must be a sequence of str"):
    world.generate("a red circle")
  with pytest.raises(ValueError, match="seed must be an int"):
    world.generate(["a red circle"], seed=1.5)
  assert world.edit([], []) == [] and world.generate([]) == []


# -- cache ---------------------------------------------------------------------


def _counting(world):
  return ScriptedBackend(world)


def test_cache_computes_misses_only_once(world, pic):
  inner = _counting(world)
  cache = imaging.CachedBackend(inner)
  texts = ["remove the blue square", "make the red circle green",
           "remove the blue square", "make it pink"]
  first = cache.edit([pic] * 4, texts, seed=1)
  assert inner.calls == [("edit", 3)]  # The duplicate is computed once.
  assert (cache.hits, cache.misses) == (1, 3)
  again = cache.edit([pic] * 4, texts, seed=1)
  assert inner.calls == [("edit", 3)]
  assert (cache.hits, cache.misses) == (5, 3)
  assert again == first == world.edit([pic] * 4, texts, seed=1)
  assert not first[3].ok  # Errors are cached in memory as well.
  cache.edit([pic], ["remove the blue square"], seed=2)  # Seed is in the key.
  cache.generate(["remove the blue square"], seed=1)     # So is the op.
  assert inner.calls[1:] == [("edit", 1), ("generate", 1)]
  assert cache.name == "scripted" and cache.cache_id == inner.cache_id


def test_cache_key_covers_backend_op_seed_text_and_input(world, pic):
  c = imaging.CachedBackend(world)
  k = c.key("edit", 0, "x", pic)
  other = imaging.CachedBackend(imaging.WorldBackend(grid=2, image_size=32))
  keys = {k, c.key("generate", 0, "x", pic), c.key("edit", 1, "x", pic),
          c.key("edit", 0, "y", pic),
          c.key("edit", 0, "x", Picture(pic.pixels)),
          c.key("edit", 0, "x"), other.key("edit", 0, "x", pic)}
  assert len(keys) == 7
  assert k == c.key("edit", 0, "x", Picture.from_scene(SCENE))


def test_cache_on_disk_persists_and_skips_errors(world, pic, tmp_path):
  texts = ["remove the blue square", "make the red circle blue", "gibberish"]
  first = imaging.CachedBackend(world, cache_dir=tmp_path).edit(
      [pic] * 3, texts, seed=0)
  files = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
  assert len(files) == 4  # Two successes (PNG + sidecar); no error, no temp.
  assert not any(f.startswith(".") for f in files)
  inner = _counting(world)
  fresh = imaging.CachedBackend(inner, cache_dir=tmp_path)
  again = fresh.edit([pic] * 3, texts, seed=0)
  assert again == first
  assert again[0].picture.scene == first[0].picture.scene
  assert inner.calls == [("edit", 1)]  # Only the error was recomputed.
  assert fresh.stats()["disk_hits"] == 2


@pytest.mark.parametrize("damage", ["truncate_png", "garbage_sidecar",
                                    "other_png", "empty_png"])
def test_cache_corrupt_entry_is_a_logged_miss_then_repaired(
    world, pic, tmp_path, caplog, damage):
  cache = imaging.CachedBackend(world, cache_dir=tmp_path)
  good = cache.edit([pic], ["remove the blue square"])[0]
  key = cache.key("edit", 0, "remove the blue square", pic)
  png = tmp_path / key[:2] / f"{key}.png"
  meta = png.with_suffix(".json")
  if damage == "truncate_png":
    png.write_bytes(png.read_bytes()[:40])
  elif damage == "garbage_sidecar":
    meta.write_text("{ not json")
  elif damage == "other_png":
    png.write_bytes(Picture(np.zeros((64, 64, 3), np.uint8)).to_png())
  else:
    png.write_bytes(b"")
  inner = _counting(world)
  fresh = imaging.CachedBackend(inner, cache_dir=tmp_path)
  with caplog.at_level(logging.WARNING):
    res = fresh.edit([pic], ["remove the blue square"])[0]
  assert res == good and inner.calls == [("edit", 1)]
  assert fresh.corrupt == 1 and "corrupt entry" in caplog.text
  # The recomputed result replaced the bad entry.
  third = _counting(world)
  assert imaging.CachedBackend(third, cache_dir=tmp_path).edit(
      [pic], ["remove the blue square"])[0] == good
  assert third.calls == []


def test_cache_lru_eviction(world):
  inner = _counting(world)
  cache = imaging.CachedBackend(inner, max_items=2)
  for c in ["a red circle", "a blue circle", "a red circle", "a green circle",
            "a blue circle"]:
    cache.generate([c])
  # red, blue, (red hit), green evicts blue, blue recomputed.
  assert [n for _, n in inner.calls] == [1, 1, 1, 1]
  assert cache.stats()["memory_items"] == 2
  tiny = imaging.CachedBackend(_counting(world), max_bytes=100)
  tiny.generate(["a red circle"])
  assert tiny.stats()["memory_items"] == 0  # Too big to keep.


def test_cache_checks_inner_result_count(world, pic):
  class Short(ScriptedBackend):
    def generate(self, captions, *, seed=0):
      return super().generate(captions, seed=seed)[:-1]
  with pytest.raises(RuntimeError, match="returned 1 results for 2 items"):
    imaging.CachedBackend(Short(world)).generate(["a red circle",
                                                  "a blue circle"])
  with pytest.raises(ValueError, match="wraps an ImageBackend"):
    imaging.CachedBackend("world")
  with pytest.raises(ValueError, match="1 pictures and 2 instructions"):
    imaging.CachedBackend(world).edit([pic], ["a", "b"])


def test_cache_sidecar_contents(world, tmp_path):
  cache = imaging.CachedBackend(world, cache_dir=tmp_path)
  cache.generate(["a red circle"], seed=4)
  (meta_path,) = tmp_path.rglob("*.json")
  meta = json.loads(meta_path.read_text())
  assert meta["op"] == "generate" and meta["text"] == "a red circle"
  assert meta["backend"] == world.cache_id and meta["shape"] == [64, 64, 3]
  assert Scene.from_json(meta["scene"]).objects[0].shape == "circle"

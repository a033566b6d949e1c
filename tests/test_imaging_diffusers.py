"""Tests of the diffusers backends on tiny random pipelines (CPU, offline).

The pipelines (imaging_fixtures.build_tiny_pipelines) are built once per
session and saved; the backends under test load them back through
`from_pretrained`, the path real checkpoints take. Random weights make
meaningless pictures, so the tests check behaviour: shapes and dtypes,
seeding, batch independence, that edits read their input, and that the HTTP
service returns exactly what the in-process backend does.
"""

import numpy as np
import pytest

from auditdm_jax import imaging
from auditdm_jax.world import scene as scene_lib

from imaging_fixtures import build_tiny_pipelines
from imaging_fixtures import serving

pytest.importorskip("diffusers")

Picture = imaging.Picture
DiffusersBackend = imaging.DiffusersBackend

CAPTIONS = ["a red circle", "two blue squares", "a green cat at night"]
EDITS = ["make the circle blue", "remove the square", "make it night"]
# T5 pads every prompt to max_sequence_length (512 by default): keep it short.
FLUX_OPTIONS = dict(num_inference_steps=2, height=32, width=32,
                    call_kwargs={"max_sequence_length": 32})
SD_OPTIONS = dict(num_inference_steps=2)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
  # Tiny ops on a shared, busy CPU: a second intra-op thread only spins.
  # Measured here: 1 thread makes a tiny pipeline call ~50x faster.
  import torch  # pylint: disable=g-import-not-at-top
  before = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(before)


@pytest.fixture(name="tiny", scope="session")
def _tiny(tmp_path_factory):
  return build_tiny_pipelines(tmp_path_factory.mktemp("tiny_pipelines"))


@pytest.fixture(name="flux", scope="session")
def _flux(tiny):
  return imaging.get_backend("flux", generator=tiny["flux"][1],
                             editor=tiny["kontext"][1], **FLUX_OPTIONS)


@pytest.fixture(name="sd", scope="session")
def _sd(tiny):
  return imaging.get_backend("stable_diffusion", generator=tiny["sd"][1],
                             editor=tiny["ip2p"][1], **SD_OPTIONS)


@pytest.fixture(name="pics", scope="module")
def _pics():
  rng = np.random.default_rng(0)
  world = [Picture.from_scene(scene_lib.sample_scene(i)) for i in range(2)]
  return world + [Picture(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8))]


def _same(a, b):
  return all(x.picture == y.picture for x, y in zip(a, b)) and len(a) == len(b)


def _all_differ(a, b):
  return all(x.picture != y.picture for x, y in zip(a, b))


def _check_pictures(results, shapes):
  assert [r.ok for r in results] == [True] * len(shapes)
  for r, shape in zip(results, shapes):
    px = r.picture.pixels
    assert px.dtype == np.uint8 and px.shape == shape
    assert r.picture.scene is None
    assert px.std() > 0  # Not a blank image.


# -- FLUX.1 (generate) and FLUX.1 Kontext (edit) -------------------------------


def test_flux_generate(flux):
  res = flux.generate(CAPTIONS, seed=0)
  _check_pictures(res, [(32, 32, 3)] * 3)
  assert _same(res, flux.generate(CAPTIONS, seed=0))
  assert _all_differ(res, flux.generate(CAPTIONS, seed=1))
  # Other batch, other positions: the same items.
  moved = flux.generate([CAPTIONS[2], CAPTIONS[1]], seed=0)
  assert _same(moved, [res[2], res[1]])


def _reads_its_input(backend, pics, monkeypatch):
  """With the noise pinned (item seeds ignore the input), another input
  picture alone must change the output."""
  monkeypatch.setattr(imaging.base, "item_seed", lambda seed, *parts: seed)
  a, b = backend.edit(pics[:2], [EDITS[0]] * 2, seed=0)
  monkeypatch.undo()
  return a.picture != b.picture


def test_flux_kontext_edit(flux, pics, monkeypatch):
  res = flux.edit(pics, EDITS, seed=0)
  # Kontext works at 32x32; outputs come back at each input's size.
  _check_pictures(res, [(64, 64, 3), (64, 64, 3), (48, 48, 3)])
  assert _same(res, flux.edit(pics, EDITS, seed=0))
  assert _all_differ(res, flux.edit(pics, EDITS, seed=1))
  assert _same(flux.edit([pics[1]], [EDITS[1]], seed=0), [res[1]])
  assert _reads_its_input(flux, pics, monkeypatch)


def test_batches_equal_single_items_up_to_rounding(tiny, flux, pics):
  # batch_size=2 groups edits by input size ([64, 64] and [48]) and chunks
  # captions ([c0, c1], [c2]); batched kernels may round differently, so
  # compare with tolerance (measured: 1 level in 0.03% of the pixels).
  batched = DiffusersBackend("flux", generator=tiny["flux"][0],
                             editor=tiny["kontext"][0],
                             **dict(FLUX_OPTIONS, batch_size=2))
  pairs = (list(zip(batched.generate(CAPTIONS), flux.generate(CAPTIONS))) +
           list(zip(batched.edit(pics, EDITS), flux.edit(pics, EDITS))))
  for a, b in pairs:
    diff = np.abs(a.picture.pixels.astype(int) - b.picture.pixels)
    assert a.picture.pixels.shape == b.picture.pixels.shape
    assert diff.max() <= 2 and (diff > 0).mean() < 0.01


def test_from_objects_equals_from_pretrained(tiny, flux, pics):
  objects = DiffusersBackend("flux", generator=tiny["flux"][0],
                             editor=tiny["kontext"][0], **FLUX_OPTIONS)
  assert _same(objects.generate(CAPTIONS[:1], seed=3),
               flux.generate(CAPTIONS[:1], seed=3))
  assert _same(objects.edit(pics[:1], EDITS[:1], seed=3),
               flux.edit(pics[:1], EDITS[:1], seed=3))


# -- Stable Diffusion (generate) and InstructPix2Pix (edit) --------------------


def test_stable_diffusion_and_instruct_pix2pix(sd, pics, monkeypatch):
  gen = sd.generate(CAPTIONS[:2], seed=0)
  _check_pictures(gen, [(32, 32, 3)] * 2)  # The tiny UNet's default size.
  assert _same(gen, sd.generate(CAPTIONS[:2], seed=0))
  assert _all_differ(gen, sd.generate(CAPTIONS[:2], seed=1))
  res = sd.edit(pics, EDITS, seed=0)
  _check_pictures(res, [(64, 64, 3), (64, 64, 3), (48, 48, 3)])
  assert _same(sd.edit([pics[1], pics[0]], [EDITS[1], EDITS[0]], seed=0),
               [res[1], res[0]])
  assert _all_differ(res, sd.edit(pics, EDITS, seed=1))
  assert _reads_its_input(sd, pics, monkeypatch)


def test_working_size_and_keep_input_size(tiny, pics):
  small = DiffusersBackend("stable_diffusion", editor=tiny["ip2p"][0],
                           num_inference_steps=1, height=32, width=32,
                           keep_input_size=False)
  out = small.edit(pics[:1], EDITS[:1])[0].picture
  assert out.pixels.shape == (32, 32, 3)


# -- options and errors --------------------------------------------------------


def test_options_and_errors(tiny, flux, pics):
  gen_only = DiffusersBackend("flux", generator=tiny["flux"][0])
  with pytest.raises(NotImplementedError, match="no edit pipeline"):
    gen_only.edit(pics[:1], EDITS[:1])
  with pytest.raises(NotImplementedError, match="no generation pipeline"):
    DiffusersBackend("flux", editor=tiny["kontext"][0]).generate(["x"])
  with pytest.raises(ValueError, match="2 pictures and 1 instructions"):
    flux.edit(pics[:2], EDITS[:1])
  bad = [
      (dict(family="dall-e", generator="x"), "unknown diffusers family"),
      (dict(), "needs a generator and/or an editor"),
      (dict(generator=tiny["flux"][0], height=32), "both height and width"),
      (dict(generator=tiny["flux"][0], batch_size=0), "batch_size"),
      (dict(generator=tiny["flux"][0], torch_dtype="int8"), "torch_dtype"),
      (dict(generator=tiny["flux"][0], device="tpu:what"), "bad device"),
      (dict(generator=42), "path or a diffusers pipeline, got int"),
      (dict(editor=tiny["flux"][0]), "not an image-editing pipeline"),
      (dict(editor=tiny["kontext"][0], image_guidance_scale=1.5),
       "InstructPix2Pix editor only"),
  ]
  for kwargs, message in bad:
    with pytest.raises(ValueError, match=message):
      DiffusersBackend(**kwargs)
  # The pipeline's own input checks stay ValueErrors (a service answers 400).
  odd = DiffusersBackend("stable_diffusion", generator=tiny["sd"][0],
                         height=36, width=36)
  with pytest.raises(ValueError, match="StableDiffusionPipeline failed.*"
                     "divisible by 8"):
    odd.generate(["a red circle"])


def test_cache_id_names_the_configuration(tiny, flux):
  assert flux.cache_id.startswith("diffusers/") and tiny["flux"][1] in (
      flux.cache_id)
  again = imaging.get_backend("flux", generator=tiny["flux"][1],
                              editor=tiny["kontext"][1], **FLUX_OPTIONS)
  assert again.cache_id == flux.cache_id  # Same paths, same options.
  more_steps = dict(FLUX_OPTIONS, num_inference_steps=3)
  ids = {flux.cache_id,
         DiffusersBackend("flux", generator=tiny["flux"][1],
                          editor=tiny["kontext"][1], **more_steps).cache_id,
         # Objects cannot name their weights: a fresh id unless tagged.
         DiffusersBackend("flux", generator=tiny["flux"][0]).cache_id,
         DiffusersBackend("flux", generator=tiny["flux"][0]).cache_id}
  assert len(ids) == 4
  tagged = [DiffusersBackend("flux", generator=tiny["flux"][0],
                             cache_tag="tiny-v1").cache_id for _ in range(2)]
  assert tagged[0] == tagged[1]


# -- through the HTTP service --------------------------------------------------


def test_diffusers_edit_and_generate_through_the_service(flux, pics, tmp_path):
  local_g = flux.generate(CAPTIONS[:2], seed=5)
  local_e = flux.edit(pics, EDITS, seed=5)
  served = imaging.CachedBackend(flux, cache_dir=tmp_path)
  with serving(served) as server:
    remote = imaging.RemoteBackend(server.url, timeout=120)
    assert remote.health()["backend"] == "flux"
    got_g = remote.generate(CAPTIONS[:2], seed=5)
    got_e = remote.edit(pics, EDITS, seed=5)
    assert _same(remote.edit(pics, EDITS, seed=5), local_e)  # From the cache.
  assert _same(got_g, local_g) and _same(got_e, local_e)
  for a, b in zip(got_g + got_e, local_g + local_e):
    assert a.picture.pixels.tobytes() == b.picture.pixels.tobytes()
  assert served.misses == 5 and served.hits == 3

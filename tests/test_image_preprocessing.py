"""Image preprocessing against transformers' SigLIP and Gemma-3 processors.

Without torchvision transformers falls back to its PIL processors
(`SiglipImageProcessorPil`, `Gemma3ImageProcessorPil`); those are the
reference. Their pixel_values are NCHW; ours are HWC.
"""

import numpy as np
import pytest
from PIL import Image

from auditdm_jax.data import image_preprocessing as ip

transformers = pytest.importorskip("transformers")


def _hf_processor(name, size):
  # As the checkpoints configure them: PaliGemma's preprocessor_config.json
  # sets resample 3 (bicubic), Gemma-3's resample 2 (bilinear), both
  # mean = std = 0.5 and rescale 1/255. We pass only the size, so the test also
  # checks that the class defaults are those values.
  cls = {"siglip": transformers.SiglipImageProcessor,
         "gemma3": transformers.Gemma3ImageProcessor}[name]
  return cls(size={"height": size, "width": size})


def _hf_pixels(processor, image):
  out = processor(images=image, return_tensors="np")["pixel_values"]
  assert out.shape[0] == 1 and out.dtype == np.float32
  return out[0].transpose(1, 2, 0)  # CHW -> HWC


def _inputs():
  """(label, our input, transformers input) pairs of odd sizes and modes."""
  rng = np.random.default_rng(0)
  rgb = rng.integers(0, 256, (17, 23, 3), dtype=np.uint8)
  big = rng.integers(0, 256, (45, 61, 3), dtype=np.uint8)
  gray = rng.integers(0, 256, (19, 13), dtype=np.uint8)
  rgba = rng.integers(0, 256, (21, 15, 4), dtype=np.uint8)
  rgba[:5, :, 3] = 0      # fully transparent rows -> white
  rgba[5:8, :, 3] = 255   # opaque rows
  palette = Image.fromarray(rgb).convert("P")
  palette.info["transparency"] = int(np.asarray(palette)[0, 0])
  la = Image.fromarray(rng.integers(0, 256, (11, 29, 2), dtype=np.uint8),
                       mode="LA")
  return [
      ("rgb pil", Image.fromarray(rgb), Image.fromarray(rgb)),
      ("rgb array", rgb, rgb),
      ("rgb pil large", Image.fromarray(big), Image.fromarray(big)),
      ("gray pil", Image.fromarray(gray), Image.fromarray(gray)),
      # transformers rejects 2-D arrays; compare with the [H, W, 1] form.
      ("gray 2-d array", gray, gray[:, :, None]),
      ("gray [h,w,1] array", gray[:, :, None], gray[:, :, None]),
      ("rgba pil", Image.fromarray(rgba), Image.fromarray(rgba)),
      ("rgba array", rgba, rgba),
      ("palette + transparency", palette, palette),
      ("la pil", la, la),
  ]


@pytest.mark.parametrize("name,size", [("siglip", 28), ("siglip", 9),
                                       ("gemma3", 20), ("gemma3", 7)])
def test_matches_transformers(name, size):
  processor = _hf_processor(name, size)
  spec = ip.get_spec(name, size)
  for label, ours_in, hf_in in _inputs():
    ours = ip.preprocess(ours_in, spec)
    assert ours.shape == (size, size, 3) and ours.dtype == np.float32, label
    np.testing.assert_allclose(ours, _hf_pixels(processor, hf_in), rtol=0,
                               atol=1e-5, err_msg=f"{name} {size}: {label}")


@pytest.mark.parametrize("name", ["siglip", "gemma3"])
def test_default_sizes_match_transformers(name):
  spec = ip.get_spec(name)
  assert spec.size == {"siglip": 224, "gemma3": 896}[name]
  image = np.random.default_rng(1).integers(0, 256, (37, 53, 3), np.uint8)
  np.testing.assert_allclose(
      ip.preprocess_image(image, name),
      _hf_pixels(_hf_processor(name, spec.size), image), rtol=0, atol=1e-5)


def test_presets_follow_transformers_defaults():
  siglip = transformers.SiglipImageProcessor()
  gemma3 = transformers.Gemma3ImageProcessor()
  assert ip.RESAMPLE[ip.PRESETS["siglip"].resample] == siglip.resample
  assert ip.RESAMPLE[ip.PRESETS["gemma3"].resample] == gemma3.resample
  for spec, hf in ((ip.PRESETS["siglip"], siglip),
                   (ip.PRESETS["gemma3"], gemma3)):
    assert tuple(spec.mean) == tuple(hf.image_mean)
    assert tuple(spec.std) == tuple(hf.image_std)
    assert spec.rescale_factor == pytest.approx(hf.rescale_factor)


def test_transparency_goes_to_white():
  rgba = np.zeros((4, 4, 4), np.uint8)  # black, fully transparent
  np.testing.assert_array_equal(ip.to_rgb_uint8(rgba), 255)
  np.testing.assert_array_equal(ip.to_rgb_uint8(Image.fromarray(rgba)), 255)


def test_batch():
  images = [np.zeros((5, 7, 3), np.uint8), Image.new("L", (9, 3), 255)]
  out = ip.preprocess_batch(images, "gemma3", size=6)
  assert out.shape == (2, 6, 6, 3) and out.dtype == np.float32
  np.testing.assert_array_equal(out[0], -1.0)
  np.testing.assert_array_equal(out[1], 1.0)


def test_bad_inputs():
  spec = ip.get_spec("siglip", 8)
  with pytest.raises(TypeError, match="uint8.*float32"):
    ip.preprocess(np.zeros((4, 4, 3), np.float32), spec)
  with pytest.raises(ValueError, match=r"shape \(4, 4, 2\)"):
    ip.preprocess(np.zeros((4, 4, 2), np.uint8), spec)
  with pytest.raises(ValueError, match=r"shape \(1, 4, 4, 3\)"):
    ip.preprocess(np.zeros((1, 4, 4, 3), np.uint8), spec)
  with pytest.raises(ValueError, match=r"shape \(3, 4, 5\)"):  # channels first
    ip.preprocess(np.zeros((3, 4, 5), np.uint8), spec)
  with pytest.raises(ValueError, match="empty image"):
    ip.preprocess(np.zeros((0, 4, 3), np.uint8), spec)
  with pytest.raises(TypeError, match="PIL image or a uint8 array.*str"):
    ip.preprocess("cat.png", spec)
  with pytest.raises(ValueError, match="unknown image preprocessing 'clip'"):
    ip.get_spec("clip")
  with pytest.raises(ValueError, match="size must be a positive int"):
    ip.get_spec("siglip", 0)
  with pytest.raises(ValueError, match="resample"):
    ip.ImageSpec(size=8, resample="box-ish")
  with pytest.raises(ValueError, match="at least one image"):
    ip.preprocess_batch([])

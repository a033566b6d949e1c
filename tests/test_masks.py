"""Attention masks against explicit matrices."""

import numpy as np

from auditdm_jax.models import masks


def _masks(input_mask, mask_ar, window, composition):
  input_mask = np.asarray([input_mask], bool)
  pos = masks.positions_from_mask(input_mask)
  glob, local = masks.attention_masks(input_mask, np.asarray([mask_ar]), pos,
                                      window, composition)
  return np.asarray(glob[0]).astype(int), np.asarray(local[0]).astype(int)


def test_prefix_lm():
  glob, _ = _masks([1] * 5, [0, 0, 0, 1, 1], None, "or")
  np.testing.assert_array_equal(glob, [
      [1, 1, 1, 0, 0],
      [1, 1, 1, 0, 0],
      [1, 1, 1, 0, 0],
      [1, 1, 1, 1, 0],
      [1, 1, 1, 1, 1]])


def test_prefix_ignores_window_paligemma():
  # Window 2 on a 4-token prefix: the prefix stays fully bidirectional
  # (transformers: (causal AND window) OR same block); the suffix is windowed.
  _, local = _masks([1] * 6, [0, 0, 0, 0, 1, 1], 2, "or")
  np.testing.assert_array_equal(local, [
      [1, 1, 1, 1, 0, 0],
      [1, 1, 1, 1, 0, 0],
      [1, 1, 1, 1, 0, 0],
      [1, 1, 1, 1, 0, 0],
      [0, 0, 0, 1, 1, 0],
      [0, 0, 0, 0, 1, 1]])


def test_image_block_gemma3_window_and():
  # text, 3-token image, text, text; window 2 applies on top of the block.
  mask_ar = [1, 1, 0, 0, 1, 1]
  glob, local = _masks([1] * 6, mask_ar, 2, "and")
  np.testing.assert_array_equal(glob, [
      [1, 0, 0, 0, 0, 0],
      [1, 1, 1, 1, 0, 0],
      [1, 1, 1, 1, 0, 0],
      [1, 1, 1, 1, 0, 0],
      [1, 1, 1, 1, 1, 0],
      [1, 1, 1, 1, 1, 1]])
  np.testing.assert_array_equal(local, [
      [1, 0, 0, 0, 0, 0],
      [1, 1, 1, 1, 0, 0],   # k > q - 2 keeps future image tokens
      [0, 1, 1, 1, 0, 0],
      [0, 0, 1, 1, 0, 0],
      [0, 0, 0, 1, 1, 0],
      [0, 0, 0, 0, 1, 1]])


def test_left_padding_masks_and_positions():
  input_mask = np.asarray([[0, 0, 1, 1, 1]], bool)
  np.testing.assert_array_equal(masks.positions_from_mask(input_mask),
                                [[-1, -1, 0, 1, 2]])
  glob, _ = _masks([0, 0, 1, 1, 1], [0, 0, 1, 1, 1], None, "and")
  np.testing.assert_array_equal(glob[2:, :2], 0)   # never attend to padding
  np.testing.assert_array_equal(glob[2:, 2:], np.tril(np.ones((3, 3))))


def test_decode_masks_window():
  q = np.asarray([[5]])
  cache_pos = np.asarray([[0, 1, 2, 3, 4, 5, 0, 0]])
  valid = np.asarray([[1, 1, 1, 1, 1, 1, 0, 0]], bool)
  glob, local = masks.decode_masks(q, cache_pos, valid, 3)
  np.testing.assert_array_equal(np.asarray(glob[0, 0]).astype(int),
                                [1, 1, 1, 1, 1, 1, 0, 0])
  np.testing.assert_array_equal(np.asarray(local[0, 0]).astype(int),
                                [0, 0, 0, 1, 1, 1, 0, 0])

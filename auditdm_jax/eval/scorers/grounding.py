"""Grounding (RefCOCO): accuracy at IoU >= 0.5 from PaliGemma loc tokens.

  parse_loc_box("<loc0000><loc0000><loc0511><loc1023> cat")
      # (0.0, 0.0, 0.4995, 1.0): y0, x0, y1, x1 in [0, 1]
  box_iou((0, 0, .5, .5), (0, 0, .5, 1))   # 0.5

PaliGemma writes a box as four tokens <locNNNN> in the order y0 x0 y1 x1,
each a bin in [0, 1024) along its image side; as big_vision decodes them,
coordinate = bin / 1023 (bin = round(coordinate * 1023) when encoding, which
`data.bench` uses for its target strings). The first run of four loc tokens
is the prediction; a reply without one is "invalid" and scores IoU 0. IoU is
computed in normalised coordinates (the same as in pixels: scaling the axes
scales every area alike).

Scorer `box_accuracy`: "accuracy" = % with IoU >= 0.5 (big_vision's
boxacc/0.5, the detection form of RefCOCO), "mean_iou" (%), "invalid" (%).
PaliGemma's own RefCOCO numbers are referring *segmentation* mIoU, which needs
its mask VAE; this scorer is the box form.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Optional

from auditdm_jax import tokenizer as tokenizer_lib
from auditdm_jax.eval.scorers import registry
from auditdm_jax.eval.scorers.registry import register

Box = tuple[float, float, float, float]
_LOC4 = re.compile(r"<loc(\d{4})>\s*<loc(\d{4})>\s*<loc(\d{4})>\s*"
                   r"<loc(\d{4})>")
_MAX_BIN = tokenizer_lib.NUM_LOC_TOKENS - 1
IOU_THRESHOLD = 0.5


def parse_loc_box(text: str) -> Optional[Box]:
  """The first four consecutive loc tokens as (y0, x0, y1, x1) in [0, 1]."""
  if not isinstance(text, str):
    return None
  m = _LOC4.search(text)
  if not m:
    return None
  bins = [int(g) for g in m.groups()]
  if any(b > _MAX_BIN for b in bins):
    return None
  y0, x0, y1, x1 = (b / _MAX_BIN for b in bins)
  return (y0, x0, y1, x1)


def _area(y0: float, x0: float, y1: float, x1: float) -> float:
  return max(y1 - y0, 0.0) * max(x1 - x0, 0.0)


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
  """IoU of two (y0, x0, y1, x1) boxes; inverted boxes have area 0."""
  inter = _area(max(a[0], b[0]), max(a[1], b[1]),
                min(a[2], b[2]), min(a[3], b[3]))
  union = _area(*a) + _area(*b) - inter
  return inter / union if union > 0 else 0.0


@register("box_accuracy", main_key="accuracy",
          description="accuracy at IoU >= 0.5 of PaliGemma loc-token boxes")
def score_box_accuracy(predictions: Sequence[Optional[str]],
                       examples: Sequence[Any]) -> dict[str, float]:
  preds = registry.check_inputs(predictions, examples)
  ious, invalid = [], []
  for p, ex in zip(preds, examples):
    gt = registry.field(ex, "bbox")
    if gt is None or len(gt) != 4:
      raise ValueError(f"example {registry.field(ex, 'id')!r} has no bbox")
    box = parse_loc_box(p)
    invalid.append(float(box is None))
    ious.append(0.0 if box is None else box_iou(box, gt))
  return {"accuracy": registry.pct([float(i >= IOU_THRESHOLD)
                                    for i in ious]),
          "mean_iou": registry.pct(ious),
          "invalid": registry.pct(invalid)}

"""The common example schema of the 16 real benchmarks, and their registry.

  spec = BENCHMARKS["mmbench_v11"]   # BenchmarkSpec: title, task, metric, ...
  spec.metric                        # "mmbench_circular" (eval.scorers name)
  ex = BenchExample(id="7", benchmark="mmbench_v11", image=png_bytes,
                    question="What is shown?", options=("cat", "dog"),
                    answer_letter="B", answers=("dog",))
  ex.metric                          # "mmbench_circular"

Every reader (`formats.py`) turns its released format into `BenchExample`s;
construction validates them, so a record that reaches the TFDS writer is
well formed. Fields:

  id             unique within a split: the benchmark's own id when it has
                 one (VLMEvalKit "index", VQA question_id, ...)
  benchmark      a BENCHMARKS key
  image          encoded PNG or JPEG bytes (the original file's bytes when it
                 is one of those, otherwise re-encoded as lossless PNG)
  extra_images   further images of multi-image questions (MMMU, MMT-Bench),
                 same encoding; empty for the rest
  question       the question text ("" for captioning)
  hint           VLMEvalKit's "hint" column (MMBench puts context there)
  answers        reference answers: VQA's 10 human answers, DocVQA's list,
                 captions, the option text of a multiple-choice answer, the
                 PaliGemma loc string of a grounding box
  options        option texts for multiple choice, letter i = "ABC..."[i]
  answer_letter  the correct option's letter ("" when there are no options)
  category       the benchmark's category / answer type (for breakdowns)
  l2_category    VLMEvalKit's "l2-category" or a second-level type
  group          examples scored together: MMBench circular shifts
                 (index mod 1e6), MME question pairs of one image; else ""
  bbox           (y0, x0, y1, x1) normalised to [0, 1] for grounding, else
                 None
"""

from __future__ import annotations

import dataclasses
import math
import string
from collections.abc import Mapping, Sequence
from typing import Any, Optional

LETTERS = string.ascii_uppercase
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"

# Tasks decide what an example must carry (see `BenchmarkSpec.check`).
TASKS = ("vqa", "multiple_choice", "yes_no", "caption", "grounding")
# How examples are grouped for scoring (`group` field).
GROUPINGS = ("none", "circular", "image")


class BenchDataError(ValueError):
  """Bad benchmark input; the message names the file and the row."""


@dataclasses.dataclass(frozen=True)
class BenchmarkSpec:
  """One benchmark of the paper's 16 (research/paper.md §8.1).

  Attributes:
    name: registry key, also the TFDS config prefix.
    title: the name the paper's tables use.
    task: one of TASKS.
    metric: the `auditdm_jax.eval.scorers` metric the paper's number uses.
    grouping: one of GROUPINGS: "circular" sets `group` to the VLMEvalKit
      index mod 1e6, "image" to the image's identity (MME's acc+).
    paper_table: "paligemma2" (per-task transfer table) or "gemma3"
      (general-benchmark table).
    allow_open: multiple choice that may also hold open questions without
      options (MMMU).
  """
  name: str
  title: str
  task: str
  metric: str
  grouping: str = "none"
  paper_table: str = "paligemma2"
  allow_open: bool = False

  def __post_init__(self):
    if not self.name or not self.name.replace("_", "").isalnum():
      raise ValueError(f"benchmark name must be [a-z0-9_]+: {self.name!r}")
    if self.task not in TASKS:
      raise ValueError(f"{self.name}: task must be one of {TASKS}, "
                       f"got {self.task!r}")
    if self.grouping not in GROUPINGS:
      raise ValueError(f"{self.name}: grouping must be one of {GROUPINGS}, "
                       f"got {self.grouping!r}")
    if self.paper_table not in ("paligemma2", "gemma3"):
      raise ValueError(f"{self.name}: unknown paper table "
                       f"{self.paper_table!r}")
    if not self.metric:
      raise ValueError(f"{self.name}: metric must be named")

  def check(self, ex: "BenchExample") -> None:
    """Raises ValueError when `ex` lacks what this benchmark's task needs."""
    if self.task == "multiple_choice":
      if not ex.options and not (self.allow_open and ex.answers):
        raise ValueError(f"{self.name} needs options (A, B, ...)"
                         + (" or an open answer" if self.allow_open else ""))
      if ex.options and not ex.answer_letter:
        raise ValueError(f"{self.name}: a multiple-choice example needs "
                         "its answer letter")
    elif self.task == "yes_no":
      if len(ex.answers) != 1 or ex.answers[0].strip().lower() not in (
          "yes", "no"):
        raise ValueError(f"{self.name} answers are yes or no, got "
                         f"{list(ex.answers)}")
    elif self.task == "grounding":
      if ex.bbox is None:
        raise ValueError(f"{self.name} needs a bbox")
    elif not ex.answers:  # vqa, caption
      raise ValueError(f"{self.name} needs at least one reference answer")
    if self.grouping != "none" and not ex.group:
      raise ValueError(f"{self.name} scores grouped examples; group is empty")


_SPECS = (
    # PaliGemma-2 per-task transfer (paper table 1).
    BenchmarkSpec("vqav2", "VQAv2", "vqa", "vqa_accuracy"),
    BenchmarkSpec("gqa", "GQA", "vqa", "exact_match"),
    BenchmarkSpec("okvqa", "OK-VQA", "vqa", "vqa_accuracy"),
    BenchmarkSpec("ai2d", "AI2D", "multiple_choice", "multiple_choice"),
    BenchmarkSpec("docvqa", "DocVQA", "vqa", "anls"),
    BenchmarkSpec("chartqa", "ChartQA", "vqa", "relaxed_accuracy"),
    BenchmarkSpec("refcoco", "RefCOCO", "grounding", "box_accuracy"),
    BenchmarkSpec("coco_captions", "COCOCap", "caption", "cider"),
    # Gemma-3 general benchmarks (paper table 2).
    BenchmarkSpec("mmbench_v11", "MMBench-v1.1", "multiple_choice",
                  "mmbench_circular", grouping="circular",
                  paper_table="gemma3"),
    BenchmarkSpec("mmt_bench", "MMT-Bench", "multiple_choice",
                  "multiple_choice", paper_table="gemma3"),
    BenchmarkSpec("seed_bench_img", "SEED-IMG", "multiple_choice",
                  "multiple_choice", paper_table="gemma3"),
    BenchmarkSpec("mme", "MME", "yes_no", "mme", grouping="image",
                  paper_table="gemma3"),
    BenchmarkSpec("mmmu", "MMMU", "multiple_choice", "multiple_choice",
                  paper_table="gemma3", allow_open=True),
    BenchmarkSpec("mmstar", "MMStar", "multiple_choice", "multiple_choice",
                  paper_table="gemma3"),
    BenchmarkSpec("realworldqa", "RealWorldQA", "multiple_choice",
                  "multiple_choice", paper_table="gemma3"),
    BenchmarkSpec("pope", "POPE", "yes_no", "pope", paper_table="gemma3"),
)
BENCHMARKS: Mapping[str, BenchmarkSpec] = {s.name: s for s in _SPECS}
assert len(BENCHMARKS) == 16


def get_benchmark(name: str) -> BenchmarkSpec:
  """The spec of benchmark `name`; ValueError listing the known ones."""
  try:
    return BENCHMARKS[name]
  except KeyError:
    raise ValueError(f"unknown benchmark {name!r}; known: "
                     f"{sorted(BENCHMARKS)}") from None


def is_encoded_image(data: bytes) -> bool:
  """Whether `data` starts like a PNG or a JPEG file."""
  return data.startswith(PNG_MAGIC) or data.startswith(JPEG_MAGIC)


def _str_tuple(name: str, value: Any) -> tuple[str, ...]:
  if isinstance(value, str):  # A bare str would become its characters.
    raise TypeError(f"{name} must be a sequence of str, not a str")
  out = tuple(value)
  if not all(isinstance(v, str) for v in out):
    raise TypeError(f"{name} must hold str only: {out!r}")
  return out


@dataclasses.dataclass(frozen=True)
class BenchExample:
  """One benchmark example in the common schema (see the module docstring)."""
  id: str
  benchmark: str
  image: bytes
  question: str = ""
  answers: tuple[str, ...] = ()
  options: tuple[str, ...] = ()
  answer_letter: str = ""
  category: str = ""
  l2_category: str = ""
  hint: str = ""
  group: str = ""
  bbox: Optional[tuple[float, float, float, float]] = None
  extra_images: tuple[bytes, ...] = ()

  def __post_init__(self):
    # Frozen: normalise sequences to tuples through object.__setattr__.
    set_ = lambda k, v: object.__setattr__(self, k, v)
    for k in ("id", "benchmark", "question", "answer_letter", "category",
              "l2_category", "hint", "group"):
      if not isinstance(getattr(self, k), str):
        raise TypeError(f"{k} must be a str, got "
                        f"{type(getattr(self, k)).__name__}")
    if not self.id:
      raise ValueError("id must not be empty")
    spec = get_benchmark(self.benchmark)
    set_("answers", _str_tuple("answers", self.answers))
    set_("options", _str_tuple("options", self.options))
    images = (self.image,) + tuple(self.extra_images)
    for im in images:
      if not isinstance(im, (bytes, bytearray)) or not is_encoded_image(im):
        raise ValueError("images must be encoded PNG or JPEG bytes")
    set_("image", bytes(self.image))
    set_("extra_images", tuple(bytes(b) for b in self.extra_images))
    if len(self.options) > len(LETTERS):
      raise ValueError(f"at most {len(LETTERS)} options, got "
                       f"{len(self.options)}")
    if any(not o.strip() for o in self.options):
      raise ValueError(f"empty option text in {list(self.options)}")
    if self.answer_letter:
      if not self.options:
        raise ValueError("answer_letter given without options")
      if (len(self.answer_letter) != 1
          or self.answer_letter not in LETTERS[:len(self.options)]):
        raise ValueError(f"answer_letter {self.answer_letter!r} is not one "
                         f"of {LETTERS[:len(self.options)]}")
    if self.bbox is not None:
      box = tuple(float(v) for v in self.bbox)
      if len(box) != 4 or not all(math.isfinite(v) for v in box):
        raise ValueError(f"bbox must be 4 finite numbers, got {self.bbox}")
      y0, x0, y1, x1 = box
      if not (0.0 <= y0 <= y1 <= 1.0 and 0.0 <= x0 <= x1 <= 1.0):
        raise ValueError("bbox must be normalised (y0, x0, y1, x1) with "
                         f"0 <= y0 <= y1 <= 1 and 0 <= x0 <= x1 <= 1: {box}")
      set_("bbox", box)
    spec.check(self)

  @property
  def metric(self) -> str:
    """The scorer name of this example's benchmark."""
    return BENCHMARKS[self.benchmark].metric

  @property
  def answer_index(self) -> Optional[int]:
    """Index of the correct option, or None without options."""
    return LETTERS.index(self.answer_letter) if self.answer_letter else None

  @classmethod
  def from_record(cls, record: Mapping[str, Any]) -> "BenchExample":
    """Rebuilds an example from a `decode_record` dict (image as bytes)."""
    fields = {f.name for f in dataclasses.fields(cls)}
    kw = {k: v for k, v in record.items() if k in fields}
    if not isinstance(kw.get("image"), (bytes, bytearray)):
      raise TypeError("from_record needs the encoded image bytes "
                      "(read with decode_images=False)")
    return cls(**kw)


def normalise_xywh(bbox: Sequence[float], width: float, height: float
                   ) -> tuple[float, float, float, float]:
  """A COCO pixel box [x, y, w, h] -> (y0, x0, y1, x1) in [0, 1], clipped.

  COCO boxes can reach a pixel past the border through rounding; clipping
  keeps them valid without moving boxes that are inside.

  Raises:
    ValueError: not 4 finite numbers, negative size, or a bad image size.
  """
  vals = [float(v) for v in bbox]
  if len(vals) != 4 or not all(math.isfinite(v) for v in vals):
    raise ValueError(f"bbox must be [x, y, w, h], got {list(bbox)}")
  x, y, w, h = vals
  if w < 0 or h < 0:
    raise ValueError(f"bbox has a negative size: {vals}")
  if not (width > 0 and height > 0):
    raise ValueError(f"image size must be positive, got {width}x{height}")
  clip = lambda v: min(max(v, 0.0), 1.0)
  return (clip(y / height), clip(x / width), clip((y + h) / height),
          clip((x + w) / width))

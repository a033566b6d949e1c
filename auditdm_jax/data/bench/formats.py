"""Readers of the benchmarks' released formats, into `BenchExample`s.

  src = make_source("vlmeval_tsv", path="/data/MMBench_DEV_EN_V11.tsv")
  for ex in src.examples("mmbench_v11"):
    ...
  src.describe()   # {"format": ..., "path": ..., "sizes": {...}} (provenance)

Every source is a frozen dataclass in the FORMATS registry, validated on
construction (its files and folders must exist). `examples(benchmark)` yields
validated examples in file order; any bad row raises `BenchDataError` naming
the file and the row (or the question id), never a bare KeyError.

Formats (the layouts the benchmarks are released in):

  vlmeval_tsv    VlmevalTsv(path): VLMEvalKit's TSV, base64 images. Columns
                 index, question, answer, image (required), hint, A..Z
                 (options), category, l2-category, image_path (optional).
                 As VLMEvalKit reads it: an image cell of <= 64 characters
                 is the index of the row holding the image (the convention
                 of its ImageBaseDataset, to save space), a cell "['<b64>', ...]" is a multi-image
                 question, rows with an empty image are skipped (counted in
                 `stats["skipped"]`; `skip_rows_without_image=False` makes
                 them an error). Answer cells "['a', 'b']" are answer lists
                 (VLMEvalKit's DocVQA / ChartQA TSVs). MMBench, MMT-Bench,
                 SEED-Bench, MME, MMMU, MMStar, RealWorldQA, AI2D, POPE.
  parquet        Parquet(paths, columns={}): Hugging Face parquet exports
                 (lmms-lab/*): image columns are {bytes, path} structs (also
                 "image_1".."image_N"), answers a str, a list of str or VQA's
                 list of {answer, ...}; options as A..Z columns or an
                 "options" list. Column names are found by alias (see
                 `_ALIASES`); `columns={"question": "query"}` overrides, ""
                 ignores a column: lmms-lab/MME repeats its question_id (the
                 image file) for both questions of an image, so read it with
                 columns={"id": "", "image_path": "question_id"} (ids become
                 "<file stem>-<row>", pairs are grouped by image file).
  vqa_json       VqaJson(questions, annotations, image_dir): VQAv2 / OK-VQA
                 (questions json + annotations json, 10 answers each; images
                 COCO_<subtype>_<12-digit id>.jpg or <12-digit id>.jpg, or
                 `image_pattern`).
  gqa_json       GqaJson(questions, image_dir): {qid: {imageId, question,
                 answer, types}}; images <imageId>.jpg.
  coco_captions  CocoCaptionsJson(annotations, image_dir): captions_*.json
                 ({images: [...], annotations: [...]}); one example per
                 image, its captions as answers.
  refcoco        RefCoco(refs, instances, image_dir, split): refs(unc).p
                 (pickle, read with an unpickler that refuses any class) or
                 the same list as JSON, plus instances.json (bbox xywh in
                 pixels); one example per referring sentence of the split.
  docvqa_json    DocVqaJson(path, image_dir): {data: [{questionId, question,
                 image, answers, question_types}]}.
  chartqa_json   ChartQaJson(paths, image_dir): lists of {imgname, query,
                 label}; several files (test_human, test_augmented) make one
                 split, the file stem is the category.
"""

from __future__ import annotations

import abc
import ast
import collections
import csv
import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import pickle
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Callable, ClassVar, Optional, Union

from auditdm_jax import tokenizer as tokenizer_lib
from auditdm_jax.data.bench import images as images_lib
from auditdm_jax.data.bench import schema
from auditdm_jax.data.bench.schema import BenchDataError, BenchExample

PathLike = Union[str, os.PathLike]
Stats = Optional[dict]

# VLMEvalKit: circular copies of MMBench question i have index i + k * 1e6.
CIRCULAR_MODULUS = 1_000_000
# VLMEvalKit: an image cell this short is another row's index, not base64.
_IMAGE_REF_MAX_CHARS = 64
# Loc-token bins, as PaliGemma writes boxes: round(coord * 1023).
_LOC_MAX = tokenizer_lib.NUM_LOC_TOKENS - 1

# Table columns (TSV and parquet) for each field, first present wins. The
# answer aliases depend on the task: multiple choice wants the letter column
# "answer" before a list column "answers", VQA the other way round.
_ALIASES: Mapping[str, tuple[str, ...]] = {
    "id": ("index", "question_id", "questionId", "id", "qid"),
    "question": ("question", "query"),
    "answers": ("answers", "answer", "label", "multiple_choice_answer"),
    "options": ("options", "choices"),
    "category": ("category",),
    "l2_category": ("l2-category", "l2_category"),
    "hint": ("hint",),
    "image": ("image",),
    "image_path": ("image_path",),
    "bbox": ("bbox",),
}
_CHOICE_ANSWER_ALIASES = ("answer", "answers", "label")
_IMAGE_N = re.compile(r"^image_(\d+)$")


# --- small helpers ------------------------------------------------------------


def _where(path: PathLike, row: Any) -> str:
  return f"{os.fspath(path)}, {row}"


class _RowContext:
  """Turns any error raised while reading one row into a BenchDataError."""

  def __init__(self, where: str):
    self.where = where

  def __enter__(self):
    return self

  def __exit__(self, typ, value, tb):
    if typ is None or issubclass(typ, BenchDataError):
      return False
    if issubclass(typ, (ValueError, TypeError, KeyError, IndexError,
                        OSError)):
      msg = (f"missing field {value}" if issubclass(typ, KeyError)
             else str(value))
      raise BenchDataError(f"{self.where}: {msg}") from value
    return False


def _missing(v: Any) -> bool:
  """Empty cell: None, NaN, or a blank string (pandas writes NaN as "")."""
  if v is None:
    return True
  if isinstance(v, float) and math.isnan(v):
    return True
  return isinstance(v, str) and not v.strip()


def _text(v: Any) -> str:
  """A cell as text: numbers without a spurious '.0', None -> ''."""
  if _missing(v):
    return ""
  if isinstance(v, bytes):
    return v.decode("utf-8")
  if isinstance(v, float) and v.is_integer():
    return str(int(v))
  return str(v)


def _id_text(v: Any) -> str:
  if isinstance(v, float) and v.is_integer():
    return str(int(v))
  return _text(v).strip()


def _maybe_list_literal(s: str) -> Optional[list]:
  """"['a', 'b']" -> ['a', 'b'] (ast.literal_eval: no code runs); else None."""
  s = s.strip()
  if not (s.startswith("[") and s.endswith("]")):
    return None
  try:
    parsed = ast.literal_eval(s)
  except (ValueError, SyntaxError, MemoryError, RecursionError):
    return None
  return list(parsed) if isinstance(parsed, (list, tuple)) else None


def _answer_text(x: Any) -> str:
  if isinstance(x, Mapping):  # VQA's {answer, answer_confidence, answer_id}.
    if "answer" not in x:
      raise ValueError(f"answer entry without 'answer': {dict(x)}")
    x = x["answer"]
  if _missing(x):
    raise ValueError("empty answer")
  return _text(x)


def _answer_values(v: Any) -> list[str]:
  """A str, a list literal string, a list (of str / numbers / dicts)."""
  if isinstance(v, str):
    parsed = _maybe_list_literal(v)
    return [_answer_text(x) for x in parsed] if parsed is not None else [v]
  if isinstance(v, Mapping):
    return [_answer_text(v)]
  if isinstance(v, Iterable) and not isinstance(v, (bytes, bytearray)):
    return [_answer_text(x) for x in v]
  return [_answer_text(v)]


def _loc_answer(bbox: Sequence[float]) -> str:
  """PaliGemma's target string for a normalised box (y0, x0, y1, x1)."""
  return tokenizer_lib.loc_tokens(*(int(round(v * _LOC_MAX)) for v in bbox))


def _image_hash(data: bytes) -> str:
  return "img:" + hashlib.sha256(data).hexdigest()[:16]


def _resolve_choice(options: Sequence[str], raw: Sequence[str]
                    ) -> tuple[tuple[str, ...], str]:
  """(answers, letter) of a multiple-choice row; raw = its answer cell(s).

  The answer is a letter ("B"), an option's exact text, or a 0-based index
  ("1", lmms-lab/ai2d) when it is neither.
  """
  if len(raw) != 1:
    raise ValueError(f"a multiple-choice row has one answer, got {raw}")
  a = raw[0].strip()
  letters = schema.LETTERS[:len(options)]
  if len(a) == 1 and a in letters:
    i = letters.index(a)
  elif a in [o.strip() for o in options]:
    i = [o.strip() for o in options].index(a)
  elif a.isdigit() and int(a) < len(options):
    i = int(a)
  else:
    raise ValueError(f"answer {a!r} is neither a letter in {letters} nor "
                     f"an option {list(options)}")
  return (options[i],), schema.LETTERS[i]


def _check_exists(kind: str, path: PathLike) -> str:
  # Absolute, so a build's provenance (and its idempotency check) does not
  # depend on the working directory.
  path = os.path.abspath(os.fspath(path))
  ok = os.path.isdir(path) if kind == "folder" else os.path.isfile(path)
  if not ok:
    raise FileNotFoundError(f"{kind} not found: {path}")
  return path


def _load_json(path: str) -> Any:
  try:
    with open(path, "rb") as f:
      return json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise BenchDataError(f"{path}: not valid JSON: {e}") from None


class _PlainUnpickler(pickle.Unpickler):
  """Reads pickles of plain containers only: any class reference is refused,
  so a refs file cannot run code when loaded."""

  def find_class(self, module, name):
    raise pickle.UnpicklingError(
        f"refusing to load {module}.{name}: a refs file holds only lists, "
        "dicts, str and numbers")


# --- sources ------------------------------------------------------------------


class Source(abc.ABC):
  """A benchmark split in one released format (subclasses are frozen
  dataclasses; FORMAT is the registry name)."""

  FORMAT: ClassVar[str] = ""

  @abc.abstractmethod
  def examples(self, benchmark: str, stats: Stats = None
               ) -> Iterator[BenchExample]:
    """Yields the split's examples in file order.

    Args:
      benchmark: a BENCHMARKS key; decides what rows must hold.
      stats: optional dict; "skipped" counts rows a format skips by design.

    Raises:
      BenchDataError: a bad file or row (named in the message).
    """

  def files(self) -> list[str]:
    """The input files (for provenance: their sizes go in the metadata)."""
    return []

  def describe(self) -> dict[str, Any]:
    """JSON-able description: format, settings, input file sizes."""
    d = {"format": self.FORMAT}
    for f in dataclasses.fields(self):
      v = getattr(self, f.name)
      d[f.name] = list(v) if isinstance(v, tuple) else v
    d["sizes"] = {p: os.path.getsize(p) for p in self.files()}
    return d


FORMATS: dict[str, type[Source]] = {}


def register_format(cls: type[Source]) -> type[Source]:
  """Class decorator: adds a Source subclass to FORMATS under cls.FORMAT."""
  if not cls.FORMAT or cls.FORMAT in FORMATS:
    raise ValueError(f"format name missing or taken: {cls.FORMAT!r}")
  FORMATS[cls.FORMAT] = cls
  return cls


# pylint: disable-next=redefined-builtin
def make_source(format: str, **kwargs) -> Source:
  """Builds the source of format `format` from its fields.

  Raises:
    ValueError: unknown format (the message lists the known ones).
    TypeError: fields the format does not have.
    FileNotFoundError: a named file or folder does not exist.
  """
  if format not in FORMATS:
    raise ValueError(f"unknown format {format!r}; known: {sorted(FORMATS)}")
  return FORMATS[format](**kwargs)


# --- tables: VLMEvalKit TSV and parquet ---------------------------------------


class _Table:
  """Field lookup in one table row, with aliases and overrides."""

  def __init__(self, header: Sequence[str], spec: schema.BenchmarkSpec,
               overrides: Mapping[str, str], where: str):
    self.header = list(header)
    self.cols: dict[str, Optional[str]] = {}
    names = set(self.header)
    for field, aliases in _ALIASES.items():
      if field == "answers" and spec.task in ("multiple_choice", "yes_no"):
        aliases = _CHOICE_ANSWER_ALIASES
      if field in overrides and not overrides[field]:
        self.cols[field] = None  # "" = the file has no such column.
      elif field in overrides:
        if overrides[field] not in names:
          raise BenchDataError(f"{where}: column {overrides[field]!r} (for "
                               f"{field}) not in {self.header}")
        self.cols[field] = overrides[field]
      else:
        self.cols[field] = next((a for a in aliases if a in names), None)
    self.letters = [c for c in schema.LETTERS if c in names]
    self.image_n = sorted((int(m.group(1)), c) for c in self.header
                          if (m := _IMAGE_N.match(c)))
    required = ["answers"]
    if spec.task != "caption":
      required.append("question")
    missing = [f for f in required if self.cols[f] is None]
    if self.cols["image"] is None and not self.image_n:
      missing.append("image")
    if spec.task == "grounding" and self.cols["bbox"] is None:
      missing.append("bbox")
    if missing:
      wanted = {f: (overrides.get(f) or list(_ALIASES[f])) for f in missing}
      raise BenchDataError(f"{where}: missing column(s) for {wanted}; the "
                           f"file has {self.header}")

  def get(self, row: Mapping[str, Any], field: str) -> Any:
    col = self.cols[field]
    return None if col is None else row.get(col)

  def options(self, row: Mapping[str, Any]) -> tuple[str, ...]:
    if self.letters:
      vals = [None if _missing(row.get(c)) else _text(row.get(c))
              for c in self.letters]
      present = [self.letters[i] for i, v in enumerate(vals) if v is not None]
      if present != list(schema.LETTERS[:len(present)]):
        raise ValueError(f"options must fill A, B, ... without gaps; "
                         f"this row has {present}")
      if present:
        return tuple(v for v in vals if v is not None)
    v = self.get(row, "options")
    if isinstance(v, (list, tuple)):
      pass
    elif _missing(v):
      return ()
    elif isinstance(v, str):
      parsed = _maybe_list_literal(v)
      if parsed is None:
        raise ValueError(f"options cell is not a list: {v[:80]!r}")
      v = parsed
    else:
      raise TypeError(f"options cell of type {type(v).__name__}")
    return tuple(_text(o) for o in v)

  def image_values(self, row: Mapping[str, Any]) -> list[Any]:
    vals = []
    if self.cols["image"] is not None and not _missing_image(
        row.get(self.cols["image"])):
      vals.append(row[self.cols["image"]])
    for _, c in self.image_n:
      if not _missing_image(row.get(c)):
        vals.append(row[c])
    return vals


def _missing_image(v: Any) -> bool:
  if isinstance(v, Mapping):
    return _missing(v.get("bytes")) and _missing(v.get("path"))
  if isinstance(v, (list, tuple, bytes, bytearray)):
    return not v
  return _missing(v)


def _decode_images(values: Sequence[Any]) -> list[bytes]:
  """Image cells -> validated PNG/JPEG bytes, lists flattened in order."""
  out = []
  for v in values:
    if isinstance(v, (list, tuple)):
      out.extend(_decode_images(v))
    elif isinstance(v, Mapping):  # HF Image struct {bytes, path}.
      if isinstance(v.get("bytes"), (bytes, bytearray)) and v["bytes"]:
        out.append(images_lib.encoded(v["bytes"]))
      else:
        raise ValueError(f"image struct without bytes (path "
                         f"{v.get('path')!r}); export with embedded images")
    elif isinstance(v, (bytes, bytearray)):
      out.append(images_lib.encoded(v))
    elif isinstance(v, str):
      parsed = _maybe_list_literal(v)
      if parsed is not None:
        out.extend(_decode_images(parsed))
      else:
        out.append(images_lib.encoded(images_lib.from_base64(v)))
    else:
      raise TypeError(f"unsupported image cell of type {type(v).__name__}")
  return out


def _table_examples(spec: schema.BenchmarkSpec, table: _Table,
                    rows: Iterable[tuple[str, Mapping[str, Any]]],
                    default_id: Optional[Callable[[int], str]],
                    stats: Stats,
                    skip_without_image: bool) -> Iterator[BenchExample]:
  """Rows (where, row dict) of a TSV or parquet file -> examples.

  default_id(n) names row n when the table has no id; None: ids required.
  """
  for n, (where, row) in enumerate(rows, start=1):  # n: 1-based, as "row n".
    with _RowContext(where):
      image_cells = table.image_values(row)
      if not image_cells:
        if skip_without_image:
          if stats is not None:
            stats["skipped"] = stats.get("skipped", 0) + 1
          logging.warning("%s: no image, skipped", where)
          continue
        raise ValueError("empty image cell")
      imgs = _decode_images(image_cells)
      ex_id = _id_text(table.get(row, "id"))
      if not ex_id:
        if default_id is None:
          raise ValueError("empty index")
        ex_id = default_id(n)
      question = _text(table.get(row, "question"))
      raw = table.get(row, "answers")
      if _missing(raw):
        raise ValueError("empty answer")
      raw_answers = _answer_values(raw)
      options: tuple[str, ...] = ()
      letter = ""
      answers = tuple(raw_answers)
      if spec.task == "multiple_choice":
        options = table.options(row)
        if options:
          answers, letter = _resolve_choice(options, raw_answers)
      bbox = None
      if spec.task == "grounding":
        box = table.get(row, "bbox")
        if isinstance(box, str):
          box = _maybe_list_literal(box)
        if box is None:
          raise ValueError("empty bbox")
        w, h = images_lib.size(imgs[0])
        bbox = schema.normalise_xywh(box, w, h)
        answers = (_loc_answer(bbox),)
      group = _group(spec, ex_id, _text(table.get(row, "image_path")),
                     imgs[0])
      yield BenchExample(
          id=ex_id, benchmark=spec.name, image=imgs[0],
          extra_images=tuple(imgs[1:]), question=question, answers=answers,
          options=options, answer_letter=letter,
          category=_text(table.get(row, "category")),
          l2_category=_text(table.get(row, "l2_category")),
          hint=_text(table.get(row, "hint")), group=group, bbox=bbox)


def _group(spec: schema.BenchmarkSpec, ex_id: str, image_path: str,
           image: bytes) -> str:
  if spec.grouping == "circular":
    # VLMEvalKit (mcq_circular_eval): g_index = int(index % 1e6); the row
    # with index == g_index is the original question.
    if not re.fullmatch(r"\d+", ex_id):
      raise ValueError(f"circular evaluation needs integer indices, got "
                       f"{ex_id!r}")
    return str(int(ex_id) % CIRCULAR_MODULUS)
  if spec.grouping == "image":
    # VLMEvalKit's MME_rating groups by image_path; without that column the
    # image's content identifies it (both questions carry the same image).
    return image_path or _image_hash(image)
  return ""


def _set_csv_limit() -> None:
  # Base64 images exceed csv's default 128 KiB field limit.
  limit = sys.maxsize
  while True:
    try:
      csv.field_size_limit(limit)
      return
    except OverflowError:
      limit //= 2


@register_format
@dataclasses.dataclass(frozen=True)
class VlmevalTsv(Source):
  """VLMEvalKit TSV (see the module docstring)."""
  path: str
  skip_rows_without_image: bool = True
  FORMAT: ClassVar[str] = "vlmeval_tsv"

  def __post_init__(self):
    object.__setattr__(self, "path", _check_exists("file", self.path))

  def files(self) -> list[str]:
    return [self.path]

  def _open(self):
    _set_csv_limit()
    # utf-8-sig: a BOM must not become part of the first column's name.
    f = open(self.path, newline="", encoding="utf-8-sig")
    reader = csv.reader(f, delimiter="\t")
    try:
      header = next(reader)
    except StopIteration:
      f.close()
      raise BenchDataError(f"{self.path}: empty file") from None
    except (csv.Error, UnicodeDecodeError) as e:
      f.close()
      raise BenchDataError(f"{self.path}: bad TSV header: {e}") from None
    return f, reader, header

  def header(self) -> list[str]:
    """The column names."""
    f, _, header = self._open()
    f.close()
    return header

  def rows(self) -> Iterator[tuple[int, dict[str, str]]]:
    """(row number from 1, {column: cell}) for every non-empty row."""
    f, reader, header = self._open()
    with f:
      row_no = 0
      while True:
        row_no += 1
        where = _where(self.path, f"row {row_no}")
        try:
          cells = next(reader)
        except StopIteration:
          return
        except (csv.Error, UnicodeDecodeError) as e:
          raise BenchDataError(f"{where}: bad TSV: {e}") from None
        if not cells:
          continue
        if len(cells) != len(header):
          raise BenchDataError(f"{where}: {len(cells)} fields, the header "
                               f"has {len(header)}")
        yield row_no, dict(zip(header, cells))

  def _image_targets(self, id_col: str, image_col: str) -> dict[str, str]:
    """{index: image cell} of the rows other rows' image cells name.

    VLMEvalKit stores an image once; a cell of <= 64 characters elsewhere is
    that row's index. Two extra passes over the file keep memory to the
    referenced images only (TSVs of several GB exist).
    """
    referenced = set()
    for _, row in self.rows():
      cell = row[image_col].strip()
      if cell and len(cell) <= _IMAGE_REF_MAX_CHARS:
        referenced.add(cell)
    targets: dict[str, str] = {}
    if referenced:
      for _, row in self.rows():
        idx, cell = row[id_col].strip(), row[image_col]
        if idx in referenced and len(cell.strip()) > _IMAGE_REF_MAX_CHARS:
          targets[idx] = cell
    return targets

  def examples(self, benchmark: str, stats: Stats = None
               ) -> Iterator[BenchExample]:
    spec = schema.get_benchmark(benchmark)
    header = self.header()
    table = _Table(header, spec, {}, self.path)
    if table.cols["id"] is None:
      raise BenchDataError(f"{self.path}: missing column 'index'; the file "
                           f"has {header}")
    id_col, image_col = table.cols["id"], table.cols["image"]
    targets = (self._image_targets(id_col, image_col)
               if image_col is not None else {})

    def resolved() -> Iterator[tuple[str, dict[str, str]]]:
      for row_no, row in self.rows():
        where = _where(self.path, f"row {row_no} (index "
                                  f"{row[id_col].strip()})")
        if image_col is not None:
          cell = row[image_col].strip()
          if cell and len(cell) <= _IMAGE_REF_MAX_CHARS:
            if cell not in targets:
              raise BenchDataError(
                  f"{where}: image cell {cell!r} names no row holding an "
                  "image")
            row = dict(row)
            row[image_col] = targets[cell]
        yield where, row

    yield from _table_examples(
        spec, table, resolved(), None, stats, self.skip_rows_without_image)


@register_format
@dataclasses.dataclass(frozen=True)
class Parquet(Source):
  """Hugging Face parquet export(s) of one split (see the module docstring).

  Attributes:
    paths: parquet files, read in order (shards of one split).
    columns: {field: column} overrides of the alias lookup; fields are the
      keys of `_ALIASES` (id, question, answers, options, category,
      l2_category, hint, image, image_path, bbox); "" ignores the field's
      columns (without an id column, ids are "<file stem>-<row>").
    batch_rows: rows per pyarrow batch (memory: images are in the rows).
  """
  paths: tuple[str, ...]
  columns: tuple[tuple[str, str], ...] = ()
  batch_rows: int = 64
  FORMAT: ClassVar[str] = "parquet"

  def __post_init__(self):
    paths = (self.paths,) if isinstance(self.paths, (str, os.PathLike)) \
        else tuple(self.paths)
    if not paths:
      raise ValueError("Parquet needs at least one path")
    object.__setattr__(self, "paths",
                       tuple(_check_exists("file", p) for p in paths))
    cols = dict(self.columns.items() if isinstance(self.columns, Mapping)
                else self.columns)
    unknown = set(cols) - set(_ALIASES)
    if not all(isinstance(v, str) for v in cols.values()):
      raise TypeError(f"column names must be str: {cols}")
    if unknown:
      raise ValueError(f"unknown column fields {sorted(unknown)}; known: "
                       f"{sorted(_ALIASES)}")
    object.__setattr__(self, "columns", tuple(sorted(cols.items())))
    if self.batch_rows < 1:
      raise ValueError(f"batch_rows must be >= 1, got {self.batch_rows}")

  def files(self) -> list[str]:
    return list(self.paths)

  def examples(self, benchmark: str, stats: Stats = None
               ) -> Iterator[BenchExample]:
    spec = schema.get_benchmark(benchmark)
    pq = _pyarrow_parquet()
    for path in self.paths:
      try:
        pf = pq.ParquetFile(path)
      except Exception as e:  # pyarrow raises its own ArrowInvalid etc.
        raise BenchDataError(f"{path}: not a readable parquet file: {e}"
                             ) from None
      table = _Table(pf.schema_arrow.names, spec, dict(self.columns), path)
      stem = os.path.splitext(os.path.basename(path))[0]

      def rows(pf=pf, path=path):
        n = 0
        for batch in pf.iter_batches(batch_size=self.batch_rows):
          for row in batch.to_pylist():
            n += 1
            yield _where(path, f"row {n}"), row

      yield from _table_examples(spec, table, rows(),
                                 lambda n, stem=stem: f"{stem}-{n}", stats,
                                 skip_without_image=False)


def _pyarrow_parquet():
  try:
    import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("reading parquet needs pyarrow (tensorflow-datasets "
                      "installs it; else pip install pyarrow)") from e
  return pq


# --- JSON layouts -------------------------------------------------------------


@register_format
@dataclasses.dataclass(frozen=True)
class VqaJson(Source):
  """VQAv2 / OK-VQA: questions + annotations json, COCO images.

  Attributes:
    questions: e.g. v2_OpenEnded_mscoco_val2014_questions.json.
    annotations: e.g. v2_mscoco_val2014_annotations.json.
    image_dir: the COCO image folder (val2014/).
    image_pattern: file name inside image_dir, a str.format pattern with
      {image_id} and {subtype} (the questions' data_subtype); None tries
      "COCO_{subtype}_{image_id:012d}.jpg" then "{image_id:012d}.jpg".
  """
  questions: str
  annotations: str
  image_dir: str
  image_pattern: Optional[str] = None
  FORMAT: ClassVar[str] = "vqa_json"

  def __post_init__(self):
    object.__setattr__(self, "questions",
                       _check_exists("file", self.questions))
    object.__setattr__(self, "annotations",
                       _check_exists("file", self.annotations))
    object.__setattr__(self, "image_dir",
                       _check_exists("folder", self.image_dir))

  def files(self) -> list[str]:
    return [self.questions, self.annotations]

  def _image_path(self, image_id: int, subtype: str) -> str:
    patterns = ([self.image_pattern] if self.image_pattern else
                ["COCO_{subtype}_{image_id:012d}.jpg", "{image_id:012d}.jpg"])
    tried = []
    for p in patterns:
      path = os.path.join(self.image_dir,
                          p.format(image_id=image_id, subtype=subtype))
      if os.path.isfile(path):
        return path
      tried.append(path)
    raise FileNotFoundError(f"image {image_id} not found; tried {tried}")

  def examples(self, benchmark: str, stats: Stats = None
               ) -> Iterator[BenchExample]:
    spec = schema.get_benchmark(benchmark)
    qs = _load_json(self.questions)
    anns = _load_json(self.annotations)
    for path, doc, key in ((self.questions, qs, "questions"),
                           (self.annotations, anns, "annotations")):
      if not isinstance(doc, Mapping) or not isinstance(doc.get(key), list):
        raise BenchDataError(f"{path}: expected an object with a "
                             f"'{key}' list")
    by_qid = {}
    for i, a in enumerate(anns["annotations"]):
      with _RowContext(_where(self.annotations, f"annotation {i}")):
        by_qid[a["question_id"]] = a
    subtype = str(qs.get("data_subtype", ""))
    for i, q in enumerate(qs["questions"]):
      qid = q.get("question_id", f"#{i}") if isinstance(q, Mapping) else i
      with _RowContext(_where(self.questions, f"question {i} (question_id "
                                              f"{qid})")):
        if qid not in by_qid:
          raise ValueError(f"no annotation in {self.annotations}")
        ann = by_qid[qid]
        image = images_lib.encoded_file(
            self._image_path(int(q["image_id"]), subtype))
        yield BenchExample(
            id=str(qid), benchmark=spec.name, image=image,
            question=q["question"],
            answers=tuple(_answer_text(a) for a in ann["answers"]),
            category=_text(ann.get("answer_type")),
            l2_category=_text(ann.get("question_type")))


@register_format
@dataclasses.dataclass(frozen=True)
class GqaJson(Source):
  """GQA questions json ({qid: {imageId, question, answer, types}})."""
  questions: str
  image_dir: str
  FORMAT: ClassVar[str] = "gqa_json"

  def __post_init__(self):
    object.__setattr__(self, "questions",
                       _check_exists("file", self.questions))
    object.__setattr__(self, "image_dir",
                       _check_exists("folder", self.image_dir))

  def files(self) -> list[str]:
    return [self.questions]

  def examples(self, benchmark: str, stats: Stats = None
               ) -> Iterator[BenchExample]:
    spec = schema.get_benchmark(benchmark)
    doc = _load_json(self.questions)
    if not isinstance(doc, Mapping):
      raise BenchDataError(f"{self.questions}: expected an object keyed by "
                           "question id")
    for qid, q in doc.items():
      with _RowContext(_where(self.questions, f"question {qid}")):
        types = q.get("types") or {}
        path = os.path.join(self.image_dir, f"{q['imageId']}.jpg")
        yield BenchExample(
            id=str(qid), benchmark=spec.name,
            image=images_lib.encoded_file(path), question=q["question"],
            answers=(_answer_text(q["answer"]),),
            category=_text(types.get("structural")),
            l2_category=_text(types.get("semantic")))


@register_format
@dataclasses.dataclass(frozen=True)
class CocoCaptionsJson(Source):
  """COCO captions_*.json: one example per image, sorted by image id."""
  annotations: str
  image_dir: str
  FORMAT: ClassVar[str] = "coco_captions"

  def __post_init__(self):
    object.__setattr__(self, "annotations",
                       _check_exists("file", self.annotations))
    object.__setattr__(self, "image_dir",
                       _check_exists("folder", self.image_dir))

  def files(self) -> list[str]:
    return [self.annotations]

  def examples(self, benchmark: str, stats: Stats = None
               ) -> Iterator[BenchExample]:
    spec = schema.get_benchmark(benchmark)
    doc = _load_json(self.annotations)
    if not isinstance(doc, Mapping) or not all(
        isinstance(doc.get(k), list) for k in ("images", "annotations")):
      raise BenchDataError(f"{self.annotations}: expected 'images' and "
                           "'annotations' lists")
    captions = collections.defaultdict(list)
    for i, a in enumerate(doc["annotations"]):
      with _RowContext(_where(self.annotations, f"annotation {i}")):
        captions[a["image_id"]].append(_answer_text(a["caption"]))
    images = {}
    for i, im in enumerate(doc["images"]):
      with _RowContext(_where(self.annotations, f"image {i}")):
        images[im["id"]] = im["file_name"]
    for image_id in sorted(images):
      with _RowContext(_where(self.annotations, f"image_id {image_id}")):
        if not captions[image_id]:
          raise ValueError("image without captions")
        yield BenchExample(
            id=str(image_id), benchmark=spec.name,
            image=images_lib.encoded_file(
                os.path.join(self.image_dir, images[image_id])),
            answers=tuple(captions[image_id]))


@register_format
@dataclasses.dataclass(frozen=True)
class RefCoco(Source):
  """RefCOCO refs + instances (see the module docstring).

  Attributes:
    refs: refs(unc).p (pickle) or a JSON file with the same list.
    instances: instances.json ({images, annotations, categories}).
    image_dir: COCO train2014/ (RefCOCO's images are all train2014).
    split: the refs' split to read ("val", "testA", "testB", "train").
  """
  refs: str
  instances: str
  image_dir: str
  split: str
  FORMAT: ClassVar[str] = "refcoco"

  def __post_init__(self):
    object.__setattr__(self, "refs", _check_exists("file", self.refs))
    object.__setattr__(self, "instances",
                       _check_exists("file", self.instances))
    object.__setattr__(self, "image_dir",
                       _check_exists("folder", self.image_dir))
    if not self.split:
      raise ValueError("RefCoco needs the split to read")

  def files(self) -> list[str]:
    return [self.refs, self.instances]

  def _load_refs(self) -> list:
    with open(self.refs, "rb") as f:
      data = f.read()
    if data.lstrip()[:1] in (b"[", b"{"):
      try:
        refs = json.loads(data)
      except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BenchDataError(f"{self.refs}: not valid JSON: {e}") from None
    else:
      try:
        refs = _PlainUnpickler(io.BytesIO(data), encoding="utf-8").load()
      except Exception as e:  # Unpickling raises many types on bad data.
        raise BenchDataError(f"{self.refs}: not a refs pickle: {e}"
                             ) from None
    if not isinstance(refs, list):
      raise BenchDataError(f"{self.refs}: expected a list of refs")
    return refs

  def examples(self, benchmark: str, stats: Stats = None
               ) -> Iterator[BenchExample]:
    spec = schema.get_benchmark(benchmark)
    refs = self._load_refs()
    inst = _load_json(self.instances)
    if not isinstance(inst, Mapping) or not all(
        isinstance(inst.get(k), list) for k in ("images", "annotations")):
      raise BenchDataError(f"{self.instances}: expected 'images' and "
                           "'annotations' lists")
    images, boxes = {}, {}
    for i, im in enumerate(inst["images"]):
      with _RowContext(_where(self.instances, f"image {i}")):
        images[im["id"]] = (im["file_name"], float(im["width"]),
                            float(im["height"]))
    for i, a in enumerate(inst["annotations"]):
      with _RowContext(_where(self.instances, f"annotation {i}")):
        boxes[a["id"]] = a["bbox"]
    names = {c.get("id"): _text(c.get("name"))
             for c in inst.get("categories") or [] if isinstance(c, Mapping)}
    n_split = 0
    for i, ref in enumerate(refs):
      ref_id = ref.get("ref_id", f"#{i}") if isinstance(ref, Mapping) else i
      with _RowContext(_where(self.refs, f"ref {i} (ref_id {ref_id})")):
        if ref["split"] != self.split:
          continue
        n_split += 1
        if ref["ann_id"] not in boxes:
          raise ValueError(f"ann_id {ref['ann_id']} not in {self.instances}")
        if ref["image_id"] not in images:
          raise ValueError(f"image_id {ref['image_id']} not in "
                           f"{self.instances}")
        file_name, w, h = images[ref["image_id"]]
        bbox = schema.normalise_xywh(boxes[ref["ann_id"]], w, h)
        image = images_lib.encoded_file(os.path.join(self.image_dir,
                                                     file_name))
        cat = ref.get("category_id")
        for sent in ref["sentences"]:
          yield BenchExample(
              id=f"{ref_id}/{sent['sent_id']}", benchmark=spec.name,
              image=image, question=_answer_text(sent["sent"]),
              answers=(_loc_answer(bbox),), bbox=bbox,
              category=names.get(cat, _text(cat)), group=str(ref_id))
    if not n_split:
      splits = sorted({str(r.get("split")) for r in refs
                       if isinstance(r, Mapping)})
      raise BenchDataError(f"{self.refs}: no refs of split {self.split!r}; "
                           f"the file has {splits}")


@register_format
@dataclasses.dataclass(frozen=True)
class DocVqaJson(Source):
  """DocVQA {data: [{questionId, question, image, answers}]}; image paths
  are relative to image_dir (the split's folder)."""
  path: str
  image_dir: str
  FORMAT: ClassVar[str] = "docvqa_json"

  def __post_init__(self):
    object.__setattr__(self, "path", _check_exists("file", self.path))
    object.__setattr__(self, "image_dir",
                       _check_exists("folder", self.image_dir))

  def files(self) -> list[str]:
    return [self.path]

  def examples(self, benchmark: str, stats: Stats = None
               ) -> Iterator[BenchExample]:
    spec = schema.get_benchmark(benchmark)
    doc = _load_json(self.path)
    if not isinstance(doc, Mapping) or not isinstance(doc.get("data"), list):
      raise BenchDataError(f"{self.path}: expected an object with a 'data' "
                           "list")
    for i, q in enumerate(doc["data"]):
      qid = q.get("questionId", f"#{i}") if isinstance(q, Mapping) else i
      with _RowContext(_where(self.path, f"item {i} (questionId {qid})")):
        if "answers" not in q:
          raise ValueError("no 'answers' (the test split's answers are not "
                           "released)")
        types = q.get("question_types") or []
        yield BenchExample(
            id=str(q["questionId"]), benchmark=spec.name,
            image=images_lib.encoded_file(
                os.path.join(self.image_dir, q["image"])),
            question=q["question"],
            answers=tuple(_answer_text(a) for a in q["answers"]),
            category=",".join(str(t) for t in types))


@register_format
@dataclasses.dataclass(frozen=True)
class ChartQaJson(Source):
  """ChartQA [{imgname, query, label}] files; ids are "<file stem>/<i>"."""
  paths: tuple[str, ...]
  image_dir: str
  FORMAT: ClassVar[str] = "chartqa_json"

  def __post_init__(self):
    paths = (self.paths,) if isinstance(self.paths, (str, os.PathLike)) \
        else tuple(self.paths)
    if not paths:
      raise ValueError("ChartQaJson needs at least one file")
    object.__setattr__(self, "paths",
                       tuple(_check_exists("file", p) for p in paths))
    object.__setattr__(self, "image_dir",
                       _check_exists("folder", self.image_dir))

  def files(self) -> list[str]:
    return list(self.paths)

  def examples(self, benchmark: str, stats: Stats = None
               ) -> Iterator[BenchExample]:
    spec = schema.get_benchmark(benchmark)
    for path in self.paths:
      doc = _load_json(path)
      if not isinstance(doc, list):
        raise BenchDataError(f"{path}: expected a list of questions")
      stem = os.path.splitext(os.path.basename(path))[0]
      for i, q in enumerate(doc):
        with _RowContext(_where(path, f"item {i}")):
          yield BenchExample(
              id=f"{stem}/{i}", benchmark=spec.name,
              image=images_lib.encoded_file(
                  os.path.join(self.image_dir, q["imgname"])),
              question=q["query"], answers=(_answer_text(q["label"]),),
              category=stem)

r"""The discovery report: one static HTML page plus an `images/` folder.

  python -m auditdm_jax.discover.report --data report.json --out DIR \
      [--max-examples 12]

writes DIR/index.html and DIR/images/*.png and prints the path of
index.html. Library:

  data = ReportData.from_json(json.load(f))   # or build the dataclasses
  index = write_report(data, "workdir/report")
  json.dump(data.to_json(), f)                # the CLI's input format

The page is plain HTML + inline CSS: no JavaScript, no fonts or styles from
the network, every image a relative `images/...` path, so it opens from
file:// on a machine without network (a Content-Security-Policy meta tag
forbids scripts and remote loads as a second line of defence). EVERY text
field is HTML-escaped: auditor output (questions, edits, captions, answers,
even failure-type names derived from them) is untrusted text. Image file
names are made from positions (`t03_e07_orig.png`), never from ids.

Writing is atomic: the report is built in a temporary sibling directory
and renamed into place, so DIR is either the previous complete report, or
the new complete one, never a half-written one. An existing DIR is only
replaced when it is a report written here (it holds the marker file
`.auditdm_report`) or is empty; anything else is an error.

Sections: summary (what was audited, run names, counts, success rates with
95% intervals), the failure-type table, plots (PNG, matplotlib Agg, see
`plots.py`: failure rate per type, the GRPO reward curve, benchmark bars
before/after per split), the benchmark table, and a gallery per failure
type (original and counterfactual image, edit/caption, question, the
target's answer, each reference's answer, the consensus, the oracle answer
when known).

Input schema (`ReportData.from_json`; JSON object, unknown keys rejected,
`?` = optional):

  {
    "title": str,
    "summary": {
      "audited": str,                   # free text: what was audited
      "runs": {role: name},             # e.g. {"target": "zoo/target",
                                        #  "references": "ref_pg2, ref_g3",
                                        #  "auditor": "grpo step 1000"}
      "counts": {label: int >= 0},      # e.g. {"pairs": 600, "failures": 91}
      "rates": [                        # success rates; eval.success_rate's
        {"label": str,                  #  {"n", "successes", "ci95"} dicts
         "successes": int, "n": int,    #  fit (its "rate" key is accepted
         "ci95"?: [lo, hi]}             #  and checked); ci95 missing ->
      ]                                 #  95% Wilson interval
    },
    "failure_types": [                  # in display order (worst first)
      {"name": str,
       "top_terms": [str | [str, weight]],  # characteristic terms (the
                                        #  taxonomy's [term, weight] pairs
                                        #  are accepted; weights dropped)
       "count": int >= len(examples),   # failures of this type
       "rate": float in [0, 1] | null,  # failure rate of the type; null:
                                        #  unknown (shown "n/a", not plotted)
       "description"?: str,
       "examples": [
         {"id": str,                    # shown, never used as a file name
          "mode": "question" | "image" | "both",   # audit.rollout.MODES
          "kind"?: "question" | "edit" | "caption", # what `instruction` is
          "auditor"?: str | null,       # which auditor run found it
          "skill"?: str | null,         # the oracle's skill, when known
          "question": str,              # the question the models answered
          "instruction": str,           # the edit or caption ("" in mode
                                        #  "question")
          "target_answer": str,
          "reference_answers": {name: str} | [str],  # list -> "ref 1", ...
          "consensus": str | null,      # null: the references disagreed
          "truth": str | null,          # oracle answer, null when unknown
          "original_png": base64 str,   # PNG bytes (checked)
          "counterfactual_png": base64 str | null}  # null iff mode is
       ]}                               #  "question" (the original is used)
    ],
    "reward_curve": [[step: int, value: float]],   # may be empty
    "benchmarks": {split: {"before": float, "after": float,
                           other series?: float}}  # may be empty
  }

In Python the same fields are the frozen dataclasses below (`ReportData`,
`Summary`, `Rate`, `FailureType`, `Example`), with images as raw PNG
`bytes`; every constructor validates and raises `ReportError` (a
ValueError) naming the offending field.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import dataclasses
import html
import json
import math
import numbers
import os
import pathlib
import shutil
import sys
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union

PathLike = Union[str, os.PathLike]

# Mirrors audit.rollout.MODES (not imported: that module pulls in jax, and
# rendering a report needs none of it). The test checks the two agree.
MODES = ("question", "image", "both")
MODE_LABEL = {
    "question": "(Q*, I): auditor's question on the original image",
    "image": "(Q, I*): dataset question on the counterfactual image",
    "both": "(Q*, I*): auditor's question on the counterfactual image",
}
KINDS = ("", "question", "edit", "caption")
MARKER = ".auditdm_report"
INDEX = "index.html"
IMAGES = "images"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ReportError(ValueError):
  """Invalid report data (the message names the field)."""


# ---------------------------------------------------------------------------
# Validation helpers. Each returns the (normalised) value or raises.


def _str(where: str, v: Any) -> str:
  if not isinstance(v, str):
    raise ReportError(f"{where}: expected a string, got {type(v).__name__}")
  return v


def _opt_str(where: str, v: Any) -> Optional[str]:
  return None if v is None else _str(where, v)


def _int(where: str, v: Any, lo: int = 0) -> int:
  # numbers.Integral admits numpy ints (returned as Python ints, so the data
  # stays JSON-able); bool is excluded: True as a count is surely a mistake.
  if isinstance(v, bool) or not isinstance(v, numbers.Integral):
    raise ReportError(f"{where}: expected an int, got {type(v).__name__}")
  v = int(v)
  if v < lo:
    raise ReportError(f"{where}: must be >= {lo}, got {v}")
  return v


def _float(where: str, v: Any) -> float:
  if isinstance(v, bool) or not isinstance(v, numbers.Real):
    raise ReportError(f"{where}: expected a number, got {type(v).__name__}")
  v = float(v)
  if not math.isfinite(v):
    raise ReportError(f"{where}: must be finite, got {v}")
  return v


def _unit(where: str, v: Any) -> float:
  v = _float(where, v)
  if not 0.0 <= v <= 1.0:
    raise ReportError(f"{where}: must be in [0, 1], got {v}")
  return v


def _str_map(where: str, v: Any) -> dict[str, str]:
  if not isinstance(v, Mapping):
    raise ReportError(f"{where}: expected an object, got {type(v).__name__}")
  return {_str(f"{where} key", k): _str(f"{where}[{k!r}]", x)
          for k, x in v.items()}


def _png_size(where: str, data: Any) -> tuple[int, int]:
  """(width, height) from the IHDR chunk; raises unless it looks like PNG."""
  if not isinstance(data, (bytes, bytearray)):
    raise ReportError(f"{where}: expected PNG bytes, got {type(data).__name__}")
  if len(data) < 33 or data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR":
    raise ReportError(f"{where}: not a PNG image")
  w, h = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
  if w == 0 or h == 0:
    raise ReportError(f"{where}: empty PNG ({w}x{h})")
  return w, h


def _keys(where: str, d: Any, required: Sequence[str],
          optional: Sequence[str] = ()) -> None:
  """Rejects non-objects, missing keys and unknown keys (typos)."""
  if not isinstance(d, Mapping):
    raise ReportError(f"{where}: expected an object, got {type(d).__name__}")
  missing = [k for k in required if k not in d]
  unknown = [k for k in d if k not in required and k not in optional]
  if missing:
    raise ReportError(f"{where}: missing {missing}")
  if unknown:
    raise ReportError(f"{where}: unknown keys {unknown} (allowed: "
                      f"{list(required) + list(optional)})")


def _b64_png(where: str, v: Any) -> bytes:
  try:
    return base64.b64decode(_str(where, v), validate=True)
  except (binascii.Error, ValueError) as e:
    raise ReportError(f"{where}: not valid base64 ({e})") from None


def _b64(data: Optional[bytes]) -> Optional[str]:
  return None if data is None else base64.b64encode(data).decode("ascii")


def _set(obj: Any, name: str, value: Any) -> None:
  # Frozen dataclasses normalise their own fields (list -> tuple) here.
  object.__setattr__(obj, name, value)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
  """Wilson score interval of k successes in n trials (95% at z = 1.96).

  Same formula as eval.success_rate.wilson, repeated so the report does not
  import jax.
  """
  if n == 0:
    return (0.0, 1.0)
  p = k / n
  den = 1 + z * z / n
  mid = (p + z * z / (2 * n)) / den
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
  return (max(0.0, mid - half), min(1.0, mid + half))


# ---------------------------------------------------------------------------
# The input schema.


@dataclasses.dataclass(frozen=True)
class Rate:
  """A success rate k/n with its 95% interval (Wilson when not given)."""
  label: str
  successes: int
  n: int
  ci95: Optional[tuple[float, float]] = None

  def __post_init__(self):
    _str("rate.label", self.label)
    _set(self, "n", _int(f"rate {self.label!r} n", self.n))
    _set(self, "successes", _int(f"rate {self.label!r} successes",
                                 self.successes))
    if self.successes > self.n:
      raise ReportError(f"rate {self.label!r}: successes {self.successes} > "
                        f"n {self.n}")
    if self.ci95 is None:
      _set(self, "ci95", wilson(self.successes, self.n))
    else:
      if not isinstance(self.ci95, Sequence) or len(self.ci95) != 2:
        raise ReportError(f"rate {self.label!r} ci95: expected [lo, hi]")
      lo, hi = (_unit(f"rate {self.label!r} ci95", x) for x in self.ci95)
      if lo > hi:
        raise ReportError(f"rate {self.label!r} ci95: lo {lo} > hi {hi}")
      _set(self, "ci95", (lo, hi))

  @property
  def rate(self) -> float:
    return self.successes / self.n if self.n else 0.0

  @classmethod
  def from_json(cls, d: Mapping[str, Any]) -> "Rate":
    _keys("rate", d, ("label", "successes", "n"), ("ci95", "rate"))
    r = cls(d["label"], d["successes"], d["n"], d.get("ci95"))
    if "rate" in d and abs(_float("rate.rate", d["rate"]) - r.rate) > 1e-6:
      raise ReportError(f"rate {r.label!r}: rate {d['rate']} != successes/n "
                        f"= {r.rate}")
    return r

  def to_json(self) -> dict[str, Any]:
    return {"label": self.label, "successes": self.successes, "n": self.n,
            "ci95": list(self.ci95)}


@dataclasses.dataclass(frozen=True)
class Summary:
  """What was audited, by which runs, how much, and how often it succeeded."""
  audited: str
  runs: Mapping[str, str] = dataclasses.field(default_factory=dict)
  counts: Mapping[str, int] = dataclasses.field(default_factory=dict)
  rates: tuple[Rate, ...] = ()

  def __post_init__(self):
    _str("summary.audited", self.audited)
    _set(self, "runs", _str_map("summary.runs", self.runs))
    if not isinstance(self.counts, Mapping):
      raise ReportError("summary.counts: expected an object")
    _set(self, "counts", {_str("summary.counts key", k):
                          _int(f"summary.counts[{k!r}]", v)
                          for k, v in self.counts.items()})
    rates = tuple(self.rates)
    for r in rates:
      if not isinstance(r, Rate):
        raise ReportError(f"summary.rates: expected Rate, got {type(r)}")
    _set(self, "rates", rates)

  @classmethod
  def from_json(cls, d: Mapping[str, Any]) -> "Summary":
    _keys("summary", d, ("audited",), ("runs", "counts", "rates"))
    rates = d.get("rates", [])
    if not isinstance(rates, list):
      raise ReportError("summary.rates: expected a list")
    return cls(d["audited"], d.get("runs", {}), d.get("counts", {}),
               tuple(Rate.from_json(r) for r in rates))

  def to_json(self) -> dict[str, Any]:
    return {"audited": self.audited, "runs": dict(self.runs),
            "counts": dict(self.counts),
            "rates": [r.to_json() for r in self.rates]}


@dataclasses.dataclass(frozen=True)
class Example:
  """One failure: the pair, every model's answer and both images."""
  id: str
  mode: str
  question: str
  instruction: str
  target_answer: str
  reference_answers: Mapping[str, str]
  consensus: Optional[str]
  truth: Optional[str]
  original_png: bytes
  counterfactual_png: Optional[bytes] = None
  kind: str = ""
  auditor: Optional[str] = None
  skill: Optional[str] = None

  def __post_init__(self):
    where = f"example {self.id!r}"
    _str("example.id", self.id)
    if self.mode not in MODES:
      raise ReportError(f"{where} mode: expected one of {MODES}, got "
                        f"{self.mode!r}")
    if self.kind not in KINDS:
      raise ReportError(f"{where} kind: expected one of {KINDS}, got "
                        f"{self.kind!r}")
    for name in ("question", "instruction", "target_answer"):
      _str(f"{where} {name}", getattr(self, name))
    _opt_str(f"{where} consensus", self.consensus)
    _opt_str(f"{where} truth", self.truth)
    _opt_str(f"{where} auditor", self.auditor)
    _opt_str(f"{where} skill", self.skill)
    refs = self.reference_answers
    if isinstance(refs, (list, tuple)):
      # audit.rollout.Pair keeps reference answers unnamed, in model order.
      refs = {f"ref {i + 1}": a for i, a in enumerate(refs)}
    _set(self, "reference_answers",
         _str_map(f"{where} reference_answers", refs))
    _png_size(f"{where} original_png", self.original_png)
    if self.mode == "question":
      if self.counterfactual_png is not None:
        raise ReportError(f"{where}: mode 'question' asks about the original "
                          "image; counterfactual_png must be None")
    else:
      if self.counterfactual_png is None:
        raise ReportError(f"{where}: mode {self.mode!r} needs "
                          "counterfactual_png")
      _png_size(f"{where} counterfactual_png", self.counterfactual_png)

  @classmethod
  def from_json(cls, d: Mapping[str, Any]) -> "Example":
    _keys("example", d, ("id", "mode", "question", "instruction",
                         "target_answer", "reference_answers", "consensus",
                         "truth", "original_png"),
          ("counterfactual_png", "kind", "auditor", "skill"))
    where = f"example {d['id']!r}"
    cf = d.get("counterfactual_png")
    return cls(
        id=d["id"], mode=d["mode"], question=d["question"],
        instruction=d["instruction"], target_answer=d["target_answer"],
        reference_answers=d["reference_answers"], consensus=d["consensus"],
        truth=d["truth"],
        original_png=_b64_png(f"{where} original_png", d["original_png"]),
        counterfactual_png=(None if cf is None else
                            _b64_png(f"{where} counterfactual_png", cf)),
        kind=d.get("kind", ""), auditor=d.get("auditor"),
        skill=d.get("skill"))

  def to_json(self) -> dict[str, Any]:
    return {"id": self.id, "mode": self.mode, "kind": self.kind,
            "question": self.question, "instruction": self.instruction,
            "target_answer": self.target_answer,
            "reference_answers": dict(self.reference_answers),
            "consensus": self.consensus, "truth": self.truth,
            "original_png": _b64(self.original_png),
            "counterfactual_png": _b64(self.counterfactual_png),
            "auditor": self.auditor, "skill": self.skill}


@dataclasses.dataclass(frozen=True)
class FailureType:
  """A named group of failures with its characteristic terms and examples."""
  name: str
  top_terms: tuple[str, ...]
  count: int
  rate: Optional[float]
  examples: tuple[Example, ...] = ()
  description: str = ""

  def __post_init__(self):
    where = f"failure type {self.name!r}"
    _str("failure_type.name", self.name)
    _str(f"{where} description", self.description)
    if isinstance(self.top_terms, str):
      raise ReportError(f"{where} top_terms: expected a list of strings")
    terms = []
    for t in self.top_terms:
      # taxonomy.FailureType keeps (term, tf-idf weight) pairs.
      if isinstance(t, (list, tuple)) and len(t) == 2:
        _float(f"{where} top_terms weight", t[1])
        t = t[0]
      terms.append(_str(f"{where} top_terms", t))
    _set(self, "top_terms", tuple(terms))
    _set(self, "count", _int(f"{where} count", self.count))
    if self.rate is not None:
      _set(self, "rate", _unit(f"{where} rate", self.rate))
    examples = tuple(self.examples)
    for e in examples:
      if not isinstance(e, Example):
        raise ReportError(f"{where} examples: expected Example, got {type(e)}")
    if len(examples) > self.count:
      raise ReportError(f"{where}: {len(examples)} examples > count "
                        f"{self.count}")
    _set(self, "examples", examples)

  @classmethod
  def from_json(cls, d: Mapping[str, Any]) -> "FailureType":
    _keys("failure_type", d, ("name", "top_terms", "count", "rate"),
          ("examples", "description"))
    examples = d.get("examples", [])
    if not isinstance(examples, list):
      raise ReportError(f"failure type {d['name']!r} examples: expected a "
                        "list")
    if not isinstance(d["top_terms"], list):
      raise ReportError(f"failure type {d['name']!r} top_terms: expected a "
                        "list")
    return cls(d["name"], tuple(d["top_terms"]), d["count"], d["rate"],
               tuple(Example.from_json(e) for e in examples),
               d.get("description", ""))

  def to_json(self) -> dict[str, Any]:
    return {"name": self.name, "top_terms": list(self.top_terms),
            "count": self.count, "rate": self.rate,
            "description": self.description,
            "examples": [e.to_json() for e in self.examples]}


@dataclasses.dataclass(frozen=True)
class ReportData:
  """Everything the report shows; see the module docstring for the schema."""
  title: str
  summary: Summary
  failure_types: tuple[FailureType, ...] = ()
  reward_curve: tuple[tuple[int, float], ...] = ()
  benchmarks: Mapping[str, Mapping[str, float]] = dataclasses.field(
      default_factory=dict)

  def __post_init__(self):
    _str("title", self.title)
    if not isinstance(self.summary, Summary):
      raise ReportError(f"summary: expected Summary, got {type(self.summary)}")
    types = tuple(self.failure_types)
    for t in types:
      if not isinstance(t, FailureType):
        raise ReportError(f"failure_types: expected FailureType, got "
                          f"{type(t)}")
    _set(self, "failure_types", types)
    curve = []
    for i, p in enumerate(self.reward_curve):
      # Any pair unpacks (tuple, list, a numpy row); text never counts.
      try:
        if isinstance(p, (str, bytes)):
          raise TypeError
        step, value = p
      except (TypeError, ValueError):
        raise ReportError(f"reward_curve[{i}]: expected [step, value], got "
                          f"{p!r}") from None
      # Steps read back from metrics files or a float array come as floats.
      if isinstance(step, numbers.Real) and not isinstance(
          step, (bool, numbers.Integral)) and float(step).is_integer():
        step = int(step)
      curve.append((_int(f"reward_curve[{i}] step", step),
                    _float(f"reward_curve[{i}] value", value)))
    _set(self, "reward_curve", tuple(curve))
    if not isinstance(self.benchmarks, Mapping):
      raise ReportError("benchmarks: expected an object")
    bench = {}
    for split, scores in self.benchmarks.items():
      _str("benchmarks key", split)
      if not isinstance(scores, Mapping):
        raise ReportError(f"benchmarks[{split!r}]: expected an object")
      for need in ("before", "after"):
        if need not in scores:
          raise ReportError(f"benchmarks[{split!r}]: missing {need!r}")
      bench[split] = {_str(f"benchmarks[{split!r}] key", k):
                      _float(f"benchmarks[{split!r}][{k!r}]", v)
                      for k, v in scores.items()}
    _set(self, "benchmarks", bench)

  @classmethod
  def from_json(cls, d: Mapping[str, Any]) -> "ReportData":
    _keys("report", d, ("title", "summary"),
          ("failure_types", "reward_curve", "benchmarks"))
    types = d.get("failure_types", [])
    curve = d.get("reward_curve", [])
    if not isinstance(types, list) or not isinstance(curve, list):
      raise ReportError("failure_types and reward_curve must be lists")
    return cls(d["title"], Summary.from_json(d["summary"]),
               tuple(FailureType.from_json(t) for t in types),
               tuple(tuple(p) if isinstance(p, list) else p for p in curve),
               d.get("benchmarks", {}))

  def to_json(self) -> dict[str, Any]:
    return {"title": self.title, "summary": self.summary.to_json(),
            "failure_types": [t.to_json() for t in self.failure_types],
            "reward_curve": [list(p) for p in self.reward_curve],
            "benchmarks": {k: dict(v) for k, v in self.benchmarks.items()}}


def load(path: PathLike) -> ReportData:
  """Reads the JSON input format (images as base64)."""
  with open(path, encoding="utf-8") as f:
    return ReportData.from_json(json.load(f))


def dump(data: ReportData, path: PathLike) -> None:
  with open(path, "w", encoding="utf-8") as f:
    json.dump(data.to_json(), f)


# ---------------------------------------------------------------------------
# Rendering.

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Liberation Sans",
 Arial,sans-serif;margin:0 auto;max-width:1200px;padding:1em 2em;color:#1d232a}
h1{margin-bottom:.2em}h2{border-bottom:2px solid #d8dee4;padding-bottom:.2em;
 margin-top:2em}
table{border-collapse:collapse;margin:.5em 0 1em}
th,td{border:1px solid #d8dee4;padding:.3em .6em;text-align:left;
 vertical-align:top}
th{background:#f3f5f7}td.num{text-align:right;font-variant-numeric:
 tabular-nums}
.muted{color:#66707a}.terms span{background:#eef2ff;border-radius:3px;
 padding:0 .3em;margin-right:.3em;white-space:nowrap}
.plots img{max-width:100%;border:1px solid #d8dee4;margin:.5em 0}
.gallery{display:flex;flex-wrap:wrap;gap:1em}
.ex{border:1px solid #d8dee4;border-radius:6px;padding:.7em;width:540px}
.imgs{display:flex;gap:.7em}
figure{margin:0;text-align:center}
figure img{width:160px;height:auto;image-rendering:pixelated;
 border:1px solid #c4ccd4}
figcaption{font-size:.8em;color:#66707a}
.noimg{width:160px;height:160px;display:flex;align-items:center;
 justify-content:center;border:1px dashed #c4ccd4;color:#66707a;
 font-size:.8em;padding:.5em;box-sizing:border-box}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2em .8em;
 margin:.7em 0 0}
dt{color:#66707a}dd{margin:0;overflow-wrap:anywhere;white-space:pre-wrap}
.bad{color:#b3261e;font-weight:600}.good{color:#1e7b34;font-weight:600}
ul.refs{margin:0;padding-left:1.1em}
"""

# No scripts, no remote loads: a second line of defence behind escaping
# (images are relative files; 'self' and file: cover http and file://).
_CSP = ("default-src 'none'; img-src 'self' file: data:; "
        "style-src 'unsafe-inline'")


def esc(text: Any) -> str:
  """HTML-escapes text for element content and quoted attributes."""
  return html.escape(str(text), quote=True)


def _pct(x: float) -> str:
  return f"{100.0 * x:.1f}%"


def _rate_text(x: Optional[float]) -> str:
  return "n/a" if x is None else _pct(x)


def _num(x: float) -> str:
  return f"{x:.4g}"


def _img(src: str, size: tuple[int, int], alt: str) -> str:
  # src is built here from positions only; alt is escaped.
  return (f'<img src="{esc(src)}" width="{size[0]}" height="{size[1]}" '
          f'alt="{esc(alt)}" loading="eager">')


def _summary_html(data: ReportData) -> list[str]:
  s = data.summary
  out = ['<section id="summary"><h2>Summary</h2>',
         f'<p><b>Audited:</b> {esc(s.audited)}</p>']
  if s.runs:
    out.append("<table><tr><th>role</th><th>run</th></tr>")
    out += [f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>"
            for k, v in s.runs.items()]
    out.append("</table>")
  if s.counts:
    out.append("<table><tr><th>count</th><th>value</th></tr>")
    out += [f'<tr><td>{esc(k)}</td><td class="num">{v}</td></tr>'
            for k, v in s.counts.items()]
    out.append("</table>")
  if s.rates:
    out.append("<table><tr><th>success rate</th><th>rate</th>"
               "<th>95% interval</th><th>successes / n</th></tr>")
    for r in s.rates:
      lo, hi = r.ci95
      out.append(f'<tr><td>{esc(r.label)}</td><td class="num">{_pct(r.rate)}'
                 f'</td><td class="num">[{_pct(lo)}, {_pct(hi)}]</td>'
                 f'<td class="num">{r.successes} / {r.n}</td></tr>')
    out.append("</table>")
  out.append("</section>")
  return out


def _types_html(types: Sequence[FailureType]) -> list[str]:
  out = ['<section id="types"><h2>Failure types</h2>']
  if not types:
    out.append('<p class="muted">No failures were found.</p></section>')
    return out
  out.append("<table><tr><th>#</th><th>failure type</th><th>top terms</th>"
             "<th>count</th><th>failure rate</th></tr>")
  for i, t in enumerate(types):
    terms = "".join(f"<span>{esc(x)}</span>" for x in t.top_terms)
    out.append(f'<tr><td class="num">{i + 1}</td><td><a href="#type-{i}">'
               f'{esc(t.name)}</a></td><td class="terms">{terms}</td>'
               f'<td class="num">{t.count}</td><td class="num">'
               f'{_rate_text(t.rate)}</td></tr>')
  out.append("</table></section>")
  return out


def _bench_html(bench: Mapping[str, Mapping[str, float]]) -> list[str]:
  if not bench:
    return []
  extra: list[str] = []
  for scores in bench.values():
    extra += [k for k in scores if k not in ("before", "after", *extra)]
  head = "".join(f"<th>{esc(k)}</th>" for k in extra)
  out = ['<section id="benchmarks"><h2>Benchmarks</h2>',
         f"<table><tr><th>split</th><th>before</th><th>after</th>"
         f"<th>&Delta;</th>{head}</tr>"]

  def row(name: str, scores: Mapping[str, float], tag: str = "td") -> str:
    b, a = scores["before"], scores["after"]
    cls = "good" if a > b else ("bad" if a < b else "")
    cells = "".join(f'<td class="num">{_num(scores[k])}</td>'
                    if k in scores else "<td></td>" for k in extra)
    return (f"<tr><{tag}>{esc(name)}</{tag}><td class=\"num\">{_num(b)}</td>"
            f'<td class="num">{_num(a)}</td><td class="num {cls}">'
            f"{a - b:+.4g}</td>{cells}</tr>")

  out += [row(k, v) for k, v in bench.items()]
  if len(bench) > 1:
    keys = ["before", "after"] + [k for k in extra
                                  if all(k in v for v in bench.values())]
    mean = {k: sum(v[k] for v in bench.values()) / len(bench) for k in keys}
    out.append(row(f"mean over {len(bench)}", mean, "th"))
  out.append("</table></section>")
  return out


def _example_html(e: Example, orig: tuple[str, tuple[int, int]],
                  cf: Optional[tuple[str, tuple[int, int]]]) -> str:
  figs = [f"<figure>{_img(orig[0], orig[1], 'original image')}"
          "<figcaption>original</figcaption></figure>"]
  if cf is None:
    figs.append('<figure><div class="noimg">no counterfactual: the question '
                'is asked about the original</div><figcaption>counterfactual'
                '</figcaption></figure>')
  else:
    figs.append(f"<figure>{_img(cf[0], cf[1], 'counterfactual image')}"
                "<figcaption>counterfactual</figcaption></figure>")
  label = {"edit": "edit", "caption": "caption"}.get(e.kind, "edit / caption")
  rows = [("id", esc(e.id)), ("mode", esc(MODE_LABEL[e.mode]))]
  if e.instruction or e.mode != "question":
    rows.append((label, esc(e.instruction) or '<span class="muted">-</span>'))
  rows.append(("question", esc(e.question)))
  rows.append(("target", f'<span class="bad">{esc(e.target_answer)}</span>'))
  refs = "".join(f"<li>{esc(k)}: {esc(v)}</li>"
                 for k, v in e.reference_answers.items())
  rows.append(("references", f'<ul class="refs">{refs}</ul>' if refs else
               '<span class="muted">none</span>'))
  rows.append(("consensus", '<span class="muted">none (references '
               'disagree)</span>' if e.consensus is None else
               f'<span class="good">{esc(e.consensus)}</span>'))
  rows.append(("oracle", '<span class="muted">unknown</span>'
               if e.truth is None else esc(e.truth)))
  if e.skill is not None:
    rows.append(("skill", esc(e.skill)))
  if e.auditor is not None:
    rows.append(("found by", esc(e.auditor)))
  dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
  return (f'<div class="ex"><div class="imgs">{"".join(figs)}</div>'
          f"<dl>{dl}</dl></div>")


def render_html(data: ReportData, images: Mapping[tuple[int, int, str],
                                                  tuple[str, tuple[int, int]]],
                plots: Mapping[str, str],
                max_examples: Optional[int] = None) -> str:
  """The page, given where each image was written (relative paths).

  images: {(type index, example index, "orig" | "cf"): (src, (w, h))}.
  plots: {"rates" | "reward" | "benchmarks": src}.
  """
  out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
         f'<meta http-equiv="Content-Security-Policy" content="{esc(_CSP)}">',
         '<meta name="viewport" content="width=device-width,initial-scale=1">',
         f"<title>{esc(data.title)}</title><style>{_CSS}</style></head><body>",
         f"<h1>{esc(data.title)}</h1>",
         '<p class="muted">AuditDM discovery report. <a href="#summary">'
         'summary</a> &middot; <a href="#types">failure types</a> &middot; '
         '<a href="#plots">plots</a> &middot; <a href="#gallery">gallery</a>'
         "</p>"]
  out += _summary_html(data)
  out += _types_html(data.failure_types)
  out.append('<section id="plots" class="plots"><h2>Plots</h2>')
  captions = {"rates": "failure rate per failure type",
              "reward": "GRPO reward curve",
              "benchmarks": "benchmarks before / after rectification"}
  for key, caption in captions.items():
    if key in plots:
      out.append(f'<div><img src="{esc(plots[key])}" alt="{caption}" '
                 'loading="eager"></div>')
    else:
      out.append(f'<p class="muted">No data for the {caption} plot.</p>')
  out.append("</section>")
  out += _bench_html(data.benchmarks)
  out.append('<section id="gallery"><h2>Gallery</h2>')
  for i, t in enumerate(data.failure_types):
    shown = t.examples[:max_examples] if max_examples is not None \
        else t.examples
    out.append(f'<h3 id="type-{i}">{i + 1}. {esc(t.name)} <span class="muted">'
               f"({t.count} failures, rate {_rate_text(t.rate)}; "
               f"{len(shown)} shown)"
               "</span></h3>")
    if t.description:
      out.append(f"<p>{esc(t.description)}</p>")
    if not shown:
      out.append('<p class="muted">No examples were kept for this type.</p>')
      continue
    out.append('<div class="gallery">')
    out += [_example_html(e, images[(i, j, "orig")], images.get((i, j, "cf")))
            for j, e in enumerate(shown)]
    out.append("</div>")
  if not data.failure_types:
    out.append('<p class="muted">No failures to show.</p>')
  out.append("</section></body></html>")
  return "\n".join(out) + "\n"


def _write_into(data: ReportData, root: pathlib.Path,
                max_examples: Optional[int]) -> None:
  """Writes the whole report into the (new, empty) directory root."""
  # Imported here: matplotlib costs ~1 s to import, and validation / JSON
  # round trips do not need it.
  from auditdm_jax.discover import plots as plots_lib  # pylint: disable=g-import-not-at-top

  img_dir = root / IMAGES
  img_dir.mkdir()
  images = {}
  for i, t in enumerate(data.failure_types):
    shown = t.examples[:max_examples] if max_examples is not None \
        else t.examples
    for j, e in enumerate(shown):
      for tag, png in (("orig", e.original_png), ("cf", e.counterfactual_png)):
        if png is None:
          continue
        name = f"t{i:02d}_e{j:02d}_{tag}.png"
        (img_dir / name).write_bytes(png)
        images[(i, j, tag)] = (f"{IMAGES}/{name}", _png_size(name, png))
  plots = {}
  made = (("rates", "plot_failure_rates.png",
           lambda: plots_lib.failure_rates_png(
               [(t.name, t.rate) for t in data.failure_types
                if t.rate is not None]),
           any(t.rate is not None for t in data.failure_types)),
          ("reward", "plot_reward_curve.png",
           lambda: plots_lib.reward_curve_png(data.reward_curve),
           bool(data.reward_curve)),
          ("benchmarks", "plot_benchmarks.png",
           lambda: plots_lib.benchmarks_png(data.benchmarks),
           bool(data.benchmarks)))
  for key, name, fn, have in made:
    if have:
      (img_dir / name).write_bytes(fn())
      plots[key] = f"{IMAGES}/{name}"
  (root / INDEX).write_text(render_html(data, images, plots, max_examples),
                            encoding="utf-8")
  (root / MARKER).write_text("written by auditdm_jax.discover.report\n")


def _replaceable(path: pathlib.Path) -> bool:
  return (path / MARKER).is_file() or not any(path.iterdir())


def write_report(data: ReportData, out_dir: PathLike, *,
                 max_examples: Optional[int] = None) -> pathlib.Path:
  """Writes the report to out_dir atomically; returns out_dir/index.html.

  max_examples caps the gallery per failure type (None: every example).
  """
  if not isinstance(data, ReportData):
    raise TypeError(f"expected ReportData, got {type(data).__name__}")
  if max_examples is not None and max_examples < 0:
    raise ValueError(f"max_examples must be >= 0, got {max_examples}")
  out = pathlib.Path(out_dir).absolute()
  if out.exists() and not (out.is_dir() and _replaceable(out)):
    # Never clobber a file or someone's directory given by mistake.
    raise FileExistsError(f"{out} exists and is not a report directory "
                          f"(no {MARKER}); remove it or pick another --out")
  out.parent.mkdir(parents=True, exist_ok=True)
  # A sibling of out: same file system, so the final rename is atomic.
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-",
                                      dir=out.parent))
  try:
    _write_into(data, tmp, max_examples)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; a report is shared
    old = None
    if out.exists():
      # rename(2) cannot replace a non-empty directory: move the old report
      # aside, move the new one in, then delete the old one.
      old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
      os.rename(out, old)
    try:
      os.rename(tmp, out)
    except BaseException:
      if old is not None:
        os.rename(old, out)
      raise
    if old is not None:
      shutil.rmtree(old, ignore_errors=True)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return out / INDEX


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = argparse.ArgumentParser(
      prog="python -m auditdm_jax.discover.report",
      description="Writes the AuditDM HTML report (index.html + images/) "
      "from a JSON ReportData (images as base64; schema in the module "
      "docstring).")
  p.add_argument("--data", required=True, help="report JSON file")
  p.add_argument("--out", required=True, help="report directory (replaced "
                 "atomically when it holds a previous report)")
  p.add_argument("--max-examples", type=int, default=None,
                 help="gallery examples per failure type (default: all)")
  args = p.parse_args(argv)
  try:
    data = load(args.data)
    index = write_report(data, args.out, max_examples=args.max_examples)
  except json.JSONDecodeError as e:
    print(f"error: {args.data} is not JSON: {e}", file=sys.stderr)
    return 2
  except (ReportError, FileExistsError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(index)
  return 0


if __name__ == "__main__":
  sys.exit(main())

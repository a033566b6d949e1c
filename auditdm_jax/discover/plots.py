"""PNG plots for the discovery report (matplotlib, Agg backend, no pyplot).

  png = failure_rates_png([("colour: purple", 0.42), ...])   # bar
  png = reward_curve_png([(0, 0.05), (10, 0.31), ...])       # line
  png = benchmarks_png({"colour": {"before": .6, "after": .9}, ...})

Each function returns the encoded PNG as bytes. Figures are built from
`matplotlib.figure.Figure` and drawn with `FigureCanvasAgg` directly: no
pyplot, so no global figure registry, no backend selection from the
environment (a `MPLBACKEND` or a missing display never matters) and nothing
leaks between calls. Text on the plots is the caller's text; matplotlib
draws it as glyphs, so it needs no escaping here (`report.py` escapes the
HTML around the images).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

_DPI = 100
# Matplotlib parses "$...$" as mathtext and fails on unbalanced markup in
# untrusted names; labels are drawn with usetex off and math disabled.
_TEXT = {"usetex": False, "parse_math": False}
_COLOURS = ("#9aa5b1", "#2f6fde", "#e08a1e", "#3a9d5d", "#a74fc2", "#c2414b")


def _png(fig: Figure) -> bytes:
  FigureCanvasAgg(fig)  # attaches itself to fig as fig.canvas
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=_DPI)
  return buf.getvalue()


def _short(label: str, n: int = 40) -> str:
  # Long auditor-made names would squeeze the axes to nothing.
  return label if len(label) <= n else label[:n - 1] + "\u2026"


def failure_rates_png(rates: Sequence[tuple[str, float]]) -> bytes:
  """Horizontal bars: failure rate (0..1, drawn as %) per failure type."""
  names = [_short(n) for n, _ in rates]
  values = [100.0 * float(v) for _, v in rates]
  height = 1.2 + 0.32 * max(len(names), 1)
  fig = Figure(figsize=(7.5, height), layout="constrained")
  ax = fig.add_subplot()
  y = np.arange(len(names))
  ax.barh(y, values, color=_COLOURS[1])
  ax.set_yticks(y, names, **_TEXT)
  ax.invert_yaxis()  # first type on top, as in the table
  ax.set_xlim(0, 100)
  ax.set_xlabel("failure rate (%)")
  for yi, v in zip(y, values):
    ax.text(min(v + 1.0, 88.0), yi, f"{v:.1f}%", va="center", fontsize=8)
  ax.set_title("Failure rate per failure type")
  return _png(fig)


def reward_curve_png(points: Sequence[tuple[float, float]]) -> bytes:
  """Line: GRPO mean reward against step, plus a running mean when long."""
  steps = np.asarray([p[0] for p in points], np.float64)
  values = np.asarray([p[1] for p in points], np.float64)
  fig = Figure(figsize=(7.5, 3.6), layout="constrained")
  ax = fig.add_subplot()
  few = len(points) <= 30
  ax.plot(steps, values, marker="o" if few else None, ms=3, lw=1.2,
          color=_COLOURS[1], alpha=1.0 if few else 0.45, label="reward")
  if not few:
    # A noisy per-step reward hides the trend; a centred window shows it.
    w = max(3, len(points) // 20)
    kernel = np.ones(w) / w
    smooth = np.convolve(values, kernel, mode="valid")
    ax.plot(steps[w // 2:w // 2 + len(smooth)], smooth, lw=2,
            color=_COLOURS[2], label=f"running mean ({w})")
    ax.legend(loc="best", fontsize=8)
  ax.set_xlabel("GRPO step")
  ax.set_ylabel("mean reward")
  ax.grid(alpha=0.3)
  ax.set_title("Auditor reward during GRPO training")
  return _png(fig)


def benchmarks_png(benchmarks: Mapping[str, Mapping[str, float]]) -> bytes:
  """Grouped bars per split: "before", "after", then any other series."""
  splits = list(benchmarks)
  series: list[str] = ["before", "after"]
  for scores in benchmarks.values():
    series += [k for k in scores if k not in series]
  width = 0.8 / len(series)
  x = np.arange(len(splits))
  fig = Figure(figsize=(max(6.0, 0.75 * len(splits) + 2.0), 4.2),
               layout="constrained")
  ax = fig.add_subplot()
  for i, name in enumerate(series):
    vals = [benchmarks[s].get(name, np.nan) for s in splits]
    ax.bar(x + (i - (len(series) - 1) / 2) * width, vals, width,
           label=_short(name, 30), color=_COLOURS[i % len(_COLOURS)])
  ax.set_xticks(x, [_short(s, 24) for s in splits], rotation=45, ha="right",
                **_TEXT)
  ax.set_ylabel("score")
  ax.grid(axis="y", alpha=0.3)
  # Outside the axes: inside, it hides the tops of the bars.
  legend = ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
  for t in legend.get_texts():
    t.set_parse_math(False)  # series names are the caller's text
  ax.set_title("Benchmarks before / after rectification")
  return _png(fig)

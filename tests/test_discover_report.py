"""The HTML discovery report: schema, escaping, atomic writes, CLI, and that
it renders in headless Chromium with every image loaded.

The browser check drives Chromium over the DevTools protocol on
`--remote-debugging-pipe` (NUL-separated JSON on fds 3 / 4, stdlib only): it
loads index.html from file://, waits for the load event, asks the browser
for every <img>'s naturalWidth, and takes a full-page screenshot. Chromium
comes from the project's install step (`make install` apt-installs Debian's
`chromium` when run as root); a missing browser FAILS this test, it does not
skip. AUDITDM_CHROMIUM=/path/to/chrome overrides the lookup.
"""

from __future__ import annotations

import base64
import io
import json
import os
import pathlib
import re
import select
import shutil
import subprocess
import sys
import time
from typing import Any, Optional

import numpy as np
import pytest
from PIL import Image

from auditdm_jax.discover import report
from auditdm_jax.world import render
from auditdm_jax.world import scene as scene_lib

# Untrusted auditor text: tags, both quote kinds, an entity, an event handler.
EVIL = ("<script>alert(\"x\")</script> & 'single' \"double\" "
        "<img src=x onerror=alert(1)> &amp;")


def _png(seed: int) -> bytes:
  pixels = render.render(scene_lib.sample_scene(seed, min_objects=2))
  buf = io.BytesIO()
  Image.fromarray(pixels).save(buf, format="PNG")
  return buf.getvalue()


def _example(i: int, mode: str, text: str = "") -> report.Example:
  return report.Example(
      id=f"ex-{i}{text}", mode=mode,
      kind={"question": "question", "image": "edit", "both": "caption"}[mode],
      question=f"what colour is the circle? {text}",
      instruction="" if mode == "question" else f"recolour the circle {text}",
      target_answer=f"red {text}",
      reference_answers={"ref_pg2": "purple", f"ref_g3 {text}": "purple"},
      consensus="purple", truth=None if i % 2 else "purple",
      original_png=_png(i),
      counterfactual_png=None if mode == "question" else _png(100 + i),
      auditor=f"grpo {text}" if i == 0 else None,
      skill="colour" if i == 0 else None)


@pytest.fixture(scope="module")
def data() -> report.ReportData:
  types = (
      report.FailureType(f"colour: purple {EVIL}", ("purple", EVIL), 40, 0.62,
                         (_example(0, "both", EVIL), _example(1, "image")),
                         description=f"answers purple wrong {EVIL}"),
      report.FailureType("counting >= 5", ("how many", "5", "6"), 12, 0.31,
                         (_example(2, "question"),)),
      report.FailureType("no examples kept", (("left", 0.9),), 3, 0.05),
      report.FailureType("rate unknown", ("x",), 2, None),
  )
  summary = report.Summary(
      audited=f"200 world images x 3 modes {EVIL}",
      runs={"target": "zoo/target", "auditor": f"grpo/step_1000 {EVIL}",
            "references": "ref_pg2, ref_g3"},
      counts={"pairs": 600, "valid": 570, "failures": 55},
      rates=(report.Rate("trained auditor (verified)", 91, 100),
             report.Rate.from_json({"label": "prompt-only", "n": 100,
                                    "successes": 21, "rate": 0.21,
                                    "ci95": [0.14, 0.30]})))
  curve = tuple((s, 0.1 + 0.8 * (1 - np.exp(-s / 15)) + 0.05 * np.sin(s))
                for s in range(60))
  bench = {f"split_{i}": {"before": 0.5 + 0.03 * i, "after": 0.7 + 0.02 * i,
                          "largest reference": 0.65} for i in range(5)}
  bench[f"evil {EVIL}"] = {"before": 0.4, "after": 0.35}
  return report.ReportData(f"Audit {EVIL}", summary, types, curve, bench)


@pytest.fixture(scope="module")
def written(data, tmp_path_factory) -> pathlib.Path:
  out = tmp_path_factory.mktemp("report") / "report"
  index = report.write_report(data, out)
  assert index == out.absolute() / "index.html"
  return out


# --------------------------------------------------------------------------
# Schema.


def test_json_round_trip(data):
  text = json.dumps(data.to_json())
  back = report.ReportData.from_json(json.loads(text))
  assert back == data
  ex = back.failure_types[0].examples[0]
  assert ex.original_png[:8] == b"\x89PNG\r\n\x1a\n"
  assert report.Example.from_json(json.loads(json.dumps(ex.to_json()))) == ex


def test_modes_match_rollout():
  from auditdm_jax.audit import rollout  # pylint: disable=g-import-not-at-top
  assert report.MODES == rollout.MODES


def test_numpy_scalars_and_unnamed_references_are_normalised():
  ex = _example(0, "image")
  ex = report.Example(**{**ex.__dict__, "reference_answers": ["a", "b"]})
  assert ex.reference_answers == {"ref 1": "a", "ref 2": "b"}
  t = report.FailureType("t", ["x"], np.int64(3), np.float32(0.5), [ex])
  assert type(t.count) is int and type(t.rate) is float
  assert t.top_terms == ("x",) and t.examples == (ex,)
  d = report.ReportData("t", report.Summary("s"), [t],
                        np.array([[0, 0.5], [1, 0.7]]))
  assert d.reward_curve == ((0, 0.5), (1, 0.7))
  json.dumps(d.to_json())  # plain JSON, no numpy left


def test_taxonomy_style_fields_are_accepted():
  # taxonomy.FailureType.to_json(): [term, weight] pairs, rate null.
  t = report.FailureType.from_json({"name": "n", "count": 1, "rate": None,
                                    "top_terms": [["purple", 0.4], "red"]})
  assert t.top_terms == ("purple", "red") and t.rate is None
  with pytest.raises(report.ReportError, match="weight"):
    report.FailureType("n", (("a", "heavy"),), 1, None)


def test_wilson_interval_is_filled_in():
  r = report.Rate("r", 91, 100)
  lo, hi = r.ci95
  assert lo < 0.91 < hi and 0.83 < lo and hi < 0.96
  assert report.Rate("empty", 0, 0).ci95 == (0.0, 1.0)


def _bad(mutate):
  d = {"title": "t", "summary": {"audited": "a"},
       "failure_types": [{"name": "n", "top_terms": ["x"], "count": 1,
                          "rate": 0.5, "examples": [
                              _example(0, "image").to_json()]}],
       "reward_curve": [[0, 0.1]],
       "benchmarks": {"s": {"before": 0.1, "after": 0.2}}}
  mutate(d)
  return d


@pytest.mark.parametrize("mutate,match", [
    (lambda d: d.update(titel="x"), "unknown keys"),
    (lambda d: d.pop("summary"), "missing"),
    (lambda d: d["failure_types"][0].update(rate=1.5), r"\[0, 1\]"),
    (lambda d: d["failure_types"][0].update(count=0), "examples > count"),
    (lambda d: d["failure_types"][0].update(count=True), "expected an int"),
    (lambda d: d["failure_types"][0].update(top_terms="x"), "top_terms"),
    (lambda d: d["failure_types"][0]["examples"][0].update(mode="q"), "mode"),
    (lambda d: d["failure_types"][0]["examples"][0].update(
        original_png=base64.b64encode(b"GIF89a...").decode()), "not a PNG"),
    (lambda d: d["failure_types"][0]["examples"][0].update(
        original_png="%%%"), "base64"),
    (lambda d: d["failure_types"][0]["examples"][0].update(
        counterfactual_png=None), "needs counterfactual_png"),
    (lambda d: d["failure_types"][0]["examples"][0].update(
        target_answer=None), "target_answer"),
    (lambda d: d["reward_curve"].append([1, float("nan")]), "finite"),
    (lambda d: d["reward_curve"].append("ab"), "step, value"),
    (lambda d: d["benchmarks"]["s"].pop("after"), "missing 'after'"),
    (lambda d: d["summary"].update(rates=[{"label": "r", "successes": 3,
                                           "n": 2}]), "successes 3 > n 2"),
    (lambda d: d["summary"].update(rates=[{"label": "r", "successes": 1,
                                           "n": 2, "rate": 0.7}]), "!="),
])
def test_invalid_data_is_rejected(mutate, match):
  with pytest.raises(report.ReportError, match=match):
    report.ReportData.from_json(_bad(mutate))


def test_question_mode_must_not_have_a_counterfactual():
  ex = _example(0, "question")
  with pytest.raises(report.ReportError, match="must be None"):
    report.Example(**{**ex.__dict__, "counterfactual_png": _png(1)})


# --------------------------------------------------------------------------
# The written report.


def test_report_files_and_escaping(written, data):
  html_text = (written / "index.html").read_text(encoding="utf-8")
  # Nothing from the untrusted text survives as markup.
  assert "<script" not in html_text.lower()
  assert not re.search(r"<[a-z]+[^>]*\son\w+\s*=", html_text, re.I)
  assert "<img src=x" not in html_text
  assert report.esc(EVIL) in html_text
  assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html_text
  assert "&#x27;single&#x27;" in html_text and "&amp;amp;" in html_text
  # Every src / href is relative (or an in-page anchor): works from file://
  # with no network.
  links = re.findall(r'(?:src|href)="([^"]*)"', html_text)
  assert links
  for link in links:
    assert not re.match(r"^[a-z]+:|^//", link, re.I), link
  srcs = re.findall(r'<img src="([^"]*)"', html_text)
  # 2 + 2 + 1 example images (question mode has no counterfactual) + 3 plots.
  assert len(srcs) == 8
  for src in srcs:
    assert src.startswith("images/")
    png = (written / src).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
  for name in ("plot_failure_rates.png", "plot_reward_curve.png",
               "plot_benchmarks.png"):
    with Image.open(written / "images" / name) as im:
      assert im.size[0] > 300 and im.size[1] > 150
  # Each section and every field of the gallery is there.
  for needle in ("Summary", "Failure types", "Plots", "Gallery",
                 "counting &gt;= 5", "91.0%", "[", "ref_pg2", "purple",
                 "oracle", "consensus", "(Q*, I*)", "mean over 6",
                 "no examples kept", "No examples were kept", "n/a",
                 "found by", "skill"):
    assert needle in html_text, needle
  assert (written / report.MARKER).is_file()
  # No temporary directories left beside the report.
  assert [p.name for p in written.parent.iterdir()] == ["report"]


def test_rewrite_is_atomic_and_failures_leave_the_old_report(
    data, tmp_path, monkeypatch):
  out = tmp_path / "r"
  small = report.ReportData("first", data.summary)
  report.write_report(small, out)
  assert "first" in (out / "index.html").read_text()
  report.write_report(data, out, max_examples=1)
  text = (out / "index.html").read_text()
  assert "first" not in text and "1 shown" in text
  assert len(list((out / "images").glob("t*_e01_*.png"))) == 0

  from auditdm_jax.discover import plots  # pylint: disable=g-import-not-at-top

  def boom(*_):
    raise RuntimeError("plot failed")

  monkeypatch.setattr(plots, "reward_curve_png", boom)
  with pytest.raises(RuntimeError, match="plot failed"):
    report.write_report(report.ReportData("second", data.summary,
                                          reward_curve=((0, 1.0),)), out)
  assert (out / "index.html").read_text() == text  # untouched
  assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]

  # Never replaces a file or a directory that is not a report.
  other = tmp_path / "not_a_report"
  other.mkdir()
  (other / "precious.txt").write_text("keep")
  with pytest.raises(FileExistsError):
    report.write_report(small, other)
  assert (other / "precious.txt").read_text() == "keep"


def test_cli(data, tmp_path, capsys):
  path = tmp_path / "report.json"
  report.dump(data, path)
  out = tmp_path / "cli_out"
  assert report.main(["--data", str(path), "--out", str(out),
                      "--max-examples", "1"]) == 0
  assert capsys.readouterr().out.strip() == str(out.absolute() / "index.html")
  assert (out / "index.html").is_file()
  bad = tmp_path / "bad.json"
  bad.write_text(json.dumps({"title": "t"}))
  assert report.main(["--data", str(bad), "--out", str(tmp_path / "x")]) == 2
  assert "missing" in capsys.readouterr().err
  assert not (tmp_path / "x").exists()


# --------------------------------------------------------------------------
# Headless Chromium.


def _chromium() -> str:
  for name in (os.environ.get("AUDITDM_CHROMIUM"), "chromium",
               "chromium-browser", "google-chrome", "google-chrome-stable"):
    if name and shutil.which(name):
      return shutil.which(name)
  pytest.fail("headless Chromium is missing: `make install` installs it as "
              "root (apt-get install -y chromium); otherwise install "
              "Chromium and/or set AUDITDM_CHROMIUM=/path/to/chrome")


# Runs in the child before Chromium: moves the two pipe ends onto fds 3 and 4
# (the --remote-debugging-pipe convention). F_DUPFD to >= 10 first, so fds
# that already are 3 or 4 cannot be clobbered by the first dup2.
_TRAMPOLINE = ("import fcntl,os,sys\n"
               "r=fcntl.fcntl(int(sys.argv[1]),fcntl.F_DUPFD,10)\n"
               "w=fcntl.fcntl(int(sys.argv[2]),fcntl.F_DUPFD,10)\n"
               "os.dup2(r,3);os.dup2(w,4);os.close(r);os.close(w)\n"
               "os.execv(sys.argv[3],sys.argv[3:])\n")


class Chrome:
  """Minimal DevTools-protocol client over --remote-debugging-pipe."""

  def __init__(self, binary: str, profile: pathlib.Path, log: pathlib.Path):
    to_r, self._to_w = os.pipe()
    self._from_r, from_w = os.pipe()
    flags = ["--headless", "--remote-debugging-pipe", "--disable-gpu",
             f"--user-data-dir={profile}", "--no-first-run",
             "--no-default-browser-check", "--disable-extensions",
             "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--hide-scrollbars", "--mute-audio",
             "--window-size=1280,1000", "about:blank"]
    if os.geteuid() == 0:
      flags.insert(0, "--no-sandbox")  # Chromium refuses root otherwise
    self._log = open(log, "wb")
    self.proc = subprocess.Popen(
        [sys.executable, "-c", _TRAMPOLINE, str(to_r), str(from_w), binary,
         *flags], pass_fds=(to_r, from_w), stdin=subprocess.DEVNULL,
        stdout=self._log, stderr=self._log)
    os.close(to_r)
    os.close(from_w)
    self._buf = b""
    self._id = 0
    self._events: list[dict] = []

  def _recv(self, deadline: float) -> dict:
    while b"\0" not in self._buf:
      left = deadline - time.monotonic()
      if left <= 0 or not select.select([self._from_r], [], [], left)[0]:
        raise TimeoutError("no message from Chromium")
      chunk = os.read(self._from_r, 1 << 20)
      if not chunk:
        raise RuntimeError(f"Chromium closed the pipe (exit "
                           f"{self.proc.poll()})")
      self._buf += chunk
    msg, self._buf = self._buf.split(b"\0", 1)
    return json.loads(msg)

  def send(self, method: str, params: Optional[dict] = None,
           session: Optional[str] = None, timeout: float = 20) -> dict:
    self._id += 1
    msg: dict[str, Any] = {"id": self._id, "method": method,
                           "params": params or {}}
    if session:
      msg["sessionId"] = session
    data = json.dumps(msg).encode() + b"\0"
    while data:
      data = data[os.write(self._to_w, data):]
    deadline = time.monotonic() + timeout
    while True:
      m = self._recv(deadline)
      if m.get("id") == self._id:
        if "error" in m:
          raise RuntimeError(f"{method}: {m['error']}")
        return m["result"]
      self._events.append(m)

  def wait_event(self, method: str, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while True:
      for i, m in enumerate(self._events):
        if m.get("method") == method:
          return self._events.pop(i)
      self._events.append(self._recv(deadline))

  def close(self) -> None:
    try:
      self.send("Browser.close", timeout=5)
    except Exception:  # pylint: disable=broad-except
      pass  # the browser may drop the pipe before it answers
    try:
      self.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
      self.proc.kill()  # only the process this test started
      self.proc.wait()
    os.close(self._to_w)
    os.close(self._from_r)
    self._log.close()


_IMAGES_JS = """Array.from(document.images).map(i => ({
  src: i.getAttribute('src'), complete: i.complete,
  width: i.naturalWidth, height: i.naturalHeight}))"""


def test_renders_in_headless_chromium(written, tmp_path):
  t0 = time.monotonic()
  chrome = Chrome(_chromium(), tmp_path / "profile", tmp_path / "chrome.log")
  try:
    target = chrome.send("Target.createTarget", {"url": "about:blank"})
    session = chrome.send("Target.attachToTarget",
                          {"targetId": target["targetId"],
                           "flatten": True})["sessionId"]
    chrome.send("Page.enable", session=session)
    url = (written / "index.html").absolute().as_uri()
    nav = chrome.send("Page.navigate", {"url": url}, session=session)
    assert "errorText" not in nav, nav
    # The load event fires after every (eager) image has loaded or failed.
    chrome.wait_event("Page.loadEventFired")

    def js(expr: str):
      r = chrome.send("Runtime.evaluate", {"expression": expr,
                                           "returnByValue": True},
                      session=session)
      assert "exceptionDetails" not in r, r
      return r["result"]["value"]

    assert js("document.readyState") == "complete"
    images = js(_IMAGES_JS)
    assert len(images) == 8, images
    for im in images:
      assert im["complete"] and im["width"] > 0 and im["height"] > 0, im
    # The untrusted text was shown as text: no script or handler in the DOM.
    assert js("document.scripts.length") == 0
    assert js("document.querySelectorAll('[onerror]').length") == 0
    assert js(f"document.body.innerText.includes({json.dumps(EVIL)})")
    assert js("document.title") == f"Audit {EVIL}"

    # Full-page screenshot.
    size = chrome.send("Page.getLayoutMetrics",
                       session=session)["cssContentSize"]
    w, h = int(size["width"]), min(int(size["height"]), 8000)
    shot = chrome.send("Page.captureScreenshot",
                       {"format": "png", "captureBeyondViewport": True,
                        "clip": {"x": 0, "y": 0, "width": w, "height": h,
                                 "scale": 1}}, session=session)
  finally:
    chrome.close()
  path = tmp_path / "screenshot.png"
  path.write_bytes(base64.b64decode(shot["data"]))
  assert path.stat().st_size > 10_000
  with Image.open(path) as im:
    pixels = np.asarray(im.convert("RGB"))
  assert pixels.shape[0] >= 1000 and pixels.shape[1] >= 1000
  # Non-blank: many distinct colours (text, plots, world renders), and not
  # one colour filling nearly everything.
  packed = pixels.astype(np.uint32) @ np.array([1 << 16, 1 << 8, 1],
                                               np.uint32)
  colours, counts = np.unique(packed, return_counts=True)
  assert len(colours) > 100, len(colours)
  assert counts.max() < 0.97 * counts.sum()
  assert time.monotonic() - t0 < 30

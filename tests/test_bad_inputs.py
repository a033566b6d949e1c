"""The bad-input catalogue: every case names its problem and writes nothing.

One parametrized table (CASES; docs/bad_inputs.md lists the same cases with
their messages and exit codes, and `test_the_doc_lists_every_case` keeps
the two in step). Each case feeds one bad input to the command line that
handles it -- in process through its `main(argv)` where it returns an int,
as a subprocess for absl's `auditdm_jax.main` -- and checks:

  * the exit code (0 where the input is accepted and converted);
  * a message naming the problem (a regex over stdout + stderr);
  * no half-written output: the paths the command would write are absent
    (or, for a `--out` that existed, unchanged).

Cases that are not errors of a run (an auditor's empty completion, an HTTP
400 from the image service, which keeps serving) check the value / status
the code returns instead of an exit code; the table says which.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import http.server
import io
import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import types
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, Optional

import jax
import numpy as np
import pytest
from PIL import Image

REPO = pathlib.Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "bad_inputs.md"


@dataclasses.dataclass
class Outcome:
  """What a case did: exit code (or status), text, paths to check."""
  rc: Any
  text: str
  absent: tuple = ()          # paths that must not exist afterwards
  unchanged: tuple = ()       # (path, snapshot before) pairs


@dataclasses.dataclass(frozen=True)
class Case:
  id: str
  area: str
  cli: str                    # what handles it (doc column)
  expect: str                 # regex the message must match
  rc: Any                     # expected exit code / status
  run: Callable[[Any], Outcome]


# --- Helpers --------------------------------------------------------------------


def _cli(fn, argv, ctx) -> tuple[int, str]:
  """A `main(argv) -> int` in process: (exit code, stdout + stderr)."""
  ctx.capsys.readouterr()
  try:
    rc = fn([str(a) for a in argv])
  except SystemExit as e:   # argparse errors
    rc = e.code if isinstance(e.code, int) else 1
  out = ctx.capsys.readouterr()
  return rc, out.out + out.err


def _main_py(args, ctx, timeout=300) -> tuple[int, str]:
  """`python -m auditdm_jax.main ARGS` (absl: flags are process-global)."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run([sys.executable, "-m", "auditdm_jax.main",
                         *map(str, args)], cwd=ctx.tmp, env=env,
                        capture_output=True, text=True, timeout=timeout,
                        check=False)
  return proc.returncode, proc.stdout + proc.stderr


def _snapshot(path: pathlib.Path):
  if not path.exists():
    return None
  if path.is_file():
    return path.read_bytes()
  return sorted((str(p.relative_to(path)), p.read_bytes() if p.is_file()
                 else None) for p in path.rglob("*"))


def _png(arr_or_image, fmt="png") -> bytes:
  im = (arr_or_image if isinstance(arr_or_image, Image.Image)
        else Image.fromarray(arr_or_image))
  buf = io.BytesIO()
  im.save(buf, format=fmt)
  return buf.getvalue()


def _huge_png(width=20_000, height=20_000) -> bytes:
  """A valid PNG of 400M pixels (one colour: ~0.4 MB of zlib), past PIL's
  decompression-bomb limit of 2 x 89.5M pixels."""
  import struct  # pylint: disable=g-import-not-at-top
  import zlib  # pylint: disable=g-import-not-at-top

  def chunk(kind, data):
    body = kind + data
    return (struct.pack(">I", len(data)) + body
            + struct.pack(">I", zlib.crc32(body) & 0xffffffff))
  ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)   # gray 8-bit
  comp = zlib.compressobj(9)
  row = b"\x00" * (width + 1)
  idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)
          + chunk(b"IEND", b""))


# Images of every mode the entry points meet, and the RGB the models get.
_GRAY = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
_RGBA = np.zeros((2, 3, 4), np.uint8)
_RGBA[..., 0] = 255          # red, fully transparent but for one pixel
_RGBA[0, 0, 3] = 255
_U16 = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000)


def _image_bytes(kind: str) -> bytes:
  if kind == "grayscale":
    return _png(_GRAY)
  if kind == "rgba":
    return _png(Image.fromarray(_RGBA, "RGBA"))
  if kind == "cmyk":
    return _png(Image.new("CMYK", (3, 2), (0, 255, 255, 0)), fmt="jpeg")
  if kind == "16bit":
    return _png(Image.fromarray(_U16))
  if kind == "1x1":
    return _png(np.full((1, 1, 3), 77, np.uint8))
  raise ValueError(kind)


def _expected_rgb(kind: str) -> np.ndarray:
  if kind == "grayscale":
    return np.repeat(_GRAY[..., None], 3, -1)
  if kind == "rgba":
    want = np.full((2, 3, 3), 255, np.uint8)     # transparent -> white
    want[0, 0] = (255, 0, 0)
    return want
  if kind == "16bit":
    return np.repeat((_U16 >> 8).astype(np.uint8)[..., None], 3, -1)
  if kind == "1x1":
    return np.full((1, 1, 3), 77, np.uint8)
  raise ValueError(kind)


def _jsonl(ctx, rows, images=None) -> pathlib.Path:
  pool = ctx.tmp / "pool"
  pool.mkdir(exist_ok=True)
  for name, data in (images or {}).items():
    (pool / name).write_bytes(data)
  path = pool / "sources.jsonl"
  path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n"
                          for r in rows))
  return path


def _harvest(ctx, sources: pathlib.Path) -> Outcome:
  from auditdm_jax.discover import harvest  # pylint: disable=g-import-not-at-top
  out = ctx.tmp / "harvest_out"
  rc, text = _cli(harvest.main, ["--sources", sources, "--n", 10, "--out",
                                 out], ctx)
  return Outcome(rc, text, absent=(out,))


def _tsv(path, rows, header=("index", "question", "answer", "category",
                             "image")):
  with open(path, "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f, delimiter="\t")
    w.writerow(header)
    for r in rows:
      w.writerow([r.get(h, "") for h in header])
  return path


def _pope_rows(images):
  return [{"index": str(i), "question": f"is there a cat {i}?",
           "answer": "yes" if i % 2 else "no", "category": "random",
           "image": base64.b64encode(data).decode()}
          for i, data in enumerate(images)]


def _bench(ctx, tsv, data_dir=None) -> Outcome:
  from auditdm_jax.data.bench.__main__ import main  # pylint: disable=g-import-not-at-top
  data_dir = data_dir or ctx.tmp / "tfds"
  rc, text = _cli(main, ["--data_dir", data_dir, "--benchmark", "pope",
                         "--split", "test", "--format", "vlmeval_tsv",
                         "--source", json.dumps({"path": str(tsv)})], ctx)
  written = data_dir.exists() and any(data_dir.iterdir())
  return Outcome(rc, text, absent=() if rc == 0 or not written
                 else (data_dir / "real_bench",))


# --- Shared resources (built once, on first use) -------------------------------


class Resources:
  """Lazily built inputs shared by the cases."""

  def __init__(self, tmp_factory, tokenizer_dir):
    self._tmp = tmp_factory
    self.tokenizer_2000 = tokenizer_dir / "tokenizer.model"
    self._cache = {}

  def _once(self, key, fn):
    if key not in self._cache:
      self._cache[key] = fn()
    return self._cache[key]

  @staticmethod
  def tiny_params(name="paligemma2_tiny", seed=0):
    from auditdm_jax.models import arch  # pylint: disable=g-import-not-at-top
    from auditdm_jax.models.vlm import Model  # pylint: disable=g-import-not-at-top
    cfg = arch.get(name)
    rng = np.random.default_rng(seed)
    return cfg, jax.tree.map(
        lambda a: (0.02 * rng.standard_normal(a.shape)).astype(np.float32),
        Model(cfg).abstract_params())

  @property
  def hf_dir(self) -> pathlib.Path:
    """A PaliGemma-2 tiny checkpoint in the HF layout (no torch needed)."""
    def build():
      from auditdm_jax.convert import safetensors_io as st  # pylint: disable=g-import-not-at-top
      cfg, params = self.tiny_params()
      return st.save_hf_checkpoint(params, cfg, self._tmp.mktemp("hf") / "hf")
    return self._once("hf", build)

  @property
  def export(self) -> pathlib.Path:
    def build():
      from auditdm_jax.convert import orbax_io  # pylint: disable=g-import-not-at-top
      cfg, params = self.tiny_params()
      return orbax_io.save_params(params, self._tmp.mktemp("ex") / "pg2",
                                  cfg)
    return self._once("export", build)

  @property
  def bench_dir(self) -> pathlib.Path:
    """A prepared POPE test split of 4 questions."""
    def build():
      from auditdm_jax.data import bench  # pylint: disable=g-import-not-at-top
      d = self._tmp.mktemp("bench")
      tsv = _tsv(d / "POPE.tsv", _pope_rows(
          [_png(np.full((8, 8, 3), 40 * i, np.uint8)) for i in range(4)]))
      bench.build("pope", "test", bench.make_source("vlmeval_tsv",
                                                    path=str(tsv)),
                  d / "tfds")
      return d / "tfds"
    return self._once("bench", build)

  @property
  def train_workdir(self) -> pathlib.Path:
    """A train workdir with checkpoints at steps 1 and 2 (tiny state)."""
    def build():
      from auditdm_jax.train import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
      from auditdm_jax.train import state as state_lib  # pylint: disable=g-import-not-at-top
      from auditdm_jax.train.config import TrainConfig  # pylint: disable=g-import-not-at-top
      cfg = TrainConfig(arch="gemma3_tiny_text", total_steps=4,
                        progress=False)
      model = state_lib.make_model(cfg)
      _, params = self.tiny_params("gemma3_tiny_text")
      state = state_lib.create_state(model, cfg, params)
      d = self._tmp.mktemp("train")
      with ckpt_lib.Checkpointer(d / "checkpoints") as ckpt:
        for step in (1, 2):
          ckpt.save(state.replace(step=np.int32(step)), {"index": step}, cfg)
      return d
    return self._once("train", build)


@pytest.fixture(scope="module")
def res(tmp_path_factory, gemma_tokenizer_dir):
  return Resources(tmp_path_factory, gemma_tokenizer_dir)


@pytest.fixture
def ctx(res, tmp_path, capsys, monkeypatch):
  return types.SimpleNamespace(res=res, tmp=tmp_path, capsys=capsys,
                               monkeypatch=monkeypatch)


# --- Configs ------------------------------------------------------------------


def _zoo_cfg(*extra):
  return ["--config=" + str(REPO / "configs/world/zoo.py:quick"), *extra]


def config_case(args, workdir=True):
  def run(ctx):
    w = ctx.tmp / "workdir"
    rc, text = _main_py(args + ([f"--workdir={w}"] if workdir else []), ctx)
    return Outcome(rc, text, absent=(w,))
  return run


def plan_case(override):
  def run(ctx):
    from auditdm_jax import plan  # pylint: disable=g-import-not-at-top
    return Outcome(*_cli(plan.main, [
        "--config=" + str(REPO / "configs/real/sft_paligemma2.py:3b_224"),
        override, "--no_trace"], ctx))
  return run


def sft_case(overrides, dataset: bool):
  """main.py's sft task on a benchmark dataset (no 'answer' field)."""
  def run(ctx):
    w = ctx.tmp / "workdir"
    args = ["--config=" + str(REPO / "configs/real/sft_paligemma2.py:3b_224"),
            "--config.train.arch=paligemma2_tiny", "--config.train.max_len=40",
            "--config.train.tokenizer=" + str(ctx.res.tokenizer_2000),
            f"--workdir={w}", *overrides]
    if dataset:
      args += ["--config.data.name=real_bench/pope-test",
               "--config.data.split=test",
               f"--config.data.data_dir={ctx.res.bench_dir}"]
    rc, text = _main_py(args, ctx)
    return Outcome(rc, text, absent=(w,))
  return run


# --- Checkpoints ----------------------------------------------------------------


def hf_case(edit: Callable[[dict], None], damage_file=None):
  def run(ctx):
    from auditdm_jax.convert import safetensors_io as st  # pylint: disable=g-import-not-at-top
    from auditdm_jax.convert.__main__ import main  # pylint: disable=g-import-not-at-top
    src = ctx.tmp / "hf"
    shutil.copytree(ctx.res.hf_dir, src)
    if edit is not None:
      t = st.read_safetensors(src / st.SINGLE_FILE)
      edit(t)
      st.write_safetensors(src / st.SINGLE_FILE, t, {"format": "pt"})
    if damage_file is not None:
      damage_file(src / st.SINGLE_FILE)
    dst = ctx.tmp / "orbax"
    rc, text = _cli(main, ["hf2orbax", "--src", src, "--dst", dst], ctx)
    return Outcome(rc, text, absent=(dst,))
  return run


_EMB = "language_model.model.embed_tokens.weight"
_NORM = "language_model.model.norm.weight"


def _missing_key(t):
  del t[_NORM]


def _extra_key(t):
  t["language_model.model.layers.99.mlp.up_proj.weight"] = np.zeros(
      (4, 4), np.float32)


def _misshaped(t):
  t[_NORM] = np.zeros(65, np.float32)


def _int_dtype(t):
  t[_NORM] = np.zeros(t[_NORM].shape, np.int32)


def _truncate(path):
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])


def orbax2hf_not_a_checkpoint(ctx):
  from auditdm_jax.convert.__main__ import main  # pylint: disable=g-import-not-at-top
  src = ctx.tmp / "junk"
  src.mkdir()
  (src / "params").write_text("not orbax")
  dst = ctx.tmp / "hf_out"
  rc, text = _cli(main, ["orbax2hf", "--src", src, "--dst", dst], ctx)
  return Outcome(rc, text, absent=(dst,))


def npz_unknown_arch(ctx):
  from auditdm_jax.convert.__main__ import main  # pylint: disable=g-import-not-at-top
  npz = ctx.tmp / "x.npz"
  np.savez(npz, a=np.zeros(2))
  dst = ctx.tmp / "out"
  rc, text = _cli(main, ["npz2orbax", "--src", npz, "--arch", "nope",
                         "--dst", dst], ctx)
  return Outcome(rc, text, absent=(dst,))


def train_ckpt_all_damaged(ctx):
  from auditdm_jax.train import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  w = ctx.tmp / "run"
  shutil.copytree(ctx.res.train_workdir, w)
  for step in ("1", "2"):
    (w / "checkpoints" / step / "commit_success.txt").unlink()
  before = _snapshot(w)
  out = ctx.tmp / "export"
  rc, text = _cli(ckpt_lib.main, [w, "--export_params", out], ctx)
  return Outcome(rc, text, absent=(out,), unchanged=((w, before),))


def train_ckpt_no_workdir(ctx):
  from auditdm_jax.train import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  w = ctx.tmp / "nope"
  rc, text = _cli(ckpt_lib.main, [w], ctx)
  return Outcome(rc, text, absent=(w,))


# --- Tokenizers -----------------------------------------------------------------


def evaluate_case(tokenizer: Callable[[Any], pathlib.Path]):
  def run(ctx):
    from auditdm_jax.eval import evaluate  # pylint: disable=g-import-not-at-top
    out = ctx.tmp / "scores.json"
    rc, text = _cli(evaluate.main, [
        "--checkpoint", ctx.res.export, "--data_dir", ctx.res.bench_dir,
        "--benchmark", "pope:test", "--tokenizer", tokenizer(ctx),
        "--max_new_tokens", 2, "--out", out], ctx)
    return Outcome(rc, text, absent=(out,))
  return run


def _garbage_tokenizer(ctx):
  p = ctx.tmp / "tokenizer.model"
  p.write_bytes(b"this is not a sentencepiece model")
  return p


# --- Images -------------------------------------------------------------------


def image_accepted(kind: str):
  """Accepted and converted: the benchmark CLI keeps it (exit 0); the
  models' conversion and the JSONL sources give the expected RGB."""
  def run(ctx):
    # pylint: disable=g-import-not-at-top
    from auditdm_jax.audit.sources import JsonlSources
    from auditdm_jax.data import bench
    from auditdm_jax.data import image_preprocessing as ip
    from auditdm_jax.imaging.base import Picture
    # pylint: enable=g-import-not-at-top
    data = _image_bytes(kind)
    tsv = _tsv(ctx.tmp / "POPE.tsv", _pope_rows([data]))
    out = _bench(ctx, tsv)
    if out.rc != 0:
      return out
    record = bench.bench_source(ctx.tmp / "tfds", "pope", "test")[0]
    with Image.open(io.BytesIO(record["image"])) as im:
      via_bench = ip.to_rgb_uint8(im)
    via_jsonl = JsonlSources(_jsonl(ctx, [{"id": "a", "image": "a.img"}],
                                    {"a.img": data}))[0].picture.pixels
    via_service = Picture.from_png(data).pixels
    model_input = ip.preprocess_image(via_bench, "siglip", 16)
    if kind == "cmyk":
      # JPEG is lossy: red-ish, as PIL converts CMYK (0, 255, 255, 0).
      ok = via_bench[..., 0].min() > 200 and via_bench[..., 1:].max() < 60
    else:
      ok = np.array_equal(via_bench, _expected_rgb(kind))
    ok = ok and np.array_equal(via_bench, via_jsonl) and np.array_equal(
        via_bench, via_service) and model_input.shape == (16, 16, 3)
    return Outcome(out.rc if ok else "wrong pixels", out.text)
  return run


def image_rejected_by_harvest(images: dict, rows=None):
  def run(ctx):
    rows_ = rows or [{"id": "a", "image": "a.png"}]
    return _harvest(ctx, _jsonl(ctx, rows_, images))
  return run


def image_truncated(ctx):
  from auditdm_jax.audit.sources import JsonlSources  # pylint: disable=g-import-not-at-top
  data = _png(np.random.default_rng(0).integers(0, 255, (64, 64, 3),
                                                dtype=np.uint8))
  bad = data[:len(data) // 2]
  out = _bench(ctx, _tsv(ctx.tmp / "POPE.tsv", _pope_rows([bad])))
  # The JSONL pool accepts the header up front; reading the item fails,
  # naming the line.
  pool = JsonlSources(_jsonl(ctx, [{"id": "a", "image": "a.png"}],
                             {"a.png": bad}))
  try:
    pool[0]
    out.text += "\nJSONL: no error"
  except ValueError as e:
    out.text += f"\nJSONL: {e}"
  return out


def image_float_array(ctx):
  from auditdm_jax.data import image_preprocessing as ip  # pylint: disable=g-import-not-at-top
  try:
    ip.to_rgb_uint8(np.zeros((4, 4, 3), np.float32))
  except TypeError as e:
    return Outcome("TypeError", str(e))
  return Outcome("accepted", "")


# --- Datasets ---------------------------------------------------------------------


def bench_missing_column(ctx):
  tsv = _tsv(ctx.tmp / "POPE.tsv", _pope_rows([_png(_GRAY)]),
             header=("index", "question", "category", "image"))
  return _bench(ctx, tsv)


def taxonomy_no_harvest(ctx):
  from auditdm_jax.discover import taxonomy  # pylint: disable=g-import-not-at-top
  h = ctx.tmp / "harvest"
  h.mkdir()
  out = ctx.tmp / "types.json"
  rc, text = _cli(taxonomy.main, ["--failures", h, "--out", out], ctx)
  return Outcome(rc, text, absent=(out,))


def report_case(content: Optional[str]):
  def run(ctx):
    from auditdm_jax.discover import report  # pylint: disable=g-import-not-at-top
    data = ctx.tmp / "report.json"
    if content is not None:
      data.write_text(content)
    out = ctx.tmp / "report"
    rc, text = _cli(report.main, ["--data", data, "--out", out], ctx)
    return Outcome(rc, text, absent=(out,))
  return run


def world_bench_no_zoo(ctx):
  from auditdm_jax.eval import world_bench  # pylint: disable=g-import-not-at-top
  zoo = ctx.tmp / "zoo"
  zoo.mkdir()
  out = ctx.tmp / "result.json"
  rc, text = _cli(world_bench.main, ["--zoo", zoo, "--json", out], ctx)
  # Before the fix it built the 16-split benchmark in ZOO/data, then
  # printed an empty table with status 0.
  return Outcome(rc, text, absent=(out, zoo / "data"))


def success_rate_no_zoo(ctx):
  from auditdm_jax.eval import success_rate  # pylint: disable=g-import-not-at-top
  out = ctx.tmp / "result.json"
  rc, text = _cli(success_rate.main, ["--zoo", ctx.tmp / "nozoo", "--out",
                                      out], ctx)
  return Outcome(rc, text, absent=(out,))


# --- Auditor output -----------------------------------------------------------


def auditor_output(text, kind="question"):
  """parse_output's verdict, and what a rollout makes of the completion."""
  def run(ctx):
    del ctx
    from auditdm_jax.audit import prompts  # pylint: disable=g-import-not-at-top
    got = prompts.parse_output("world", kind, text)
    if got:
      return Outcome("valid", got.text)
    return Outcome(f"invalid ({got.reason})", str(got))
  return run


def auditor_output_in_a_rollout(ctx):
  """An empty and a garbage completion in a real rollout (scripted
  auditor, world backend): invalid pairs with their reason, reward
  -invalid_penalty, no model asked, the rollout goes on."""
  del ctx
  # pylint: disable=g-import-not-at-top
  from auditdm_jax.audit import judge
  from auditdm_jax.audit import rollout as rollout_lib
  from auditdm_jax.audit.sources import WorldSources
  from auditdm_jax.data.world_tokenizer import world_tokenizer
  from auditdm_jax.imaging.world_backend import WorldBackend
  from auditdm_jax.models import arch
  from auditdm_jax.models.vlm import Model
  from auditdm_jax.sampling.sampler import SampleOutput
  # pylint: enable=g-import-not-at-top
  tok = world_tokenizer()
  texts = ["", "!!! ### 42", "how many circles are there?"]

  class Scripted(rollout_lib.Rollout):

    def _sample(self, params, prompts_, pixels, n, temperature, key):
      rows, out = [], []
      for j in range(len(prompts_) * n):
        t = texts[j % len(texts)]
        ids = (tok.encode(t) if t else []) + [tok.eos_id]
        rows.append(ids + [tok.pad_id] * (16 - len(ids)))
        out.append(t)
      tokens = np.asarray(rows, np.int32)
      return SampleOutput(tokens=tokens, logprobs=np.zeros(tokens.shape,
                                                           np.float32),
                          lengths=(tokens != tok.pad_id).sum(1),
                          done=np.ones(len(rows), bool)), out

  asked = []

  class Vqa:
    name = "m"

    def answer(self, questions, images):
      asked.extend(questions)
      return ["2" for _ in questions]

  auditor = rollout_lib.Auditor(model=Model(arch.get("gemma3_world_s")),
                                tokenizer=tok, prompt_set="world")
  cfg = rollout_lib.RolloutConfig(
      group_size=3, max_new_tokens=16, mode_weights={"question": 1.0},
      reward=judge.RewardConfig(invalid_penalty=0.5))
  out = Scripted(auditor, Vqa(), [Vqa()], WorldBackend(), cfg)(
      None, [WorldSources(1, seed=0)[0]], key=jax.random.key(0))
  errors = [p.error for p in out.pairs]
  ok = (errors[0] == "question: empty" and errors[1] == "question: garbage"
        and errors[2] is None
        and list(out.rewards[:2]) == [-0.5, -0.5]
        and asked == [texts[2]] * 2)
  return Outcome("pairs invalid, rollout continues" if ok else "unexpected",
                 f"errors {errors}, rewards {list(out.rewards)}")


# --- The image service ----------------------------------------------------------


class _FakeService:
  """An HTTP server answering by `behave(handler, method)`; counts calls."""

  def __init__(self, behave):
    calls = self.calls = []

    class Handler(http.server.BaseHTTPRequestHandler):

      def log_message(self, *a):
        pass

      def reply(self, code, body: bytes):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

      def do_GET(self):  # pylint: disable=invalid-name
        calls.append(self.path)
        behave(self, "GET")

      def do_POST(self):  # pylint: disable=invalid-name
        n = int(self.headers.get("Content-Length", 0))
        self.rfile.read(n)
        calls.append(self.path)
        behave(self, "POST")

    self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    self.server.daemon_threads = True
    self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
    threading.Thread(target=self.server.serve_forever, daemon=True).start()

  def close(self):
    self.server.shutdown()
    self.server.server_close()


_HEALTH = json.dumps({"ok": True, "backend": "fake",
                      "cache_id": "fake"}).encode()


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def service_case(behave=None, *, generate=False, timeout=5.0, retries=2,
                 url=None):
  """`imaging.serve --check URL` against a fake service; records the
  backoff sleeps (without sleeping)."""
  def run(ctx):
    from auditdm_jax.imaging import remote, serve  # pylint: disable=g-import-not-at-top
    sleeps = []
    # remote's own `time` only: the fake server sleeps for real.
    ctx.monkeypatch.setattr(remote, "time", types.SimpleNamespace(
        sleep=sleeps.append))
    fake = _FakeService(behave) if behave else None
    target = url or (fake.url if fake else
                     f"http://127.0.0.1:{_free_port()}")
    try:
      argv = ["--check", target, "--timeout", timeout, "--retries", retries,
              "--backoff", 0.5]
      if generate:
        argv += ["--check_generate", "two red circles"]
      rc, text = _cli(serve.main, argv, ctx)
    finally:
      if fake:
        fake.close()
    text += f"\nsleeps {sleeps}"
    return Outcome(rc, text)
  return run


def _always(code, body=b'{"error": "boom"}'):
  return lambda h, m: h.reply(code, body)


def _slow(h, m):
  time.sleep(1.5)
  h.reply(200, _HEALTH)


def _health_then(post):
  def behave(h, m):
    if m == "GET":
      h.reply(200, _HEALTH)
    else:
      post(h)
  return behave


def _flaky():
  state = {"n": 0}

  def behave(h, m):
    state["n"] += 1
    if state["n"] == 1:
      h.reply(503, b'{"error": "warming up"}')
    else:
      h.reply(200, _HEALTH)
  return behave


def service_bad_image(data: bytes):
  """A real image service (world backend) sent a bad picture: HTTP 400
  with the reason; the server keeps serving."""
  def run(ctx):
    del ctx
    # pylint: disable=g-import-not-at-top
    from auditdm_jax.imaging import serve
    from auditdm_jax.imaging.world_backend import WorldBackend
    # pylint: enable=g-import-not-at-top
    server = serve.make_server(WorldBackend(), port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    body = json.dumps({"seed": 0, "instructions": ["remove the circle"],
                       "pictures": [{"png": base64.b64encode(data).decode(),
                                     "scene": None}]}).encode()
    req = urllib.request.Request(server.url + "/edit", data=body,
                                 method="POST")
    try:
      try:
        with urllib.request.urlopen(req, timeout=60) as r:
          status, text = r.status, r.read().decode()
      except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
      with urllib.request.urlopen(server.url + "/health", timeout=60) as r:
        alive = r.status == 200
    finally:
      server.shutdown()
      server.server_close()
    return Outcome(f"HTTP {status}" + ("" if alive else " (server died)"),
                   text)
  return run


# --- The table ------------------------------------------------------------------

C = Case
CASES = [
    # Configs.
    C("config_unknown_field", "config", "auditdm_jax.main",
      r"FATAL Flags parsing error: the config has no field 'nonexistent'", 1,
      config_case(_zoo_cfg("--config.nonexistent=1"))),
    C("config_wrong_type", "config", "auditdm_jax.main",
      r"flag --config\.max_len=abc: invalid literal for int", 1,
      config_case(_zoo_cfg("--config.max_len=abc"))),
    C("config_missing_file", "config", "auditdm_jax.main",
      r"No such file or directory: '.*nope\.py'", 1,
      config_case(["--config=" + str(REPO / "configs/world/nope.py")])),
    C("config_unknown_variant", "config", "auditdm_jax.main",
      r"unknown zoo variant 'nope'", 1,
      config_case(["--config=" + str(REPO / "configs/world/zoo.py:nope")])),
    C("config_unknown_task", "config", "auditdm_jax.main",
      r"config\.task must be one of \['audit', 'loop', 'sft', 'zoo'\], got "
      r"'nope'", 1, config_case(_zoo_cfg("--config.task=nope"))),
    C("config_invalid_value", "config", "auditdm_jax.main (sft)",
      r"TrainConfig: lr must be > 0, got -1", 1,
      sft_case(["--config.train.lr=-1"], dataset=False)),
    C("config_malformed_mesh", "config", "auditdm_jax.main (sft)",
      r"TrainConfig: mesh must be \[\(axis, size\), \.\.\.\] or None, got", 1,
      sft_case(["--config.train.mesh=None"], dataset=False)),
    C("config_missing_workdir", "config", "auditdm_jax.main",
      r"--config and --workdir are required", 1,
      config_case(_zoo_cfg(), workdir=False)),
    C("config_impossible_mesh", "config", "auditdm_jax.plan",
      r"mesh .* does not fit v5e-8 \(8 devices\).*does not divide", 2,
      plan_case("--config.train.mesh=(('data', 3), ('fsdp', -1))")),
    C("config_plan_unknown_field", "config", "auditdm_jax.plan",
      r"config has no field 'train\.nope'", 2,
      plan_case("--config.train.nope=1")),
    # Checkpoints.
    C("checkpoint_missing_key", "checkpoint", "auditdm_jax.convert hf2orbax",
      r"checkpoint does not match the architecture:\s+1 missing:\s+"
      r"lm\.norm\.weight", 1,
      hf_case(_missing_key)),
    C("checkpoint_extra_key", "checkpoint", "auditdm_jax.convert hf2orbax",
      r"1 unexpected:\s+language_model\.model\.layers\.99", 1,
      hf_case(_extra_key)),
    C("checkpoint_misshaped_key", "checkpoint", "auditdm_jax.convert hf2orbax",
      r"mis-shaped:\s+language_model\.model\.norm\.weight: expected "
      r"\(64,\), got \(65,\)", 1, hf_case(_misshaped)),
    C("checkpoint_wrong_dtype", "checkpoint", "auditdm_jax.convert hf2orbax",
      r"language_model\.model\.norm\.weight: dtype int32 is not a floating "
      r"type", 1, hf_case(_int_dtype)),
    C("checkpoint_truncated_file", "checkpoint",
      "auditdm_jax.convert hf2orbax",
      r"model\.safetensors.*truncated", 1, hf_case(None, _truncate)),
    C("checkpoint_not_orbax", "checkpoint", "auditdm_jax.convert orbax2hf",
      r"error: orbax2hf: .*junk", 1, orbax2hf_not_a_checkpoint),
    C("checkpoint_unknown_arch", "checkpoint", "auditdm_jax.convert npz2orbax",
      r"unknown --arch 'nope'", 1, npz_unknown_arch),
    C("checkpoint_no_usable_step", "checkpoint",
      "auditdm_jax.train.checkpoint --export_params",
      r"no usable checkpoint in .*step 2: .*no commit marker.*step 1: ", 2,
      train_ckpt_all_damaged),
    C("checkpoint_no_workdir", "checkpoint", "auditdm_jax.train.checkpoint",
      r"no checkpoints folder in .*nope", 2, train_ckpt_no_workdir),
    # Tokenizers.
    C("tokenizer_missing_file", "tokenizer", "auditdm_jax.eval.evaluate",
      r"SentencePiece model file not found: '.*nope/tokenizer\.model'", 2,
      evaluate_case(lambda ctx: ctx.tmp / "nope" / "tokenizer.model")),
    C("tokenizer_not_sentencepiece", "tokenizer", "auditdm_jax.eval.evaluate",
      r"could not load a SentencePiece model from .*tokenizer\.model", 2,
      evaluate_case(_garbage_tokenizer)),
    C("tokenizer_vocab_mismatch", "tokenizer", "auditdm_jax.eval.evaluate",
      r"token id \d+ is outside paligemma2_tiny's vocabulary of 512: the "
      r"tokenizer \(\d+ pieces\) does not belong to this model", 2,
      evaluate_case(lambda ctx: ctx.res.tokenizer_2000)),
    # Images.
    C("image_grayscale", "image", "auditdm_jax.data.bench (+ JSONL sources, "
      "image service)", r"pope/test: 1 examples", 0,
      image_accepted("grayscale")),
    C("image_rgba", "image", "auditdm_jax.data.bench (+ JSONL sources, "
      "image service)", r"pope/test: 1 examples", 0, image_accepted("rgba")),
    C("image_cmyk", "image", "auditdm_jax.data.bench (+ JSONL sources, "
      "image service)", r"pope/test: 1 examples", 0, image_accepted("cmyk")),
    C("image_16bit", "image", "auditdm_jax.data.bench (+ JSONL sources, "
      "image service)", r"pope/test: 1 examples", 0, image_accepted("16bit")),
    C("image_1x1", "image", "auditdm_jax.data.bench (+ JSONL sources, "
      "image service)", r"pope/test: 1 examples", 0, image_accepted("1x1")),
    C("image_very_large", "image", "auditdm_jax.discover.harvest --sources",
      r"sources\.jsonl:1: .*a\.png is not a readable image: "
      r"DecompressionBombError: Image size \(400000000 pixels\) exceeds", 2,
      image_rejected_by_harvest({"a.png": _huge_png()})),
    C("image_corrupt_bytes", "image", "auditdm_jax.discover.harvest --sources",
      r"sources\.jsonl:1: .*a\.png is not a readable image: "
      r"UnidentifiedImageError", 2,
      image_rejected_by_harvest({"a.png": b"this is not an image"})),
    C("image_truncated", "image", "auditdm_jax.data.bench (+ JSONL sources)",
      r"error: .*not a readable image.*\nJSONL: .*sources\.jsonl:1: image "
      r".*a\.png cannot be decoded", 1, image_truncated),
    C("image_float_array", "image", "image_preprocessing.to_rgb_uint8",
      r"image arrays must be uint8 in \[0, 255\], got dtype float32",
      "TypeError", image_float_array),
    C("image_service_corrupt", "image", "auditdm_jax.imaging.serve",
      r"pictures\[0\]\.png: not a readable image", "HTTP 400",
      service_bad_image(b"\x89PNG\r\n\x1a\n garbage")),
    C("image_service_too_large", "image", "auditdm_jax.imaging.serve",
      r"DecompressionBombError", "HTTP 400", service_bad_image(_huge_png())),
    # Datasets.
    C("dataset_missing_field", "dataset", "auditdm_jax.discover.harvest "
      "--sources", r"sources\.jsonl:1: needs a non-empty 'image'", 2,
      image_rejected_by_harvest({}, rows=[{"id": "a"}])),
    C("dataset_not_json", "dataset", "auditdm_jax.discover.harvest --sources",
      r"sources\.jsonl:2: not JSON", 2,
      image_rejected_by_harvest({"a.png": _png(_GRAY)}, rows=[
          {"id": "a", "image": "a.png"}, "{oops"])),
    C("dataset_missing_image_file", "dataset", "auditdm_jax.discover.harvest "
      "--sources", r"sources\.jsonl:1: no image file .*b\.png", 2,
      image_rejected_by_harvest({}, rows=[{"id": "b", "image": "b.png"}])),
    C("dataset_empty_pool", "dataset", "auditdm_jax.discover.harvest "
      "--sources", r"sources\.jsonl lists no sources", 2,
      image_rejected_by_harvest({}, rows=[""])),
    C("dataset_empty_split", "dataset", "auditdm_jax.data.bench",
      r"no examples for pope/test", 1,
      lambda ctx: _bench(ctx, _tsv(ctx.tmp / "POPE.tsv", []))),
    C("dataset_missing_column", "dataset", "auditdm_jax.data.bench",
      r"POPE\.tsv.*answer", 1, bench_missing_column),
    C("dataset_sft_missing_field", "dataset", "auditdm_jax.main (sft)",
      r"example needs one of \['suffix', 'answer'\]", 1,
      sft_case([], dataset=True)),
    C("dataset_sft_no_dataset", "dataset", "auditdm_jax.main (sft)",
      r"(?i)dataset.*not found|DatasetNotFoundError", 1,
      sft_case(["--config.data.name=no_such_dataset",
                "--config.data.data_dir=/nonexistent"], dataset=False)),
    C("dataset_no_harvest", "dataset", "auditdm_jax.discover.taxonomy",
      r"no harvested failures in", 2, taxonomy_no_harvest),
    C("dataset_report_not_json", "dataset", "auditdm_jax.discover.report",
      r"report\.json is not JSON", 2, report_case("{not json")),
    C("dataset_report_missing_fields", "dataset",
      "auditdm_jax.discover.report", r"report: missing \['summary', "
      r"'title'\]|report: missing \['title', 'summary'\]", 2,
      report_case('{"failure_types": [], "reward_curve": []}')),
    C("dataset_no_zoo", "dataset", "auditdm_jax.eval.world_bench",
      r"no exported models in", 2, world_bench_no_zoo),
    C("dataset_no_zoo_success_rate", "dataset", "auditdm_jax.eval."
      "success_rate", r"no world zoo at .*nozoo", 2,
      success_rate_no_zoo),
    # Auditor output (values, not errors: the pair is invalid, the run goes
    # on; parse_output never raises).
    C("auditor_output_empty", "auditor output", "audit.prompts.parse_output",
      r"^empty$", "invalid (empty)", auditor_output("")),
    C("auditor_output_markers_only", "auditor output",
      "audit.prompts.parse_output", r"^empty$", "invalid (empty)",
      auditor_output("<start_of_turn>model\n<end_of_turn>")),
    C("auditor_output_garbage", "auditor output",
      "audit.prompts.parse_output", r"garbage: !!! 123 ###\?", "invalid "
      "(garbage)", auditor_output("!!! 123 ###?")),
    C("auditor_output_overlong", "auditor output",
      "audit.prompts.parse_output", r"too long: \d+ > \d+ characters",
      "invalid (too long)", auditor_output("is " + "very " * 300 + "red?")),
    C("auditor_output_not_text", "auditor output",
      "audit.prompts.parse_output", r"not text: got NoneType",
      "invalid (not text)", auditor_output(None)),
    C("auditor_output_in_rollout", "auditor output",
      "audit.rollout (GRPO, harvest)",
      r"errors \['question: empty', 'question: garbage', None\]",
      "pairs invalid, rollout continues", auditor_output_in_a_rollout),
    # The remote image service (serve --check = RemoteBackend's calls).
    C("service_down", "image service", "auditdm_jax.imaging.serve --check",
      r"failed after 3 attempt\(s\); last: cannot connect.*\s+sleeps "
      r"\[0\.5, 1\.0\]", 2, service_case()),
    C("service_slow", "image service", "auditdm_jax.imaging.serve --check",
      r"no answer within 0\.3 s.*\s+sleeps \[\]", 2,
      service_case(_slow, timeout=0.3)),
    C("service_5xx", "image service", "auditdm_jax.imaging.serve --check",
      r"failed after 3 attempt\(s\); last: HTTP 500: boom\s+sleeps "
      r"\[0\.5, 1\.0\]", 2, service_case(_always(500))),
    C("service_rejects", "image service", "auditdm_jax.imaging.serve --check",
      r"rejected the request: HTTP 400: boom\s+sleeps \[\]", 2,
      service_case(_always(400))),
    C("service_garbage_answer", "image service",
      "auditdm_jax.imaging.serve --check", r"answered garbage: response: not "
      r"JSON", 2, service_case(_always(200, b"<html>hello</html>"))),
    C("service_wrong_count", "image service",
      "auditdm_jax.imaging.serve --check --check_generate",
      r"/generate answered garbage: response: 0 results for 1 items", 2,
      service_case(_health_then(lambda h: h.reply(200, b'{"results": []}')),
                   generate=True)),
    C("service_recovers", "image service", "auditdm_jax.imaging.serve --check",
      r"ok: .* serves fake.*\s+sleeps \[0\.5\]", 0, service_case(_flaky())),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, ctx):
  out = case.run(ctx)
  assert out.rc == case.rc, out.text[-3000:]
  assert re.search(case.expect, out.text, re.S | re.M), out.text[-3000:]
  for path in out.absent:
    assert not pathlib.Path(path).exists(), f"{path} was written"
  for path, before in out.unchanged:
    assert _snapshot(path) == before, f"{path} changed"


def test_the_catalogue_is_big_and_unique():
  ids = [c.id for c in CASES]
  assert len(ids) == len(set(ids)) and len(ids) >= 30


def test_the_doc_lists_every_case():
  """docs/bad_inputs.md has one row per case: `id` | ... | exit code."""
  rows = {}
  for line in DOC.read_text().splitlines():
    m = re.match(r"\|\s*`([a-z0-9_]+)`\s*\|(.*)\|\s*$", line)
    if m:
      rows[m.group(1)] = [c.strip() for c in m.group(2).split("|")]
  assert sorted(rows) == sorted(c.id for c in CASES)
  for c in CASES:
    assert rows[c.id][-1] == str(c.rc), (c.id, rows[c.id][-1], c.rc)

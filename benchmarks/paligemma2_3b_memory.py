r"""Peak host memory of PaliGemma-2-3B-224 inference on CPU, against its weights.

  nice -n 10 python benchmarks/paligemma2_3b_memory.py [--unembed chunked]
  python benchmarks/paligemma2_3b_memory.py --analyze_only [--keep_licm]

Builds `arch.get("paligemma2_3b_224")` (`models.vlm.Model`, bf16 compute)
with RANDOM bf16 weights, created leaf by leaf directly on the device in
bf16 (each leaf is a zero buffer filled in place, ~64 MiB chunk by chunk,
by a donated dynamic_update_slice; no f32 copy of a leaf and no host copy
of the model ever exists), then times

  weights   building the 6.06 GB of weights
  prefill   one jitted `Model.prefill` (embed 1 image + a short prompt,
            forward, last-token logits, KV cache); compile reported apart
  sample    the project's sampler (`sampling.sampler.Sampler`): prefill +
            8 greedy tokens in one jitted while loop; compile apart

and reports, per stage, the resident memory after it and its peak (VmHWM,
reset before each stage through /proc/self/clear_refs, which resets
ru_maxrss as well), the whole-process peak (the largest stage peak) and the
ratio peak / weight bytes. XLA's own buffer plan
of each program (`compiled.memory_analysis()`: arguments, temporaries) is
recorded too, which says where memory beyond the weights goes without
running anything (`--analyze_only` does only that, on abstract params).

XLA:CPU memory (jaxlib 0.10.2) -- why the flags below exist:
  * XLA:CPU has no native bf16 dot: float normalization wraps every bf16
    dot in converts to f32. Inside the layer `nn.scan` each layer's slice
    is converted, and then while-loop-invariant-code-motion (LICM) hoists
    those converts out of the loop as converts of the whole stacked weights,
    so every program holds an f32 copy of every scanned weight: XLA plans
    12.2 GB of temporaries for a 6.06 GB model (prefill and sampler alike).
    By default this script therefore runs with
    XLA_FLAGS=--xla_disable_hlo_passes=while-loop-invariant-code-motion
    (`--keep_licm` keeps XLA's default): 2.7 GB of temporaries.
  * What remains is the f32 copy of the tied [257216, 2304] embedding
    (2.37 GB) made for the LM-head dot (`gemma.Embedder.decode`).
    `--unembed chunked` runs the model with the LM head as the same einsum
    over 32 vocabulary chunks in a `lax.map` (`ChunkedUnembedModel` below:
    one ~74 MB f32 chunk at a time, identical logits), which shows what
    that model-side change buys. (A fused f32 multiply + reduce does not
    help: XLA materialises the [1, V, D] product or hands the converted
    table to a YNNPACK fusion.)

Writes benchmarks/results/paligemma2_3b_memory.json (one entry per
variant, merged with the entries already there) and prints a table. Needs
~10 GB of free RAM (~19 GB with --keep_licm outside --analyze_only).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import resource
import sys
import time

_LICM_OFF = "--xla_disable_hlo_passes=while-loop-invariant-code-motion"


def _set_xla_flags(argv) -> None:
  """XLA reads XLA_FLAGS once, when jax starts: set them before importing."""
  if "--keep_licm" in argv:
    return
  flags = os.environ.get("XLA_FLAGS", "")
  if "while-loop-invariant-code-motion" not in flags:
    os.environ["XLA_FLAGS"] = f"{flags} {_LICM_OFF}".strip()


_set_xla_flags(sys.argv)

# pylint: disable=g-import-not-at-top,wrong-import-position
import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from auditdm_jax.models import arch as arch_lib
from auditdm_jax.models.layers import softcap
from auditdm_jax.models.vlm import Model
from auditdm_jax.sampling import sampler as sampler_lib
# pylint: enable=g-import-not-at-top,wrong-import-position

ARCH = "paligemma2_3b_224"
RESULTS = ROOT / "benchmarks" / "results" / "paligemma2_3b_memory.json"
NEW_TOKENS = 8
PROMPT_TEXT_TOKENS = 7          # bos + 5 words + "\n", after the image
CHUNK_BYTES = 64 << 20
TARGET_RATIO = 1.3


CHUNK_F32_BYTES = 128 << 20


@dataclasses.dataclass(frozen=True)
class ChunkedUnembedModel(Model):
  """`Model` whose LM head runs over vocabulary chunks in a `lax.map`.

  `Model.unembed` is one einsum against the tied [V, D] table; XLA:CPU,
  lacking bf16 dots, converts the whole table to f32 for it (2.37 GB for
  PaliGemma-2). Here each ~128 MB f32 chunk of the table is converted
  inside the loop body (with LICM off, see the module docstring), the same
  einsum per chunk, so the logits are identical. A model-side fix would
  put this in `gemma.Embedder.decode` for large vocabularies.
  """

  def unembed(self, params, hidden):
    emb = params["llm"]["embedder"]["input_embedding"]              # [V, D]
    v, d = emb.shape
    need = -(-v * d * 4 // CHUNK_F32_BYTES)
    n = next((k for k in range(max(need, 1), v + 1) if v % k == 0), None)
    if n is None or n == 1:
      return super().unembed(params, hidden)
    lead = hidden.shape[:-1]
    h = hidden.reshape(-1, d)                                        # [N, D]
    out = jax.lax.map(
        lambda c: jnp.einsum("nd,vd->nv", h, c.astype(h.dtype)),
        emb.reshape(n, v // n, d))                                   # [n, N, V/n]
    logits = jnp.moveaxis(out, 0, 1).reshape(*lead, v)
    return softcap(logits, self.cfg.text.final_softcap)


# --- Memory probes ----------------------------------------------------------

def _status_mb() -> dict[str, float]:
  out = {}
  with open("/proc/self/status", encoding="ascii") as f:
    for line in f:
      if line.startswith(("VmRSS:", "VmHWM:")):
        out[line.split(":")[0]] = int(line.split()[1]) / 1024
  return out


def _reset_peak() -> bool:
  """Resets VmHWM to the current RSS (Linux >= 4.0); False if not allowed."""
  try:
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
      f.write("5")
    return True
  except OSError:
    return False


def _maxrss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KiB


class Stage:
  """Times a block and records RSS after it and its peak."""

  def __init__(self, name: str, log: list):
    self.name, self.log, self.info = name, log, {}

  def __enter__(self):
    self.resettable = _reset_peak()
    self.compile_s = 0.0
    self.t0 = time.perf_counter()
    _COMPILES.append(0.0)
    return self

  def __exit__(self, *exc):
    if exc[0] is not None:
      return
    wall = time.perf_counter() - self.t0
    compile_s = _COMPILES.pop()
    st = _status_mb()
    self.log.append({
        "stage": self.name, "seconds": wall, "compile_seconds": compile_s,
        "run_seconds": wall - compile_s, "rss_after_mb": st["VmRSS"],
        "stage_peak_mb": st["VmHWM"] if self.resettable else None,
        "ru_maxrss_mb": _maxrss_mb(), **self.info})


_COMPILES: list[float] = []


def _on_duration(event: str, duration: float, **_) -> None:
  if event == "/jax/core/compile/backend_compile_duration" and _COMPILES:
    _COMPILES[-1] += duration


jax.monitoring.register_event_duration_secs_listener(_on_duration)


# --- Model, weights, inputs ---------------------------------------------------

def weight_bytes(abstract) -> int:
  return sum(math.prod(a.shape) * 2 for a in jax.tree.leaves(abstract))


@functools.partial(jax.jit, static_argnums=0)
def _zeros(shape):
  return jnp.zeros(shape, jnp.bfloat16)


@functools.partial(jax.jit, donate_argnums=0)
def _write_rows(x, rows, start):
  return jax.lax.dynamic_update_slice_in_dim(x, rows, start, 0)


def random_bf16_params(abstract, seed: int = 0, scale: float = 0.02):
  """N(0, scale^2) bf16 leaves made on the device in place, chunk by chunk.

  Each leaf is a bf16 zero buffer whose rows are overwritten ~64 MiB at a
  time by a donated dynamic_update_slice, so the only memory beyond the
  weights is one host chunk: no f32 copy of a leaf, no host copy of the
  model. Chunks are windows at random offsets into one pool of normal
  draws (drawing 3e9 fresh normals costs ~2 min on 2 cores; the values'
  distribution is the same, and nothing here depends on independence).
  """
  rng = np.random.default_rng(seed)
  pool_n = CHUNK_BYTES // 2
  pool = (scale * rng.standard_normal(2 * pool_n, dtype=np.float32)).astype(
      ml_dtypes.bfloat16)

  def draw(shape):
    n = math.prod(shape)
    if n > pool.size // 2:       # a single row longer than a chunk
      return (scale * rng.standard_normal(shape, dtype=np.float32)).astype(
          ml_dtypes.bfloat16)
    off = int(rng.integers(0, pool.size - n + 1))
    return pool[off:off + n].reshape(shape)

  def leaf(a):
    shape = tuple(a.shape)
    if not shape:
      return jnp.asarray(draw(()), jnp.bfloat16)
    x = _zeros(shape)
    row_bytes = 2 * math.prod(shape[1:])
    step = max(1, CHUNK_BYTES // max(row_bytes, 1))
    for start in range(0, shape[0], step):
      n = min(step, shape[0] - start)
      x = _write_rows(x, draw((n,) + shape[1:]), np.int32(start))
    return x.block_until_ready()

  return jax.tree.map(leaf, abstract)


def prompt(cfg, seed: int = 0):
  """1 image + a short prefix, PaliGemma layout (all prefix, full attention)."""
  rng = np.random.default_rng(seed)
  text = [2] + list(rng.integers(1000, 20000, PROMPT_TEXT_TOKENS - 2)) + [108]
  tokens = np.asarray([[cfg.image_token_id] * cfg.tokens_per_image + text],
                      np.int32)
  input_mask = np.ones(tokens.shape, bool)
  mask_ar = np.zeros(tokens.shape, np.int32)
  s = cfg.vision.image_size
  images = rng.uniform(-1, 1, (1, 1, s, s, 3)).astype(np.float32)
  return tokens, input_mask, mask_ar, images


def _analysis(compiled) -> dict:
  ma = compiled.memory_analysis()
  return {k: getattr(ma, f"{k}_size_in_bytes") for k in
          ("argument", "output", "temp", "alias")}


def analyze(prefill_fn, model, abstract, inputs, sampling, buckets) -> dict:
  """Compiles the prefill and sampler programs on abstract params (before
  any weight exists, so compile memory does not stack on them; the calls
  later reuse these executables) -> XLA's buffer plan and compile time."""
  tokens, input_mask, mask_ar, images = inputs
  sds = lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype)
  t = buckets.prompt_length(tokens.shape[1])
  text = [sds(np.zeros((1, t), x.dtype)) for x in (tokens, input_mask,
                                                   mask_ar)]
  out = {}
  t0 = time.perf_counter()
  c = prefill_fn.lower(abstract, *text, sds(images)).compile()
  out["prefill"] = dict(_analysis(c), compile_seconds=time.perf_counter() - t0)
  t0 = time.perf_counter()
  c = sampler_lib._sample_jit.lower(  # pylint: disable=protected-access
      model, sampling, abstract, *text, sds(images),
      jax.ShapeDtypeStruct((1,), bool), jax.random.key(0)).compile()
  out["sample"] = dict(_analysis(c), compile_seconds=time.perf_counter() - t0)
  return out


def _prefill(model, cache_size, params, tokens, input_mask, mask_ar, images):
  emb = model.embed(params, tokens, input_mask, mask_ar, images)
  return model.prefill(params, emb, cache_size=cache_size)


# --- Report -------------------------------------------------------------------

def _gb(mb: float) -> str:
  return f"{mb / 1024:.2f}"


def table(entry: dict) -> str:
  wb = entry["weight_bytes"] / 2**20
  lines = [f"{entry['arch']} on CPU, variant {entry['variant']}: weights "
           f"{entry['weight_bytes'] / 1e9:.3f} GB ({_gb(wb)} GiB), baseline "
           f"RSS {_gb(entry['baseline_rss_mb'])} GiB",
           f"{'stage':<10}{'wall s':>9}{'compile s':>11}{'RSS after GiB':>15}"
           f"{'stage peak GiB':>16}{'peak/weights':>14}"]
  for s in entry["stages"]:
    peak = s["stage_peak_mb"]
    lines.append(
        f"{s['stage']:<10}{s['seconds']:>9.1f}{s['compile_seconds']:>11.1f}"
        f"{_gb(s['rss_after_mb']):>15}"
        f"{(_gb(peak) if peak else 'n/a'):>16}"
        f"{(f'{peak / wb:.3f}' if peak else 'n/a'):>14}")
  if "peak_rss_mb" in entry:
    lines.append(
        f"process peak {_gb(entry['peak_rss_mb'])} GiB = "
        f"{entry['peak_ratio']:.3f} x weights (target <= {TARGET_RATIO}); "
        f"excluding the baseline {entry['peak_ratio_over_baseline']:.3f} x")
  for prog, a in entry.get("xla_buffers", {}).items():
    lines.append(f"XLA plan {prog:<8} args {a['argument'] / 1e9:.2f} GB, "
                 f"temporaries {a['temp'] / 1e9:.2f} GB, compiled in "
                 f"{a['compile_seconds']:.1f} s")
  return "\n".join(lines)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--unembed", choices=("model", "chunked"), default="model",
                 help="LM head: the model's einsum, or over vocab chunks")
  p.add_argument("--keep_licm", action="store_true",
                 help="keep XLA's while-loop-invariant-code-motion pass")
  p.add_argument("--analyze_only", action="store_true",
                 help="only XLA's buffer plans (no weights, ~1 GB RAM)")
  p.add_argument("--arch", default=ARCH, help="(smoke tests: a tiny arch)")
  p.add_argument("--out", default=str(RESULTS))
  args = p.parse_args()

  variant = ("licm" if args.keep_licm else "no_licm") + (
      "+chunked_unembed" if args.unembed == "chunked" else "") + (
          " (analysis only)" if args.analyze_only else "")
  cfg = arch_lib.get(args.arch)
  model_cls = ChunkedUnembedModel if args.unembed == "chunked" else Model
  model = model_cls(cfg, dtype=jnp.bfloat16)
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape,
                                                         jnp.bfloat16),
                          Model(cfg).abstract_params())
  inputs = prompt(cfg)
  sampling = sampler_lib.SamplingConfig(temperature=0.0,
                                        max_new_tokens=NEW_TOKENS)
  buckets = sampler_lib.Buckets(length=8, batch=1)
  entry = {
      "arch": args.arch, "variant": variant, "unembed": args.unembed,
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "jax": jax.__version__, "python": platform.python_version(),
      "cpus": os.cpu_count(), "weight_bytes": weight_bytes(abstract),
      "prompt_tokens": int(inputs[0].shape[1]),
      "new_tokens": NEW_TOKENS, "baseline_rss_mb": _status_mb()["VmRSS"],
      "target_ratio": TARGET_RATIO,
  }
  t = buckets.prompt_length(inputs[0].shape[1])
  prefill = jax.jit(functools.partial(_prefill, model, t + NEW_TOKENS - 1))
  with Stage("compile", stages := []):
    entry["xla_buffers"] = analyze(prefill, model, abstract, inputs, sampling,
                                   buckets)
  entry["baseline_rss_mb"] = _status_mb()["VmRSS"]  # after XLA's first use
  if not args.analyze_only:
    with Stage("weights", stages):
      params = random_bf16_params(abstract)
    tokens, input_mask, mask_ar, images = inputs
    padded = sampler_lib._repack_left(  # pylint: disable=protected-access
        tokens, input_mask, mask_ar, t, 0)
    with Stage("prefill", stages) as st:
      logits, cache = prefill(params, *padded, images)
      jax.block_until_ready((logits, cache))
      st.info["argmax"] = int(jnp.argmax(logits[0]))
      st.info["finite"] = bool(jnp.all(jnp.isfinite(
          logits.astype(jnp.float32))))
    del logits, cache
    sampler = sampler_lib.Sampler(model, buckets)
    with Stage("sample", stages) as st:
      out = sampler(params, tokens, input_mask, mask_ar, images,
                    key=jax.random.key(0), config=sampling)
      jax.block_until_ready(out.tokens)
      st.info["tokens"] = np.asarray(out.tokens[0]).tolist()
    # Greedy: the first sampled token is the prefill's argmax.
    entry["first_token_matches_prefill"] = (
        stages[-1]["tokens"][0] == stages[-2]["argmax"])
    # clear_refs resets the kernel's hiwater_rss, which ru_maxrss reports
    # too: the process peak is the largest stage peak.
    entry["peak_rss_mb"] = max([_maxrss_mb()] + [
        s["stage_peak_mb"] or 0 for s in stages])
    wb = entry["weight_bytes"] / 2**20
    entry["peak_ratio"] = entry["peak_rss_mb"] / wb
    entry["peak_ratio_over_baseline"] = (
        (entry["peak_rss_mb"] - entry["baseline_rss_mb"]) / wb)
  entry["stages"] = stages

  out_path = pathlib.Path(args.out)
  out_path.parent.mkdir(parents=True, exist_ok=True)
  results = json.loads(out_path.read_text()) if out_path.exists() else {}
  results.setdefault("runs", {})[variant] = entry
  results["machine"] = {"cpus": os.cpu_count(),
                        "processor": platform.processor() or platform.machine()}
  out_path.write_text(json.dumps(results, indent=1) + "\n")
  if args.analyze_only:
    print("\n".join(table(entry).splitlines()[-2:]))
  else:
    print(table(entry))
  print(f"wrote {out_path}")


if __name__ == "__main__":
  main()

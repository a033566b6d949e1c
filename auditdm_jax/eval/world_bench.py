r"""World benchmark accuracy of VQA models and validity of an auditor.

  python -m auditdm_jax.eval.world_bench --zoo /tmp/zoo [--limit 100]

prints ONE table: every zoo model x the 16 WorldBench splits (+ mean; the
target's planted-gap splits are starred), then the auditor's validity per
prompt kind and the skills its valid questions cover.

Library:

  sources = bench_sources(data_dir)                   # {split: examples}
  answer = model_answer_fn(model, params, tok)        # examples -> [str]
  bench_accuracy(answer, sources, limit=100)          # {split: acc}
  eval_fn = make_eval_fn(arch, sources, limit=32)     # train(..., eval_fn)
  auditor_validity(model, params, tok, examples, n_per_kind=100)

Scoring (`score`): greedy decode (temperature 0, a few new tokens, stopped at
`<eos>` / `<end_of_turn>`), decoded, compared with the canonical answer after
`normalise` (strip, lower-case, a trailing "." dropped).

Validity (`check_sample`): a question is valid when the world oracle answers
it on the image's scene (`oracle.answer` is not an OracleError), an edit when
`editor.apply_edit` gives a Scene, a caption when `generator.parse_caption`
gives a Scene. `question_skill` names the skill of a valid question from its
parse (and the scene, for binding / hallucination).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from auditdm_jax import atomic_io
from auditdm_jax.data import world_tfds
from auditdm_jax.sampling import generate as generate_lib
from auditdm_jax.world import editor
from auditdm_jax.world import generator
from auditdm_jax.world import oracle
from auditdm_jax.world import prompts as world_prompts
from auditdm_jax.world import questions
from auditdm_jax.world import scene as scene_lib

PathLike = Union[str, os.PathLike]
AnswerFn = Callable[[Sequence[Mapping[str, Any]]], Sequence[str]]
IMAGE_PREPROCESS = "siglip"
SPLITS = tuple(world_tfds.BENCH_SPLITS)


# --- scoring ------------------------------------------------------------------


def normalise(text: str) -> str:
  """Canonical form for exact-match scoring: strip, lower, drop a final '.'."""
  t = str(text).strip().lower()
  if t.endswith("."):
    t = t[:-1].rstrip()
  return t


def score(predictions: Sequence[str], answers: Sequence[str]) -> float:
  """Exact-match accuracy after `normalise` (0 for no examples)."""
  if len(predictions) != len(answers):
    raise ValueError(f"{len(predictions)} predictions, {len(answers)} answers")
  if not answers:
    return 0.0
  return float(np.mean([normalise(p) == normalise(a)
                        for p, a in zip(predictions, answers)]))


# --- data ---------------------------------------------------------------------


def bench_sources(data_dir: PathLike, **config) -> dict[str, Any]:
  """{split: decoded examples} of WorldBench (built in `data_dir` if needed)."""
  import grain  # pylint: disable=g-import-not-at-top
  sources = world_tfds.build(world_tfds.WorldBench, data_dir, **config)
  return {s: grain.MapDataset.source(sources[s]).map(world_tfds.decode_record)
          for s in SPLITS}


def _take(source, limit: Optional[int]) -> list:
  n = len(source) if limit is None else min(limit, len(source))
  return [source[i] for i in range(n)]


# --- decoding -----------------------------------------------------------------


def encode_prompts(model, tokenizer, texts: Sequence[str],
                   images: Sequence[np.ndarray]):
  """(tokens, input_mask, mask_ar, images f32[B, 1, S, S, 3]) for sampling."""
  return generate_lib.encode_prompts(model, tokenizer, texts, images,
                                     image_preprocess=IMAGE_PREPROCESS)


def generate(model, params, tokenizer, texts: Sequence[str],
             images: Sequence[np.ndarray], *, max_new_tokens: int = 4,
             temperature: float = 0.0, key: Optional[jax.Array] = None,
             batch_size: int = 256) -> list[str]:
  """Decoded completions of (prompt text, image) pairs, in batches."""
  return generate_lib.generate(
      model, params, tokenizer, texts, images, max_new_tokens=max_new_tokens,
      temperature=temperature, key=key, batch_size=batch_size,
      image_preprocess=IMAGE_PREPROCESS)


def model_answer_fn(model, params, tokenizer, *, max_new_tokens: int = 3,
                    batch_size: int = 256) -> AnswerFn:
  """examples -> greedy answers of the model."""
  def answer(examples):
    return generate(model, params, tokenizer,
                    [e["question"] for e in examples],
                    [e["image"] for e in examples],
                    max_new_tokens=max_new_tokens, batch_size=batch_size)
  return answer


def oracle_answer_fn(examples) -> list[str]:
  """The ground truth from the scene graph (a perfect 'model', for tests)."""
  out = []
  for e in examples:
    a = oracle.answer(scene_lib.Scene.from_json(e["scene"]), e["question"])
    out.append(a if isinstance(a, str) else "")
  return out


def bench_accuracy(answer_fn: AnswerFn, sources: Mapping[str, Any], *,
                   limit: Optional[int] = None) -> dict[str, float]:
  """{split: accuracy} of `answer_fn` on the first `limit` examples of each."""
  result = {}
  for split in sources:
    examples = _take(sources[split], limit)
    result[split] = score(answer_fn(examples),
                          [e["answer"] for e in examples])
  return result


def make_eval_fn(arch, sources: Mapping[str, Any], *, limit: int = 32,
                 tokenizer=None) -> Callable[[Any], dict[str, float]]:
  """A `train(..., eval_fn)` evaluator: params -> {split: acc, 'mean': ..}."""
  from auditdm_jax.data.world_tokenizer import world_tokenizer  # pylint: disable=g-import-not-at-top
  from auditdm_jax.models.vlm import Model  # pylint: disable=g-import-not-at-top
  from auditdm_jax.models import arch as arch_lib  # pylint: disable=g-import-not-at-top
  cfg = arch_lib.get(arch) if isinstance(arch, str) else arch
  model, tok = Model(cfg), tokenizer or world_tokenizer()
  small = {s: _take(src, limit) for s, src in sources.items()}

  def eval_fn(params):
    acc = bench_accuracy(model_answer_fn(model, params, tok), small)
    acc["mean"] = float(np.mean(list(acc.values())))
    return acc
  return eval_fn


# --- the auditor --------------------------------------------------------------


def question_skill(scene: scene_lib.Scene, text: str) -> Optional[str]:
  """The questions.SKILLS entry a question exercises, None if it is invalid."""
  q = oracle.parse_question(text)
  if isinstance(q, oracle.OracleError):
    return None
  a = oracle.evaluate(scene, q)
  if isinstance(a, oracle.OracleError):
    return None
  k, ref = q.kind, q.ref
  attrs = [n for n in ("size", "colour", "shape") if getattr(ref, n)]
  if k == "exists":
    return "occupancy" if not attrs and ref.place is not None else "existence"
  if k == "count":
    return "count_attr" if attrs else "count"
  if k in ("more", "fewer"):
    return "comparison"
  if k in ("bigger", "smaller"):
    return "size_comparison"
  if a == oracle.NONE:
    return "hallucination"
  if k == "side_h":
    return "left_right"
  if k == "side_v":
    return "above_below"
  if ref.place is not None:
    return "extremes"
  ambiguous = [n for n in attrs
               if sum(getattr(o, n) == getattr(ref, n)
                      for o in scene.objects) > 1]
  if len(attrs) >= 2 and len(ambiguous) >= 2:
    return "binding"
  return k


def check_sample(kind: str, text: str, scene: scene_lib.Scene
                 ) -> tuple[bool, Optional[str]]:
  """(valid, skill of a valid question else None) of one auditor sample."""
  if kind == "question":
    skill = question_skill(scene, text)
    return skill is not None, skill
  if kind == "edit":
    return isinstance(editor.apply_edit(scene, text), scene_lib.Scene), None
  if kind == "caption":
    return isinstance(generator.parse_caption(text), scene_lib.Scene), None
  raise ValueError(f"unknown prompt kind {kind!r}")


def validity(samples: Mapping[str, Sequence[tuple[str, scene_lib.Scene]]]
             ) -> dict[str, Any]:
  """{kind: rate} plus 'skills' {skill: n} and 'missing_skills'.

  Args:
    samples: {kind: [(text, scene of the image it was written for), ...]}.
  """
  out: dict[str, Any] = {}
  skills = {s: 0 for s in questions.SKILLS}
  for kind, items in samples.items():
    ok = 0
    for text, scene in items:
      valid, skill = check_sample(kind, text, scene)
      ok += valid
      if skill is not None:
        skills[skill] += 1
    out[kind] = ok / len(items) if items else 0.0
  out["skills"] = skills
  out["missing_skills"] = [s for s, n in skills.items() if n == 0]
  return out


def auditor_validity(model, params, tokenizer, examples: Sequence[Mapping],
                     *, n_per_kind: int = 100, temperature: float = 1.0,
                     max_new_tokens: int = 48, seed: int = 0,
                     return_samples: bool = False) -> dict[str, Any]:
  """Samples the auditor on benchmark images for each prompt; `validity`."""
  examples = list(examples)[:n_per_kind]
  scenes = [scene_lib.Scene.from_json(e["scene"]) for e in examples]
  images = [e["image"] for e in examples]
  samples = {}
  key = jax.random.key(seed)
  for kind in world_prompts.KINDS:
    key, sub = jax.random.split(key)
    texts = generate(model, params, tokenizer,
                     [world_prompts.PROMPTS[kind]] * len(images), images,
                     max_new_tokens=max_new_tokens, temperature=temperature,
                     key=sub)
    samples[kind] = list(zip(texts, scenes))
  out = validity(samples)
  if return_samples:
    out["samples"] = {k: [t for t, _ in v] for k, v in samples.items()}
  return out


# --- the zoo ------------------------------------------------------------------


def load_export(path: PathLike):
  """(Model, f32 params) of a params-only export (`convert.orbax_io`)."""
  from auditdm_jax.convert import orbax_io  # pylint: disable=g-import-not-at-top
  from auditdm_jax.models.vlm import Model  # pylint: disable=g-import-not-at-top
  cfg, params = orbax_io.load_checkpoint(path, dtype=jnp.float32)
  return Model(cfg), params


def _export_root(zoo: PathLike) -> pathlib.Path:
  zoo = pathlib.Path(zoo)
  return zoo / "export" if (zoo / "export").is_dir() else zoo


def zoo_models(zoo: PathLike) -> dict[str, dict]:
  """{name: sidecar info} of the exported models, in zoo order."""
  root = _export_root(zoo)
  infos = {}
  for side in sorted(root.glob("*.json")):
    info = json.loads(side.read_text())
    if (root / side.stem).is_dir():
      infos[side.stem] = {**info, "path": str(root / side.stem)}
  order = {"target": 0, "reference": 1, "auditor": 2}
  return dict(sorted(infos.items(),
                     key=lambda kv: (order.get(kv[1].get("role"), 3), kv[0])))


def evaluate_zoo(zoo: PathLike, data_dir: Optional[PathLike] = None, *,
                 limit: Optional[int] = None, n_per_kind: int = 200,
                 bench_config: Optional[dict] = None,
                 only: Optional[Sequence[str]] = None) -> dict[str, Any]:
  """{'models': {name: {split: acc, 'mean'}}, 'auditor': validity, ...}.

  Raises:
    FileNotFoundError: `zoo` holds no exported models (checked before the
      benchmark data is built, which a wrong path would otherwise cost).
    ValueError: `only` names models the zoo does not have.
  """
  from auditdm_jax.data.world_tokenizer import world_tokenizer  # pylint: disable=g-import-not-at-top
  zoo = pathlib.Path(zoo)
  models = zoo_models(zoo)
  if not models:
    raise FileNotFoundError(
        f"no exported models in {_export_root(zoo)} (NAME.json + NAME/ "
        "pairs, as `python -m auditdm_jax.main --config=configs/world/zoo.py` "
        "writes under WORKDIR/export)")
  unknown = sorted(set(only or ()) - set(models))
  if unknown:
    raise ValueError(f"--only names {unknown}, not in the zoo ({sorted(models)})")
  if data_dir is None:
    base = zoo.parent if zoo.name == "export" else zoo
    data_dir = base / "data"
  sources = bench_sources(data_dir, **(bench_config or {}))
  tok = world_tokenizer()
  result: dict[str, Any] = {"models": {}, "gaps": {}, "seconds": {}}
  for name, info in models.items():
    if only and name not in only:
      continue
    t0 = time.perf_counter()
    model, params = load_export(info["path"])
    if info.get("role") == "auditor":
      pool = [e for s in SPLITS for e in _take(sources[s], 20)]
      rng = np.random.default_rng(0)
      pool = [pool[i] for i in rng.permutation(len(pool))]
      result["auditor"] = {"name": name, **auditor_validity(
          model, params, tok, pool, n_per_kind=n_per_kind)}
    else:
      acc = bench_accuracy(model_answer_fn(model, params, tok), sources,
                           limit=limit)
      acc["mean"] = float(np.mean([acc[s] for s in SPLITS]))
      result["models"][name] = acc
      result["gaps"][name] = sorted(set(info.get("gap_splits", {}).values()))
    result["seconds"][name] = time.perf_counter() - t0
  return result


_SHORT = {"existence": "exist", "count": "count", "count_attr": "cnt_at",
          "colour": "colour", "shape": "shape", "size": "size",
          "left_right": "l_r", "above_below": "a_b", "extremes": "extr",
          "occupancy": "occup", "comparison": "cmp",
          "size_comparison": "sz_cmp", "hallucination": "hallu",
          "binding": "bind", "colour_purple": "purple",
          "count_shape_ge5": "shp>=5"}


def format_table(result: Mapping[str, Any]) -> str:
  """The one table: models x splits (+ mean), then the auditor's validity."""
  cols = [*SPLITS, "mean"]
  width = max([7, *(len(n) for n in result["models"])]) + 1
  head = "model".ljust(width) + " ".join(
      _SHORT.get(c, c).rjust(6) for c in cols)
  lines = [head, "-" * len(head)]
  for name, acc in result["models"].items():
    gaps = set(result.get("gaps", {}).get(name, ()))
    cells = []
    for c in cols:
      v = acc.get(c)
      cell = "  -  " if v is None else f"{100 * v:5.1f}"
      cells.append((cell + ("*" if c in gaps else " ")).rjust(6))
    lines.append(name.ljust(width) + " ".join(cells))
  if result.get("models"):
    lines.append("(accuracy %, greedy; * = planted-gap split of that model)")
  aud = result.get("auditor")
  if aud:
    kinds = ", ".join(f"{k} {100 * aud[k]:.1f}%" for k in world_prompts.KINDS
                      if k in aud)
    covered = [s for s, n in aud["skills"].items() if n]
    lines.append(f"auditor {aud.get('name', '')}: valid {kinds}; skills "
                 f"{len(covered)}/{len(aud['skills'])}"
                 + (f" (missing: {', '.join(aud['missing_skills'])})"
                    if aud["missing_skills"] else ""))
    lines.append("  question skills: " + ", ".join(
        f"{_SHORT.get(s, s)} {n}" for s, n in aud["skills"].items()))
  return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--zoo", required=True,
                 help="a zoo workdir or its export/ directory")
  p.add_argument("--data_dir", default=None,
                 help="TFDS data dir of the benchmark (default <zoo>/data)")
  p.add_argument("--limit", type=int, default=None,
                 help="examples per split (default: all 500)")
  p.add_argument("--n_per_kind", type=int, default=200,
                 help="auditor samples per prompt kind")
  p.add_argument("--examples_per_split", type=int, default=None,
                 help="build a smaller benchmark (tests only)")
  p.add_argument("--only", default="", help="comma-separated model names")
  p.add_argument("--json", default=None, help="also write the result here")
  args = p.parse_args(argv)
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  tfds.disable_progress_bar()
  bench = ({"examples_per_split": args.examples_per_split}
           if args.examples_per_split else None)
  try:
    result = evaluate_zoo(args.zoo, args.data_dir, limit=args.limit,
                          n_per_kind=args.n_per_kind, bench_config=bench,
                          only=[s for s in args.only.split(",") if s] or None)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(format_table(result))
  if args.json:
    atomic_io.write_json(args.json, result)
  return 0


if __name__ == "__main__":
  sys.exit(main())

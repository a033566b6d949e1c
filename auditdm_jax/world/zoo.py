r"""Trains the world model zoo (configs/world/zoo.py) and exports it.

  train_zoo(get_config(), "/tmp/zoo")            # every model, resumable
  train_zoo(cfg, "/tmp/zoo", only=["target"])

  python -m auditdm_jax.world.zoo --config configs/world/zoo.py[:quick] \
      --workdir DIR [--only NAME[,NAME]]

Each model trains in `workdir/<name>` (train/ checkpoints: a killed run
resumes where it stopped) and, when done, is exported as a params-only
bfloat16 checkpoint `workdir/export/<name>` (`convert.orbax_io` format, the
arch recorded) with a sidecar `workdir/export/<name>.json` (role, arch, steps,
wall time, the planted gaps' benchmark splits). A model whose sidecar exists
is skipped.

Data: VQA models read `data.world_tfds.WorldVqa` (never a benchmark scene);
the auditor reads `AuditorSource`, which renders training-side scenes only
(`world_tfds.is_bench_scene` rejected) and writes, for one of the prompts of
`world.prompts`, a question (`questions.sample_question`, the 14 skills in
turn), an edit command (`editor.sample_edit`) or a caption
(`generator.describe_scene`, or `sample_caption` when the scene's caption
would be too long).

Periodic evaluation: with `config.eval_every > 0`, VQA models are scored
every that many steps on the first `config.eval_limit` examples of each
benchmark split (`eval.world_bench.make_eval_fn`; metrics `eval/<split>`).

Time budget: a model trains to `total_steps` or until `max_minutes` of wall
time in this call (a resumed model gets its budget again), checkpointing
every `chunk_steps`.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import time
from collections.abc import Sequence
from typing import Any, Optional, Union

import grain
import jax
import jax.numpy as jnp

from auditdm_jax import atomic_io
from auditdm_jax.data import world_tfds
from auditdm_jax.data.world_tokenizer import world_tokenizer
from auditdm_jax.world import editor
from auditdm_jax.world import generator
from auditdm_jax.world import prompts as world_prompts
from auditdm_jax.world import questions
from auditdm_jax.world import render as render_lib
from auditdm_jax.world import scene as scene_lib

PathLike = Union[str, os.PathLike]
IMAGE_PREPROCESS = "siglip"   # Every zoo model; the evaluator uses the same.
CAPTION_MODES = ("all", "mixed", "none")


# --- config -------------------------------------------------------------------


def load_config(spec: str):
  """'path/to/config.py[:arg]' -> the file's get_config(arg) ConfigDict."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  path, _, arg = spec.partition(":")
  mod_spec = importlib.util.spec_from_file_location("_zoo_config", path)
  if mod_spec is None:
    raise FileNotFoundError(f"no config file {path!r}")
  mod = importlib.util.module_from_spec(mod_spec)
  mod_spec.loader.exec_module(mod)
  return mod.get_config(arg or None)


def _dict(x) -> dict:
  if x is None:
    return {}
  return {k: (v.to_dict() if hasattr(v, "to_dict") else v)
          for k, v in dict(x).items()}


def model_names(config) -> list[str]:
  return list(config.order) if "order" in config else list(config.models)


def train_config(config, name: str):
  """The `train.TrainConfig` of zoo model `name`."""
  from auditdm_jax.train import TrainConfig  # pylint: disable=g-import-not-at-top
  m = config.models[name]
  return TrainConfig(
      arch=m.arch, lr=m.lr, schedule=m.schedule, warmup_steps=m.warmup_steps,
      b2=m.b2, weight_decay=m.weight_decay, grad_clip=m.grad_clip,
      batch_size=m.batch_size, total_steps=m.total_steps,
      max_len=m.get("max_len", config.max_len),
      max_target_len=m.get("max_target_len", config.max_target_len),
      unroll=config.get("unroll", 1),
      image_preprocess=IMAGE_PREPROCESS, seed=m.seed,
      eval_every=(config.get("eval_every", 0) if m.role != "auditor" else 0),
      checkpoint_every=config.chunk_steps, keep_checkpoints=1,
      async_checkpointing=False,
      log_every=min(50, max(1, config.chunk_steps)), progress=False)


# --- data ---------------------------------------------------------------------


class AuditorSource:
  """Indexable auditor SFT examples: {image, prefix (a prompt), suffix}.

  Example i is a pure function of (seed, i): kind `KINDS[i % 3]`; questions
  cycle through the 14 skills. Images are rendered on access.
  """

  def __init__(self, num_examples: int, seed: int = 0, *,
               caption_max_tokens: int = 40, tokenizer=None):
    self.n, self.seed = int(num_examples), int(seed)
    self.caption_max_tokens = caption_max_tokens
    self.tokenizer = tokenizer or world_tokenizer()

  def __len__(self) -> int:
    return self.n

  def _scene(self, rng) -> scene_lib.Scene:
    while True:
      s = scene_lib.sample_scene(rng)
      if not world_tfds.is_bench_scene(s):
        return s

  def _caption(self, scene, rng) -> str:
    mode = CAPTION_MODES[rng.randrange(len(CAPTION_MODES))]
    for positions in (mode, "none"):
      text = generator.describe_scene(scene, rng, positions=positions)
      if len(self.tokenizer.encode(text)) <= self.caption_max_tokens:
        return text
    while True:
      text = generator.sample_caption(rng, max_objects=3)
      if len(self.tokenizer.encode(text)) <= self.caption_max_tokens:
        return text

  def example(self, i: int) -> dict[str, Any]:
    """The example with its scene and kind (and skill / op) for tests."""
    if not 0 <= i < self.n:
      raise IndexError(i)
    rng = world_tfds.example_rng("world_auditor", self.seed, i)
    kind = world_prompts.KINDS[i % len(world_prompts.KINDS)]
    extra = {}
    while True:
      scene = self._scene(rng)
      if kind == "question":
        skill = questions.SKILLS[(i // 3) % len(questions.SKILLS)]
        q = questions.sample_question(scene, skill, rng)
        if q is None:
          continue
        text, extra = q["question"], {"skill": skill}
      elif kind == "edit":
        e = editor.sample_edit(scene, rng)
        if e is None:
          continue
        text, extra = e[0], {"op": e[1].op}
      else:
        text = self._caption(scene, rng)
      break
    return {"scene": scene, "kind": kind, "prefix": world_prompts.PROMPTS[kind],
            "suffix": text, **extra}

  def __getitem__(self, i: int) -> dict[str, Any]:
    ex = self.example(int(i))
    return {"image": render_lib.render(ex["scene"]), "prefix": ex["prefix"],
            "suffix": ex["suffix"]}


def data_dir_of(config, workdir: PathLike) -> pathlib.Path:
  return pathlib.Path(config.get("data_dir") or
                      pathlib.Path(workdir) / "data")


def vqa_source(config, name: str, data_dir: PathLike):
  """The world_vqa training source of VQA model `name` (built if needed)."""
  m = config.models[name]
  sw = _dict(m.get("slice_weights")) or None
  sources = world_tfds.build(world_tfds.WorldVqa, data_dir,
                             num_examples=config.vqa_examples, seed=0,
                             slice_weights=sw)
  return grain.MapDataset.source(sources["train"]).map(
      world_tfds.decode_record)


def bench_sources(config, data_dir: PathLike) -> dict:
  """{split: decoded grain source} of the world benchmark."""
  kw = {}
  if config.get("bench_examples", world_tfds.BENCH_EXAMPLES) != \
      world_tfds.BENCH_EXAMPLES:
    kw["examples_per_split"] = config.bench_examples
  sources = world_tfds.build(world_tfds.WorldBench, data_dir, **kw)
  return {s: grain.MapDataset.source(src).map(world_tfds.decode_record)
          for s, src in sources.items()}


def source_for(config, name: str, data_dir: PathLike):
  m = config.models[name]
  if m.role == "auditor":
    return AuditorSource(m.examples, m.seed,
                         caption_max_tokens=m.caption_max_tokens)
  return vqa_source(config, name, data_dir)


# --- training -----------------------------------------------------------------


def shipped_zoo_dir() -> pathlib.Path:
  """The zoo exports shipped with the package (`eval.world_bench --zoo`)."""
  return pathlib.Path(__file__).parent / "assets" / "zoo"


def export_dir(workdir: PathLike) -> pathlib.Path:
  return pathlib.Path(workdir) / "export"


def _export(state, arch_cfg, out: pathlib.Path) -> None:
  from auditdm_jax.convert import orbax_io  # pylint: disable=g-import-not-at-top
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.bfloat16),
                        jax.device_get(state.model_params()))
  orbax_io.save_params(params, out, arch_cfg, overwrite=True)


def train_model(config, name: str, workdir: PathLike) -> dict:
  """Trains (or resumes) zoo model `name` and exports it; returns its info."""
  from auditdm_jax.train import loop  # pylint: disable=g-import-not-at-top
  workdir = pathlib.Path(workdir)
  m = config.models[name]
  tcfg = train_config(config, name)
  tok = world_tokenizer()
  t0 = time.perf_counter()
  source = source_for(config, name, data_dir_of(config, workdir))
  data_s = time.perf_counter() - t0
  eval_fn = None
  if tcfg.eval_every:
    from auditdm_jax.eval import world_bench  # pylint: disable=g-import-not-at-top
    eval_fn = world_bench.make_eval_fn(
        tcfg.arch, bench_sources(config, data_dir_of(config, workdir)),
        limit=config.get("eval_limit", 16), tokenizer=tok)
  run_dir = workdir / name
  budget = float(m.get("max_minutes", 0) or 0) * 60
  t1 = time.perf_counter()
  # One call, bounded by the step count and the wall-time budget; the
  # checkpoints every `chunk_steps` keep a killed session's progress.
  state = loop.train(tcfg, run_dir, source, eval_fn, tokenizer=tok,
                     max_seconds=budget or None)
  step = int(jax.device_get(state.step))
  train_s = time.perf_counter() - t1
  out = export_dir(workdir)
  out.mkdir(parents=True, exist_ok=True)
  _export(state, tcfg.arch_config, out / name)
  info = {"name": name, "role": m.role, "arch": m.arch, "seed": m.seed,
          "steps": step, "total_steps": tcfg.total_steps,
          "train_seconds": train_s, "data_seconds": data_s,
          "slice_weights": _dict(m.get("slice_weights")),
          "gap_splits": _dict(m.get("gap_splits")),
          "image_preprocess": IMAGE_PREPROCESS,
          "max_len": tcfg.max_len}
  try:
    info["final_train"] = json.loads(
        (run_dir / "summary.json").read_text()).get("train")
  except (OSError, ValueError):
    pass
  atomic_io.write_json(out / f"{name}.json", info)
  return info


def train_zoo(config, workdir: PathLike,
              only: Optional[Sequence[str]] = None) -> dict[str, dict]:
  """Trains every zoo model in turn; {name: info}.

  A model exported at its config's `total_steps` is skipped. One exported
  earlier (its per-call `max_minutes` ran out) resumes from its last
  checkpoint and is exported again, so calling this again continues a zoo.
  """
  workdir = pathlib.Path(workdir)
  names = model_names(config)
  if only:
    unknown = sorted(set(only) - set(names))
    if unknown:
      raise ValueError(f"unknown zoo models {unknown}; known: {names}")
    names = [n for n in names if n in set(only)]
  infos = {}
  for name in names:
    sidecar = export_dir(workdir) / f"{name}.json"
    if sidecar.exists():
      info = json.loads(sidecar.read_text())
      if info.get("steps", 0) >= config.models[name].total_steps:
        logging.info("%s exported at its last step: skipped", name)
        infos[name] = info
        continue
      logging.info("%s exported at step %s of %d: resuming", name,
                   info.get("steps"), config.models[name].total_steps)
    t0 = time.perf_counter()
    infos[name] = train_model(config, name, workdir)
    print(f"zoo: {name} ({config.models[name].arch}) "
          f"{infos[name]['steps']} steps in {time.perf_counter() - t0:.0f} s",
          flush=True)
  return infos


def main(argv: Optional[Sequence[str]] = None) -> None:
  import argparse  # pylint: disable=g-import-not-at-top
  p = argparse.ArgumentParser(description="Train the world model zoo.")
  p.add_argument("--config", default="configs/world/zoo.py")
  p.add_argument("--workdir", required=True)
  p.add_argument("--only", default="", help="comma-separated model names")
  args = p.parse_args(argv)
  logging.basicConfig(level=logging.INFO)
  only = [s for s in args.only.split(",") if s] or None
  train_zoo(load_config(args.config), args.workdir, only=only)


if __name__ == "__main__":
  main()

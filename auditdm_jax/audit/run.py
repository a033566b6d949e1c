r"""Trains the auditor with GRPO from a run config (configs/world/audit.py).

  python -m auditdm_jax.main --config=configs/world/audit.py --workdir=DIR
  run_audit(get_config(), "/tmp/audit")

Builds, from the config: the target, the references and the auditor's
initial weights (exports of a world zoo, `config.zoo`; "" = the zoo shipped
with the package), the image backend (`imaging` registry, wrapped in a
content-hash cache), the source pool, the rollout and the GRPO configs, and
runs `rl.loop.train`. When training ends the auditor is exported
(LoRA merged, bfloat16) to `DIR/export/auditor` with a sidecar
`DIR/export/auditor.json`, the format `eval.success_rate` and the zoo
evaluator read.
"""

from __future__ import annotations

import logging
import os
import pathlib
import time
from typing import Any, Union

import jax
import jax.numpy as jnp

from auditdm_jax import atomic_io
from auditdm_jax import imaging
from auditdm_jax.audit import judge as judge_lib
from auditdm_jax.audit import rollout as rollout_lib
from auditdm_jax.audit.sources import JsonlSources, WorldSources
from auditdm_jax.convert import orbax_io
from auditdm_jax.data.world_tokenizer import world_tokenizer
from auditdm_jax.eval import world_bench
from auditdm_jax.rl import loop as rl_loop
from auditdm_jax.rl.config import GrpoConfig
from auditdm_jax.train.config import TrainConfig

PathLike = Union[str, os.PathLike]


def _dict(x) -> dict:
  return x.to_dict() if hasattr(x, "to_dict") else dict(x or {})


def zoo_root(config) -> pathlib.Path:
  """The zoo export directory of the config ("" = the shipped zoo)."""
  from auditdm_jax.world import zoo  # pylint: disable=g-import-not-at-top
  root = pathlib.Path(config.zoo) if config.get("zoo") else \
      zoo.shipped_zoo_dir()
  root = root / "export" if (root / "export").is_dir() else root
  if not root.is_dir():
    raise FileNotFoundError(
        f"no world zoo at {root}: train one with `python -m auditdm_jax.main "
        "--config=configs/world/zoo.py --workdir=DIR` and pass "
        "--config.zoo=DIR/export")
  return root


def load_zoo_model(root: pathlib.Path, name: str):
  """(Model, f32 params) of zoo export `name`, with a clear error."""
  path = root / name
  if not path.is_dir():
    have = sorted(p.stem for p in root.glob("*.json"))
    raise FileNotFoundError(f"zoo model {name!r} not found in {root}; it has "
                            f"{have}")
  return world_bench.load_export(path)


def vqa_models(config, root: pathlib.Path, tok):
  """(target, [references]) of a world zoo as `rollout.VqaModel`s."""
  def one(name):
    model, params = load_zoo_model(root, name)
    return rollout_lib.VqaModel(name=name, model=model, params=params,
                                tokenizer=tok,
                                max_new_tokens=config.answer_max_tokens)
  return one(config.target), [one(n) for n in config.references]


def uses_checkpoints(config) -> bool:
  """Real models: `config.checkpoints` names Orbax checkpoints."""
  ck = config.get("checkpoints")
  return bool(ck and ck.get("target"))


def _load_checkpoint(path: str, arch: str, role: str):
  from auditdm_jax.models.vlm import Model  # pylint: disable=g-import-not-at-top
  if not path:
    raise ValueError(f"config.checkpoints has no path for the {role}")
  cfg, params = orbax_io.load_checkpoint(path, dtype=jnp.float32)
  if arch and cfg.name != arch:
    raise ValueError(f"the {role} checkpoint {path} is {cfg.name}, but "
                     f"config.archs says {arch}")
  return Model(cfg), params


def checkpoint_models(config, tok):
  """(target, [references], auditor (model, params)) from checkpoints."""
  ck, archs = config.checkpoints, config.get("archs", {})
  pre = config.get("image_preprocess", {})
  refs_pre = tuple(pre.get("references", ())) or ("siglip",) * len(
      ck.references)
  if len(ck.references) != len(refs_pre):
    raise ValueError("image_preprocess.references needs one entry per "
                     "reference checkpoint")
  ref_archs = tuple(archs.get("references", ())) or ("",) * len(ck.references)

  def vqa(name, path, arch, preprocess):
    model, params = _load_checkpoint(path, arch, name)
    return rollout_lib.VqaModel(name=name, model=model, params=params,
                                tokenizer=tok, image_preprocess=preprocess,
                                max_new_tokens=config.answer_max_tokens)
  target = vqa("target", ck.target, archs.get("target", ""),
               pre.get("target", "siglip"))
  refs = [vqa(f"reference_{i}", p, a, r) for i, (p, a, r) in
          enumerate(zip(ck.references, ref_archs, refs_pre))]
  auditor = _load_checkpoint(ck.auditor, archs.get("auditor", ""), "auditor")
  return target, refs, auditor


def make_backend(config) -> imaging.ImageBackend:
  b = _dict(config.backend)
  name = b.pop("name")
  cache_dir = b.pop("cache_dir", None)
  use_cache = b.pop("cache", True)
  backend = imaging.get_backend(name, **b)
  if use_cache:
    backend = imaging.CachedBackend(backend, cache_dir=cache_dir or None)
  return backend


def rollout_config(config) -> rollout_lib.RolloutConfig:
  r = _dict(config.rollout)
  reward = judge_lib.RewardConfig(**_dict(r.pop("reward", {})))
  return rollout_lib.RolloutConfig(reward=reward, **r)


def grpo_config(config) -> GrpoConfig:
  g = _dict(config.grpo)
  r = config.rollout
  return GrpoConfig(group_size=r.group_size, temperature=r.temperature,
                    top_k=r.get("top_k", 0), top_p=r.get("top_p", 1.0),
                    max_new_tokens=r.max_new_tokens, **g)


def train_config(config, arch: str) -> TrainConfig:
  t = _dict(config.train)
  return TrainConfig(arch=arch,
                     batch_size=config.sources_per_step *
                     config.rollout.group_size, **t)


def tokenizer_of(config):
  """The world tokenizer, or `config.tokenizer` (a SentencePiece model)."""
  if config.get("tokenizer"):
    from auditdm_jax.tokenizer import Tokenizer  # pylint: disable=g-import-not-at-top
    return Tokenizer(config.tokenizer)
  return world_tokenizer()


def build_rollout(config, tok=None):
  """(Rollout, auditor init params) from the config."""
  tok = tok or tokenizer_of(config)
  if uses_checkpoints(config):
    target, refs, (auditor_model, auditor_params) = checkpoint_models(
        config, tok)
  else:
    root = zoo_root(config)
    target, refs = vqa_models(config, root, tok)
    auditor_model, auditor_params = load_zoo_model(root, config.auditor)
  pre = config.get("image_preprocess", {})
  auditor = rollout_lib.Auditor(
      model=auditor_model, tokenizer=tok, prompt_set=config.prompt_set,
      image_preprocess=pre.get("auditor", "siglip") if pre else "siglip")
  rcfg = rollout_config(config)
  novelty = None
  if rcfg.reward.novelty_bonus:
    novelty = judge_lib.NoveltyTracker(rcfg.reward.novelty_window)
  roll = rollout_lib.Rollout(auditor, target, refs, make_backend(config),
                             rcfg, novelty=novelty)
  return roll, auditor_params


def sources_of(config):
  """The audit's source pool: world scenes or a JSONL file of images."""
  s = config.sources
  kind = s.get("kind", "world")
  if kind == "world":
    return WorldSources(s.n, s.seed)
  if kind == "jsonl":
    return JsonlSources(s.path, limit=s.get("n", 0) or None)
  raise ValueError(f"unknown sources.kind {kind!r}; known: world, jsonl")


def export_auditor(state, model, out: pathlib.Path, info: dict) -> None:
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.bfloat16),
                        jax.device_get(state.model_params()))
  orbax_io.save_params(params, out, model.cfg, overwrite=True)
  atomic_io.write_json(out.with_suffix(".json"), info)


def run_audit(config, workdir: PathLike) -> dict[str, Any]:
  """Trains (or resumes) the auditor; exports it; returns the summary."""
  workdir = pathlib.Path(workdir)
  tok = tokenizer_of(config)
  roll, init_params = build_rollout(config, tok)
  arch = roll.auditor.model.cfg.name
  tcfg = train_config(config, arch)
  gcfg = grpo_config(config)
  sources = sources_of(config)
  t0 = time.perf_counter()
  max_s = float(config.get("max_minutes", 0) or 0) * 60 or None
  state = rl_loop.train(tcfg, gcfg, roll, sources, workdir,
                        sources_per_step=config.sources_per_step,
                        params=init_params, max_seconds=max_s,
                        novelty_window=roll.config.reward.novelty_window
                        if roll.novelty is not None else 0)
  wall = time.perf_counter() - t0
  step = int(jax.device_get(state.step))
  info = {"name": "auditor", "role": "auditor", "arch": arch, "steps": step,
          "train_seconds": wall,
          "init": (config.checkpoints.auditor if uses_checkpoints(config)
                   else config.auditor),
          "zoo": "" if uses_checkpoints(config) else str(zoo_root(config)),
          "reward_curve": rl_loop.reward_curve(workdir)}
  export_auditor(state, roll.auditor.model, workdir / "export" / "auditor",
                 info)
  logging.info("auditor trained to step %d in %.0f s", step, wall)
  print(f"audit: {step} GRPO steps in {wall:.0f} s; exported to "
        f"{workdir / 'export' / 'auditor'}", flush=True)
  return info

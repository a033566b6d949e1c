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

import json
import logging
import os
import pathlib
import time
from typing import Any, Union

import jax
import jax.numpy as jnp

from auditdm_jax import imaging
from auditdm_jax.audit import judge as judge_lib
from auditdm_jax.audit import rollout as rollout_lib
from auditdm_jax.audit.sources import WorldSources
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
  """(target, [references]) as `rollout.VqaModel`s."""
  def one(name):
    model, params = load_zoo_model(root, name)
    return rollout_lib.VqaModel(name=name, model=model, params=params,
                                tokenizer=tok,
                                max_new_tokens=config.answer_max_tokens)
  return one(config.target), [one(n) for n in config.references]


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


def build_rollout(config, tok=None):
  """(Rollout, auditor init params) from the config."""
  tok = tok or world_tokenizer()
  root = zoo_root(config)
  target, refs = vqa_models(config, root, tok)
  auditor_model, auditor_params = load_zoo_model(root, config.auditor)
  auditor = rollout_lib.Auditor(model=auditor_model, tokenizer=tok,
                                prompt_set=config.prompt_set)
  rcfg = rollout_config(config)
  novelty = None
  if rcfg.reward.novelty_bonus:
    novelty = judge_lib.NoveltyTracker(rcfg.reward.novelty_window)
  roll = rollout_lib.Rollout(auditor, target, refs, make_backend(config),
                             rcfg, novelty=novelty)
  return roll, auditor_params


def export_auditor(state, model, out: pathlib.Path, info: dict) -> None:
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.bfloat16),
                        jax.device_get(state.model_params()))
  orbax_io.save_params(params, out, model.cfg, overwrite=True)
  out.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")


def run_audit(config, workdir: PathLike) -> dict[str, Any]:
  """Trains (or resumes) the auditor; exports it; returns the summary."""
  workdir = pathlib.Path(workdir)
  tok = world_tokenizer()
  roll, init_params = build_rollout(config, tok)
  arch = roll.auditor.model.cfg.name
  tcfg = train_config(config, arch)
  gcfg = grpo_config(config)
  s = config.sources
  sources = WorldSources(s.n, s.seed)
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
          "train_seconds": wall, "init": config.auditor,
          "zoo": str(zoo_root(config)),
          "reward_curve": rl_loop.reward_curve(workdir)}
  export_auditor(state, roll.auditor.model, workdir / "export" / "auditor",
                 info)
  logging.info("auditor trained to step %d in %.0f s", step, wall)
  print(f"audit: {step} GRPO steps in {wall:.0f} s; exported to "
        f"{workdir / 'export' / 'auditor'}", flush=True)
  return info

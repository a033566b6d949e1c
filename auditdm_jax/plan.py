r"""Dry run of a real run config: abstract shapes, parameter counts, memory.

  python -m auditdm_jax.plan --config=configs/real/sft_paligemma2.py:3b_224
  python -m auditdm_jax.plan --config=configs/real/sft_paligemma2.py:28b_448 \
      --topology=v5p-16 --config.train.batch_size=64 [--no_trace]

Builds every model of the config as abstract shapes (`jax.eval_shape`, no
weights), the train state with optimiser and LoRA, the sharding plan over
the config's mesh on the named TPU topology, and prints parameter counts
and the per-device memory estimate (`sharding.memory`). With tracing on
(the default) it also traces one train step on a batch of the config's
shapes, so shape errors surface here rather than on the TPU.

Exit status: 0 when the run fits, 1 when it does not (the message names the
topology, the need per device against the HBM and the biggest items), 2
when the config itself is broken.

What a config must say (ml_collections, `get_config(arg)`):

  task       'sft'   c.train: TrainConfig fields (arch, batch_size, max_len,
                     mesh, ...)
             'audit' the layout of configs/real/audit_paper.py (archs,
                     rollout, grpo, train incl. mesh)
             'eval'  c.eval.models: [{name, arch, checkpoint}] evaluated one
                     after another; c.eval.batch_size, prompt_len,
                     max_new_tokens; c.mesh
  topology   a `sharding.topology` name ('v5e-8', 'v5p-32', ...); the
             --topology flag overrides it.

Overrides use main.py's syntax, `--config.train.lr=1e-5`; values are
parsed by the type of the field they replace.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import importlib.util
import pathlib
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import ml_collections

from auditdm_jax.sharding import memory
from auditdm_jax.sharding import topology as topology_lib

TASKS = ("sft", "audit", "eval")
# Text tokens of an SFT row besides the image tokens: the task prompt and
# the answer of a rectification example (PaliGemma transfers use 64-128).
DEFAULT_TEXT_LEN = 64
# Tokens of a target / reference answering prompt besides the image and the
# auditor's question: chat turn markers, BOS, separators.
ANSWER_TEMPLATE_LEN = 16


# --- Configs ------------------------------------------------------------------

def load_module(spec: str) -> tuple[Any, Optional[str]]:
  """'path/to/config.py[:arg]' -> (the loaded config module, arg or None).

  Raises:
    FileNotFoundError: no such file.
    ValueError: the file has no get_config.
  """
  path, _, arg = spec.partition(":")
  if not pathlib.Path(path).is_file():
    raise FileNotFoundError(f"no config file {path!r}")
  mod_spec = importlib.util.spec_from_file_location(
      f"_config_{pathlib.Path(path).stem}", path)
  module = importlib.util.module_from_spec(mod_spec)
  mod_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ValueError(f"{path} defines no get_config(arg)")
  return module, arg or None


def load_config(spec: str) -> ml_collections.ConfigDict:
  """'path/to/config.py[:arg]' -> that file's get_config(arg)."""
  module, arg = load_module(spec)
  return module.get_config(arg)


def parse_value(text: str, current: Any) -> Any:
  """A command-line string as a value of `current`'s type (config_flags'
  rules: strings stay verbatim, bools accept true/false, tuples and lists
  are Python literals)."""
  if isinstance(current, str):
    return text
  if isinstance(current, bool):
    low = text.lower()
    if low not in ("true", "false", "1", "0"):
      raise ValueError(f"expected a bool, got {text!r}")
    return low in ("true", "1")
  if isinstance(current, (int, float)) and not isinstance(current, bool):
    try:
      return type(current)(text)
    except ValueError:
      pass
    try:
      value = float(text)  # '1e3' for an int field
    except ValueError:
      value = None
    if isinstance(current, int) and value is not None and value.is_integer():
      return int(value)
    raise ValueError(f"expected a {type(current).__name__}, got {text!r}")
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    if current is None:
      return text  # a None field set to a plain string
    raise ValueError(f"cannot parse {text!r} as a {type(current).__name__}"
                     ) from None


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """A copy of `config` with dotted keys set ('train.lr' -> c.train.lr).

  Values may be strings (parsed by the replaced field's type, as on the
  command line) or Python values. Every key must already exist: main.py
  locks its config, so a new key would fail there anyway.

  Raises:
    KeyError: a key the config does not have.
    ValueError / TypeError: a value that does not fit the field.
  """
  config = ml_collections.ConfigDict(config.to_dict())
  for key, value in overrides.items():
    *parents, leaf = key.split(".")
    node = config
    for i, part in enumerate(parents):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        raise KeyError(f"config has no field {'.'.join(parents[:i + 1])!r} "
                       f"(override {key!r})")
      node = node[part]
    if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
      raise KeyError(f"config has no field {key!r}")
    current = node[leaf]
    if isinstance(value, str):
      value = parse_value(value, current)
    if isinstance(current, tuple) and isinstance(value, list):
      value = tuple(value)
    if (isinstance(current, float) and isinstance(value, int)
        and not isinstance(value, bool)):
      value = float(value)
    node[leaf] = value
  return config


def split_override_args(argv: Sequence[str]) -> tuple[list[str], dict]:
  """Separates `--config.a.b=v` arguments from the others."""
  rest, overrides = [], {}
  for arg in argv:
    if arg.startswith("--config."):
      key, eq, value = arg[len("--config."):].partition("=")
      if not eq:
        raise ValueError(f"override {arg!r} needs '=value'")
      overrides[key] = value
    else:
      rest.append(arg)
  return rest, overrides


# --- Workloads of a config ----------------------------------------------------

def _dict(x) -> dict:
  return x.to_dict() if hasattr(x, "to_dict") else dict(x or {})


def sft_train_config(config):
  """The TrainConfig of an 'sft' config (its `train` block)."""
  from auditdm_jax.train.config import TrainConfig  # pylint: disable=g-import-not-at-top
  return TrainConfig.from_dict(_dict(config.train))


def _audit_workloads(config):
  from auditdm_jax.audit import run as run_lib  # pylint: disable=g-import-not-at-top
  from auditdm_jax.models import arch as arch_lib  # pylint: disable=g-import-not-at-top
  archs = config.archs
  tcfg = run_lib.train_config(config, archs.auditor)
  gcfg = run_lib.grpo_config(config)
  prompt, completion = config.rollout.prompt_len, config.rollout.max_new_tokens
  if not prompt:
    raise ValueError("rollout.prompt_len must be set (> 0) to plan an audit")
  rows = tcfg.batch_size
  out: list[memory.Workload] = [
      memory.Training(config=tcfg, name="auditor",
                      seq_len=prompt + completion,
                      loss_positions=gcfg.logits_chunk or None,
                      images_per_row=1,
                      reference_copy=not tcfg.lora_rank and gcfg.kl_beta > 0),
      # Rollouts: the policy itself samples, prefilled once per row.
      memory.Inference(arch=archs.auditor, name="auditor_rollout",
                       batch_size=rows, prompt_len=prompt,
                       max_new_tokens=completion, param_dtype=tcfg.param_dtype,
                       dtype=tcfg.dtype, params="shared")]
  answerers = {"target": archs.target,
               **{f"reference_{i}": a for i, a in enumerate(archs.references)}}
  for name, arch in answerers.items():
    tpi = arch_lib.get(arch).tokens_per_image
    # Every pair asks one question (the auditor's, at most `completion`
    # tokens, or the dataset's) about one image.
    out.append(memory.Inference(
        arch=arch, name=name, batch_size=rows,
        prompt_len=tpi + completion + ANSWER_TEMPLATE_LEN,
        max_new_tokens=config.answer_max_tokens, params="resident"))
  mesh = tcfg.mesh or (("fsdp", -1),)
  return out, mesh


def _eval_workloads(config):
  e = config.eval
  models = list(e.models)
  if not models:
    raise ValueError("eval.models is empty: nothing to evaluate")
  out = []
  for m in models:
    m = _dict(m)
    if "arch" not in m:
      raise ValueError(f"eval model {m} names no arch")
    out.append(memory.Inference(
        arch=m["arch"], name=m.get("name") or m["arch"],
        batch_size=e.batch_size, prompt_len=e.prompt_len,
        max_new_tokens=e.max_new_tokens,
        param_dtype=e.get("param_dtype", "bfloat16"),
        dtype=e.get("dtype", "bfloat16"), params="phase"))
  return out, tuple(config.get("mesh") or (("fsdp", -1),))


def workloads(config) -> tuple[list[memory.Workload], Any]:
  """(workloads, mesh spec) that a config runs; see the module docstring."""
  task = config.get("task")
  if task == "sft":
    tcfg = sft_train_config(config)
    return [memory.Training(config=tcfg)], tcfg.mesh or (("fsdp", -1),)
  if task == "audit":
    return _audit_workloads(config)
  if task == "eval":
    return _eval_workloads(config)
  raise ValueError(f"cannot plan task {task!r}; plannable tasks: {TASKS}")


# --- Tracing one step ---------------------------------------------------------

def trace_sft_step(tcfg) -> dict[str, tuple]:
  """Traces one SFT step on abstract inputs; returns the batch shapes.

  Raises whatever the real step would raise on these shapes (too few
  tokens for the image tokens, a LoRA target regex matching nothing, ...).
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from auditdm_jax.train import state as state_lib  # pylint: disable=g-import-not-at-top
  from auditdm_jax.train import step as step_lib  # pylint: disable=g-import-not-at-top
  model = memory.planned_model(tcfg)
  if model.cfg.has_vision:
    need = model.cfg.tokens_per_image * tcfg.num_images + tcfg.max_target_len
    if tcfg.max_len <= need:
      raise ValueError(
          f"max_len {tcfg.max_len} leaves no room for the prompt: "
          f"{tcfg.num_images} image(s) take {model.cfg.tokens_per_image} "
          f"tokens each and answers up to {tcfg.max_target_len}")
  abstract = state_lib.abstract_state(model, tcfg)
  b, t = tcfg.batch_size, tcfg.max_len
  s = jax.ShapeDtypeStruct
  batch = {"tokens": s((b, t), jnp.int32), "mask_ar": s((b, t), jnp.int32),
           "input_mask": s((b, t), jnp.bool_),
           "loss_mask": s((b, t), jnp.int32)}
  if model.cfg.has_vision:
    size = model.cfg.vision.image_size
    batch["images"] = s((b, tcfg.num_images, size, size, 3), jnp.float32)
  step = functools.partial(step_lib._train_step, model=model, config=tcfg)  # pylint: disable=protected-access
  new_state, metrics = jax.eval_shape(step, abstract, batch)
  if jax.tree.structure(new_state) != jax.tree.structure(abstract):
    raise AssertionError("the train step changes the state's structure")
  if "loss" not in metrics:
    raise AssertionError("the train step reports no loss")
  return {k: tuple(v.shape) for k, v in batch.items()}


def trace(config) -> str:
  """Traces the config's step abstractly; a one-line summary."""
  task = config.get("task")
  if task == "sft":
    shapes = trace_sft_step(sft_train_config(config))
    return "traced one SFT step on " + ", ".join(
        f"{k} {v}" for k, v in shapes.items())
  if task == "audit":
    from auditdm_jax.audit import dry_run  # pylint: disable=g-import-not-at-top
    report = dry_run.dry_run(config)
    return "traced one GRPO step on " + ", ".join(
        f"{k} {v}" for k, v in report["batch"].items())
  # Inference only: the abstract params built by `estimate` are the check.
  return "abstract params built (inference only, no step to trace)"


# --- The plan -----------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Plan:
  """The outcome of a dry run."""
  task: str
  estimate: memory.Estimate
  traced: str = ""

  @property
  def fits(self) -> bool:
    return self.estimate.fits

  def report(self) -> str:
    lines = [f"task      {self.task}", self.estimate.table()]
    if self.traced:
      lines.append(self.traced)
    return "\n".join(lines)


def resolve_topology(config, topology: Optional[str] = None):
  """The --topology flag, else the config's `topology` field."""
  name = topology or config.get("topology")
  if not name:
    raise ValueError("the config names no topology: set c.topology or pass "
                     f"--topology (one of {', '.join(topology_lib.names())})")
  return topology_lib.get(name)


def plan(config, *, topology: Optional[str] = None, trace_step: bool = True,
         margin: float = memory.DEFAULT_MARGIN) -> Plan:
  """Estimates (and optionally traces) `config` on its topology.

  Raises:
    ValueError (and others) for a broken config; not for one that does not
    fit: check `Plan.fits` or call `memory.fits(plan.estimate)`.
  """
  topo = resolve_topology(config, topology)
  loads, mesh = workloads(config)
  est = memory.estimate(loads, topo, mesh, margin=margin)
  traced = trace(config) if trace_step else ""
  return Plan(task=config.task, estimate=est, traced=traced)


def main(argv: Optional[Sequence[str]] = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = argparse.ArgumentParser(
      prog="python -m auditdm_jax.plan",
      description="Dry run of a run config: parameter counts and the "
                  "per-device memory estimate (no weights).",
      epilog="Also: --config.a.b=value overrides, as for main.py.")
  parser.add_argument("--config", required=True, help="path/to/config.py[:arg]")
  parser.add_argument("--topology", default=None,
                      help="TPU topology (default: the config's); one of "
                           + ", ".join(topology_lib.names()))
  parser.add_argument("--no_trace", action="store_true",
                      help="skip tracing one step (faster)")
  parser.add_argument("--margin", type=float, default=memory.DEFAULT_MARGIN,
                      help="fraction of HBM a run may use")
  try:
    rest, overrides = split_override_args(argv)
  except ValueError as e:
    parser.error(str(e))
  args = parser.parse_args(rest)
  try:
    config = apply_overrides(load_config(args.config), overrides)
    result = plan(config, topology=args.topology,
                  trace_step=not args.no_trace, margin=args.margin)
  except (ValueError, KeyError, TypeError, FileNotFoundError,
          AssertionError) as e:
    print(f"plan failed: {type(e).__name__}: {e}", file=sys.stderr)
    return 2
  print(f"config    {args.config}"
        + "".join(f" --config.{k}={v}" for k, v in overrides.items()))
  print(result.report())
  if not result.fits:
    print(f"error: {memory.DoesNotFit(result.estimate)}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())

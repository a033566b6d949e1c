r"""Shape-checks an audit run config without any weights.

  python -m auditdm_jax.audit.dry_run --config=configs/real/audit_paper.py[:lora]

Builds every model of the config (auditor, target, references) from its
arch as abstract shapes, the auditor's abstract train state (optimiser,
LoRA) and ONE abstract GRPO step on a batch of the config's shapes
(`jax.eval_shape`: the whole forward + backward is traced, nothing is
allocated), then prints parameter counts and bytes. A config whose pieces
do not fit together (an unknown arch, a text-only auditor asked about
images, prompt + completion longer than the model allows, a batch the mesh
cannot split...) fails here with the error the real run would hit.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
from collections.abc import Sequence
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from auditdm_jax.models import arch as arch_lib
from auditdm_jax.models.vlm import Model
from auditdm_jax.rl import step as rl_step
from auditdm_jax.train import state as state_lib


def _bytes(tree) -> int:
  # PRNG keys have an extended dtype with no numpy itemsize; they are tiny.
  return sum(math.prod(a.shape) * np.dtype(a.dtype).itemsize
             for a in jax.tree.leaves(tree)
             if not jax.dtypes.issubdtype(a.dtype, jax.dtypes.extended))


def _count(tree) -> int:
  return sum(math.prod(a.shape) for a in jax.tree.leaves(tree))


def abstract_batch(model: Model, rows: int, prompt_len: int,
                   completion_len: int) -> dict[str, jax.ShapeDtypeStruct]:
  """ShapeDtypeStructs of one GRPO batch (rl.step's layout)."""
  s = jax.ShapeDtypeStruct
  batch = {"prompt_tokens": s((rows, prompt_len), jnp.int32),
           "prompt_input_mask": s((rows, prompt_len), jnp.bool_),
           "prompt_mask_ar": s((rows, prompt_len), jnp.int32),
           "completion": s((rows, completion_len), jnp.int32),
           "completion_mask": s((rows, completion_len), jnp.float32),
           "advantages": s((rows,), jnp.float32),
           "old_logprobs": s((rows, completion_len), jnp.float32),
           "ref_logprobs": s((rows, completion_len), jnp.float32)}
  if model.cfg.has_vision:
    size = model.cfg.vision.image_size
    batch["images"] = s((rows, 1, size, size, 3), jnp.float32)
  return batch


def dry_run(config) -> dict[str, Any]:
  """{'models': {role: {arch, params, bytes}}, 'state_bytes', 'step_metrics'}."""
  # pylint: disable-next=g-import-not-at-top
  from auditdm_jax.audit import run as run_lib
  archs = config.archs
  report: dict[str, Any] = {"models": {}}
  names = {"auditor": archs.auditor, "target": archs.target,
           **{f"reference_{i}": a for i, a in enumerate(archs.references)}}
  for role, name in names.items():
    model = Model(arch_lib.get(name))
    params = model.abstract_params()
    report["models"][role] = {"arch": name, "params": _count(params),
                              "bytes_bf16": 2 * _count(params)}
  auditor = Model(arch_lib.get(archs.auditor))
  if not auditor.cfg.has_vision:
    raise ValueError(f"the auditor {archs.auditor} is text-only: it cannot "
                     "look at the source images")
  tcfg = run_lib.train_config(config, archs.auditor)
  gcfg = run_lib.grpo_config(config)
  abstract = state_lib.abstract_state(auditor, tcfg)
  report["state_bytes"] = _bytes(abstract)
  report["trainable_params"] = _count(abstract.trainable)
  rows = tcfg.batch_size
  p, c = config.rollout.prompt_len, config.rollout.max_new_tokens
  if not p:
    raise ValueError("rollout.prompt_len must be set (> 0) for a dry run")
  batch = abstract_batch(auditor, rows, p, c)
  fn = functools.partial(rl_step._grpo_step, model=auditor,  # pylint: disable=protected-access
                         train_config=tcfg,
                         grpo_config=rl_step.step_grpo_config(gcfg))
  new_state, metrics = jax.eval_shape(fn, abstract, batch)
  if jax.tree.structure(new_state) != jax.tree.structure(abstract):
    raise AssertionError("the GRPO step changes the state's structure")
  report["step_metrics"] = sorted(metrics)
  report["batch"] = {k: tuple(v.shape) for k, v in batch.items()}
  return report


def format_report(report: dict[str, Any]) -> str:
  lines = [f"{'role':<14} {'arch':<22} {'params':>16} {'bf16 GiB':>9}"]
  for role, m in report["models"].items():
    lines.append(f"{role:<14} {m['arch']:<22} {m['params']:>16,} "
                 f"{m['bytes_bf16'] / 2**30:>9.2f}")
  lines.append(f"auditor train state: {report['state_bytes'] / 2**30:.2f} GiB "
               f"({report['trainable_params']:,} trainable params)")
  lines.append("GRPO batch: " + ", ".join(
      f"{k} {v}" for k, v in report["batch"].items()))
  lines.append("step metrics: " + ", ".join(report["step_metrics"]))
  return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
  # pylint: disable-next=g-import-not-at-top
  from auditdm_jax.world.zoo import load_config
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--config", required=True, help="path/to/config.py[:arg]")
  args = p.parse_args(argv)
  try:
    report = dry_run(load_config(args.config))
  except (ValueError, KeyError, TypeError) as e:
    print(f"dry run failed: {type(e).__name__}: {e}", file=sys.stderr)
    return 1
  print(format_report(report))
  return 0


if __name__ == "__main__":
  sys.exit(main())

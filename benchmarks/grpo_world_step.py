r"""Wall time of one world GRPO step (rollout + scoring + update) by stage.

  python benchmarks/grpo_world_step.py [--zoo DIR/export] [--steps 4]

Runs `configs/world/audit.py` (8 images x 8 completions, 40 new tokens,
three pairing modes, the world editor / generator, target + 3 references
answering) for a few steps and reports compile time and the median time
of each stage: auditor sampling + parsing + images + answers + judging
("rollout"), the old / reference log-prob passes and the update ("update").
Without --zoo, every model of the zoo config gets random weights (the
timing does not depend on what the weights know, except through the
lengths the auditor writes: random auditors rarely stop early, so this is
an upper bound on sampling time).

Writes benchmarks/results/grpo_world_step.json.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import statistics
import sys
import tempfile
import time

import jax
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# pylint: disable=g-import-not-at-top,wrong-import-position
from auditdm_jax.audit import run as run_lib
from auditdm_jax.convert import orbax_io
from auditdm_jax.models import arch as arch_lib
from auditdm_jax.models.vlm import Model
from auditdm_jax.world.zoo import load_config


def random_zoo(root: pathlib.Path) -> pathlib.Path:
  zoo = load_config(str(ROOT / "configs/world/zoo.py"))
  for i, name in enumerate(zoo.order):
    m = zoo.models[name]
    cfg = arch_lib.get(m.arch)
    rng = np.random.default_rng(i)
    params = jax.tree.map(
        lambda a: (0.05 * rng.standard_normal(a.shape)).astype(np.float32),
        Model(cfg).abstract_params())
    orbax_io.save_params(params, root / name, cfg)
    (root / f"{name}.json").write_text(json.dumps(
        {"name": name, "role": m.role, "arch": m.arch}))
  return root


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--zoo", default="")
  p.add_argument("--steps", type=int, default=4)
  args = p.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    zoo_dir = args.zoo or str(random_zoo(tmp / "zoo"))
    config = load_config(str(ROOT / "configs/world/audit.py"))
    with config.unlocked():
      config.zoo = zoo_dir
      config.train.total_steps = args.steps
      config.train.checkpoint_every = 0
      config.train.warmup_steps = 0
      config.train.progress = False
      config.max_minutes = 0
    t0 = time.perf_counter()
    run_lib.run_audit(config, tmp / "run")
    total = time.perf_counter() - t0
    rows = [json.loads(l) for l in
            (tmp / "run" / "metrics.jsonl").read_text().splitlines()]
  roll = [r["time/rollout_s"] for r in rows]
  step = [r["time/step_s"] for r in rows]
  upd = [s - r for s, r in zip(step, roll)]
  result = {
      "machine": f"{platform.processor() or platform.machine()}, "
                 f"{jax.device_count()} {jax.default_backend()} devices",
      "zoo": args.zoo or "random weights",
      "steps": args.steps, "rows_per_step": 64,
      "first_step_s": step[0],
      "rollout_s_median": statistics.median(roll[1:] or roll),
      "update_s_median": statistics.median(upd[1:] or upd),
      "step_s_median": statistics.median(step[1:] or step),
      "total_s_including_setup": total,
      "validity": [r["rollout/validity"] for r in rows],
  }
  out = ROOT / "benchmarks/results/grpo_world_step.json"
  out.parent.mkdir(exist_ok=True)
  out.write_text(json.dumps(result, indent=2) + "\n")
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  main()

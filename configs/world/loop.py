r"""The whole loop on the world (issue #5): audit, harvest, taxonomy,
rectify, evaluate, report.

  python -m auditdm_jax.main --config=configs/world/loop.py --workdir=/tmp/loop
  python -m auditdm_jax.main --config=configs/world/loop.py \
      --config.audit.zoo=ZOO_DIR/export --workdir=/tmp/loop

`audit` is configs/world/audit.py (the GRPO run; its `zoo` names the
models); the other blocks size the later stages. Variants: "" (the demo
run, about 15 min of 2 CPU cores with a trained zoo) and "quick" (tests).
"""

import importlib.util
import pathlib

import ml_collections


def _audit_config(arg):
  path = pathlib.Path(__file__).with_name("audit.py")
  spec = importlib.util.spec_from_file_location("_world_audit_config", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg)


def get_config(arg=None):
  quick = arg == "quick"
  if arg not in (None, "", "quick"):
    raise ValueError(f"unknown loop variant {arg!r}; known: '', 'quick'")
  c = ml_collections.ConfigDict()
  c.task = "loop"
  c.audit = _audit_config("quick" if quick else "")
  if not quick:
    c.audit.max_minutes = 5.0
  # Harvest: the trained and the untrained auditor, one pair per image.
  c.harvest = dict(n=8 if quick else 1500, seed=21, chunk=8 if quick else 250,
                   group_size=1)
  c.taxonomy = dict(k=0)            # 0: k by silhouette
  # Rectification (augmented): one harvested failure per labelled example.
  c.rectify = dict(
      labelled_examples=16 if quick else 6000, seed=5, per_labelled=1,
      train=dict(lr=3e-4, schedule="constant", warmup_steps=0,
                 batch_size=8 if quick else 64, total_steps=2 if quick else 300,
                 max_len=40, max_target_len=4, b2=0.98, weight_decay=0.0,
                 progress=not quick, async_checkpointing=False,
                 checkpoint_every=0, log_every=1 if quick else 25))
  # The world benchmark: 16 splits; `limit` examples of each are scored.
  c.evaluate = dict(limit=4 if quick else 200,
                    examples_per_split=8 if quick else 0)  # 0: the standard 500
  return c

r"""The project's entry point (DESIGN.md §3), big_vision style.

  python -m auditdm_jax.main --config=configs/world/zoo.py:quick \
      --workdir=/tmp/zoo [--config.chunk_steps=5] [--only=target]

`--config` is an ml_collections config file with an optional `:arg` variant;
`--config.foo=bar` overrides any field. The config's `task` picks the stage:

  zoo    train the world model zoo (`auditdm_jax.world.zoo.train_zoo`)
  audit  train the auditor with GRPO (`auditdm_jax.audit.run.run_audit`)
  loop   the whole world loop: audit, harvest, taxonomy, rectify, evaluate,
         report (`auditdm_jax.loop.run_loop`)
  sft    fine-tune a model (rectification) on a TFDS dataset
         (`auditdm_jax.train.loop.train`; configs/real/sft_paligemma2.py)
"""

from __future__ import annotations

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (path[:arg]).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the run writes.")
_ONLY = flags.DEFINE_list("only", [], "zoo: train only these models.")


def _zoo(config, workdir: str, only=None) -> None:
  from auditdm_jax.world import zoo  # pylint: disable=g-import-not-at-top
  zoo.train_zoo(config, workdir, only=only or None)


def _audit(config, workdir: str, only=None) -> None:
  del only
  from auditdm_jax.audit import run  # pylint: disable=g-import-not-at-top
  run.run_audit(config, workdir)


def _sft(config, workdir: str, only=None) -> None:
  """config.train: TrainConfig fields; config.data: a TFDS data_source."""
  del only
  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds
  from auditdm_jax.train import TrainConfig, train
  # pylint: enable=g-import-not-at-top
  d = config.data
  source = tfds.data_source(d.name, split=d.split, data_dir=d.data_dir or None)
  train(TrainConfig.from_dict(config.train), workdir, source)


def _loop(config, workdir: str, only=None) -> None:
  del only
  from auditdm_jax import loop  # pylint: disable=g-import-not-at-top
  loop.run_loop(config, workdir)


TASKS = {"zoo": _zoo, "audit": _audit, "sft": _sft, "loop": _loop}


def run(config, workdir: str, only=None) -> None:
  """Dispatches on `config.task` (`only`: zoo models to train)."""
  task = config.get("task")
  if task not in TASKS:
    raise ValueError(f"config.task must be one of {sorted(TASKS)}, got "
                     f"{task!r}")
  TASKS[task](config, workdir, only=only)


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _CONFIG.value is None or not _WORKDIR.value:
    raise app.UsageError("--config and --workdir are required")
  logging.info("config:\n%s", _CONFIG.value)
  run(_CONFIG.value, _WORKDIR.value, only=_ONLY.value)


def console_main() -> None:
  """The `auditdm` console script."""
  app.run(main)


if __name__ == "__main__":
  app.run(main)

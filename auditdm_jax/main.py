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

Multi-host: `--coordinator_address=host:port --num_processes=N
--process_id=i` on each process (or $AUDITDM_COORDINATOR /
$AUDITDM_NUM_PROCESSES / $AUDITDM_PROCESS_ID, or nothing on a Cloud TPU
pod); see `auditdm_jax/sharding/distributed.py`. Without them it is one
process.
"""

from __future__ import annotations

import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (path[:arg]).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the run writes.")
_ONLY = flags.DEFINE_list("only", [], "zoo: train only these models.")
# Multi-host (`sharding.distributed.initialize`): unset = $AUDITDM_* or
# jax's cluster auto-detection (TPU pods, Slurm, ...), else single process.
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 (multi-host).")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Number of processes (multi-host).")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "This process's id in [0, num_processes).")


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
  # The config first: a bad field fails before any data is opened.
  train_config = TrainConfig.from_dict(config.train)
  d = config.data
  source = tfds.data_source(d.name, split=d.split, data_dir=d.data_dir or None)
  train(train_config, workdir, source)


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
  # pylint: disable-next=g-import-not-at-top
  from auditdm_jax.sharding import distributed
  distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value,
                         _PROCESS_ID.value)
  logging.info("config:\n%s", _CONFIG.value)
  run(_CONFIG.value, _WORKDIR.value, only=_ONLY.value)


def parse_flags(argv):
  """absl's flag parsing, plus a clear error for an override of a field
  the config does not have: ml_collections raises a bare AttributeError /
  KeyError for `--config.<field>=...` then (a traceback naming only the
  field), where absl reports its own flag errors in one line, status 1."""
  try:
    return app.parse_flags_with_usage(argv)
  except (AttributeError, KeyError) as e:
    given = [a.split("=", 1)[0] for a in argv[1:] if a.startswith("--config.")]
    sys.stderr.write(f"FATAL Flags parsing error: the config has no field "
                     f"{str(e).strip(chr(34))} (overrides given: "
                     f"{', '.join(given) or 'none'})\n")
    sys.exit(1)


def console_main() -> None:
  """The `auditdm` console script."""
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)

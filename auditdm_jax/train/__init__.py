"""Supervised fine-tuning (world model zoo, rectification).

  cfg = TrainConfig(arch="paligemma2_tiny", lr=1e-3, total_steps=500,
                    freeze=("img/.*",), checkpoint_every=100)
  state = train(cfg, workdir, source, eval_fn, tokenizer=tok)

Modules, one job each: `config` (TrainConfig), `state` (TrainState,
optimiser, shardings), `step` (answer-only loss, jitted step), `data`
(grain batcher with an exact position), `checkpoint` (Orbax manager; also
`python -m auditdm_jax.train.checkpoint WORKDIR`), `metrics` (TensorBoard +
JSON lines), `loop` (the host loop).

Names are imported lazily (PEP 562), so `python -m` on a submodule does not
find it already imported by this package.
"""

import importlib

_EXPORTS = {
    "Batcher": "data",
    "Checkpointer": "checkpoint",
    "ExampleEncoder": "data",
    "MetricWriter": "metrics",
    "TrainConfig": "config",
    "TrainState": "state",
    "TrainStep": "step",
    "abstract_state": "state",
    "compute_loss": "step",
    "create_state": "state",
    "export_params": "checkpoint",
    "make_model": "state",
    "make_optimizer": "state",
    "make_schedule": "state",
    "make_train_step": "step",
    "param_labels": "state",
    "read_jsonl": "metrics",
    "sft_loss": "step",
    "state_shardings": "state",
    "target_positions": "step",
    "train": "loop",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
  if name not in _EXPORTS:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"),
                 name)


def __dir__():
  return sorted(set(globals()) | set(_EXPORTS))

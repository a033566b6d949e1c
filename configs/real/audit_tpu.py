r"""The paper's auditor training (audit_paper.py) placed on a TPU slice.

  python -m auditdm_jax.plan --config=configs/real/audit_tpu.py:lora
  python -m auditdm_jax.plan --config=configs/real/audit_tpu.py:full
  python -m auditdm_jax.main --config=configs/real/audit_tpu.py:lora \
      --config.checkpoints.auditor=gs://BUCKET/gemma3_4b ... --workdir=DIR

Everything about the method (Gemma-3-4B auditor, PaliGemma-2-3B target,
the four references of both families, GRPO and its schedule) comes from
configs/real/audit_paper.py, loaded from next to this file and not
repeated; this file only adds where it runs.

  lora  rank-16 adapters on the decoder; the base weights stay bf16 and
        double as the KL reference, so nothing but the factors and their
        moments is added to the five frozen models.
  full  full fine-tuning (bf16 params and moments, as audit_paper sets);
        GRPO's KL reference is then a second copy of the auditor.

Where the memory goes (python -m auditdm_jax.plan prints it): 160 GB of
frozen bf16 weights (target + references) and the auditor, sharded over
every chip, and the rollouts: each of the 256 rows carries its own 896-px
image, and SigLIP's [rows, 16, 4096, 4096] attention scores at that size
need a few rows per chip at most. Hence v5p-32 (16 chips x 95 GiB): 16
rows per chip.
"""

import importlib.util
import pathlib


def _paper_config(arg):
  path = pathlib.Path(__file__).with_name("audit_paper.py")
  spec = importlib.util.spec_from_file_location("_audit_paper", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def get_config(arg=None):
  if arg not in ("lora", "full"):
    raise ValueError(f"unknown variant {arg!r}; known: 'lora', 'full'")
  c = _paper_config("lora" if arg == "lora" else None)
  c.topology = "v5p-32"
  # Pure FSDP over the 16 chips: params, optimiser state and the 256 rows
  # are all split 16 ways.
  c.train.mesh = (("data", 1), ("fsdp", -1), ("tensor", 1))
  return c


def get_sweep(arg=None):
  """The KL weight, the knob the paper does not report."""
  del arg
  return [{"grpo.kl_beta": beta} for beta in (0.0, 0.01, 0.04)]

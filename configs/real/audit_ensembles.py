r"""Audits with other reference ensembles, each mixing both model families.

  python -m auditdm_jax.plan --config=configs/real/audit_ensembles.py:medium
  python -m auditdm_jax.main --config=configs/real/audit_ensembles.py:small \
      --config.checkpoints.references="('gs://B/pg2_3b_448', 'gs://B/g3_4b')" \
      ... --workdir=DIR

The references' consensus is the reward's ground truth (and later the
pseudo-labels), so an ensemble should disagree with the target for reasons
of capability, not of family quirks: every ensemble here holds PaliGemma-2
and Gemma-3 models. The method settings are those of
configs/real/audit_paper.py (loaded from next to this file) with the LoRA
auditor; only the references, their image preprocessing, the slice and
(for the smaller slices) the images per step change.

  paper   PaliGemma-2 10B + 28B and Gemma-3 12B + 27B at 224 px (the paper)
  medium  PaliGemma-2 10B and Gemma-3 12B: half the frozen weights
  small   PaliGemma-2 3B at 448 px and Gemma-3 4B: fits a cheaper slice

The auditor's 896-px images set the slice size: every GRPO row carries one,
and SigLIP's attention scores allow about 16 rows per 95-GiB chip. The
smaller ensembles therefore run 16 source images per step (128 rows) on a
v5p-16 instead of 32 on a v5p-32; the step count is doubled to keep the
number of images seen.
"""

import importlib.util
import pathlib

# name -> (references, image preprocessing per reference, topology,
#          source images per step)
ENSEMBLES = {
    "paper": (("paligemma2_10b_224", "paligemma2_28b_224", "gemma3_12b",
               "gemma3_27b"), ("siglip", "siglip", "gemma3", "gemma3"),
              "v5p-32", 32),
    "medium": (("paligemma2_10b_224", "gemma3_12b"), ("siglip", "gemma3"),
               "v5p-16", 16),
    "small": (("paligemma2_3b_448", "gemma3_4b"), ("siglip", "gemma3"),
              "v5p-16", 16),
}


def _paper_config(arg):
  path = pathlib.Path(__file__).with_name("audit_paper.py")
  spec = importlib.util.spec_from_file_location("_audit_paper", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def get_config(arg=None):
  name = arg or "paper"
  if name not in ENSEMBLES:
    raise ValueError(f"unknown ensemble {arg!r}; known: {sorted(ENSEMBLES)}")
  refs, preprocess, topology, sources = ENSEMBLES[name]
  c = _paper_config("lora")
  c.archs.references = refs
  c.checkpoints.references = ("",) * len(refs)
  c.image_preprocess.references = preprocess
  c.topology = topology
  c.train.mesh = (("data", 1), ("fsdp", -1), ("tensor", 1))
  paper_images = c.sources_per_step * c.train.total_steps
  c.sources_per_step = sources
  c.train.total_steps = paper_images // sources
  return c

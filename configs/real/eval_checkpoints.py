r"""Benchmark evaluation of a target's checkpoints, before and after
rectification, one checkpoint after another.

  python -m auditdm_jax.plan --config=configs/real/eval_checkpoints.py:3b_224
  python -m auditdm_jax.plan --config=configs/real/eval_checkpoints.py:28b_448

The argument names the target (`<size>_<resolution>` of PaliGemma-2, as in
sft_paligemma2.py). `eval.models` lists what is scored: the released
checkpoint, the rectified one and the bootstrapping rounds in between; a
sweep over `eval.models` is not needed since each entry is its own phase
(only one checkpoint is on the chips at a time).

Greedy decoding of short answers (VQA-style benchmarks): prompts are the
image tokens plus up to 64 question tokens, 16 new tokens, 256 rows per
batch at 224 px and 64 at 448 px, over pure FSDP. Weights are bf16: evaluation needs no master copy.

This config is plannable today; running it needs an 'eval' task in
auditdm_jax/main.py (benchmark loaders and scorers for real data), which
does not exist yet.
"""

import ml_collections

TOPOLOGY = {"3b": "v5e-8", "10b": "v5e-8", "28b": "v5e-16"}
IMAGE_TOKENS = {224: 256, 448: 1024}
BATCH = {224: 256, 448: 64}     # 4x the tokens per row at 448 px
BENCHMARKS = ("vqav2", "gqa", "okvqa", "textvqa", "pope", "mmbench")


def get_config(arg=None):
  size, _, res = (arg or "3b_224").partition("_")
  if size not in TOPOLOGY or not res.isdigit() or int(res) not in IMAGE_TOKENS:
    raise ValueError(f"unknown variant {arg!r}; use <size>_<resolution> with "
                     f"size in {sorted(TOPOLOGY)} and resolution in "
                     f"{sorted(IMAGE_TOKENS)}")
  res = int(res)
  arch = f"paligemma2_{size}_{res}"
  c = ml_collections.ConfigDict()
  c.task = "eval"
  c.topology = TOPOLOGY[size]
  c.mesh = (("data", 1), ("fsdp", -1), ("tensor", 1))
  c.eval = dict(
      models=[dict(name="released", arch=arch, checkpoint=""),
              dict(name="rectified", arch=arch, checkpoint="")],
      benchmarks=BENCHMARKS,
      data_dir="",                 # TFDS data_dir holding the benchmarks
      tokenizer="",
      batch_size=BATCH[res],
      prompt_len=IMAGE_TOKENS[res] + 64,
      max_new_tokens=16,
      param_dtype="bfloat16", dtype="bfloat16",
      limit=0)                     # examples per benchmark; 0 = all
  return c

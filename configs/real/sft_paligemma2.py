r"""Rectification: supervised fine-tuning of a PaliGemma-2 target on TPU.

  # memory / shape check, no weights:
  python -m auditdm_jax.plan --config=configs/real/sft_paligemma2.py:3b_224
  # the run (TPU VM, converted checkpoint, a TFDS dataset of rectification
  # examples: image + question + pseudo-label answer, mixed 1:1 with
  # labelled data as in the paper):
  python -m auditdm_jax.main --config=configs/real/sft_paligemma2.py:3b_224 \
      --config.train.init_from=gs://BUCKET/ckpt/pg2_3b_224 \
      --config.train.tokenizer=gs://BUCKET/gemma/tokenizer.model \
      --config.data.data_dir=gs://BUCKET/tfds --workdir=$HOME/runs/pg2_3b
  # a learning-rate sweep (get_sweep below):
  python -m auditdm_jax.sweep --config=configs/real/sft_paligemma2.py:3b_224 \
      --workdir_root=$HOME/runs --dry_run

The argument picks the target: `<size>_<resolution>[_lora]` with size 3b,
10b or 28b and resolution 224 or 448 (e.g. "10b_448", "28b_224_lora").

Recipe (big_vision's PaliGemma-2 transfers): full fine-tuning with float32
master weights and bfloat16 compute, AdamW without weight decay, cosine
decay after a 5% warm-up, global-norm clip 1, a smaller learning rate for
bigger models, everything trained (vision tower included). Blocks are
rematerialised and the 257k-vocabulary LM head runs 8 answer positions at
a time, so activations stay small next to the optimiser state.

Each variant names a slice on which the plan (python -m auditdm_jax.plan)
leaves room: its estimate uses 45-90% of the usable HBM. Tighter fits were
passed over, since the plan is an estimate: the 10B at 224 px would need
95% of a v5e-16, the 28B at 448 px 96% of a v5p-16. The mesh shards params
and batch over every chip (pure FSDP: no tensor parallelism is needed at
these sizes and sequence lengths).
"""

import ml_collections

# size -> (topology for 224 px, topology for 448 px, peak learning rate)
SIZES = {
    "3b": ("v5e-8", "v5e-16", 1e-5),
    "10b": ("v5p-8", "v5p-8", 5e-6),
    "28b": ("v5p-16", "v5p-32", 3e-6),
}
RESOLUTIONS = {224: 256, 448: 1024}   # resolution -> image tokens
TEXT_LEN = 64                          # prompt + answer tokens per example
GLOBAL_BATCH = {224: 256, 448: 128}


def parse(arg):
  """'3b_224[_lora]' -> (size, resolution, lora)."""
  parts = (arg or "3b_224").split("_")
  lora = parts[-1] == "lora"
  if lora:
    parts = parts[:-1]
  if (len(parts) != 2 or parts[0] not in SIZES
      or not parts[1].isdigit() or int(parts[1]) not in RESOLUTIONS):
    raise ValueError(
        f"unknown variant {arg!r}; use <size>_<resolution>[_lora] with size "
        f"in {sorted(SIZES)} and resolution in {sorted(RESOLUTIONS)}")
  return parts[0], int(parts[1]), lora


def get_config(arg=None):
  size, res, lora = parse(arg)
  topo_224, topo_448, lr = SIZES[size]
  c = ml_collections.ConfigDict()
  c.task = "sft"
  c.topology = topo_224 if res == 224 else topo_448

  # Rectification examples as a TFDS dataset (array_record), read with
  # tfds.data_source: features image, question (or prefix), answer (or
  # suffix).
  c.data = dict(name="auditdm_rectify", split="train", data_dir="")

  c.train = dict(
      arch=f"paligemma2_{size}_{res}",
      # Set on the command line (placeholders: typed, None until then).
      init_from=ml_collections.config_dict.placeholder(str),  # hf2orbax out
      tokenizer=ml_collections.config_dict.placeholder(str),  # Gemma spm
      param_dtype="bfloat16" if lora else "float32",
      dtype="bfloat16",
      remat=True,
      lora_rank=16 if lora else 0,
      lr=lr * 10 if lora else lr,         # adapters want a larger step
      schedule="cosine", warmup_fraction=0.05, end_lr=0.0,
      weight_decay=0.0, b2=0.999, grad_clip=1.0,
      batch_size=GLOBAL_BATCH[res],
      total_steps=2000,
      max_len=RESOLUTIONS[res] + TEXT_LEN,
      max_target_len=32,
      logits_chunk=8,
      image_preprocess="siglip", num_images=1,
      # Data over both batch axes, params sharded over every chip.
      mesh=(("data", 1), ("fsdp", -1), ("tensor", 1)),
      log_every=10, eval_every=0, checkpoint_every=250, keep_checkpoints=3,
      async_checkpointing=True, progress=True, seed=0)
  return c


def get_sweep(arg=None):
  """Learning rates around the recipe's, three steps of ~3x."""
  lr = get_config(arg).train.lr
  # round: 3 * 1e-05 is 3.0000000000000004e-05, a poor run name.
  return [{"train.lr": round(lr * f, 12)} for f in (0.3, 1.0, 3.0)]

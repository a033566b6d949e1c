r"""The world model zoo: one target with planted gaps, references, an auditor.

  python -m auditdm_jax.main --config=configs/world/zoo.py --workdir=/tmp/zoo
  python -m auditdm_jax.main --config=configs/world/zoo.py:quick --workdir=DIR
  python -m auditdm_jax.world.zoo --config configs/world/zoo.py --workdir DIR \
      [--only target]
  python -m auditdm_jax.eval.world_bench --zoo DIR/export

The target is a small PaliGemma-2 trained on world VQA data in which three
COMBINATIONS of familiar words are rare (DESIGN.md §4: a capability gap is an
under-represented combination, never an unknown word):

  * colour questions whose answer is purple        (bench split colour_purple)
  * counting by shape when the count is 5 or more  (bench split count_shape_ge5)
  * left/right questions whose answer is "left"    (bench split left_right)

Each gap keeps `GAP_WEIGHT` of the examples of its slice. The references
(both families, other sizes and seeds) see the full distribution, and the
auditor initialisation (a Gemma-3) learns to write, from an image and one of
the prompts in `auditdm_jax.world.prompts`, a question, an edit command or a
caption, spread over all skills and edit operations.

Variants (`:arg`): "" (the full zoo, about 2.5 h of 2 shared CPU cores) and "quick"
(tiny data and a few steps per model, for tests).

Optimisation (research/world_feasibility.md, World B): AdamW lr 1e-3, b2 0.98,
weight decay 0.05, global-norm clip 1, warm-up then a constant rate. Batch 64
and 100 warm-up steps instead of World B's 128 / 200: these models take about
1-2 s per step of 128 on 2 shared CPU cores (not World B's 0.18 s), so the
budget buys only hundreds of steps and more, smaller updates help. `max_minutes` caps a model's wall time: training stops at the
first checkpoint chunk past it (or at `total_steps`) and exports.
"""

import ml_collections

GAP_WEIGHT = 0.02

# The planted gaps: world_tfds slice_weights keys (questions.py slice tags).
GAPS = {
    "skill:colour&answer:purple": GAP_WEIGHT,
    "skill:count_attr&by:shape&count>=5": GAP_WEIGHT,
    "skill:left_right&answer:left": GAP_WEIGHT,
}
# The benchmark split that measures each gap (world_tfds.BENCH_SPLITS).
GAP_SPLITS = {
    "skill:colour&answer:purple": "colour_purple",
    "skill:count_attr&by:shape&count>=5": "count_shape_ge5",
    "skill:left_right&answer:left": "left_right",
}


def _optim(steps: int, minutes: float, batch: int = 64) -> dict:
  return dict(lr=1e-3, schedule="constant", warmup_steps=min(100, steps // 4),
              b2=0.98, weight_decay=0.05, grad_clip=1.0, batch_size=batch,
              total_steps=steps, max_minutes=minutes)


def get_config(arg=None):
  """The zoo config; `arg` picks a variant ("quick" for tests)."""
  quick = arg == "quick"
  if arg not in (None, "", "quick"):
    raise ValueError(f"unknown zoo variant {arg!r}; known: '', 'quick'")
  c = ml_collections.ConfigDict()
  c.task = "zoo"
  c.data_dir = ""          # "" = <workdir>/data
  # Padded lengths: the longest world VQA example is 34 tokens in the
  # PaliGemma layout and 45 in the Gemma-3 chat layout (16 image tokens
  # each); compute is proportional to it, so keep it tight.
  c.max_len = 40
  c.max_target_len = 4     # VQA answers are one word + eos.
  c.chunk_steps = 2 if quick else 100  # Checkpoint / time-check interval.
  # Periodic benchmark eval of VQA models (0 = off; costs decode time):
  # every `eval_every` steps on `eval_limit` examples per split.
  c.eval_every = 0
  c.eval_limit = 16

  # Training data: world_vqa, never a benchmark scene (world_tfds).
  n = 64 if quick else 60_000
  c.vqa_examples = n
  c.bench_examples = 8 if quick else 500  # Per split, for the zoo's own eval.

  steps = 2 if quick else 6_000
  models = {}
  # The target: a tiny PaliGemma-2 that never really saw three combinations.
  models["target"] = dict(
      role="target", arch="paligemma2_world_s", seed=0,
      slice_weights=dict(GAPS), gap_splits=dict(GAP_SPLITS),
      **_optim(steps, 45.0))
  # References: both families, other sizes and seeds, the full distribution.
  models["ref_paligemma_m"] = dict(
      role="reference", arch="paligemma2_world_m", seed=1, slice_weights={},
      gap_splits={}, **_optim(steps, 30.0))
  models["ref_gemma_s"] = dict(
      role="reference", arch="gemma3_world_s", seed=2, slice_weights={},
      gap_splits={}, max_len=52, **_optim(steps, 35.0))
  models["ref_paligemma_s"] = dict(
      role="reference", arch="paligemma2_world_s", seed=3, slice_weights={},
      gap_splits={}, **_optim(steps, 30.0))
  # The auditor initialisation: a tiny Gemma-3 that writes questions, edit
  # commands and captions about an image (the "prompt-only" baseline).
  models["auditor"] = dict(
      role="auditor", arch="gemma3_world_m", seed=4, slice_weights={},
      gap_splits={}, examples=32 if quick else 30_000,
      max_len=104, max_target_len=48, caption_max_tokens=40,
      **_optim(steps, 25.0, 32))
  c.models = models
  # The auditor comes before the last references: GRPO work needs it first.
  c.order = ("target", "ref_gemma_s", "auditor", "ref_paligemma_m",
             "ref_paligemma_s")
  return c

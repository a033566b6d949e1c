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
  * size questions whose answer is "small"         (bench split size)

(The third gap was "left/right answered left"; it moved to an attribute
skill because two-object relations have not been learned by any model on
this CPU yet (world_feasibility.md), and a gap in a skill the references
miss too cannot be measured or audited.)

Each gap keeps `GAP_WEIGHT` of the examples of its slice. The references
(both families, other sizes and seeds) see the full distribution, and the
auditor initialisation (a Gemma-3) learns to write, from an image and one of
the prompts in `auditdm_jax.world.prompts`, a question, an edit command or a
caption, spread over all skills and edit operations.

Variants (`:arg`): "" (the full zoo, about 2.5 h of 2 shared CPU cores) and "quick"
(tiny data and a few steps per model, for tests).

Optimisation (research/world_feasibility.md, World B): AdamW lr 1e-3, b2 0.98,
weight decay 0.05, global-norm clip 1, 200 warm-up steps then a constant
rate, batch 128. Step cost on 2 CPU cores (benchmarked 2026-11-28, idle box):
a paligemma2_world_s step of 128 takes ~0.75 s at T = 36 with the layer scans
unrolled (165 examples/s), 1.2 s at T = 40 scanned. The models start from
fan-in-scaled weights (models/layers.py `fan_in_normal`): with Gemma's
normal(0.02) at D = 128 attention starts flat and the first target stayed on
the "global statistics" plateau (42% bench mean) after 400k examples.
`max_minutes` caps a model's wall time per call: training stops at the first
checkpoint chunk past it (or at `total_steps`) and exports; calling again
resumes, so a zoo can be trained over several sessions.
"""

import ml_collections

GAP_WEIGHT = 0.02

# The planted gaps: world_tfds slice_weights keys (questions.py slice tags).
GAPS = {
    "skill:colour&answer:purple": GAP_WEIGHT,
    "skill:count_attr&by:shape&count>=5": GAP_WEIGHT,
    "skill:size&answer:small": GAP_WEIGHT,
}
# The benchmark split that measures each gap (world_tfds.BENCH_SPLITS).
GAP_SPLITS = {
    "skill:colour&answer:purple": "colour_purple",
    "skill:count_attr&by:shape&count>=5": "count_shape_ge5",
    "skill:size&answer:small": "size",
}


def _optim(steps: int, minutes: float, batch: int = 128) -> dict:
  return dict(lr=1e-3, schedule="constant", warmup_steps=min(200, steps // 4),
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
  # each; 20k sampled examples); step time grows faster than linearly with
  # it (T = 40 -> 34: 27% faster), so keep it tight.
  c.max_len = 36
  # Layer-scan unroll factor of training (TrainConfig.unroll): the world
  # models have 3-4 layers, so this unrolls them fully (~15% faster on CPU).
  c.unroll = 1 if quick else 4  # Tests: the smaller compile.
  c.max_target_len = 4     # VQA answers are one word + eos.
  c.chunk_steps = 2 if quick else 100  # Checkpoint / time-check interval.
  # Periodic benchmark eval of VQA models (0 = off; costs decode time):
  # every `eval_every` steps on `eval_limit` examples per split.
  c.eval_every = 0
  c.eval_limit = 16

  # Training data: world_vqa, never a benchmark scene (world_tfds).
  # A pool of 200k: ~3 passes in a target's budget (60k gave ~7).
  n = 64 if quick else 200_000
  c.vqa_examples = n
  c.bench_examples = 8 if quick else 500  # Per split, for the zoo's own eval.

  # The first fixed-recipe target broke out of the plateau at ~3.5k steps
  # (450k examples: colour .75, binding .88 on 32 per split) and was still
  # climbing; 8k steps is ~1.7 h of 2 cores per VQA model, spread over calls.
  steps = 2 if quick else 8_000
  models = {}
  # The target: a tiny PaliGemma-2 that never really saw three combinations.
  models["target"] = dict(
      role="target", arch="paligemma2_world_s", seed=0,
      slice_weights=dict(GAPS), gap_splits=dict(GAP_SPLITS),
      **_optim(steps, 70.0))
  # References: both families, other sizes and seeds, the full distribution.
  models["ref_paligemma_m"] = dict(
      role="reference", arch="paligemma2_world_m", seed=1, slice_weights={},
      gap_splits={}, **_optim(steps, 60.0))
  models["ref_gemma_s"] = dict(
      role="reference", arch="gemma3_world_s", seed=2, slice_weights={},
      gap_splits={}, max_len=48, **_optim(steps, 60.0))
  models["ref_paligemma_s"] = dict(
      role="reference", arch="paligemma2_world_s", seed=3, slice_weights={},
      gap_splits={}, **_optim(steps, 60.0))
  # The auditor initialisation: a tiny Gemma-3 that writes questions, edit
  # commands and captions about an image (the "prompt-only" baseline).
  models["auditor"] = dict(
      role="auditor", arch="gemma3_world_m", seed=4, slice_weights={},
      gap_splits={}, examples=32 if quick else 30_000,
      max_len=104, max_target_len=48, caption_max_tokens=40,
      **_optim(2 if quick else 3_000, 25.0, 32))
  c.models = models
  # The auditor comes second: it needs no binding (it writes text about
  # an image), trains in a fixed budget, and GRPO work needs it first.
  c.order = ("target", "auditor", "ref_gemma_s", "ref_paligemma_s",
             "ref_paligemma_m")
  return c

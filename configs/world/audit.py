r"""Training the world auditor with GRPO (issue #4): the paper's loop, on CPU.

  python -m auditdm_jax.main --config=configs/world/audit.py --workdir=/tmp/audit
  python -m auditdm_jax.main --config=configs/world/audit.py \
      --config.zoo=ZOO_DIR/export --workdir=/tmp/audit
  python -m auditdm_jax.main --config=configs/world/audit.py:quick ...   # tests

The auditor starts from the zoo's prompt-only initialisation (a tiny Gemma-3
that writes valid questions, edit commands and captions) and learns, with
GRPO on the disagreement reward, to write the pairs on which the target (a
tiny PaliGemma-2 with three planted gaps) disagrees with the unanimous
answer of three references of both families. Every group is one source image
in one of the paper's pairing modes (Q*, I), (Q, I*), (Q*, I*), in equal
shares; counterfactual images come from the world's exact editor and
generator, so the world oracle can check each failure afterwards
(`eval.success_rate`).

Variants: "" (the run: 8 images x 8 completions per step, at most
`max_minutes` of 2 CPU cores) and "quick" (two tiny steps, for tests).
"""

import ml_collections


def get_config(arg=None):
  quick = arg == "quick"
  if arg not in (None, "", "quick"):
    raise ValueError(f"unknown audit variant {arg!r}; known: '', 'quick'")
  c = ml_collections.ConfigDict()
  c.task = "audit"
  c.zoo = ""              # "" = the zoo shipped with the package
  c.target = "target"
  c.references = ("ref_paligemma_m", "ref_gemma_s", "ref_paligemma_s")
  c.auditor = "auditor"   # the initialisation (zoo export name)
  c.prompt_set = "world"
  c.answer_max_tokens = 3  # World answers are one word + eos.

  # Source images: training-side world scenes with their own questions.
  c.sources = dict(n=64 if quick else 20_000, seed=7)
  c.sources_per_step = 2 if quick else 8

  c.rollout = dict(
      group_size=2 if quick else 8,
      mode_weights={"question": 1.0, "image": 1.0, "both": 1.0},
      image_kind_weights={"edit": 1.0, "caption": 1.0},
      temperature=1.0,
      max_new_tokens=8 if quick else 40,
      prompt_len=0,
      question_temperature=1.0,
      judge="exact",
      seed=0,
      image_seed=0,
      # Unanimous consensus of the references; malformed output earns 0.
      reward=dict(consensus="unanimous", invalid_penalty=0.0,
                  novelty_bonus=0.0, novelty_window=1024))
  c.backend = dict(name="world", cache=True, cache_dir="")

  # GRPO (research/paper.md §5): clipped ratio, k3 KL to the initial policy.
  c.grpo = dict(clip_eps=0.2, kl_beta=0.04, kl_estimator="k3",
                aggregation="token", advantage_scale="std", logits_chunk=64)
  # Full fine-tuning of the tiny auditor (LoRA: set lora_rank > 0, the
  # reference policy is then the base with LoRA off).
  c.train = dict(lr=1e-4, schedule="constant", warmup_steps=0 if quick else 5,
                 b2=0.99, weight_decay=0.0, grad_clip=1.0,
                 total_steps=2 if quick else 200, lora_rank=0,
                 checkpoint_every=1 if quick else 20, keep_checkpoints=2,
                 async_checkpointing=False, progress=not quick, seed=0,
                 image_preprocess="siglip")
  c.max_minutes = 0 if quick else 10.0
  return c

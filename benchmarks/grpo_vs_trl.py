"""GRPO training throughput: our step vs TRL's `GRPOTrainer`.

One GRPO step = sample G completions for each of the step's prompts, score
them with a reward, and take one optimiser step on the GRPO loss. Both sides
train the same random weights (built in transformers by
`auditdm_jax.convert.hf_reference`, saved to a temporary directory for TRL
and converted to our params), on the same CPU in f32, with the same prompts
(fixed random token ids, T each), group size G, completion length N (EOS can
not end a completion: ours has no stop ids, TRL generates with
min_new_tokens = N), sampling distribution (temperature 1, no top-k / top-p),
reward (the fraction of completion tokens with an even id, from the token
ids), objective (clipped ratio ε 0.2, k3 KL to the initial policy with weight
β, token-mean aggregation = TRL's 'dapo', group-std advantages), optimiser
(Adam, constant learning rate, clip 1.0, no weight decay) and full
fine-tuning. Offline: nothing is downloaded (HF_HUB_OFFLINE is set, and the
tokenizer is a word-level one built here over the arch's vocabulary).

What each side runs per step:

  ours  the GRPO loop of `rl/loop.py`: the jitted sampler (`sampling.sample`,
        n = G), rewards and `grpo.group_advantages` on the host, the old
        log-prob pass and (β > 0) the reference pass by the jitted scorer
        (`rl.step.make_logprob_fn`), then the jitted update
        (`rl.step.make_grpo_step`, donated state)
  TRL   `GRPOTrainer.train()` with gradient_accumulation_steps = 1 and
        num_iterations = 1: `model.generate` (sdpa attention), rewards,
        advantages, the reference pass (β > 0; the old log-probs are the
        policy's own, detached, so TRL skips that pass), then forward +
        backward + clip + AdamW

Stages (seconds per step): gen = sampling alone; score = rewards,
advantages and the log-prob passes before the update; update = the rest of
the step (loss forward + backward + optimiser, and for TRL the trainer's
bookkeeping). samples/s = R / step time.

Runs alternate: our step k runs inside a `TrainerCallback` right after TRL's
step k, so load from other processes hits both alike; TRL's step time runs
from the end of our previous step to the end of its own, so it includes
TRL's data loading and per-step callbacks. Step 0 of each side is a warm-up
and is not timed (ours: it compiles the sampler, scorer and step; that time
is reported separately). Each number is the median of --steps steps (min and
max are in the JSON); the speed-up is also given from the fastest step of
each side, which is the least disturbed by other processes on a shared
machine (TRL's step, thousands of small torch ops, is far more sensitive to
that than ours; --threads 1 shows how much of TRL's time is that). Checks
that both train the same model: TRL's loaded weights are compared with the
ones we converted, and (after the timing, so that our step 0 pays every
compile) the log-probs of one of our rollouts under the initial weights,
ours vs transformers.

  python benchmarks/grpo_vs_trl.py                    # gemma3_tiny_text
  python benchmarks/grpo_vs_trl.py --quick            # smoke run, 1 step
  python benchmarks/grpo_vs_trl.py --archs gemma3_100m_text  # > 10 min on 2 CPUs

Writes benchmarks/results/grpo_vs_trl.{json,md}.

Letters: P prompts per step, G group size, R = P * G rows (samples) per
step, T prompt length, N completion length, V vocabulary size.
"""

from __future__ import annotations

import os

# Before transformers / datasets / huggingface_hub read them: never go online.
for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
  os.environ.setdefault(_var, "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

# pylint: disable=g-import-not-at-top,wrong-import-position
import argparse
import logging
import pathlib
import platform
import tempfile
import time
import warnings

import datasets
import jax
import jax.numpy as jnp
import numpy as np
import tokenizers
import torch
import transformers
import trl

from bench_util import stats, write_results

from auditdm_jax import sampling
from auditdm_jax.convert import hf_reference
from auditdm_jax.models import arch
from auditdm_jax.rl import grpo
from auditdm_jax.rl import step as rl_step
from auditdm_jax.rl.config import GrpoConfig
from auditdm_jax.train import state as state_lib
from auditdm_jax.train.config import TrainConfig

RESULTS = pathlib.Path(__file__).parent / "results"
PAD, EOS, BOS, UNK = 0, 1, 2, 3
FIRST_WORD = 4          # prompt ids are drawn from [FIRST_WORD, V)


# --- Shared pieces ------------------------------------------------------------

def reward_of(ids) -> float:
  """The reward of one completion (token ids), on both sides: the fraction of
  its tokens whose id is even (about 1/2 at random, so groups differ)."""
  ids = np.asarray(ids)
  return float(np.mean(ids % 2 == 0)) if ids.size else 0.0


def word(i: int) -> str:
  return {PAD: "<pad>", EOS: "<eos>", BOS: "<bos>", UNK: "<unk>"}.get(
      i, f"w{i}")


def make_tokenizer(vocab_size: int) -> transformers.PreTrainedTokenizerFast:
  """A word-level tokenizer with one word per id (offline; TRL needs one).

  Ids 0-3 are Gemma's pad / eos / bos / unk; text is space-separated words,
  so a prompt of T words is T tokens (no special tokens are added).
  """
  model = tokenizers.models.WordLevel(
      {word(i): i for i in range(vocab_size)}, unk_token=word(UNK))
  tok = tokenizers.Tokenizer(model)
  tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
  return transformers.PreTrainedTokenizerFast(
      tokenizer_object=tok, pad_token=word(PAD), eos_token=word(EOS),
      bos_token=word(BOS), unk_token=word(UNK))


# --- Ours ---------------------------------------------------------------------

class Ours:
  """Our GRPO loop (`rl/loop.py`'s per-step work) on fixed prompts."""

  def __init__(self, cfg, params, prompts: np.ndarray, gcfg: GrpoConfig,
               tcfg: TrainConfig):
    self.gcfg = gcfg
    self.model = state_lib.make_model(tcfg)
    self.state = state_lib.create_state(self.model, tcfg, params)
    # Full fine-tuning with KL: the reference is a copy of the initial
    # params (`loop._reference_params`); steps donate the state's own.
    self.ref = (rl_step.frozen_copy(self.state.params) if gcfg.use_kl
                else None)
    self.step_fn = rl_step.make_grpo_step(self.model, tcfg, gcfg)
    self.score = rl_step.make_logprob_fn(self.model, gcfg)
    self.sampling = gcfg.sampling_config(eos_ids=(), pad_id=PAD)
    self.prompts = prompts                                       # [P, T]
    self.mask = np.ones(prompts.shape, bool)
    g = gcfg.group_size
    self.batch0 = {
        "prompt_tokens": np.repeat(prompts, g, axis=0),          # [R, T]
        "prompt_input_mask": np.repeat(self.mask, g, axis=0),
        "prompt_mask_ar": np.ones((prompts.shape[0] * g, prompts.shape[1]),
                                  np.int32)}
    self.key = jax.random.key(0)
    del cfg

  def rollout(self, i: int) -> np.ndarray:
    out = sampling.sample(self.model, self.state.model_params(), self.prompts,
                          self.mask, self.mask.astype(np.int32),
                          key=jax.random.fold_in(self.key, i),
                          config=self.sampling)
    return np.asarray(out.tokens)                                # [R, N]

  def step(self, i: int) -> dict:
    """One GRPO step; its stage times and metrics."""
    g = self.gcfg
    t0 = time.perf_counter()
    completion = self.rollout(i)
    t1 = time.perf_counter()
    rewards = np.array([reward_of(c) for c in completion], np.float32)
    adv = np.asarray(grpo.group_advantages(
        jnp.asarray(rewards), g.group_size, g.advantage_scale, g.adv_eps))
    batch = dict(self.batch0, completion=completion,
                 completion_mask=np.ones(completion.shape, np.float32),
                 advantages=adv)
    batch["old_logprobs"] = self.score(self.state.params, batch)
    if self.ref is not None:
      batch["ref_logprobs"] = self.score(self.ref, batch)
    jax.block_until_ready(batch["old_logprobs"])
    t2 = time.perf_counter()
    self.state, m = self.step_fn(self.state, batch)
    m = {k: float(v) for k, v in jax.device_get(m).items()}
    t3 = time.perf_counter()
    return {"step_s": t3 - t0, "gen_s": t1 - t0, "score_s": t2 - t1,
            "update_s": t3 - t2, "loss": m["loss"], "kl": m["kl"],
            "reward_mean": float(rewards.mean()),
            "completion_len": float(completion.shape[1])}


# --- TRL ----------------------------------------------------------------------

class TimedGRPOTrainer(trl.GRPOTrainer):
  """GRPOTrainer that records how long generation and scoring take."""

  def __init__(self, *a, **kw):
    super().__init__(*a, **kw)
    self.bench_gen: list[float] = []
    self.bench_gen_score: list[float] = []
    self.bench_lengths: list[float] = []

  def _generate_single_turn(self, *a, **kw):
    t0 = time.perf_counter()
    out = super()._generate_single_turn(*a, **kw)
    self.bench_gen.append(time.perf_counter() - t0)
    self.bench_lengths.append(float(np.mean([len(c) for c in out[0]])))
    return out

  def _generate_and_score_completions(self, *a, **kw):
    t0 = time.perf_counter()
    out = super()._generate_and_score_completions(*a, **kw)
    self.bench_gen_score.append(time.perf_counter() - t0)
    return out


class Interleave(transformers.TrainerCallback):
  """Times TRL's steps and runs one of our steps after each."""

  def __init__(self, ours: Ours):
    self.ours = ours
    self.trl_step_s: list[float] = []
    self.ours_steps: list[dict] = []
    self.resume = time.perf_counter()

  def on_train_begin(self, args, state, control, **kw):
    self.resume = time.perf_counter()

  def on_step_end(self, args, state, control, **kw):
    self.trl_step_s.append(time.perf_counter() - self.resume)
    self.ours_steps.append(self.ours.step(len(self.ours_steps)))
    self.resume = time.perf_counter()


def trl_reward(completion_ids, **_):
  return [reward_of(c) for c in completion_ids]


def hf_logprobs(hf_model, prompts: np.ndarray, completion: np.ndarray,
                g: int) -> np.ndarray:
  """f32[R, N] log-probs of completions under an HF causal LM (temp 1)."""
  ids = torch.from_numpy(np.concatenate(
      [np.repeat(prompts, g, axis=0), completion], axis=1).astype(np.int64))
  t = prompts.shape[1]
  with torch.no_grad():
    logits = hf_model(ids, attention_mask=torch.ones_like(ids)).logits
  logp = torch.log_softmax(logits[:, t - 1:-1].float(), -1)
  return torch.gather(logp, -1, ids[:, t:, None])[..., 0].numpy()


# --- One case -----------------------------------------------------------------

def run_case(cfg, args, steps: int, workdir: pathlib.Path) -> dict:
  p, g, t, n = args.prompts, args.group, args.prompt_len, args.new_tokens
  rows = p * g
  hf_model = hf_reference.build_hf(cfg, attn_implementation="sdpa")
  params = hf_reference.params_of(hf_model, cfg)
  # Ours is fed copies: its steps donate their buffers, and on CPU a device
  # array may share memory with the numpy array it came from.
  initial = jax.tree.map(np.array, params)
  model_dir = workdir / cfg.name
  hf_model.save_pretrained(model_dir)
  tokenizer = make_tokenizer(cfg.text.vocab_size)
  tokenizer.save_pretrained(model_dir)

  rng = np.random.default_rng(0)
  prompts = rng.integers(FIRST_WORD, cfg.text.vocab_size, (p, t)).astype(
      np.int32)
  texts = [" ".join(word(int(i)) for i in row) for row in prompts]
  assert [len(x) for x in tokenizer(texts)["input_ids"]] == [t] * p

  gcfg = GrpoConfig(group_size=g, clip_eps=0.2, kl_beta=args.kl_beta,
                    kl_estimator="k3", aggregation="token",
                    advantage_scale="std", temperature=1.0,
                    max_new_tokens=n)
  tcfg = TrainConfig(arch=cfg.name, batch_size=rows, lr=args.lr,
                     schedule="constant", warmup_steps=0, weight_decay=0.0,
                     grad_clip=1.0, total_steps=steps + 1, progress=False)
  ours = Ours(cfg, jax.tree.map(np.array, params), prompts, gcfg, tcfg)

  targs = trl.GRPOConfig(
      output_dir=str(workdir / "trl_out"), use_cpu=True, bf16=False,
      fp16=False, report_to=[], logging_steps=10_000, save_strategy="no",
      disable_tqdm=True, seed=0, data_seed=0, max_steps=steps + 1,
      per_device_train_batch_size=rows, gradient_accumulation_steps=1,
      num_generations=g, num_iterations=1, max_completion_length=n,
      generation_kwargs={"min_new_tokens": n}, temperature=1.0, top_p=1.0,
      top_k=0, beta=args.kl_beta, epsilon=0.2, loss_type="dapo",
      scale_rewards="group", learning_rate=args.lr,
      lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
      max_grad_norm=1.0, dataloader_num_workers=0,
      model_init_kwargs={"dtype": torch.float32,
                         "attn_implementation": "sdpa"})
  trainer = TimedGRPOTrainer(
      model=str(model_dir), reward_funcs=trl_reward, args=targs,
      train_dataset=datasets.Dataset.from_dict({"prompt": texts}),
      processing_class=tokenizer)
  torch.set_num_threads(args.threads)

  # TRL trains the weights we converted (it loads them from model_dir).
  theirs_sd = trainer.model.state_dict()
  weights_diff = max(float((v - theirs_sd[k]).abs().max())
                     for k, v in hf_model.state_dict().items())

  cb = Interleave(ours)
  trainer.add_callback(cb)
  trainer.train()
  if len(cb.trl_step_s) != steps + 1:
    raise RuntimeError(f"TRL ran {len(cb.trl_step_s)} steps, want {steps + 1}")
  torch_threads = torch.get_num_threads()

  # Same model: log-probs of one of our rollouts under the initial weights,
  # ours (converted params) vs transformers (after the timing, so that our
  # step 0 pays every compile).
  completion = ours.rollout(10_000)
  batch = dict(ours.batch0, completion=completion,
               completion_mask=np.ones(completion.shape, np.float32))
  ours_lp = np.asarray(ours.score(jax.tree.map(jnp.asarray, initial), batch))
  theirs_lp = hf_logprobs(hf_model, prompts, completion, g)
  lp_diff = float(np.abs(ours_lp - theirs_lp).max())

  o = cb.ours_steps
  tg = np.array(trainer.bench_gen)
  tgs = np.array(trainer.bench_gen_score)
  ts = np.array(cb.trl_step_s)
  theirs = [{"step_s": float(ts[i]), "gen_s": float(tg[i]),
             "score_s": float(tgs[i] - tg[i]),
             "update_s": float(ts[i] - tgs[i]),
             "completion_len": trainer.bench_lengths[i]}
            for i in range(steps + 1)]
  timed_o, timed_t = o[1:], theirs[1:]

  def summary(rows_, extra):
    out = {k: stats([r[k] for r in rows_])
           for k in ("step_s", "gen_s", "score_s", "update_s")}
    out["samples_per_s"] = rows / out["step_s"]["median"]
    out["completion_len"] = sorted({r["completion_len"] for r in rows_})
    out.update(extra)
    return out

  ours_sum = summary(timed_o, {
      "first_step_s_incl_compile": o[0]["step_s"],
      "loss": [r["loss"] for r in o], "kl": [r["kl"] for r in o],
      "reward_mean": [r["reward_mean"] for r in o], "steps": o})
  trl_sum = summary(timed_t, {"first_step_s": theirs[0]["step_s"],
                              "steps": theirs})
  return {
      "arch": cfg.name, "prompts": p, "group": g, "rows": rows,
      "prompt_len": t, "new_tokens": n, "kl_beta": args.kl_beta,
      "lr": args.lr, "timed_steps": steps, "ours": ours_sum, "trl": trl_sum,
      "speedup": ours_sum["samples_per_s"] / trl_sum["samples_per_s"],
      "speedup_fastest_steps": (trl_sum["step_s"]["min"]
                                / ours_sum["step_s"]["min"]),
      "initial_logprob_max_abs_diff": lp_diff,
      "trl_initial_weights_max_abs_diff": weights_diff,
      "torch_threads_after_training": torch_threads,
  }


# --- Report -------------------------------------------------------------------

def markdown(results: dict) -> str:
  m = results["machine"]
  med = lambda d: d["median"]
  spread = lambda side: side["step_s"]["max"] / side["step_s"]["min"]
  lines = [
      "# GRPO step throughput: ours vs TRL GRPOTrainer",
      "",
      f"Machine: {m['cpu_count']} CPUs, {m['platform']}; jax {m['jax']} "
      f"({m['backend']}), torch {m['torch']} ({m['torch_threads']} threads), "
      f"transformers {m['transformers']}, trl {m['trl']}; 1-min load "
      f"average {m['loadavg_1m_start']:.1f} at the start, "
      f"{m['loadavg_1m_end']:.1f} at the end (the CPUs are shared). f32, full "
      "fine-tuning, temperature 1, completions of exactly N tokens, "
      f"medians of {results['steps']} timed steps after 1 warm-up step "
      "each, runs interleaved.",
      "",
      "| arch | P x G = R | T | N | beta | ours samples/s | TRL samples/s "
      "| speed-up | speed-up, fastest steps | ours step s (min-max) "
      "| TRL step s (min-max) | first step s, ours (incl. compile) / TRL |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for r in results["cases"]:
    o, t = r["ours"], r["trl"]
    lines.append(
        f"| {r['arch']} | {r['prompts']} x {r['group']} = {r['rows']} "
        f"| {r['prompt_len']} | {r['new_tokens']} | {r['kl_beta']:g} "
        f"| {o['samples_per_s']:.1f} | {t['samples_per_s']:.1f} "
        f"| {r['speedup']:.2f}x | {r['speedup_fastest_steps']:.2f}x "
        f"| {med(o['step_s']):.3f} ({o['step_s']['min']:.3f}-"
        f"{o['step_s']['max']:.3f}) "
        f"| {med(t['step_s']):.3f} ({t['step_s']['min']:.3f}-"
        f"{t['step_s']['max']:.3f}) "
        f"| {o['first_step_s_incl_compile']:.1f} / "
        f"{t['first_step_s']:.1f} |")
  lines += [
      "",
      "speed-up = ratio of median samples/s; fastest steps = ratio of the "
      "minimum step times, the least disturbed by other processes (the "
      "slowest / fastest timed step ratio in this run: "
      + ", ".join(f"{r['arch']} ours {spread(r['ours']):.1f}x, TRL "
                  f"{spread(r['trl']):.1f}x" for r in results["cases"])
      + "; per-step times are in the JSON).",
      "",
      "Median seconds per step by stage (gen: sampling; score: rewards, "
      "advantages, old / reference log-prob passes; update: loss forward + "
      "backward + optimiser and the rest of the step):",
      "",
      "| arch | ours gen | ours score | ours update | TRL gen | TRL score "
      "| TRL update | log-prob max diff |",
      "|---|---|---|---|---|---|---|---|",
  ]
  for r in results["cases"]:
    o, t = r["ours"], r["trl"]
    lines.append(
        f"| {r['arch']} | {med(o['gen_s']):.3f} | {med(o['score_s']):.3f} "
        f"| {med(o['update_s']):.3f} | {med(t['gen_s']):.3f} "
        f"| {med(t['score_s']):.3f} | {med(t['update_s']):.3f} "
        f"| {r['initial_logprob_max_abs_diff']:.1e} |")
  return "\n".join(lines) + "\n"


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--archs", nargs="+", default=["gemma3_tiny_text"])
  ap.add_argument("--prompts", type=int, default=4, help="P per step")
  ap.add_argument("--group", type=int, default=8, help="G")
  ap.add_argument("--prompt-len", type=int, default=32, help="T")
  ap.add_argument("--new-tokens", type=int, default=64, help="N")
  ap.add_argument("--kl-beta", type=float, default=0.04)
  ap.add_argument("--lr", type=float, default=1e-4)
  ap.add_argument("--steps", type=int, default=5, help="timed steps")
  ap.add_argument("--threads", type=int, default=os.cpu_count(),
                  help="torch threads (default: the CPU count)")
  ap.add_argument("--quick", action="store_true", help="one timed step")
  ap.add_argument("--out", default=str(RESULTS / "grpo_vs_trl"))
  args = ap.parse_args()
  steps = 1 if args.quick else args.steps
  torch.set_num_threads(args.threads)
  transformers.logging.set_verbosity_error()
  datasets.disable_progress_bars()
  logging.getLogger("trl").setLevel(logging.ERROR)
  warnings.filterwarnings("ignore", category=UserWarning)

  results = {
      "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                  "jax": jax.__version__, "backend": jax.default_backend(),
                  "torch": torch.__version__,
                  "torch_threads": args.threads,
                  "transformers": transformers.__version__,
                  "trl": trl.__version__,
                  "loadavg_1m_start": os.getloadavg()[0]},
      "steps": steps, "cases": []}
  with tempfile.TemporaryDirectory() as tmp:
    for name in args.archs:
      cfg = arch.get(name)
      if cfg.vision is not None:
        raise SystemExit(f"{name}: the benchmark covers text-only archs")
      r = run_case(cfg, args, steps, pathlib.Path(tmp))
      results["cases"].append(r)
      print(f"{name}: ours {r['ours']['samples_per_s']:.1f} vs TRL "
            f"{r['trl']['samples_per_s']:.1f} samples/s "
            f"({r['speedup']:.2f}x; fastest steps "
            f"{r['speedup_fastest_steps']:.2f}x)", flush=True)
  results["machine"]["loadavg_1m_end"] = os.getloadavg()[0]
  print(write_results(args.out, results, markdown))


if __name__ == "__main__":
  main()

r"""One process of the multi-host test (tests/test_multihost.py).

  XLA_FLAGS=--xla_force_host_platform_device_count=4 \
  python tests/multihost_worker.py --coordinator=localhost:PORT \
      --num_processes=2 --process_id=P --tokenizer=TOK --out=DIR

joins the distributed runtime (`sharding.distributed.initialize`) and then,
over a ('data' 2, 'fsdp' 2, 'tensor' 2) mesh of the 8 devices of all the
processes, runs

  sft   `train.loop.train`: 2 SFT steps of gemma3_tiny_text (the Batcher
        reads this process's share of each batch; the loop checkpoints the
        final TrainState with `train.checkpoint.Checkpointer`) into
        DIR/sft/;
  grpo  2 GRPO steps (`rl.step.make_grpo_step`, KL k3 to a frozen copy of
        the initial params, old / reference log-probs by the jitted scorer):
        each process passes the rows its devices hold; the final state is
        saved with `Checkpointer` to DIR/grpo_ckpt/;

and writes what it ended with, gathered to host, to DIR/p<P>.npz and
DIR/p<P>.json. The test runs `run_all` itself in one process with 8
devices as the reference: same code, one process.

Nothing here touches a jax backend at import time (distributed.initialize
must come first).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import jax
import numpy as np

from auditdm_jax.sharding import distributed

MESH = (("data", 2), ("fsdp", 2), ("tensor", 2))
STEPS = 2
R, G, C = 8, 4, 8                       # GRPO rows, group size, completion
_WORDS = "red blue green cat dog car tree sky".split()
_REWARDS = np.array([1.0, 0.0, 0.5, 0.0, 0.2, 0.9, 0.9, 0.1], np.float32)


def sft_config():
  # pylint: disable-next=g-import-not-at-top
  from auditdm_jax.train.config import TrainConfig
  return TrainConfig(
      arch="gemma3_tiny_text", batch_size=8, total_steps=STEPS, max_len=40,
      max_target_len=8, logits_chunk=4, lr=3e-3, schedule="constant",
      log_every=1, checkpoint_every=0, keep_checkpoints=1, progress=False,
      mesh=MESH)


def grpo_configs():
  # pylint: disable-next=g-import-not-at-top
  from auditdm_jax.rl.config import GrpoConfig
  tcfg = sft_config().replace(batch_size=R, total_steps=10, grad_clip=1.0)
  gcfg = GrpoConfig(group_size=G, kl_beta=0.04, kl_estimator="k3",
                    logits_chunk=4, max_new_tokens=C)
  return tcfg, gcfg


def sft_examples(n: int = 16) -> list[dict]:
  return [{"image": None, "question": f"what is {i}?",
           "answer": f"{_WORDS[i % 8]} {_WORDS[(3 * i + 1) % 8]}"}
          for i in range(n)]


def numpy_params(model, seed: int = 0, scale: float = 0.05):
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda a: (scale * rng.standard_normal(a.shape)).astype(np.float32),
      model.abstract_params())


def grpo_batch(seed: int = 0) -> dict:
  """R rows = 2 left-padded prompts x G completions ending at various EOS."""
  # pylint: disable-next=g-import-not-at-top
  from auditdm_jax.rl import grpo
  rng = np.random.default_rng(seed)
  prompts = [list(rng.integers(3, 400, 5)), list(rng.integers(3, 400, 8))]
  p_len = max(len(p) for p in prompts)
  tokens = np.zeros((R, p_len), np.int32)
  input_mask = np.zeros((R, p_len), bool)
  for r in range(R):
    p = prompts[r // G]
    tokens[r, p_len - len(p):] = p
    input_mask[r, p_len - len(p):] = True
  lengths = np.array([8, 5, 3, 8, 6, 8, 2, 7])
  completion = rng.integers(3, 400, (R, C)).astype(np.int32)
  for r, n in enumerate(lengths):
    completion[r, n - 1] = 1                       # EOS
    completion[r, n:] = 0
  mask = (np.arange(C)[None] < lengths[:, None]).astype(np.float32)
  return dict(prompt_tokens=tokens, prompt_input_mask=input_mask,
              prompt_mask_ar=input_mask.astype(np.int32),
              completion=completion, completion_mask=mask,
              advantages=np.asarray(grpo.group_advantages(_REWARDS, G),
                                    np.float32))


def to_host(tree):
  """Global (possibly sharded across processes) arrays -> numpy, on every
  process (a collective: every process must call it)."""
  # pylint: disable-next=g-import-not-at-top
  from jax.experimental import multihost_utils
  return jax.tree.map(np.asarray,
                      multihost_utils.process_allgather(tree, tiled=True))


def flat(tree, prefix: str) -> dict[str, np.ndarray]:
  return {prefix + jax.tree_util.keystr(p): np.asarray(x)
          for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def state_tree(state) -> dict:
  # pylint: disable-next=g-import-not-at-top
  from auditdm_jax.train import checkpoint as checkpoint_lib
  return checkpoint_lib._to_tree(state)  # pylint: disable=protected-access


def run_sft(tokenizer_path: str, workdir: pathlib.Path) -> dict:
  # pylint: disable=g-import-not-at-top
  from auditdm_jax.tokenizer import Tokenizer
  from auditdm_jax.train import loop
  from auditdm_jax.train import state as state_lib
  # pylint: enable=g-import-not-at-top
  cfg = sft_config()
  model = state_lib.make_model(cfg)
  state = loop.train(cfg, workdir, sft_examples(),
                     tokenizer=Tokenizer(tokenizer_path),
                     params=numpy_params(model, seed=1))
  return state_tree(state)


def run_grpo(ckpt_dir: pathlib.Path) -> tuple[dict, list]:
  """(final state tree, per-step metrics); saves the state to ckpt_dir."""
  # pylint: disable=g-import-not-at-top
  from auditdm_jax.rl import step as rl_step
  from auditdm_jax.sharding import mesh as mesh_lib
  from auditdm_jax.train import checkpoint as checkpoint_lib
  from auditdm_jax.train import state as state_lib
  # pylint: enable=g-import-not-at-top
  tcfg, gcfg = grpo_configs()
  model = state_lib.make_model(tcfg)
  mesh = mesh_lib.make_mesh(tcfg.mesh)
  state = state_lib.create_state(model, tcfg, numpy_params(model), mesh=mesh)
  ref = rl_step.frozen_copy(state.params)
  score = rl_step.make_logprob_fn(model, gcfg, mesh)
  step_fn = rl_step.make_grpo_step(model, tcfg, gcfg, mesh)
  full = grpo_batch()
  # This process's rows: those its devices hold in the step's layout.
  rows = distributed.process_rows(step_fn.batch_shardings["completion"],
                                  full["completion"].shape)
  local = {k: v[rows] for k, v in full.items()}
  zeros = np.zeros(local["completion"].shape, np.float32)
  metrics = []
  for _ in range(STEPS):
    old = score(state.params, local)           # global [R, C] arrays
    ref_lp = score(ref, local)
    batch = step_fn.put_batch(dict(local, old_logprobs=zeros,
                                   ref_logprobs=zeros))
    batch.update(old_logprobs=old, ref_logprobs=ref_lp)
    state, m = step_fn(state, batch)
    metrics.append({k: float(v) for k, v in jax.device_get(m).items()})
  with checkpoint_lib.Checkpointer(ckpt_dir, keep=1) as ckpt:
    ckpt.save(state, {"step": STEPS}, tcfg)
  return state_tree(state), metrics


def run_all(tokenizer_path: str, out: pathlib.Path) -> tuple[dict, dict]:
  """Both runs; -> ({name: array} host values, JSON-able info)."""
  out = pathlib.Path(out)
  t0 = time.perf_counter()
  sft = to_host(run_sft(tokenizer_path, out / "sft"))
  t_sft = time.perf_counter() - t0
  grpo_state, grpo_metrics = run_grpo(out / "grpo_ckpt")
  grpo_state = to_host(grpo_state)
  arrays = {**flat(sft, "sft"), **flat(grpo_state, "grpo")}
  info = {"process_index": jax.process_index(),
          "process_count": jax.process_count(),
          "local_devices": jax.local_device_count(),
          "devices": jax.device_count(),
          "grpo_metrics": grpo_metrics,
          "sft_seconds": t_sft,
          "grpo_seconds": time.perf_counter() - t0 - t_sft}
  return arrays, info


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--coordinator", required=True)
  parser.add_argument("--num_processes", type=int, required=True)
  parser.add_argument("--process_id", type=int, required=True)
  parser.add_argument("--tokenizer", required=True)
  parser.add_argument("--out", required=True)
  args = parser.parse_args(argv)
  t0 = time.perf_counter()
  assert distributed.initialize(args.coordinator, args.num_processes,
                                args.process_id, initialization_timeout=120)
  t_init = time.perf_counter() - t0
  out = pathlib.Path(args.out)
  arrays, info = run_all(args.tokenizer, out)
  info.update(init_seconds=t_init, primary=distributed.is_primary())
  np.savez(out / f"p{args.process_id}.npz", **arrays)
  (out / f"p{args.process_id}.json").write_text(json.dumps(info, indent=1))
  distributed.barrier("multihost_worker_done")
  print(f"process {args.process_id}: done in "
        f"{time.perf_counter() - t0:.1f} s", flush=True)


if __name__ == "__main__":
  sys.exit(main())

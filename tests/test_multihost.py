"""Multi-host: 2 processes x 4 CPU devices against 1 process x 8 devices.

One launch of `tests/multihost_worker.py` per process (2 processes, 4 CPU
devices each, gloo collectives, a free localhost port) runs everything the
multi-process side needs: 2 SFT steps through `train.loop.train` (Batcher
share per process, checkpoint at the end), 2 GRPO steps through
`rl.step.make_grpo_step` (scorer for old / reference log-probs), and a
`Checkpointer` save of the GRPO state. While the workers run, this process
(8 devices, from conftest) runs the same `worker.run_all` as the reference,
over the same ('data' 2, 'fsdp' 2, 'tensor' 2) mesh shape. Then:

  (a) SFT: same per-step metrics and final state as the 1-process run;
      metrics / config / summary written once (by process 0);
  (b) GRPO: same per-step metrics and final state;
  (c) both checkpoints, written by the 2 processes, restore in this single
      process onto a different mesh (fsdp = 8) bitwise equal to what the
      workers held, in the requested shardings.

Compiles dominate (3 big programs per process, ~1-3 min on a shared 2-core
machine); the workers are killed after TIMEOUT_S and both logs are shown.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import multihost_worker as worker
from auditdm_jax import tokenizer as tok_lib
from auditdm_jax.sharding import distributed
from auditdm_jax.sharding import mesh as mesh_lib
from auditdm_jax.train import checkpoint as checkpoint_lib
from auditdm_jax.train import metrics as metrics_lib
from auditdm_jax.train import state as state_lib

NUM_PROCESSES = 2
LOCAL_DEVICES = 4
TIMEOUT_S = 900
RESTORE_MESH = (("fsdp", 8),)
_REPO = pathlib.Path(__file__).resolve().parent.parent


# --- Settings and helpers (no processes, no compiles) -------------------------

def test_settings_from_args_and_environment():
  env = {"AUDITDM_COORDINATOR": "10.0.0.1:1234",
         "AUDITDM_NUM_PROCESSES": "4", "AUDITDM_PROCESS_ID": "3",
         "AUDITDM_LOCAL_DEVICE_IDS": "0,1"}
  s = distributed.resolve(environ=env)
  assert s == distributed.Settings("10.0.0.1:1234", 4, 3, (0, 1))
  assert s.explicit
  # Arguments win over the environment; jax's own variable is a fallback.
  s = distributed.resolve("h:1", 2, 0, environ=env)
  assert (s.coordinator_address, s.num_processes, s.process_id) == (
      "h:1", 2, 0)
  s = distributed.resolve(environ={"JAX_COORDINATOR_ADDRESS": "j:2"})
  assert s.coordinator_address == "j:2"
  assert not distributed.resolve(environ={}).explicit
  with pytest.raises(ValueError, match="integer"):
    distributed.resolve(environ={"AUDITDM_NUM_PROCESSES": "two"})
  with pytest.raises(ValueError, match="process_id"):
    distributed.resolve(num_processes=2, process_id=2, environ={})


def test_single_process_is_a_no_op(monkeypatch):
  for name in ("AUDITDM_COORDINATOR", "AUDITDM_NUM_PROCESSES",
               "AUDITDM_PROCESS_ID", "JAX_COORDINATOR_ADDRESS"):
    monkeypatch.delenv(name, raising=False)
  assert distributed.initialize() is False           # nothing configured
  assert distributed.initialize(num_processes=1) is False
  # Incomplete settings with nothing to auto-detect: a clear error, raised
  # before jax is touched.
  with pytest.raises(ValueError, match="coordinator_address, process_id"):
    distributed.initialize(num_processes=2,
                           cluster_detection_method="deactivate")
  assert not jax.distributed.is_initialized()
  assert distributed.is_primary()
  assert distributed.primary_only(lambda x: x + 1)(1) == 2
  assert distributed.agree(3.5) == 3.5
  distributed.barrier("alone")                       # no-op
  mesh = mesh_lib.make_mesh((("data", 2), ("fsdp", 2), ("tensor", 2)))
  rows = distributed.process_rows(mesh_lib.batch_sharding(mesh, 2), (8, 3))
  np.testing.assert_array_equal(rows, np.arange(8))


# --- The 2-process run --------------------------------------------------------

def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _log_tail(path: pathlib.Path, n: int = 60) -> str:
  lines = [l for l in path.read_text(errors="replace").splitlines()
           if "[Gloo]" not in l and not l.startswith("    @ ")]
  return "\n".join(lines[-n:])


@pytest.fixture(scope="module")
def tok_path(tmp_path_factory, make_gemma_corpus):
  path = tmp_path_factory.mktemp("mh_tok") / "tokenizer.model"
  tok_lib.train_test_tokenizer(make_gemma_corpus(), path, vocab_size=400,
                               num_loc=0, num_seg=0)
  return str(path)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tok_path):
  """{'multi': (p0 arrays, p1 arrays, infos, dir), 'ref': (arrays, info,
  dir)}: the 2-process run and the in-process 8-device reference."""
  if jax.device_count() != NUM_PROCESSES * LOCAL_DEVICES:
    pytest.skip(f"needs {NUM_PROCESSES * LOCAL_DEVICES} local CPU devices "
                "(conftest's XLA_FLAGS)")
  root = tmp_path_factory.mktemp("multihost")
  out, ref_dir = root / "multi", root / "ref"
  out.mkdir()
  env = dict(os.environ,
             XLA_FLAGS=f"--xla_force_host_platform_device_count="
                       f"{LOCAL_DEVICES}",
             JAX_PLATFORMS="cpu",
             PYTHONPATH=os.pathsep.join(
                 [str(_REPO), str(_REPO / "tests"),
                  os.environ.get("PYTHONPATH", "")]))
  port = _free_port()
  procs, logs = [], []
  for p in range(NUM_PROCESSES):
    log = root / f"worker{p}.log"
    logs.append(log)
    with open(log, "wb") as f:
      procs.append(subprocess.Popen(
          [sys.executable, "-u", str(_REPO / "tests" / "multihost_worker.py"),
           f"--coordinator=localhost:{port}",
           f"--num_processes={NUM_PROCESSES}", f"--process_id={p}",
           f"--tokenizer={tok_path}", f"--out={out}"],
          env=env, stdout=f, stderr=subprocess.STDOUT, cwd=_REPO))
  try:
    # The reference runs here while the workers compile.
    ref_arrays, ref_info = worker.run_all(tok_path, ref_dir)
    deadline = time.monotonic() + TIMEOUT_S
    for proc in procs:
      proc.wait(timeout=max(1.0, deadline - time.monotonic()))
  except subprocess.TimeoutExpired:
    pass
  finally:
    timed_out = [p for p in procs if p.poll() is None]
    for proc in timed_out:
      proc.kill()
      proc.wait()
  codes = [proc.returncode for proc in procs]
  if timed_out or any(codes):
    report = "\n\n".join(
        f"===== process {p} (exit {codes[p]}) {logs[p]} =====\n"
        f"{_log_tail(logs[p])}" for p in range(NUM_PROCESSES))
    pytest.fail(f"multi-host workers failed "
                f"({'timed out after %d s' % TIMEOUT_S if timed_out else ''}"
                f" exit codes {codes}):\n{report}", pytrace=False)
  arrays = [dict(np.load(out / f"p{p}.npz")) for p in range(NUM_PROCESSES)]
  infos = [json.loads((out / f"p{p}.json").read_text())
           for p in range(NUM_PROCESSES)]
  return {"multi": (arrays, infos, out), "ref": (ref_arrays, ref_info,
                                                 ref_dir)}


def _close(got: dict, want: dict, prefix: str, atol: float):
  keys = sorted(k for k in want if k.startswith(prefix))
  assert keys and keys == sorted(k for k in got if k.startswith(prefix))
  for k in keys:
    np.testing.assert_allclose(got[k], want[k], rtol=0, atol=atol, err_msg=k)


def test_processes_see_one_global_mesh(runs):
  arrays, infos, _ = runs["multi"]
  assert [i["process_index"] for i in infos] == [0, 1]
  assert [i["primary"] for i in infos] == [True, False]
  for info in infos:
    assert (info["process_count"], info["local_devices"], info["devices"]) \
        == (NUM_PROCESSES, LOCAL_DEVICES, NUM_PROCESSES * LOCAL_DEVICES)
  # Every process ends with the same global values, bitwise.
  assert sorted(arrays[0]) == sorted(arrays[1])
  for k in arrays[0]:
    np.testing.assert_array_equal(arrays[0][k], arrays[1][k], err_msg=k)


def test_sft_steps_match_single_process(runs):
  arrays, _, out = runs["multi"]
  ref, _, ref_dir = runs["ref"]
  got = metrics_lib.read_jsonl(out / "sft" / "metrics.jsonl")
  want = metrics_lib.read_jsonl(ref_dir / "sft" / "metrics.jsonl")
  # Written once (process 0 only), one line per step.
  assert [m["step"] for m in got] == [1, 2] == [m["step"] for m in want]
  for g, w in zip(got, want):
    for k in ("train/loss", "train/accuracy", "train/grad_norm",
              "train/target_tokens"):
      np.testing.assert_allclose(g[k], w[k], rtol=1e-5, err_msg=k)
  assert (out / "sft" / "config.json").exists()
  assert json.loads((out / "sft" / "summary.json").read_text())["step"] == 2
  assert arrays[0]["sft['step']"] == 2
  _close(arrays[0], ref, "sft", atol=1e-5)


def test_grpo_steps_match_single_process(runs):
  arrays, infos, _ = runs["multi"]
  ref, ref_info, _ = runs["ref"]
  for got, want in zip(infos[0]["grpo_metrics"], ref_info["grpo_metrics"]):
    assert got.keys() == want.keys()
    for k in got:
      np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6,
                                 err_msg=k)
  assert infos[0]["grpo_metrics"][1]["kl"] > 0        # the KL term is live
  _close(arrays[0], ref, "grpo", atol=1e-5)


def test_checkpoints_restore_in_one_process_on_another_mesh(runs):
  arrays, _, out = runs["multi"]
  mesh = mesh_lib.make_mesh(RESTORE_MESH)
  tcfg, _ = worker.grpo_configs()
  for name, cfg, ckpt_dir, data_state in (
      ("sft", worker.sft_config(), out / "sft" / "checkpoints", None),
      ("grpo", tcfg, out / "grpo_ckpt", {"step": worker.STEPS})):
    cfg = cfg.replace(mesh=RESTORE_MESH)
    model = state_lib.make_model(cfg)
    shardings = state_lib.state_shardings(model, cfg, mesh)
    with checkpoint_lib.Checkpointer(ckpt_dir) as ckpt:
      assert ckpt.all_steps() == [worker.STEPS]
      state, data = ckpt.restore(state_lib.abstract_state(model, cfg),
                                 shardings)
    if data_state is not None:
      assert data == data_state
    else:       # the Batcher position: 2 global batches read
      assert data["index"] == worker.STEPS and data["batch_size"] == 8
    emb = state.params["llm"]["embedder"]["input_embedding"]
    assert emb.sharding == shardings.params["llm"]["embedder"][
        "input_embedding"]
    assert len(emb.sharding.device_set) == 8
    assert not emb.sharding.is_fully_replicated
    restored = worker.flat(worker.to_host(worker.state_tree(state)), name)
    assert sorted(restored) == sorted(k for k in arrays[0]
                                      if k.startswith(name + "["))
    for k, v in restored.items():
      np.testing.assert_array_equal(v, arrays[0][k], err_msg=k)

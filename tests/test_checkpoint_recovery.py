"""Damaged checkpoints and non-finite steps: detected, reported, recovered.

Checkpointer (in process, a tiny state, no train step compiled): steps 1-3
are saved and sealed, step 3 is damaged one way per case, and `restore()`
must warn naming step 3 and the reason, return step 2 whole, move step 3
aside so it can be saved again, and never return a half-read step.
Without the integrity seal a flipped byte loads silently (measured below):
that is what the seal is for.

The loops (tests/preemption_worker.py subprocesses, tiny SFT / GRPO runs
with a checkpoint per step, sharing a JAX compilation cache with
test_preemption.py): a garbled latest checkpoint is skipped and the run
still ends bitwise where an undamaged one does; a NaN step (the state's
params poisoned for one batch) is rolled back and its batch skipped; NaN
steps in a row, or one before the first checkpoint, raise
FloatingPointError.
"""

import json
import logging
import pathlib
import shutil

import jax
import numpy as np
import pytest

import preemption_worker as worker
from auditdm_jax.train import checkpoint as checkpoint_lib
from auditdm_jax.train import state as state_lib
from auditdm_jax.train.config import TrainConfig

CFG = TrainConfig(arch="gemma3_tiny_text", total_steps=10, progress=False)


# --- The Checkpointer ---------------------------------------------------------


@pytest.fixture(scope="module")
def states():
  """{step: host TrainState} for steps 1..3 (distinct params), + abstract."""
  model = state_lib.make_model(CFG)
  rng = np.random.default_rng(0)
  params = jax.tree.map(
      lambda a: (0.02 * rng.standard_normal(a.shape)).astype(np.float32),
      model.abstract_params())
  base = state_lib.create_state(model, CFG, params)
  out = {}
  for step in (1, 2, 3):
    out[step] = base.replace(
        step=np.int32(step),
        params=jax.tree.map(lambda x, s=step: x * np.float32(s), params))
  return out, state_lib.abstract_state(model, CFG)


def _save(directory, states, steps=(1, 2, 3), **kw):
  by_step, _ = states
  with checkpoint_lib.Checkpointer(directory, keep=5, **kw) as ckpt:
    for s in steps:
      assert ckpt.save(by_step[s], {"index": 10 * s})


def _data_files(step_dir):
  files = sorted((step_dir / "state").rglob("ocdbt.process_0/d/*"),
                 key=lambda p: p.stat().st_size)
  return files


def _flip(path):
  data = bytearray(path.read_bytes())
  data[len(data) // 2] ^= 0x01
  path.write_bytes(bytes(data))


def _truncate(path):
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])


# case id -> (damage(step_dir), expected words in the reason)
DAMAGE = {
    "truncated_tensor_file": (lambda d: _truncate(_data_files(d)[-1]),
                              "truncated"),
    "garbled_tensor_file": (lambda d: _flip(_data_files(d)[-1]), "garbled"),
    "missing_tensor_file": (lambda d: _data_files(d)[-1].unlink(),
                            "missing"),
    "truncated_state_metadata": (lambda d: _truncate(d / "state" /
                                                     "_METADATA"),
                                 "truncated"),
    "garbled_data_json": (lambda d: (d / "data" / "metadata").write_text(
        (d / "data" / "metadata").read_text().replace("30", "31")),
                          "garbled"),
    "missing_state_item": (lambda d: shutil.rmtree(d / "state"),
                           "'state' item is missing"),
    "missing_data_item": (lambda d: shutil.rmtree(d / "data"),
                          "'data' item is missing"),
    "missing_commit_marker": (lambda d: (d / "commit_success.txt").unlink(),
                              "no commit marker"),
    "empty_step_folder": (lambda d: [shutil.rmtree(d), d.mkdir()],
                          "no commit marker"),
    # A step whose writer died before sealing it: Orbax's own checks.
    "unsealed_garbled_manifest": (lambda d: [
        (d / checkpoint_lib.INTEGRITY).unlink(),
        _flip(d / "state" / "manifest.ocdbt")], "DATA_LOSS"),
    "unsealed_truncated_metadata": (lambda d: [
        (d / checkpoint_lib.INTEGRITY).unlink(),
        _truncate(d / "state" / "_METADATA")], "JSONDecodeError"),
}


def _assert_state(got, want):
  assert int(got.step) == int(want.step)
  for a, b in zip(jax.tree.leaves(jax.device_get(got.params)),
                  jax.tree.leaves(want.params)):
    np.testing.assert_array_equal(a, b)


# Orbax leaves an asyncio future unretrieved when TensorStore fails a read.
@pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_latest_step_falls_back(case, tmp_path, states, caplog):
  by_step, abstract = states
  _save(tmp_path, states)
  damage, reason = DAMAGE[case]
  damage(tmp_path / "3")
  caplog.set_level(logging.WARNING)
  with checkpoint_lib.Checkpointer(tmp_path) as ckpt:
    state, data = ckpt.restore(abstract)
    assert ckpt.restored_step == 2 and data == {"index": 20}
    _assert_state(state, by_step[2])
    warned = [r.getMessage() for r in caplog.records
              if r.levelno == logging.WARNING and "step 3" in r.getMessage()]
    assert any(reason in m and "falling back to step 2" in m
               for m in warned), warned
    # Moved aside, so the step can be saved again (the run repeats it).
    assert ckpt.all_steps() == [1, 2]
    assert len(list(tmp_path.glob("corrupt-3-*"))) == 1
    assert ckpt.save(by_step[3], {"index": 30})
  with checkpoint_lib.Checkpointer(tmp_path) as ckpt:
    state, _ = ckpt.restore(abstract)
    assert ckpt.restored_step == 3
    _assert_state(state, by_step[3])


def test_without_the_seal_a_flipped_byte_loads_silently(tmp_path, states):
  """Why steps are sealed: Orbax alone returns wrong numbers here."""
  by_step, abstract = states
  _save(tmp_path, states, steps=(3,))
  _flip(_data_files(tmp_path / "3")[-1])
  with checkpoint_lib.Checkpointer(tmp_path, verify=False) as ckpt:
    state, _ = ckpt.restore(abstract)
  got = jax.tree.leaves(jax.device_get(state.params))
  want = jax.tree.leaves(by_step[3].params)
  assert any(not np.array_equal(a, b) for a, b in zip(got, want))
  with checkpoint_lib.Checkpointer(tmp_path) as ckpt:
    with pytest.raises(checkpoint_lib.CorruptCheckpointError, match="garbled"):
      ckpt.restore(abstract)


def test_unsealed_intact_step_is_used(tmp_path, states, caplog):
  by_step, abstract = states
  _save(tmp_path, states)
  (tmp_path / "3" / checkpoint_lib.INTEGRITY).unlink()
  caplog.set_level(logging.WARNING)
  with checkpoint_lib.Checkpointer(tmp_path) as ckpt:
    state, _ = ckpt.restore(abstract)
  _assert_state(state, by_step[3])
  assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_no_usable_step_raises_and_moves_nothing(tmp_path, states):
  _, abstract = states
  _save(tmp_path, states, steps=(1, 2))
  (tmp_path / "1" / "commit_success.txt").unlink()
  _truncate(_data_files(tmp_path / "2")[-1])
  with checkpoint_lib.Checkpointer(tmp_path) as ckpt:
    with pytest.raises(checkpoint_lib.CorruptCheckpointError) as e:
      ckpt.restore(abstract)
  assert "step 2" in str(e.value) and "step 1" in str(e.value)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2"]


def test_explicit_step_never_falls_back(tmp_path, states):
  _, abstract = states
  _save(tmp_path, states)
  _flip(_data_files(tmp_path / "2")[-1])
  with checkpoint_lib.Checkpointer(tmp_path) as ckpt:
    with pytest.raises(checkpoint_lib.CorruptCheckpointError,
                       match="step 2 .*garbled"):
      ckpt.restore(abstract, step=2)
    with pytest.raises(FileNotFoundError, match="step 7"):
      ckpt.restore(abstract, step=7)
  assert (tmp_path / "2").is_dir()


def test_async_saves_are_sealed(tmp_path, states):
  _save(tmp_path, states, async_save=True)
  for step in (1, 2, 3):
    seal = json.loads((tmp_path / str(step) /
                       checkpoint_lib.INTEGRITY).read_text())
    files = set(seal["files"])
    assert "commit_success.txt" in files and "data/metadata" in files
    assert any(f.startswith("state/") for f in files)


# --- The loops (worker subprocesses) ------------------------------------------


@pytest.fixture(scope="module")
def launcher(tmp_path_factory):
  # Shared with test_preemption.py in one session: compiled programs too.
  cache = tmp_path_factory.getbasetemp() / "preemption_jax_cache"
  with worker.Launcher(cache) as zygote:
    yield zygote


@pytest.fixture(scope="module")
def sft_ref(tmp_path_factory, launcher):
  d = tmp_path_factory.mktemp("sft_ref")
  worker.run_to_end("sft", d, launcher)
  return d


def _metrics(workdir):
  return [{k: v for k, v in r.items() if k not in worker._TIMING_KEYS}  # pylint: disable=protected-access
          for r in map(json.loads, (pathlib.Path(workdir) / worker.RUN /
                                    "metrics.jsonl").read_text().splitlines())]


def _unfinished_copy(ref, dest):
  shutil.copytree(ref / worker.RUN, dest / worker.RUN)
  return dest / worker.RUN / "checkpoints"


def test_sft_skips_a_garbled_latest_checkpoint(sft_ref, tmp_path, launcher):
  ckpts = _unfinished_copy(sft_ref, tmp_path)
  last = max(int(p.name) for p in ckpts.iterdir() if p.name.isdigit())
  _flip(_data_files(ckpts / str(last))[-1])
  # Drop the metric lines of the last step, as a kill would have.
  rc, log = worker.run_once("sft", tmp_path, launcher)
  assert rc == 0, log
  assert f"checkpoint step {last} " in log and "garbled" in log
  assert f"falling back to step {last - 1}" in log
  worker.compare("sft", sft_ref, tmp_path)
  assert list(ckpts.glob(f"corrupt-{last}-*"))


def test_sft_nan_step_rolls_back_and_skips_the_batch(sft_ref, tmp_path,
                                                     launcher):
  bad = 3          # batch 3 is step 4's (nothing skipped before it)
  rc, log = worker.run_once("sft", tmp_path, launcher,
                            poison=worker.Poison((bad,)))
  assert rc == 0, log
  assert "non-finite loss (nan) at step 4 (batch 3)" in log
  assert "rolled back to the checkpoint at step 3" in log
  summary = json.loads((tmp_path / worker.RUN / "summary.json").read_text())
  assert summary["finished"] and summary["rollbacks"] == [
      {"step": 4, "batch": 3, "metric": "loss", "value": "nan",
       "restored": 3}]
  got, want = _metrics(tmp_path), _metrics(sft_ref)
  # Every step logged once (evals at 3, 6 and the end), the steps before
  # the bad one exactly as in the clean run, finite everywhere.
  assert [m["step"] for m in got] == [m["step"] for m in want]
  assert [m for m in got if m["step"] <= 3] == [
      m for m in want if m["step"] <= 3]
  assert all(np.isfinite(m["train/loss"]) for m in got if "train/loss" in m)
  with np.load(tmp_path / worker.RESULT) as f:
    assert all(np.isfinite(f[k]).all() for k in f.files)
  with checkpoint_lib.Checkpointer(tmp_path / worker.RUN /
                                   "checkpoints") as ckpt:
    # One batch more than steps was read: the skipped one.
    assert ckpt.read_json("data")["index"] == worker.STEPS["sft"] + 1


def test_sft_nan_steps_in_a_row_raise(tmp_path, launcher):
  rc, log = worker.run_once("sft", tmp_path, launcher,
                            poison=worker.Poison((4,), every=True))
  assert rc == 1
  assert "FloatingPointError" in log and "4 non-finite steps in a row" in log
  # Three rollbacks to the checkpoint at step 4, then the give-up.
  assert log.count("rolled back to the checkpoint at step 4") == 3
  ckpts = tmp_path / worker.RUN / "checkpoints"
  assert max(int(p.name) for p in ckpts.iterdir() if p.name.isdigit()) == 4


def test_nan_before_the_first_checkpoint_raises(tmp_path, launcher):
  rc, log = worker.run_once("sft", tmp_path, launcher,
                            poison=worker.Poison((0,)))
  assert rc == 1
  assert "non-finite loss (nan) at step 1 (batch 0), and no checkpoint to " \
         "roll back to" in log


def test_grpo_nan_step_rolls_back_and_skips_the_batch(tmp_path, launcher):
  rc, log = worker.run_once("grpo", tmp_path, launcher,
                            poison=worker.Poison((2,)))
  assert rc == 0, log
  assert "non-finite loss (nan) at step 3 (batch 2)" in log
  run = tmp_path / worker.RUN
  summary = json.loads((run / "summary.json").read_text())
  assert summary["finished"] and [r["batch"] for r in
                                  summary["rollbacks"]] == [2]
  steps = list(range(1, worker.STEPS["grpo"] + 1))
  assert [m["step"] for m in _metrics(tmp_path)] == steps
  rollouts = [json.loads(l) for l in
              (run / "rollouts.jsonl").read_text().splitlines()]
  assert sorted({r["step"] for r in rollouts}) == steps
  assert len(rollouts) == len(steps) * 4     # no step's pairs twice
  with checkpoint_lib.Checkpointer(run / "checkpoints") as ckpt:
    data = ckpt.read_json("data")
  assert data["step"] == worker.STEPS["grpo"]
  assert data["batch"] == worker.STEPS["grpo"] + 1

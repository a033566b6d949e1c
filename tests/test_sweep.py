"""Sweeps: get_sweep(arg) -> named runs with workdirs -> commands, run one
after another locally (subprocess faked) or on a TPU VM (dry run)."""

import subprocess
import sys
import textwrap

import pytest

from auditdm_jax import plan as plan_lib
from auditdm_jax import sweep

SFT = "configs/real/sft_paligemma2.py:3b_224"
PY = sys.executable


_TINY = """\
import ml_collections


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.task = "sft"
  c.topology = "v5e-8"
  c.data = dict(name="x", split="train", data_dir="")
  c.train = dict(arch="paligemma2_3b_224", batch_size=8, max_len=300,
                 max_target_len=16, remat=True, lr=1e-3, mesh=(("fsdp", -1),))
  return c


def get_sweep(arg=None):
"""


def write_config(tmp_path, sweep_body: str) -> str:
  """A config file (3B SFT on a v5e-8) whose get_sweep runs `sweep_body`."""
  path = tmp_path / "tiny.py"
  path.write_text(_TINY + textwrap.indent(textwrap.dedent(sweep_body).strip(),
                                          "  ") + "\n")
  return str(path)


def test_expand_names_runs_and_workdirs():
  runs = sweep.expand(SFT, "/tmp/runs")
  assert [r.name for r in runs] == ["lr=3e-06", "lr=1e-05", "lr=3e-05"]
  assert runs[0].workdir == "/tmp/runs/sft_paligemma2_3b_224/lr=3e-06"
  assert runs[0].overrides == (("train.lr", 3e-06),)
  assert sweep.expand(SFT, "gs://b/runs")[1].workdir == (
      "gs://b/runs/sft_paligemma2_3b_224/lr=1e-05")
  assert [r.name for r in sweep.expand(SFT, "r", only=["lr=1e-05"])] == [
      "lr=1e-05"]
  assert sweep.local_command(SFT, runs[0], "python") == [
      "python", "-m", "auditdm_jax.main", f"--config={SFT}",
      "--config.train.lr=3e-06",
      "--workdir=/tmp/runs/sft_paligemma2_3b_224/lr=3e-06"]


@pytest.mark.parametrize("value", [3e-06, 1e-05, 256, True, "gs://b/x",
                                   (("fsdp", -1), ("tensor", 2))])
def test_values_survive_the_command_line(value):
  assert plan_lib.parse_value(sweep.format_value(value), value) == value


def test_bad_sweeps_fail_before_launching(tmp_path):
  with pytest.raises(KeyError, match="train.lrr"):
    sweep.expand(write_config(tmp_path, 'return [{"train.lrr": 1.0}]'), "r")
  with pytest.raises(ValueError, match="both named 'lr=0.1'"):
    sweep.expand(write_config(
        tmp_path, 'return [{"train.lr": 0.1}, {"train.lr": 0.1}]'), "r")
  with pytest.raises(ValueError, match="empty"):
    sweep.expand(write_config(tmp_path, "return []"), "r")
  with pytest.raises(ValueError, match="not runs of this sweep"):
    sweep.expand(SFT, "r", only=["lr=1"])
  with pytest.raises(ValueError, match="no get_sweep"):
    sweep.expand("configs/real/eval_checkpoints.py:3b_224", "r")
  named = sweep.expand(write_config(
      tmp_path, 'return [{"_name": "small batch", "train.batch_size": 4}]'),
                       "r")
  assert named[0].name == "small-batch"
  assert named[0].overrides == (("train.batch_size", 4),)


def test_local_runner_runs_in_order_and_stops_on_failure(monkeypatch):
  calls = []

  def fake_run(cmd, check, cwd):
    calls.append(cmd)
    return subprocess.CompletedProcess(cmd, 3 if len(calls) == 2 else 0)

  monkeypatch.setattr(subprocess, "run", fake_run)
  runs = sweep.expand(SFT, "/tmp/runs")
  out = []
  assert sweep.run_local(SFT, runs, dry_run=False, python=PY,
                         out=out.append) == 3
  assert len(calls) == 2                         # stopped after the failure
  assert calls[0] == sweep.local_command(SFT, runs[0], PY)
  assert "run lr=1e-05 failed with exit status 3" in out
  calls.clear()
  assert sweep.run_local(SFT, runs, dry_run=False, keep_going=True,
                         python=PY, out=out.append) == 1
  assert len(calls) == 3


def test_dry_run_prints_commands_and_runs_nothing(monkeypatch, capsys):
  monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("ran"))
  assert sweep.main([f"--config={SFT}", "--workdir_root=/tmp/runs",
                     "--dry_run"]) == 0
  out = capsys.readouterr().out
  assert "3 run(s) of" in out
  assert (f"-m auditdm_jax.main --config={SFT} --config.train.lr=3e-05 "
          "--workdir=/tmp/runs/sft_paligemma2_3b_224/lr=3e-05") in out


def test_plan_stops_a_sweep_with_a_run_that_does_not_fit(tmp_path, capsys,
                                                         monkeypatch):
  monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("ran"))
  spec = write_config(tmp_path, '''
      return [{"topology": "v5e-1"}, {"topology": "v5p-8"}]''')
  assert sweep.main([f"--config={spec}", "--workdir_root=r", "--plan"]) == 1
  captured = capsys.readouterr()
  assert "plan topology=v5e-1: " in captured.out
  assert "DOES NOT FIT" in captured.out and "v5p-8: fits" in captured.out
  assert "nothing launched" in captured.err


def test_tpu_backend_dry_run_uses_the_launcher(capsys):
  assert sweep.main([f"--config={SFT}", "--workdir_root=/tmp/runs",
                     "--only=lr=1e-05", "--backend=tpu", "--name=pg2-3b",
                     "--project=my-project", "--zone=us-west4-a",
                     "--env=TFDS_DATA_DIR=gs://b/tfds", "--dry_run"]) == 0
  out = capsys.readouterr().out
  assert "gcloud compute tpus tpu-vm ssh pg2-3b --worker=all" in out
  assert "--config.train.lr=1e-05" in out
  assert "tee ~/auditdm_logs/lr=1e-05.log" in out
  assert "export TFDS_DATA_DIR=gs://b/tfds" in out
  with pytest.raises(SystemExit):
    sweep.main([f"--config={SFT}", "--workdir_root=r", "--backend=tpu"])


def test_main_sft_task_reads_the_real_config(monkeypatch):
  """What the local runner launches: main.py's 'sft' task on an SFT config
  (data source and trainer faked: no data, no weights)."""
  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds
  from auditdm_jax import main as main_lib
  from auditdm_jax import train as train_lib
  seen = {}
  monkeypatch.setattr(tfds, "data_source", lambda name, split, data_dir: (
      seen.setdefault("source", (name, split, data_dir))))
  monkeypatch.setattr(train_lib, "train", lambda config, workdir, source: (
      seen.setdefault("train", (config, workdir, source))))
  config = plan_lib.apply_overrides(plan_lib.load_config(SFT), {
      "data.data_dir": "gs://b/tfds", "train.tokenizer": "gs://b/t.model"})
  main_lib.run(config, "/tmp/w")
  assert seen["source"] == ("auditdm_rectify", "train", "gs://b/tfds")
  tcfg, workdir, source = seen["train"]
  assert (tcfg.arch, tcfg.tokenizer, tcfg.init_from) == (
      "paligemma2_3b_224", "gs://b/t.model", None)
  assert workdir == "/tmp/w" and source == seen["source"]

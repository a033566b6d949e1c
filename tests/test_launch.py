"""launch/tpu.py: the exact gcloud commands its --dry_run prints, and the
argument checks (nothing here talks to Google Cloud)."""

import importlib.util
import pathlib
import shlex
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SFT = "configs/real/sft_paligemma2.py:3b_224"
GCP = ["--name=pg2-3b", "--project=my-project", "--zone=us-west4-a"]
FLAGS = "--zone=us-west4-a --project=my-project"
SSH = "gcloud compute tpus tpu-vm ssh pg2-3b --worker=all " + FLAGS


@pytest.fixture(scope="module")
def tpu():
  spec = importlib.util.spec_from_file_location("launch_tpu",
                                                ROOT / "launch" / "tpu.py")
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module   # dataclasses look their module up
  spec.loader.exec_module(module)
  return module


@pytest.fixture(autouse=True)
def _no_gcloud_env(monkeypatch):
  # Defaults from the environment must not leak in from the test machine.
  monkeypatch.delenv("CLOUDSDK_CORE_PROJECT", raising=False)
  monkeypatch.delenv("CLOUDSDK_COMPUTE_ZONE", raising=False)
  # A dry run must never execute anything.
  def boom(*args, **kwargs):
    raise AssertionError(f"subprocess.run called: {args}")
  monkeypatch.setattr(subprocess, "run", boom)


def dry(tpu, *argv):
  lines = []
  rc = tpu.main([*argv, "--dry_run"], out=lines.append)
  return rc, lines


def test_create_from_a_config_checks_its_plan(tpu):
  rc, lines = dry(tpu, "create", *GCP, f"--config={SFT}", "--spot")
  assert rc == 0
  assert lines[0].startswith("# plan: ") and "on v5e-8" in lines[0]
  assert lines[1:] == [
      "gcloud compute tpus queued-resources create pg2-3b --node-id=pg2-3b "
      "--accelerator-type=v5litepod-8 --runtime-version=v2-alpha-tpuv5-lite "
      f"{FLAGS} --spot"]


def test_create_from_a_topology(tpu):
  rc, lines = dry(tpu, "create", *GCP, "--topology=v5p-32")
  assert rc == 0
  assert lines == [
      "gcloud compute tpus queued-resources create pg2-3b --node-id=pg2-3b "
      f"--accelerator-type=v5p-32 --runtime-version=v2-alpha-tpuv5 {FLAGS}"]


def test_create_refuses_a_slice_the_run_does_not_fit(tpu, capsys):
  rc, lines = dry(tpu, "create", *GCP, f"--config={SFT}", "--topology=v5e-1")
  assert rc == 2 and not any(l.startswith("gcloud") for l in lines)
  err = capsys.readouterr().err
  assert "does not fit on v5e-1" in err and "--no_plan" in err
  rc, lines = dry(tpu, "create", *GCP, f"--config={SFT}", "--topology=v5e-1",
                  "--no_plan")
  assert rc == 0 and "--accelerator-type=v5litepod-1" in lines[0]


def test_setup_installs_the_pinned_stack_on_every_worker(tpu):
  rc, lines = dry(tpu, "setup", *GCP)
  assert rc == 0 and len(lines) == 3
  pack, copy, ssh = lines
  assert pack.startswith("tar -czf /tmp/auditdm_jax-pg2-3b.tgz --exclude=.git "
                         "--exclude=.venv")
  assert pack.endswith(f"-C {ROOT} .")
  assert copy == ("gcloud compute tpus tpu-vm scp /tmp/auditdm_jax-pg2-3b.tgz "
                  f"pg2-3b:auditdm_jax-src.tgz --worker=all {FLAGS}")
  argv = shlex.split(ssh)
  assert shlex.join(argv[:-1]) == SSH
  script = argv[-1].removeprefix("--command=")
  assert "sudo apt-get install -y -qq python3.11 python3.11-venv" in script
  assert ("~/auditdm_venv/bin/pip install -q -r "
          "~/auditdm_jax/requirements.txt 'jax[tpu]==0.10.2' -f "
          "https://storage.googleapis.com/jax-releases/libtpu_releases.html"
          ) in script
  assert "install -q --no-deps -e ~/auditdm_jax" in script


def test_jax_pin_comes_from_requirements(tpu, tmp_path):
  assert tpu.pinned_jax_version() == "0.10.2"
  req = tmp_path / "requirements.txt"
  req.write_text("flax==0.12.8\n")
  with pytest.raises(tpu.UsageError, match="pins no jax"):
    tpu.pinned_jax_version(req)


def test_run_on_all_workers_exact(tpu):
  rc, lines = dry(tpu, "run", *GCP, f"--config={SFT}",
                  "--workdir=/tmp/runs/lr=3e-06", "--override=train.lr=3e-06",
                  "--env=TFDS_DATA_DIR=gs://b/tfds")
  assert rc == 0
  body = ("cd ~/auditdm_jax && export TFDS_DATA_DIR=gs://b/tfds && "
          "~/auditdm_venv/bin/python -m auditdm_jax.main "
          f"--config={SFT} --config.train.lr=3e-06 "
          "--workdir=/tmp/runs/lr=3e-06")
  script = ("mkdir -p ~/auditdm_logs && set -o pipefail && "
            f"( {body} ) 2>&1 | tee ~/auditdm_logs/lr=3e-06.log")
  assert lines == [f"{SSH} {shlex.quote('--command=' + script)}"]
  rc, lines = dry(tpu, "run", *GCP, f"--config={SFT}", "--workdir=w/a",
                  "--detach")
  script = shlex.split(lines[0])[-1]
  assert "nohup bash -c" in script and "> ~/auditdm_logs/a.log 2>&1" in script
  assert script.endswith("&")


def test_logs_sync_status_delete_exact(tpu):
  assert dry(tpu, "logs", *GCP, "--run_name=a") == (0, [
      "gcloud compute tpus tpu-vm ssh pg2-3b --worker=0 " + FLAGS + " "
      + shlex.quote("--command=tail -n 100 -F ~/auditdm_logs/a.log")])
  rc, lines = dry(tpu, "sync", *GCP, "--workdir=/tmp/runs/a",
                  "--bucket=gs://b/runs/a", "--local=runs/a")
  assert rc == 0 and lines == [
      SSH + " " + shlex.quote("--command=cd ~/auditdm_jax && gcloud storage "
                              "rsync --recursive /tmp/runs/a gs://b/runs/a"),
      "gcloud storage rsync --recursive gs://b/runs/a runs/a"]
  assert dry(tpu, "status", *GCP) == (0, [
      f"gcloud compute tpus queued-resources describe pg2-3b {FLAGS}"])
  assert dry(tpu, "delete", *GCP) == (0, [
      f"gcloud compute tpus queued-resources delete pg2-3b {FLAGS} --force "
      "--quiet"])


def test_project_and_zone_default_to_gcloud_env(tpu, monkeypatch):
  monkeypatch.setenv("CLOUDSDK_CORE_PROJECT", "env-project")
  monkeypatch.setenv("CLOUDSDK_COMPUTE_ZONE", "europe-west4-b")
  rc, lines = dry(tpu, "delete", "--name=pg2-3b")
  assert rc == 0
  assert "--zone=europe-west4-b --project=env-project" in lines[0]


@pytest.mark.parametrize("argv, message", [
    (["create", *GCP, "--topology=v9-8"], "unknown TPU topology 'v9-8'"),
    (["create", *GCP], "needs --topology or --config"),
    (["delete", "--name=pg2-3b", "--zone=us-west4-a"], "--project is required"),
    (["delete", "--name=pg2-3b", "--project=my-project"],
     "--zone is required"),
    (["delete", "--name=pg2-3b", "--project=my-project", "--zone=west"],
     "is not a GCP zone"),
    (["delete", "--name=PG2_3b", "--project=my-project", "--zone=us-west4-a"],
     "TPU names are"),
    (["sync", *GCP, "--workdir=a", "--bucket=/tmp/b"], "must be a gs:// URL"),
    (["run", *GCP, f"--config={SFT}", "--workdir=a", "--override=lr"],
     "expected KEY=VALUE"),
    (["logs", *GCP, "--run_name=a", "--worker=first"], "worker index"),
])
def test_bad_arguments_fail_clearly(tpu, capsys, argv, message):
  lines = []
  assert tpu.main([*argv, "--dry_run"], out=lines.append) == 2
  assert message in capsys.readouterr().err
  assert not lines


def test_script_runs_from_the_command_line(monkeypatch):
  monkeypatch.undo()  # the real subprocess.run, for the script itself
  env = {"PATH": "/usr/bin:/bin"}
  done = subprocess.run(
      [sys.executable, str(ROOT / "launch" / "tpu.py"), "delete", *GCP,
       "--dry_run"], capture_output=True, text=True, check=False,
      cwd="/", env=env)
  assert done.returncode == 0, done.stderr
  assert done.stdout.startswith("gcloud compute tpus queued-resources delete")
  done = subprocess.run(
      [sys.executable, str(ROOT / "launch" / "tpu.py"), "delete",
       "--name=x", "--dry_run"], capture_output=True, text=True, check=False,
      env=env)
  assert done.returncode == 2 and "--project is required" in done.stderr

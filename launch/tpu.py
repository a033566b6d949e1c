#!/usr/bin/env python3
r"""Cloud TPU VMs for auditdm_jax runs: create, set up, run, logs, sync, delete.

  python launch/tpu.py create --name=pg2-3b --project=P --zone=us-west4-a \
      --config=configs/real/sft_paligemma2.py:3b_224 [--spot]
  python launch/tpu.py status --name=pg2-3b --project=P --zone=us-west4-a
  python launch/tpu.py setup  --name=pg2-3b --project=P --zone=us-west4-a
  python launch/tpu.py run    --name=pg2-3b --project=P --zone=us-west4-a \
      --config=configs/real/sft_paligemma2.py:3b_224 --workdir=/tmp/runs/a \
      [--override=train.lr=3e-06] [--env=TFDS_DATA_DIR=gs://B/tfds] [--detach]
  python launch/tpu.py logs   --name=pg2-3b ... --run_name=a [--worker=all]
  python launch/tpu.py sync   --name=pg2-3b ... --workdir=/tmp/runs/a \
      --bucket=gs://B/runs/a [--local=runs/a]
  python launch/tpu.py delete --name=pg2-3b --project=P --zone=us-west4-a

Every subcommand takes --dry_run, which prints the exact commands (one per
line, shell-quoted) instead of running them. --project and --zone default
to gcloud's own $CLOUDSDK_CORE_PROJECT and $CLOUDSDK_COMPUTE_ZONE.

  create  a queued resource (`gcloud compute tpus queued-resources create`)
          whose node has the same name; the accelerator type and runtime
          version come from the topology (--topology, or the config's
          `topology`). With --config the run's memory plan is checked
          first (auditdm_jax.plan), so a slice too small is never bought.
  setup   packs this checkout (tar, no .git / venv), copies it to every
          worker, and there installs Python 3.11, a venv with the pinned
          requirements.txt plus `jax[tpu]` at the pinned jax version, and
          this package; then prints each worker's device count.
  run     `python -m auditdm_jax.main --config=... --workdir=...` on
          `--worker=all` (a multi-host program must start on every host at
          once, jax #22436), logging to ~/auditdm_logs/<run_name>.log on
          each worker; in the foreground it streams every worker's output,
          with --detach it returns at once (see `logs`).
  logs    follows a run's log (worker 0 by default).
  sync    `gcloud storage rsync` of the workdir from every worker to a
          bucket, then optionally from the bucket to a local directory.
  status  describes the queued resource (its state: WAITING_FOR_RESOURCES,
          PROVISIONING, ACTIVE, ...).
  delete  deletes the queued resource and its TPU VM (--force).

On the workers the checkout lives in ~/auditdm_jax and the venv in
~/auditdm_venv; relative --workdir paths are relative to the checkout.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Optional

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere
  sys.path.insert(0, str(REPO_ROOT))

REMOTE_DIR = "~/auditdm_jax"
REMOTE_VENV = "~/auditdm_venv"
REMOTE_LOGS = "~/auditdm_logs"
REMOTE_ARCHIVE = "auditdm_jax-src.tgz"     # in the worker's home directory
LIBTPU_INDEX = "https://storage.googleapis.com/jax-releases/libtpu_releases.html"
PYTHON = "python3.11"   # requirements.txt pins need >= 3.11; the TPU
                        # images ship Ubuntu 22.04's 3.10
EXCLUDES = (".git", ".venv", "__pycache__", "*.egg-info", ".pytest_cache",
            ".hypothesis", "workdirs", "build")

_NAME = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
_PROJECT = re.compile(r"[a-z][-a-z0-9]{4,28}[a-z0-9]")
_ZONE = re.compile(r"[a-z]+-[a-z]+[0-9]+-[a-z]")
_RUN_NAME = re.compile(r"[A-Za-z0-9._=+-]+")
_ENV = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=.*", re.S)


class UsageError(ValueError):
  """Bad arguments; main() prints it and exits with status 2."""


@dataclasses.dataclass(frozen=True)
class Target:
  """The TPU VM a command addresses, validated on construction."""
  name: str
  project: str
  zone: str

  def __post_init__(self):
    if not _NAME.fullmatch(self.name or ""):
      raise UsageError(f"--name {self.name!r}: TPU names are 1-63 lower-case "
                       "letters, digits and '-', starting with a letter")
    if not _PROJECT.fullmatch(self.project or ""):
      raise UsageError(f"--project {self.project!r} is not a GCP project id")
    if not _ZONE.fullmatch(self.zone or ""):
      raise UsageError(f"--zone {self.zone!r} is not a GCP zone (e.g. "
                       "us-west4-a)")

  @property
  def flags(self) -> list[str]:
    return [f"--zone={self.zone}", f"--project={self.project}"]

  def ssh(self, command: str, worker: str = "all") -> list[str]:
    """gcloud ssh running `command` (a bash string) on the workers."""
    return ["gcloud", "compute", "tpus", "tpu-vm", "ssh", self.name,
            f"--worker={worker}", *self.flags, f"--command={command}"]


def pinned_jax_version(requirements: pathlib.Path = REPO_ROOT /
                       "requirements.txt") -> str:
  """The `jax==X` pin of requirements.txt (one place for the version)."""
  for line in requirements.read_text().splitlines():
    m = re.fullmatch(r"\s*jax==([^\s#]+)\s*(#.*)?", line)
    if m:
      return m.group(1)
  raise UsageError(f"{requirements} pins no jax version (jax==X)")


# --- Commands -----------------------------------------------------------------
# Each returns the list of commands (argv lists) a subcommand runs, so tests
# can compare them and --dry_run can print them.

def create_commands(target: Target, topology, *, spot: bool = False,
                    runtime_version: Optional[str] = None) -> list[list[str]]:
  cmd = ["gcloud", "compute", "tpus", "queued-resources", "create",
         target.name, f"--node-id={target.name}",
         f"--accelerator-type={topology.accelerator_type}",
         f"--runtime-version={runtime_version or topology.runtime_version}",
         *target.flags]
  if spot:
    cmd.append("--spot")
  return [cmd]


def setup_commands(target: Target, *, jax_version: str,
                   archive: Optional[str] = None,
                   python: str = PYTHON) -> list[list[str]]:
  archive = archive or f"/tmp/auditdm_jax-{target.name}.tgz"
  pack = ["tar", "-czf", archive, *(f"--exclude={e}" for e in EXCLUDES),
          "-C", str(REPO_ROOT), "."]
  copy = ["gcloud", "compute", "tpus", "tpu-vm", "scp", archive,
          f"{target.name}:{REMOTE_ARCHIVE}", "--worker=all", *target.flags]
  pip = f"{REMOTE_VENV}/bin/pip"
  jax_tpu = shlex.quote(f"jax[tpu]=={jax_version}")
  script = " && ".join([
      "set -e",
      "sudo apt-get update -qq",
      f"sudo apt-get install -y -qq {python} {python}-venv",
      f"rm -rf {REMOTE_DIR}",
      f"mkdir -p {REMOTE_DIR}",
      f"tar -xzf ~/{REMOTE_ARCHIVE} -C {REMOTE_DIR}",
      f"{python} -m venv {REMOTE_VENV}",
      f"{pip} install -q --upgrade pip",
      f"{pip} install -q -r {REMOTE_DIR}/requirements.txt {jax_tpu} "
      f"-f {LIBTPU_INDEX}",
      f"{pip} install -q --no-deps -e {REMOTE_DIR}",
      # process index, processes, local devices, devices: one line each.
      f"{REMOTE_VENV}/bin/python -c " + shlex.quote(
          "import jax; print(jax.process_index(), jax.process_count(), "
          "jax.local_device_count(), jax.device_count())"),
  ])
  return [pack, copy, target.ssh(script)]


def main_command(config: str, workdir: str, overrides: Sequence[str] = (),
                 python: str = f"{REMOTE_VENV}/bin/python") -> str:
  """The remote `python -m auditdm_jax.main ...` line (quoted)."""
  args = [f"--config={config}",
          *(f"--config.{o}" for o in overrides), f"--workdir={workdir}"]
  return f"{python} -m auditdm_jax.main " + " ".join(
      shlex.quote(a) for a in args)


def run_commands(target: Target, *, config: str, workdir: str,
                 run_name: str, overrides: Sequence[str] = (),
                 env: Sequence[str] = (),
                 detach: bool = False) -> list[list[str]]:
  exports = "".join(f"export {shlex.quote(e)} && " for e in env)
  body = f"cd {REMOTE_DIR} && {exports}{main_command(config, workdir, overrides)}"
  log = f"{REMOTE_LOGS}/{run_name}.log"
  if detach:
    script = (f"mkdir -p {REMOTE_LOGS} && nohup bash -c {shlex.quote(body)} "
              f"> {log} 2>&1 < /dev/null &")
  else:
    # pipefail: the ssh exits with main.py's status, not tee's.
    script = (f"mkdir -p {REMOTE_LOGS} && set -o pipefail && "
              f"( {body} ) 2>&1 | tee {log}")
  return [target.ssh(script)]


def logs_commands(target: Target, *, run_name: str, worker: str = "0",
                  lines: int = 100, follow: bool = True) -> list[list[str]]:
  tail = f"tail -n {lines}{' -F' if follow else ''} {REMOTE_LOGS}/{run_name}.log"
  return [target.ssh(tail, worker=worker)]


def sync_commands(target: Target, *, workdir: str, bucket: str,
                  local: Optional[str] = None) -> list[list[str]]:
  up = (f"cd {REMOTE_DIR} && gcloud storage rsync --recursive "
        f"{shlex.quote(workdir)} {shlex.quote(bucket)}")
  cmds = [target.ssh(up)]
  if local:
    cmds.append(["gcloud", "storage", "rsync", "--recursive", bucket, local])
  return cmds


def status_commands(target: Target) -> list[list[str]]:
  return [["gcloud", "compute", "tpus", "queued-resources", "describe",
           target.name, *target.flags]]


def delete_commands(target: Target) -> list[list[str]]:
  # --force also deletes the TPU VM the queued resource holds.
  return [["gcloud", "compute", "tpus", "queued-resources", "delete",
           target.name, *target.flags, "--force", "--quiet"]]


# --- Command line -------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="launch/tpu.py", description=__doc__.split("\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True)

  def add(name: str, help_: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_)
    p.add_argument("--name", required=True, help="TPU VM / queued resource")
    p.add_argument("--project", default=os.environ.get("CLOUDSDK_CORE_PROJECT"),
                   help="GCP project (default $CLOUDSDK_CORE_PROJECT)")
    p.add_argument("--zone", default=os.environ.get("CLOUDSDK_COMPUTE_ZONE"),
                   help="GCP zone (default $CLOUDSDK_COMPUTE_ZONE)")
    p.add_argument("--dry_run", "--dry-run", action="store_true",
                   help="print the commands instead of running them")
    return p

  p = add("create", "request the slice as a queued resource")
  p.add_argument("--topology", help="e.g. v5e-8, v5p-32 (default: the "
                                    "config's)")
  p.add_argument("--config", help="path/to/config.py[:arg]: its topology "
                                  "and memory plan")
  p.add_argument("--spot", action="store_true", help="Spot capacity")
  p.add_argument("--runtime_version", help="override the TPU software image")
  p.add_argument("--no_plan", action="store_true",
                 help="skip the config's memory check")

  p = add("setup", "install the pinned stack and this checkout on every "
                   "worker")
  p.add_argument("--python", default=PYTHON)

  p = add("run", "run main.py on --worker=all")
  p.add_argument("--config", required=True, help="path/to/config.py[:arg], "
                                                 "relative to the checkout")
  p.add_argument("--workdir", required=True)
  p.add_argument("--run_name", help="log file name (default: the workdir's "
                                    "last part)")
  p.add_argument("--override", action="append", default=[],
                 help="KEY=VALUE, passed as --config.KEY=VALUE (repeatable)")
  p.add_argument("--env", action="append", default=[],
                 help="KEY=VALUE exported for the run (repeatable)")
  p.add_argument("--detach", action="store_true",
                 help="start and return; read the output with `logs`")

  p = add("logs", "follow a run's log")
  p.add_argument("--run_name", required=True)
  p.add_argument("--worker", default="0", help="worker index or 'all'")
  p.add_argument("--lines", type=int, default=100)
  p.add_argument("--no_follow", action="store_true")

  p = add("sync", "copy a workdir from every worker to a bucket")
  p.add_argument("--workdir", required=True)
  p.add_argument("--bucket", required=True, help="gs://BUCKET/PREFIX")
  p.add_argument("--local", help="then copy the bucket prefix here")

  add("status", "describe the queued resource")
  add("delete", "delete the queued resource and its TPU VM")
  return parser


def _topology_for(args, out: Callable[[str], None]):
  """The slice `create` asks for; checks the config's memory plan."""
  # pylint: disable-next=g-import-not-at-top
  from auditdm_jax.sharding import topology as topology_lib
  if not args.topology and not args.config:
    raise UsageError("create needs --topology or --config (whose topology "
                     "is used)")
  if args.topology:
    try:
      topo = topology_lib.get(args.topology)
    except ValueError as e:
      raise UsageError(str(e)) from None
  if args.config:
    # pylint: disable-next=g-import-not-at-top
    from auditdm_jax import plan as plan_lib
    config = plan_lib.load_config(args.config)
    if not args.topology:
      try:
        topo = plan_lib.resolve_topology(config)
      except ValueError as e:
        raise UsageError(str(e)) from None
    if not args.no_plan:
      result = plan_lib.plan(config, topology=topo.name, trace_step=False)
      est = result.estimate
      out(f"# plan: {est.total_bytes / 2**30:.2f} of "
          f"{est.usable_bytes / 2**30:.2f} GiB per device on {topo.name}")
      if not result.fits:
        # pylint: disable-next=g-import-not-at-top
        from auditdm_jax.sharding import memory
        raise UsageError(str(memory.DoesNotFit(est)) + " (--no_plan to "
                         "create it anyway)")
  return topo


def _validate_kv(values: Sequence[str], what: str, pattern) -> None:
  for v in values:
    if not pattern.fullmatch(v):
      raise UsageError(f"--{what} {v!r}: expected KEY=VALUE")


def commands(args, out: Callable[[str], None] = print) -> list[list[str]]:
  """The commands of parsed `args`; raises UsageError on bad arguments."""
  if not args.project:
    raise UsageError("--project is required (or set CLOUDSDK_CORE_PROJECT)")
  if not args.zone:
    raise UsageError("--zone is required (or set CLOUDSDK_COMPUTE_ZONE)")
  target = Target(args.name, args.project, args.zone)
  if args.command == "create":
    return create_commands(target, _topology_for(args, out), spot=args.spot,
                           runtime_version=args.runtime_version)
  if args.command == "setup":
    return setup_commands(target, jax_version=pinned_jax_version(),
                          python=args.python)
  if args.command == "run":
    _validate_kv(args.override, "override", re.compile(r"[A-Za-z_][\w.]*=.*",
                                                       re.S))
    _validate_kv(args.env, "env", _ENV)
    run_name = args.run_name or pathlib.PurePosixPath(
        args.workdir.rstrip("/")).name
    if not _RUN_NAME.fullmatch(run_name or ""):
      raise UsageError(f"--run_name {run_name!r}: use letters, digits and "
                       "._=+-")
    return run_commands(target, config=args.config, workdir=args.workdir,
                        run_name=run_name, overrides=args.override,
                        env=args.env, detach=args.detach)
  if args.command == "logs":
    if not _RUN_NAME.fullmatch(args.run_name):
      raise UsageError(f"--run_name {args.run_name!r}: use letters, digits "
                       "and ._=+-")
    if not (args.worker == "all" or args.worker.isdigit()):
      raise UsageError(f"--worker {args.worker!r}: a worker index or 'all'")
    return logs_commands(target, run_name=args.run_name, worker=args.worker,
                         lines=args.lines, follow=not args.no_follow)
  if args.command == "sync":
    if not args.bucket.startswith("gs://"):
      raise UsageError(f"--bucket {args.bucket!r} must be a gs:// URL")
    return sync_commands(target, workdir=args.workdir, bucket=args.bucket,
                         local=args.local)
  if args.command == "status":
    return status_commands(target)
  return delete_commands(target)


def main(argv: Optional[Sequence[str]] = None,
         out: Callable[[str], None] = print) -> int:
  """Runs (or with --dry_run prints) a subcommand; returns the exit status."""
  parser = _parser()
  args = parser.parse_args(argv)
  try:
    cmds = commands(args, out)
  except UsageError as e:
    print(f"launch/tpu.py {args.command}: error: {e}", file=sys.stderr)
    return 2
  for cmd in cmds:
    out(shlex.join(cmd))
    if args.dry_run:
      continue
    rc = subprocess.run(cmd, check=False).returncode
    if rc:
      print(f"launch/tpu.py {args.command}: command failed with exit status "
            f"{rc}", file=sys.stderr)
      return rc
  return 0


if __name__ == "__main__":
  sys.exit(main())

r"""Sweeps: a config's `get_sweep(arg)` expanded into named runs, and a runner.

  # print the runs and their commands:
  python -m auditdm_jax.sweep --config=configs/real/sft_paligemma2.py:3b_224 \
      --workdir_root=$HOME/runs --dry_run
  # check every run's memory on its topology first, then run them locally,
  # one after another:
  python -m auditdm_jax.sweep --config=... --workdir_root=runs --plan
  # or on a TPU VM slice (launch/tpu.py run, --worker=all, one at a time):
  python -m auditdm_jax.sweep --config=... --workdir_root=runs \
      --backend=tpu --name=my-tpu --project=P --zone=Z [--dry_run]

A sweep lives next to the config it varies (big_vision style):

  def get_sweep(arg):
    return [{"train.lr": lr} for lr in (3e-6, 1e-5, 3e-5)]

Each dict is one run: dotted config keys -> values, applied exactly like
`--config.train.lr=3e-06` on main.py's command line, so every key must
exist in the config (checked when expanding, not hours later on a TPU). A
run is named after its overrides, last key part = value joined by '_'
(`lr=3e-06`), or by an explicit '_name' entry; its workdir is
`<workdir_root>/<config stem>[_<arg>]/<name>`.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import pathlib
import posixpath
import re
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Optional

from auditdm_jax import plan as plan_lib

NAME_KEY = "_name"
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
_SAFE = re.compile(r"[^A-Za-z0-9._=+-]+")


def format_value(value: Any) -> str:
  """A value as main.py's `--config.k=v` parses it back."""
  if isinstance(value, str):
    return value
  if isinstance(value, (list, tuple)):
    return repr(tuple(value))
  return repr(value)  # floats keep every digit: repr(3e-06) == '3e-06'


def _slug(text: str) -> str:
  return _SAFE.sub("-", text).strip("-")


@dataclasses.dataclass(frozen=True)
class Run:
  """One run of a sweep.

  Attributes:
    name: unique within the sweep, safe in paths and gs:// URLs.
    overrides: ((dotted key, value), ...) in the sweep's order.
    workdir: where the run writes (local path or gs:// URL).
  """
  name: str
  overrides: tuple[tuple[str, Any], ...]
  workdir: str

  def __post_init__(self):
    if not self.name or _slug(self.name) != self.name:
      raise ValueError(f"run name {self.name!r} must be non-empty and use "
                       "only letters, digits and ._=+-")
    if not self.workdir:
      raise ValueError(f"run {self.name!r} has no workdir")

  def args(self) -> list[str]:
    """`--config.k=v` arguments of the overrides."""
    return [f"--config.{k}={format_value(v)}" for k, v in self.overrides]


def run_name(overrides: Mapping[str, Any]) -> str:
  """'train.lr': 3e-06, 'train.total_steps': 500 -> 'lr=3e-06_total_steps=500'."""
  if NAME_KEY in overrides:
    return _slug(str(overrides[NAME_KEY]))
  if not overrides:
    return "base"
  return _slug("_".join(f"{k.split('.')[-1]}={format_value(v)}"
                        for k, v in overrides.items()))


def sweep_dir(config_spec: str) -> str:
  """'configs/real/sft_paligemma2.py:3b_224' -> 'sft_paligemma2_3b_224'."""
  path, _, arg = config_spec.partition(":")
  stem = pathlib.Path(path).stem
  return _slug(f"{stem}_{arg}" if arg else stem)


def expand(config_spec: str, workdir_root: str, *,
           only: Sequence[str] = ()) -> list[Run]:
  """The runs of `config_spec`'s sweep, each override checked on the config.

  Args:
    config_spec: 'path/to/config.py[:arg]'; the file defines
      get_sweep(arg) -> [ {dotted key: value, ...}, ... ].
    workdir_root: parent of the sweep's directory (a path or gs:// URL).
    only: keep just these run names (all when empty).
  Raises:
    ValueError: no get_sweep, an empty sweep, repeated run names, an
      unknown name in `only`, or (KeyError / TypeError / ValueError) an
      override the config does not accept.
  """
  module, arg = plan_lib.load_module(config_spec)
  if not hasattr(module, "get_sweep"):
    raise ValueError(f"{config_spec.partition(':')[0]} defines no "
                     "get_sweep(arg)")
  entries = list(module.get_sweep(arg))
  if not entries:
    raise ValueError(f"the sweep of {config_spec} is empty")
  base = module.get_config(arg)
  runs, seen = [], {}
  for i, entry in enumerate(entries):
    if not isinstance(entry, Mapping):
      raise ValueError(f"sweep entry {i} is {type(entry).__name__}, expected "
                       "a dict of config overrides")
    overrides = {k: v for k, v in entry.items() if k != NAME_KEY}
    plan_lib.apply_overrides(base, overrides)  # raises on a bad key / value
    name = run_name(entry)
    if name in seen:
      raise ValueError(f"sweep entries {seen[name]} and {i} are both named "
                       f"{name!r}; give one a '{NAME_KEY}'")
    seen[name] = i
    workdir = posixpath.join(workdir_root, sweep_dir(config_spec), name)
    runs.append(Run(name=name, overrides=tuple(overrides.items()),
                    workdir=workdir))
  if only:
    unknown = sorted(set(only) - set(seen))
    if unknown:
      raise ValueError(f"--only names {unknown} are not runs of this sweep; "
                       f"runs: {sorted(seen)}")
    runs = [r for r in runs if r.name in set(only)]
  return runs


def local_command(config_spec: str, run: Run,
                  python: str = sys.executable) -> list[str]:
  """The main.py command line of one run on this machine."""
  return [python, "-m", "auditdm_jax.main", f"--config={config_spec}",
          *run.args(), f"--workdir={run.workdir}"]


def check_memory(config_spec: str, runs: Sequence[Run],
                 topology: Optional[str] = None,
                 out: Callable[[str], None] = print) -> bool:
  """Plans every run (no tracing); prints one line each; True if all fit."""
  base = plan_lib.load_config(config_spec)
  ok = True
  for run in runs:
    result = plan_lib.plan(plan_lib.apply_overrides(base, dict(run.overrides)),
                           topology=topology, trace_step=False)
    est = result.estimate
    ok &= result.fits
    out(f"plan {run.name}: {est.total_bytes / 2**30:.2f} of "
        f"{est.usable_bytes / 2**30:.2f} GiB per device on "
        f"{est.topology.name}: {'fits' if result.fits else 'DOES NOT FIT'}")
  return ok


def run_local(config_spec: str, runs: Sequence[Run], *, dry_run: bool,
              keep_going: bool = False, python: str = sys.executable,
              out: Callable[[str], None] = print) -> int:
  """Runs each run's main.py command in turn; 0 if all succeed.

  With dry_run the commands are printed only. A failing run stops the
  sweep unless keep_going.
  """
  failed = 0
  for run in runs:
    cmd = local_command(config_spec, run, python)
    out(shlex.join(cmd))
    if dry_run:
      continue
    rc = subprocess.run(cmd, check=False, cwd=REPO_ROOT).returncode
    if rc:
      failed += 1
      out(f"run {run.name} failed with exit status {rc}")
      if not keep_going:
        return rc
  return 1 if failed else 0


def load_launcher():
  """launch/tpu.py as a module (it is a script, not part of the package)."""
  if "_launch_tpu" in sys.modules:
    return sys.modules["_launch_tpu"]
  path = REPO_ROOT / "launch" / "tpu.py"
  spec = importlib.util.spec_from_file_location("_launch_tpu", path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module   # dataclasses look their module up
  spec.loader.exec_module(module)
  return module


def run_tpu(config_spec: str, runs: Sequence[Run], *, name: str,
            project: Optional[str], zone: Optional[str], dry_run: bool,
            env: Sequence[str] = (), keep_going: bool = False) -> int:
  """Runs each run on every worker of a TPU VM (launch/tpu.py run)."""
  launcher = load_launcher()
  failed = 0
  for run in runs:
    argv = ["run", f"--name={name}", f"--config={config_spec}",
            f"--workdir={run.workdir}", f"--run_name={run.name}"]
    argv += [f"--project={project}"] if project else []
    argv += [f"--zone={zone}"] if zone else []
    argv += [f"--override={k}={format_value(v)}" for k, v in run.overrides]
    argv += [f"--env={e}" for e in env]
    argv += ["--dry_run"] if dry_run else []
    rc = launcher.main(argv)
    if rc:
      failed += 1
      if not keep_going:
        return rc
  return 1 if failed else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m auditdm_jax.sweep",
      description="Expand a config's get_sweep(arg) into runs and launch "
                  "them one after another.")
  parser.add_argument("--config", required=True, help="path/to/config.py[:arg]")
  parser.add_argument("--workdir_root", required=True,
                      help="parent of the sweep's run directories")
  parser.add_argument("--only", action="append", default=[],
                      help="run only this run name (repeatable)")
  parser.add_argument("--dry_run", action="store_true",
                      help="print the commands, run nothing")
  parser.add_argument("--plan", action="store_true",
                      help="check every run's memory first; stop if one "
                           "does not fit")
  parser.add_argument("--topology", default=None,
                      help="plan on this topology instead of the config's")
  parser.add_argument("--keep_going", action="store_true",
                      help="continue after a failed run")
  parser.add_argument("--backend", choices=("local", "tpu"), default="local")
  parser.add_argument("--name", help="tpu: the TPU VM (queued resource) name")
  parser.add_argument("--project", help="tpu: GCP project")
  parser.add_argument("--zone", help="tpu: GCP zone")
  parser.add_argument("--env", action="append", default=[],
                      help="tpu: KEY=VALUE set for the runs (repeatable)")
  args = parser.parse_args(argv)
  if args.backend == "tpu" and not args.name:
    parser.error("--backend=tpu needs --name (the TPU VM)")
  try:
    runs = expand(args.config, args.workdir_root, only=args.only)
  except (ValueError, KeyError, TypeError, FileNotFoundError) as e:
    print(f"sweep failed: {type(e).__name__}: {e}", file=sys.stderr)
    return 2
  print(f"{len(runs)} run(s) of {args.config}:")
  for run in runs:
    print(f"  {run.name:<32} {run.workdir}")
  if args.plan and not check_memory(args.config, runs, args.topology):
    print("error: some runs do not fit; nothing launched", file=sys.stderr)
    return 1
  if args.backend == "local":
    return run_local(args.config, runs, dry_run=args.dry_run,
                     keep_going=args.keep_going)
  return run_tpu(args.config, runs, name=args.name, project=args.project,
                 zone=args.zone, dry_run=args.dry_run, env=args.env,
                 keep_going=args.keep_going)


if __name__ == "__main__":
  sys.exit(main())

r"""Preemption: tiny runs that a driver kills with SIGKILL and restarts.

As a worker (one process; the driver starts it again after every kill):

  python tests/preemption_worker.py sft|grpo|harvest WORKDIR \
      --cache_dir DIR [--steps N] [--poison B ... [--poison_every]]

trains (SFT, GRPO) or harvests to the end in WORKDIR/run, resuming whatever
is there, with a checkpoint after every step (every harvest unit), then
writes WORKDIR/result.npz (final params and optimiser state; the harvest
writes none, its outputs are the comparison) and WORKDIR/DONE. The runs are
tiny (a 1-layer model of width 32, 7-8 steps; 12 harvest units with a
scripted auditor) so that a restart costs little: compiled programs come
from JAX's persistent compilation cache in DIR/KIND, shared by every
restart, and compiles run with XLA's CPU optimisations off (XLA_FLAGS).
`--poison B` makes the step of batch B non-finite (NaN params for that
step only; with --poison_every for every batch from B on), to test the
loops' rollback (tests/test_checkpoint_recovery.py).

As a library (tests/test_preemption.py, tests/test_checkpoint_recovery.py,
scripts/preemption.py):

  with Launcher(cache_dir) as launcher:                 # a zygote
    run_to_end("sft", ref_dir, launcher)                # no kills
    log = run_with_kills("sft", dir, launcher, kills=5, seed=0)
    compare("sft", ref_dir, dir)   # raises AssertionError on a difference
    rc, log_tail = run_once("sft", dir2, launcher, poison=Poison((3,)))

Kill plan (`kill_plan`, seeded): kill i waits until the run has committed
`after[i]` units (checkpoint steps, harvest units; 0 = from the start, i.e.
during set-up / tracing / restore) and then `delay[i]` more seconds, then
SIGKILLs the process. The thresholds are distinct and increasing and the
delays are drawn in [0, MAX_DELAY[kind]), about one unit of work, so kills
land during start-up, inside steps, inside (asynchronous) checkpoint writes
and between a step's metrics line and its checkpoint. A threshold the run
had already passed when it restarted fires `delay` after the start. A kill
that would come after the run finished is not made; `run_with_kills`
asserts that at least `kills` processes really died by SIGKILL.

Processes: by default a `Launcher` forks every worker from a zygote that
imported everything once (no JAX backend in the zygote, so forking is
safe): the workers are ordinary processes whose state lives only on disk,
and a restart skips ~4 s of imports. `Launcher(..., zygote=False)` starts a
fresh interpreter each time instead (scripts/preemption.py --fresh).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import random
import select
import signal
import subprocess
import sys
import time
import traceback
from typing import Any, Optional

KINDS = ("sft", "grpo", "harvest")
# Units of work per kind: optimiser steps, harvest units (auditors x chunks).
STEPS = {"sft": 8, "grpo": 7}
HARVEST_POOL, HARVEST_CHUNK = 12, 2          # 2 auditors x 6 chunks
UNITS = {**STEPS, "harvest": 2 * (HARVEST_POOL // HARVEST_CHUNK)}
# Kill delays are drawn in [0, MAX_DELAY) seconds: about one unit of work
# (a step with its checkpoint; a harvest unit takes a few milliseconds).
MAX_DELAY = {"sft": 0.5, "grpo": 0.8, "harvest": 0.05}
RUN, RESULT, DONE = "run", "result.npz", "DONE"


# --- The worker ---------------------------------------------------------------


def _setup_jax(cache_dir: str) -> None:
  import jax  # pylint: disable=g-import-not-at-top
  # Every restart compiles the same programs: take them from disk.
  jax.config.update("jax_compilation_cache_dir", cache_dir)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def _register_tiny_archs() -> None:
  """Two archs small enough that tracing and compiling cost ~nothing."""
  # pylint: disable=g-import-not-at-top
  from auditdm_jax.models import arch as arch_lib
  from auditdm_jax.models import config as mc
  # pylint: enable=g-import-not-at-top
  if "preempt_text" in arch_lib.names():
    return
  text = mc.TextConfig(
      vocab_size=arch_lib.WORLD_VOCAB, embed_dim=32, num_layers=1,
      num_heads=2, num_kv_heads=1, head_dim=16, hidden_dim=64,
      layer_types=mc.gemma3_layer_types(1, pattern=1),
      query_pre_attn_scalar=16.0)
  arch_lib.register("preempt_text")(lambda: mc.ArchConfig(
      name="preempt_text", family="gemma3", text=text,
      prompt_format="gemma3_chat"))
  # A world auditor: 64-px images, one 16-px patch per grid cell.
  vision = mc.VisionConfig(image_size=64, patch_size=16, width=32, depth=1,
                           num_heads=2, mlp_dim=64)
  arch_lib.register("preempt_world")(lambda: mc.ArchConfig(
      name="preempt_world", family="gemma3", text=text, vision=vision,
      projector="pool_norm", image_token_id=arch_lib.WORLD_IMAGE_TOKEN,
      pool=1, prompt_format="gemma3_chat"))


def _numpy_params(model, seed: int, scale: float):
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  # Drawn with numpy: Model.init would cost a compile of its own.
  return jax.tree.map(
      lambda a: (scale * rng.standard_normal(a.shape)).astype(np.float32),
      model.abstract_params())


def sft_config(steps: int):
  from auditdm_jax.train.config import TrainConfig  # pylint: disable=g-import-not-at-top
  return TrainConfig(
      arch="preempt_text", batch_size=4, total_steps=steps, max_len=24,
      max_target_len=4, lr=1e-2, schedule="cosine", warmup_steps=1,
      log_every=1, eval_every=3, checkpoint_every=1, keep_checkpoints=2,
      progress=False, seed=0)


_WORDS = ("red", "blue", "green", "circle", "square", "two", "yes", "no")


@dataclasses.dataclass(frozen=True)
class Poison:
  """Which batches get a NaN step (tests/test_checkpoint_recovery.py).

  A poisoned batch is fed to the step with every float param multiplied by
  NaN, so its loss and gradients are NaN, as a NaN batch or a poisoned
  weight would make them; the next batches are clean again unless `every`
  (then every batch from the first poisoned one on is bad).
  """
  batches: tuple[int, ...] = ()
  every: bool = False

  def hits(self, index: int) -> bool:
    if not self.batches:
      return False
    return index in self.batches or (self.every and index >= min(self.batches))


def _nan_params(state):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  return state.replace(params=jax.tree.map(
      lambda x: x * jnp.nan if jnp.issubdtype(x.dtype, jnp.floating) else x,
      state.params))


class _PoisonedStep:
  """A train step that poisons the state it is given for chosen batches;
  `index_of(batch) -> int` says which batch it is."""

  def __init__(self, step_fn, poison: Poison, index_of):
    self._fn, self._poison, self._index_of = step_fn, poison, index_of
    self.state_shardings = step_fn.state_shardings

  def __call__(self, state, batch):
    if self._poison.hits(self._index_of(batch)):
      state = _nan_params(state)
    return self._fn(state, batch)


def _sft(run: pathlib.Path, steps: int, poison: Poison):
  # pylint: disable=g-import-not-at-top
  import jax
  import numpy as np
  from auditdm_jax.data.world_tokenizer import world_tokenizer
  from auditdm_jax.train import data as data_lib
  from auditdm_jax.train import loop as train_loop
  from auditdm_jax.train import state as state_lib
  # pylint: enable=g-import-not-at-top
  cfg = sft_config(steps)
  model = state_lib.make_model(cfg)
  examples = [{"question": f"what is {w}?", "answer": _WORDS[(3 * i) % 8]}
              for i, w in enumerate(_WORDS)]
  if poison.batches:
    # The loop calls next(batcher) just before it runs the step.
    current = {"batch": -1}
    real_next, real = data_lib.Batcher.__next__, train_loop.step_lib

    def next_batch(self):
      current["batch"] = self.get_state()["index"]
      return real_next(self)

    data_lib.Batcher.__next__ = next_batch
    train_loop.step_lib = _patched(real, "make_train_step", lambda *a: (
        _PoisonedStep(real.make_train_step(*a), poison,
                      lambda _: current["batch"])))

  def eval_fn(params):
    # Host-side, so evaluation adds no compile; a pure function of params.
    return {"param_sum": float(sum(np.sum(np.asarray(x, np.float64))
                                   for x in jax.tree.leaves(params)))}

  state = train_loop.train(cfg, run, examples, eval_fn,
                           tokenizer=world_tokenizer(),
                           params=_numpy_params(model, 0, 0.05))
  return state


def grpo_configs(steps: int):
  # pylint: disable=g-import-not-at-top
  from auditdm_jax.rl.config import GrpoConfig
  from auditdm_jax.train.config import TrainConfig
  # pylint: enable=g-import-not-at-top
  g, s = 2, 2
  tcfg = TrainConfig(arch="preempt_world", lr=3e-3, schedule="constant",
                     batch_size=g * s, total_steps=steps, checkpoint_every=1,
                     keep_checkpoints=2, progress=False, seed=0)
  gcfg = GrpoConfig(group_size=g, kl_beta=0.04, max_new_tokens=6,
                    logits_chunk=8)
  return tcfg, gcfg, s


class _RuleVqa:
  """A VQA model that answers by a rule of the question text."""

  def __init__(self, name, rule):
    self.name, self.rule = name, rule

  def answer(self, questions, images):
    del images
    return [self.rule(q) for q in questions]


def _patched(module, name: str, value):
  """A stand-in for `module` whose attribute `name` is `value`."""
  import types  # pylint: disable=g-import-not-at-top
  ns = types.SimpleNamespace(**vars(module))
  setattr(ns, name, value)
  return ns


def _grpo(run: pathlib.Path, steps: int, poison: Poison):
  # pylint: disable=g-import-not-at-top
  from auditdm_jax.audit import prompts as audit_prompts
  from auditdm_jax.audit import rollout as rollout_lib
  from auditdm_jax.audit.sources import WorldSources
  from auditdm_jax.data.world_tokenizer import world_tokenizer
  from auditdm_jax.imaging.world_backend import WorldBackend
  from auditdm_jax.rl import loop as rl_loop
  from auditdm_jax.train import state as state_lib
  from auditdm_jax.world import prompts as world_prompts
  # pylint: enable=g-import-not-at-top
  tcfg, gcfg, s = grpo_configs(steps)
  model = state_lib.make_model(tcfg)
  # Any non-empty text is a question: a random auditor writes garbage, and
  # rewards must still vary within groups for the params to move.
  anything = audit_prompts.register_prompt_set(audit_prompts.PromptSet(
      name="preempt_any_text", prompts=dict(world_prompts.PROMPTS),
      max_chars={k: 1000 for k in audit_prompts.KINDS},
      require_question_mark=False), overwrite=True)
  auditor = rollout_lib.Auditor(model=model, tokenizer=world_tokenizer(),
                                prompt_set=anything)
  refs = [_RuleVqa(f"r{i}", lambda q: "yes") for i in range(2)]
  target = _RuleVqa("t", lambda q: "no" if len(q) % 2 == 0 else "yes")
  rcfg = rollout_lib.RolloutConfig(
      group_size=gcfg.group_size, max_new_tokens=gcfg.max_new_tokens,
      mode_weights={"question": 1.0}, prompt_len=48)
  roll = rollout_lib.Rollout(auditor, target, refs, WorldBackend(), rcfg)
  if poison.batches:
    # The loop asks source_indices(batch number, ...) once per step, just
    # before it runs the step.
    current = {"batch": -1}
    real_indices, real_step = rl_loop.source_indices, rl_loop.rl_step

    def source_indices(batch, *a):
      current["batch"] = batch
      return real_indices(batch, *a)

    rl_loop.source_indices = source_indices
    rl_loop.rl_step = _patched(
        real_step, "make_grpo_step", lambda *a: _PoisonedStep(
            real_step.make_grpo_step(*a), poison,
            lambda _: current["batch"]))
  return rl_loop.train(tcfg, gcfg, roll, WorldSources(6, seed=1), run,
                       sources_per_step=s,
                       params=_numpy_params(model, 0, 0.05))


def _harvest_factory():
  """make_rollout for the harvest: scripted auditors (no model runs), rule
  VQA models; valid pairs whose question has "how many" are failures."""
  # pylint: disable=g-import-not-at-top
  import numpy as np
  from auditdm_jax.audit import rollout as rollout_lib
  from auditdm_jax.data.world_tokenizer import world_tokenizer
  from auditdm_jax.imaging.world_backend import WorldBackend
  from auditdm_jax.sampling.sampler import SampleOutput
  # pylint: enable=g-import-not-at-top
  scripts = {
      "trained": {"question": ["how many objects can you see?",
                               "what colour is the circle?",
                               "how many squares are there?"],
                  "edit": ["draw a large blue diamond", "remove the nothing"],
                  "caption": ["a red circle and a blue square"]},
      "untrained": {"question": ["are there any red circles?",
                                 "how many objects can you see?"],
                    "edit": ["make the red circle blue"],
                    "caption": ["two green triangles", "what"]}}
  tok = world_tokenizer()

  class Scripted(rollout_lib.Rollout):

    def __init__(self, *args, script, **kw):
      super().__init__(*args, **kw)
      self.script = script

    def _sample(self, params, texts, pixels, n, temperature, key):
      del params, pixels, temperature, key
      c = self.config.max_new_tokens
      rows, out = [], []
      for i, t in enumerate(texts):
        lines = self.script[self.auditor.prompt_set.kind_of(t)]
        for j in range(n):
          text = lines[(i * n + j) % len(lines)]
          ids = tok.encode(text)[:c - 1] + [tok.eos_id]
          rows.append(ids + [tok.pad_id] * (c - len(ids)))
          out.append(text)
      tokens = np.asarray(rows, np.int32)
      lengths = (tokens != tok.pad_id).sum(1).astype(np.int32)
      return SampleOutput(tokens=tokens,
                          logprobs=np.zeros(tokens.shape, np.float32),
                          lengths=lengths,
                          done=np.ones(len(rows), bool)), out

  config = rollout_lib.RolloutConfig(group_size=2, max_new_tokens=16)
  refs = [_RuleVqa(f"ref{i}", lambda q: "2") for i in range(3)]
  target = _RuleVqa("target", lambda q: "3" if "how many" in q else "2")

  def make(spec):
    auditor = rollout_lib.Auditor(model=spec.model, tokenizer=tok,
                                  prompt_set="world")
    return Scripted(auditor, target, refs, WorldBackend(), config,
                    script=scripts[spec.name])
  return make


def _harvest(run: pathlib.Path):
  # pylint: disable=g-import-not-at-top
  from auditdm_jax.audit.sources import WorldSources
  from auditdm_jax.discover import harvest as harvest_lib
  from auditdm_jax.models import arch as arch_lib
  from auditdm_jax.models.vlm import Model
  # pylint: enable=g-import-not-at-top
  # The model lays out prompts; its params are never read (scripted).
  model = Model(arch_lib.get("preempt_world"))
  specs = [harvest_lib.AuditorSpec("trained", 100, model, {}),
           harvest_lib.AuditorSpec("untrained", 0, model, {})]
  return harvest_lib.harvest(
      specs, WorldSources(HARVEST_POOL, seed=5), run,
      make_rollout=_harvest_factory(),
      config=harvest_lib.HarvestConfig(chunk_size=HARVEST_CHUNK, seed=3))


def _atomic_savez(path: pathlib.Path, arrays: dict) -> None:
  import numpy as np  # pylint: disable=g-import-not-at-top
  tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
  with open(tmp, "wb") as f:
    np.savez(f, **arrays)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def work(kind: str, workdir: pathlib.Path, cache_dir: str,
         steps: Optional[int] = None, poison: Poison = Poison()) -> None:
  """Runs (or resumes) one tiny run to its end; writes result + DONE.

  Compiled programs are cached in cache_dir/kind: one directory per kind,
  so that runs of different kinds may share cache_dir concurrently (JAX
  writes cache entries in place, not atomically).
  """
  _setup_jax(os.path.join(cache_dir, kind))
  _register_tiny_archs()
  run = workdir / RUN
  if kind == "harvest":
    _harvest(run)
    arrays = {}
  else:
    # pylint: disable=g-import-not-at-top
    import jax
    import numpy as np
    # pylint: enable=g-import-not-at-top
    steps = steps or STEPS[kind]
    state = (_sft if kind == "sft" else _grpo)(run, steps, poison)
    tree = {"params": state.params, "opt_state": state.opt_state}
    arrays = {jax.tree_util.keystr(p): np.asarray(x) for p, x in
              jax.tree_util.tree_leaves_with_path(jax.device_get(tree))}
  _atomic_savez(workdir / RESULT, arrays)
  (workdir / DONE).write_text("done\n")


# --- The driver ---------------------------------------------------------------


def progress(kind: str, workdir: pathlib.Path) -> int:
  """Units the run in `workdir` has committed so far (never raises)."""
  run = pathlib.Path(workdir) / RUN
  try:
    if kind == "harvest":
      return len(json.loads((run / "progress.json").read_text())["done"])
    # Orbax commits a step by renaming its temporary folder to "<step>".
    return max((int(p.name) for p in (run / "checkpoints").iterdir()
                if p.name.isdigit()), default=0)
  except (OSError, ValueError, KeyError):
    return 0


# XLA's CPU optimisations cut the cold compile of the three runs ~3x; the
# reference and the killed runs compile alike, and whether a resume is exact
# does not depend on how well the code is optimised.
XLA_FLAGS = ("--xla_backend_optimization_level=0 "
             "--xla_llvm_disable_expensive_passes=true")


def worker_env() -> dict:
  env = dict(os.environ)
  # One CPU device (the test session forces 8): less to set up per restart.
  env["XLA_FLAGS"] = XLA_FLAGS
  env["JAX_PLATFORMS"] = "cpu"
  # No idle BLAS threads in the zygote when it forks.
  env["OPENBLAS_NUM_THREADS"] = "1"
  env["PYTHONPATH"] = os.pathsep.join(
      [str(pathlib.Path(__file__).resolve().parents[1])]
      + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
  return env


def _log_tail(workdir: pathlib.Path, n: int = 3000) -> str:
  try:
    return (pathlib.Path(workdir) / "worker.log").read_bytes()[-n:].decode(
        "utf-8", "replace")
  except OSError:
    return ""


class _Exec:
  """A worker in a fresh interpreter."""

  def __init__(self, kind, workdir, cache_dir, steps, poison: Poison):
    cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), kind,
           str(workdir), "--cache_dir", str(cache_dir)]
    if steps:
      cmd += ["--steps", str(steps)]
    for b in poison.batches:
      cmd += ["--poison", str(b)]
    if poison.every:
      cmd += ["--poison_every"]
    with open(pathlib.Path(workdir) / "worker.log", "ab") as log:
      self._proc = subprocess.Popen(cmd, env=worker_env(), stdout=log,
                                    stderr=subprocess.STDOUT)
    self.pid = self._proc.pid

  def poll(self) -> Optional[int]:
    return self._proc.poll()

  def wait(self, timeout=None) -> int:
    return self._proc.wait(timeout)


class _Forked:
  """A worker forked by a zygote; its exit status comes from the zygote."""

  def __init__(self, zygote: "Launcher", kind, workdir, steps,
               poison: Poison):
    self._z = zygote
    self.pid = zygote.ask(json.dumps({
        "kind": kind, "workdir": str(workdir), "steps": steps,
        "poison": list(poison.batches), "every": poison.every}))
    self._rc: Optional[int] = None

  def poll(self) -> Optional[int]:
    if self._rc is None:
      line = self._z.read_line(timeout=0)
      if line is not None:
        self._rc = self._z.exit_code(line, self.pid)
    return self._rc

  def wait(self, timeout=None) -> int:
    if self._rc is None:
      line = self._z.read_line(timeout=timeout)
      if line is None:
        raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout)
      self._rc = self._z.exit_code(line, self.pid)
    return self._rc


class Launcher:
  """Starts workers: fresh interpreters (`zygote=False`), or forks of one
  zygote process that imported everything once (`zygote=True`).

  A restart of a tiny run costs ~4 s of imports of a ~10 s start-up, which
  is what the zygote saves: its children are ordinary processes (killed
  with SIGKILL, their state only on disk), only the imports are inherited.
  The zygote never touches JAX's backend, so forking it is safe; each child
  sets up JAX itself. Protocol (zygote stdin / stdout lines): a JSON
  object {"kind", "workdir", "steps", "poison", "every"} -> "pid N", then
  "exit N CODE" when the child ends (CODE < 0: killed by signal -CODE).
  """

  def __init__(self, cache_dir: str, *, zygote: bool = True):
    self.cache_dir = str(cache_dir)
    self._zygote = None
    if zygote:
      self._zygote = subprocess.Popen(
          [sys.executable, str(pathlib.Path(__file__).resolve()), "zygote",
           "-", "--cache_dir", self.cache_dir],
          env=worker_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
          text=True, bufsize=1)
      self._buf = ""

  def start(self, kind: str, workdir: pathlib.Path,
            steps: Optional[int] = None, poison: Poison = Poison()):
    """A handle with .pid, .poll() and .wait(timeout)."""
    if self._zygote is None:
      return _Exec(kind, workdir, self.cache_dir, steps, poison)
    return _Forked(self, kind, workdir, steps, poison)

  def ask(self, command: str) -> int:
    self._zygote.stdin.write(command + "\n")
    self._zygote.stdin.flush()
    line = self.read_line(timeout=120)
    if line is None or not line.startswith("pid "):
      raise AssertionError(f"zygote answered {line!r} to {command!r}")
    return int(line.split()[1])

  def read_line(self, timeout: Optional[float]) -> Optional[str]:
    """The zygote's next line, or None if none comes within `timeout`."""
    out = self._zygote.stdout
    if timeout is not None and not select.select([out], [], [], timeout)[0]:
      return None
    line = out.readline()
    if not line:
      raise AssertionError("the zygote died")
    return line.strip()

  @staticmethod
  def exit_code(line: str, pid: int) -> int:
    parts = line.split()
    if parts[:2] != ["exit", str(pid)]:
      raise AssertionError(f"zygote said {line!r}, expected the exit of {pid}")
    return int(parts[2])

  def close(self) -> None:
    if self._zygote is not None:
      self._zygote.stdin.close()
      self._zygote.wait(30)
      self._zygote.stdout.close()
      self._zygote = None

  def __enter__(self) -> "Launcher":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def zygote(cache_dir: str) -> None:
  """The zygote's loop (see `Launcher`)."""
  # pylint: disable=g-import-not-at-top,unused-import
  import jax
  import auditdm_jax.audit.sources
  import auditdm_jax.data.world_tokenizer
  import auditdm_jax.discover.harvest
  import auditdm_jax.imaging.world_backend
  import auditdm_jax.rl.loop
  import auditdm_jax.train.loop
  # pylint: enable=g-import-not-at-top,unused-import
  for line in sys.stdin:
    job = json.loads(line)
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
      code = 1
      try:
        fd = os.open(pathlib.Path(job["workdir"]) / "worker.log",
                     os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        work(job["kind"], pathlib.Path(job["workdir"]), cache_dir,
             job["steps"], Poison(tuple(job["poison"]), job["every"]))
        code = 0
      except BaseException:  # pylint: disable=broad-except
        traceback.print_exc()
      finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # pylint: disable=protected-access
    print(f"pid {pid}", flush=True)
    _, status = os.waitpid(pid, 0)
    code = (-os.WTERMSIG(status) if os.WIFSIGNALED(status)
            else os.WEXITSTATUS(status))
    print(f"exit {pid} {code}", flush=True)


@dataclasses.dataclass
class Process:
  """One worker process of `run_with_kills`."""
  after: Optional[int]       # the planned kill: after this many units ...
  delay: Optional[float]     # ... and this many seconds (None: no kill)
  units_before: int          # units committed when it started
  units_after: int           # ... and when it ended
  returncode: int
  seconds: float

  @property
  def killed(self) -> bool:
    return self.returncode == -signal.SIGKILL


@dataclasses.dataclass
class KillLog:
  """What `run_with_kills` did: the plan and every process it started."""
  kind: str
  plan: list[tuple[int, float]]
  processes: list[Process] = dataclasses.field(default_factory=list)

  @property
  def kills(self) -> int:
    return sum(p.killed for p in self.processes)


def kill_plan(kind: str, kills: int, seed: int, max_delay: float,
              units: Optional[int] = None) -> list[tuple[int, float]]:
  """[(after units, delay s)]: distinct thresholds in [0, units - 2]."""
  units = units or UNITS[kind]
  rng = random.Random(f"{kind}/{seed}")
  # A threshold of at most units - 2 leaves two units or more to kill in,
  # more than a delay lasts; 0 (the start-up) repeats if there are few.
  pool = list(range(max(units - 1, 1)))
  after = sorted(rng.sample(pool, min(kills, len(pool))))
  after = [0] * (kills - len(after)) + after
  return [(a, round(rng.uniform(0, max_delay), 3)) for a in after]


def run_with_kills(kind: str, workdir: pathlib.Path, launcher: Launcher, *,
                   kills: int = 5, seed: int = 0,
                   max_delay: Optional[float] = None,
                   steps: Optional[int] = None, timeout: float = 600.0,
                   poll: float = 0.01) -> KillLog:
  """Runs `kind` in `workdir`, SIGKILLing it by the seeded plan and
  restarting it until it finishes; returns the log.

  Raises:
    AssertionError: a worker failed (not killed by us), fewer than `kills`
      kills landed, or the whole thing took longer than `timeout`.
  """
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  units = steps or UNITS[kind]
  max_delay = MAX_DELAY[kind] if max_delay is None else max_delay
  plan = kill_plan(kind, kills, seed, max_delay, units)
  log = KillLog(kind, plan)
  t_end = time.monotonic() + timeout
  todo = list(plan)
  while not (workdir / DONE).exists():
    assert time.monotonic() < t_end, f"{kind}: no end after {timeout} s"
    after, delay = todo.pop(0) if todo else (None, None)
    t0 = time.monotonic()
    start_units = progress(kind, workdir)
    proc = launcher.start(kind, workdir, steps)
    fire_at = None
    while proc.poll() is None:
      if time.monotonic() > t_end:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        raise AssertionError(f"{kind}: worker hung; log:\n"
                             f"{_log_tail(workdir)}")
      if after is not None and fire_at is None and (
          after == 0 or progress(kind, workdir) >= after):
        fire_at = time.monotonic() + delay
      # A kill after the end (DONE written) would test nothing: let it be.
      if (fire_at is not None and time.monotonic() >= fire_at
          and not (workdir / DONE).exists()):
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        break
      time.sleep(poll)
    rc = proc.poll()
    log.processes.append(Process(after, delay, start_units,
                                 progress(kind, workdir), rc,
                                 round(time.monotonic() - t0, 2)))
    if rc not in (0, -signal.SIGKILL):
      raise AssertionError(f"{kind}: worker exited with {rc}; log:\n"
                           f"{_log_tail(workdir)}")
  if log.kills < kills:
    raise AssertionError(f"{kind}: only {log.kills} of {kills} kills landed "
                         f"(the run ended first): {log.processes}")
  return log


def run_once(kind: str, workdir: pathlib.Path, launcher: Launcher, *,
             steps: Optional[int] = None, poison: Poison = Poison(),
             timeout: float = 600.0) -> tuple[int, str]:
  """One uninterrupted worker; (its return code, the tail of its log)."""
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  proc = launcher.start(kind, workdir, steps, poison)
  try:
    rc = proc.wait(timeout)
  except subprocess.TimeoutExpired:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    raise AssertionError(f"{kind}: no end after {timeout} s") from None
  return rc, _log_tail(workdir)


def run_to_end(kind: str, workdir: pathlib.Path, launcher: Launcher, *,
               steps: Optional[int] = None, poison: Poison = Poison(),
               timeout: float = 600.0) -> float:
  """One uninterrupted run that must finish; returns its wall time."""
  t0 = time.monotonic()
  rc, log = run_once(kind, workdir, launcher, steps=steps, poison=poison,
                     timeout=timeout)
  if rc != 0 or not (pathlib.Path(workdir) / DONE).exists():
    raise AssertionError(f"{kind}: worker exited with {rc}; log:\n{log}")
  return time.monotonic() - t0


# --- Comparing two finished runs ---------------------------------------------

_TIMING_KEYS = ("time", "train/steps_per_sec", "time/rollout_s",
                "time/step_s", "eval/seconds")


def _jsonl(path: pathlib.Path) -> list[dict]:
  if not path.exists():
    return []
  return [{k: v for k, v in json.loads(l).items() if k not in _TIMING_KEYS}
          for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]


def _harvest_snapshot(run: pathlib.Path):
  # pylint: disable=g-import-not-at-top
  from auditdm_jax.discover import dataset as dataset_lib
  from auditdm_jax.discover import harvest as harvest_lib
  # pylint: enable=g-import-not-at-top
  ds = dataset_lib.read_failures(run, decode_images=False)
  examples = [ds[i] for i in range(len(ds))]
  summary = json.loads((run / "summary.json").read_text())
  for a in summary["auditors"].values():
    a.pop("seconds")
  return examples, harvest_lib.read_asked(run), summary


def compare(kind: str, ref: pathlib.Path, got: pathlib.Path) -> dict:
  """Asserts that two finished runs left the same results; returns counts.

  SFT / GRPO: bitwise equal params and optimiser state, the same metric
  lines (every value but wall times) and, for GRPO, the same rollouts.jsonl.
  Harvest: the same dataset examples, rollout log and summary counts, and
  no example id twice.
  """
  # pylint: disable-next=g-import-not-at-top
  import numpy as np
  ref, got = pathlib.Path(ref), pathlib.Path(got)
  if kind == "harvest":
    a, b = _harvest_snapshot(ref / RUN), _harvest_snapshot(got / RUN)
    ids = [ex["id"] for ex in b[0]]
    assert len(ids) == len(set(ids)), "an example id appears twice"
    assert len(a[0]) == len(b[0]), (len(a[0]), len(b[0]))
    for x, y in zip(a[0], b[0]):
      assert x == y, (x["id"], y["id"])
    assert a[1] == b[1], "the rollout logs (asked.jsonl) differ"
    assert a[2] == b[2], (a[2], b[2])
    return {"examples": len(b[0]), "asked": len(b[1])}
  with np.load(ref / RESULT) as fa, np.load(got / RESULT) as fb:
    assert sorted(fa.files) == sorted(fb.files)
    for k in fa.files:
      x, y = fa[k], fb[k]
      assert x.dtype == y.dtype and x.shape == y.shape, k
      # Bitwise: compare the bytes, so -0.0 != 0.0 and NaNs are compared.
      assert x.tobytes() == y.tobytes(), f"{kind}: {k} differs"
    n = len(fa.files)
  ma, mb = _jsonl(ref / RUN / "metrics.jsonl"), _jsonl(got / RUN /
                                                       "metrics.jsonl")
  assert [m["step"] for m in ma] == [m["step"] for m in mb], (
      [m["step"] for m in ma], [m["step"] for m in mb])
  assert ma == mb, "metric values differ"
  out = {"arrays": n, "metric_lines": len(mb)}
  if kind == "grpo":
    ra, rb = _jsonl(ref / RUN / "rollouts.jsonl"), _jsonl(
        got / RUN / "rollouts.jsonl")
    assert ra == rb, "rollouts.jsonl differs"
    out["rollouts"] = len(rb)
  return out


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description="One preemptible tiny run, or "
                              "(kind 'zygote') the fork server.")
  p.add_argument("kind", choices=KINDS + ("zygote",))
  p.add_argument("workdir")
  p.add_argument("--cache_dir", required=True)
  p.add_argument("--steps", type=int, default=None)
  p.add_argument("--poison", type=int, action="append", default=[],
                 help="batch index whose step goes NaN (repeatable)")
  p.add_argument("--poison_every", action="store_true",
                 help="every batch from the first --poison on goes NaN")
  args = p.parse_args(argv)
  if args.kind == "zygote":
    zygote(args.cache_dir)
  else:
    work(args.kind, pathlib.Path(args.workdir), args.cache_dir, args.steps,
         Poison(tuple(args.poison), args.poison_every))


if __name__ == "__main__":
  main()

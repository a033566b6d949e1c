"""Multi-host start-up (`jax.distributed.initialize`) and process-0 helpers.

  from auditdm_jax.sharding import distributed
  distributed.initialize()            # first thing, before any jax call
  mesh = mesh_lib.make_mesh(...)      # now over every process's devices
  if distributed.is_primary(): write_report(...)

`initialize` takes its settings from its arguments, else from the
environment, else from jax's own cluster auto-detection; with none of them
(or one process) it does nothing, so the same entry point serves a laptop
and a pod:

  AUDITDM_COORDINATOR        host:port of process 0's coordinator service
                             (jax's own JAX_COORDINATOR_ADDRESS also works)
  AUDITDM_NUM_PROCESSES      number of processes
  AUDITDM_PROCESS_ID         this process's id, 0 .. N-1
  AUDITDM_LOCAL_DEVICE_IDS   optional "0,1,..": the devices this process uses
                             (GPUs; jax's JAX_LOCAL_DEVICE_IDS also works)
  AUDITDM_CLUSTER_DETECTION  optional jax cluster_detection_method: 'deactivate'
                             turns auto-detection off, a name such as
                             'mpi4py' forces that method

Auto-detection is jax's (`jax._src.clusters`): Cloud TPU pods on GCE
(metadata server) and GKE (TPU_WORKER_HOSTNAMES / TPU_PROCESS_ADDRESSES),
Slurm (SLURM_* variables), Open MPI (OMPI_MCA_orte_hnp_uri) and Kubernetes
(with the `kubernetes` package); `mpi4py` only when named. A detected
environment with a single process (a one-host TPU VM) is left alone.

Launching by hand (two hosts, or two processes on one machine):

  AUDITDM_COORDINATOR=10.0.0.1:1234 AUDITDM_NUM_PROCESSES=2 \\
  AUDITDM_PROCESS_ID=0 python -m auditdm_jax.main --config=... --workdir=...
  # the same with AUDITDM_PROCESS_ID=1 on the other host; or the flags
  # --coordinator_address / --num_processes / --process_id of main.py.

CPU: cross-process collectives need a CPU collectives implementation. jax
0.10's default `jax_cpu_collectives_implementation` is already "gloo" (TCP,
bootstrapped through the distributed client); older jax defaulted to none,
so `initialize` sets "gloo" when the option is unset. Local multi-process
tests: `XLA_FLAGS=--xla_force_host_platform_device_count=4` per process and
a free localhost port as the coordinator (tests/test_multihost.py).

Every process must run the same program over the same global arrays:
anything that decides control flow (stop early, skip a step) must be agreed
on by all processes, e.g. by `agree` below, or the collectives deadlock.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional, TypeVar

import jax
import numpy as np

ENV_COORDINATOR = "AUDITDM_COORDINATOR"
ENV_NUM_PROCESSES = "AUDITDM_NUM_PROCESSES"
ENV_PROCESS_ID = "AUDITDM_PROCESS_ID"
ENV_LOCAL_DEVICE_IDS = "AUDITDM_LOCAL_DEVICE_IDS"
ENV_CLUSTER_DETECTION = "AUDITDM_CLUSTER_DETECTION"
# jax's own names, read as fallbacks (jax reads them itself as well).
_JAX_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
_JAX_LOCAL_DEVICE_IDS = "JAX_LOCAL_DEVICE_IDS"

DEFAULT_CPU_COLLECTIVES = "gloo"

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Settings:
  """What `initialize` passes to `jax.distributed.initialize` (None: unset)."""
  coordinator_address: Optional[str] = None
  num_processes: Optional[int] = None
  process_id: Optional[int] = None
  local_device_ids: Optional[tuple[int, ...]] = None
  cluster_detection_method: Optional[str] = None

  @property
  def explicit(self) -> bool:
    """Whether any of address / count / id was given (flags or env)."""
    return any(v is not None for v in (self.coordinator_address,
                                       self.num_processes, self.process_id))


def _int_env(env: Mapping[str, str], name: str) -> Optional[int]:
  raw = env.get(name, "").strip()
  if not raw:
    return None
  try:
    return int(raw)
  except ValueError:
    raise ValueError(f"${name} must be an integer, got {raw!r}") from None


def _ids(value) -> Optional[tuple[int, ...]]:
  if value is None or value == "":
    return None
  if isinstance(value, str):
    return tuple(int(x) for x in value.split(",") if x.strip())
  if isinstance(value, (int, np.integer)):
    return (int(value),)
  return tuple(int(x) for x in value)


def resolve(coordinator_address: Optional[str] = None,
            num_processes: Optional[int] = None,
            process_id: Optional[int] = None,
            local_device_ids: Any = None,
            cluster_detection_method: Optional[str] = None,
            environ: Optional[Mapping[str, str]] = None) -> Settings:
  """Arguments first, then the environment (module docstring). Pure.

  Raises:
    ValueError: a malformed value, or a process id outside [0, N).
  """
  env = os.environ if environ is None else environ
  s = Settings(
      coordinator_address=(coordinator_address
                           or env.get(ENV_COORDINATOR, "").strip()
                           or env.get(_JAX_COORDINATOR, "").strip() or None),
      num_processes=(num_processes if num_processes is not None
                     else _int_env(env, ENV_NUM_PROCESSES)),
      process_id=(process_id if process_id is not None
                  else _int_env(env, ENV_PROCESS_ID)),
      local_device_ids=_ids(local_device_ids if local_device_ids is not None
                            else (env.get(ENV_LOCAL_DEVICE_IDS)
                                  or env.get(_JAX_LOCAL_DEVICE_IDS))),
      cluster_detection_method=(cluster_detection_method
                                or env.get(ENV_CLUSTER_DETECTION, "").strip()
                                or None))
  if s.num_processes is not None and s.num_processes < 1:
    raise ValueError(f"num_processes must be >= 1, got {s.num_processes}")
  if s.process_id is not None and (
      s.process_id < 0 or (s.num_processes is not None
                           and s.process_id >= s.num_processes)):
    raise ValueError(f"process_id must be in [0, num_processes), got "
                     f"{s.process_id} of {s.num_processes}")
  return s


def _detected_process_count(method: Optional[str]) -> Optional[int]:
  """Processes of the cluster jax would auto-detect; None if none is found.

  Uses jax's private cluster registry (the same classes
  `jax.distributed.initialize()` consults); if that moves, only an
  explicitly named `method` is honoured.
  """
  if method == "deactivate":
    return None
  try:
    # pylint: disable-next=g-import-not-at-top
    from jax._src import clusters
    types = list(clusters.ClusterEnv._cluster_types)  # pylint: disable=protected-access
  except (ImportError, AttributeError):
    return 2 if method else None   # "some": let jax decide
  if method:
    env = next((t for t in types if t.name == method), None)
    if env is None:
      raise ValueError(f"unknown cluster_detection_method {method!r}; jax "
                       f"knows {sorted(t.name for t in types)}")
  else:
    env = next((t for t in types
                if not t.opt_in_only_method and t.is_env_present()), None)
  if env is None or not env.is_env_present():
    return None
  try:
    return int(env.get_process_count())
  except Exception:  # pylint: disable=broad-except
    return 2  # present but the count is unknown here: let jax decide


def _set_cpu_collectives(impl: Optional[str]) -> None:
  """Sets jax_cpu_collectives_implementation to `impl`, or to gloo if unset."""
  current = getattr(jax.config, "jax_cpu_collectives_implementation", None)
  want = impl or current or DEFAULT_CPU_COLLECTIVES
  if want != current:
    jax.config.update("jax_cpu_collectives_implementation", want)


def initialize(coordinator_address: Optional[str] = None,
               num_processes: Optional[int] = None,
               process_id: Optional[int] = None,
               local_device_ids: Any = None, *,
               cluster_detection_method: Optional[str] = None,
               cpu_collectives: Optional[str] = None,
               initialization_timeout: int = 300) -> bool:
  """Starts jax's distributed runtime when this is a multi-process run.

  Must run before anything initialises a jax backend (jax.devices(), any
  array). Idempotent: a second call (or a call after someone else's
  `jax.distributed.initialize`) returns True without doing anything.

  Args:
    coordinator_address: "host:port" of process 0 (default:
      $AUDITDM_COORDINATOR, then $JAX_COORDINATOR_ADDRESS).
    num_processes: default $AUDITDM_NUM_PROCESSES.
    process_id: default $AUDITDM_PROCESS_ID.
    local_device_ids: ints or "0,1" (default $AUDITDM_LOCAL_DEVICE_IDS).
    cluster_detection_method: jax's: None = auto-detect, 'deactivate' =
      never, or a method name (default $AUDITDM_CLUSTER_DETECTION).
    cpu_collectives: "gloo" or "mpi" for CPU backends; None keeps jax's
      setting (gloo in jax 0.10), or sets gloo where jax has none.
    initialization_timeout: seconds to wait for every process to connect.
  Returns:
    True if the distributed runtime is running (several processes), False
    for a single-process run (nothing was done).
  Raises:
    ValueError: settings given but incomplete / malformed.
    RuntimeError: a jax backend was initialised before this call.
  """
  if jax.distributed.is_initialized():
    return True
  s = resolve(coordinator_address, num_processes, process_id,
              local_device_ids, cluster_detection_method)
  if s.num_processes == 1:
    return False
  kwargs: dict[str, Any] = {}
  if s.explicit:
    missing = [name for name, v in (
        ("coordinator_address", s.coordinator_address),
        ("num_processes", s.num_processes), ("process_id", s.process_id))
               if v is None]
    if missing and s.cluster_detection_method in (None, "deactivate") and (
        _detected_process_count(s.cluster_detection_method) is None):
      raise ValueError(
          f"multi-process settings are incomplete: {', '.join(missing)} "
          f"missing (flags --coordinator_address / --num_processes / "
          f"--process_id or ${ENV_COORDINATOR} / ${ENV_NUM_PROCESSES} / "
          f"${ENV_PROCESS_ID}), and no cluster was auto-detected")
    kwargs = dict(coordinator_address=s.coordinator_address,
                  num_processes=s.num_processes, process_id=s.process_id)
  else:
    if s.cluster_detection_method == "deactivate":
      return False
    count = _detected_process_count(s.cluster_detection_method)
    if count is None or count == 1:
      return False
  if s.local_device_ids is not None:
    kwargs["local_device_ids"] = list(s.local_device_ids)
  if s.cluster_detection_method is not None:
    kwargs["cluster_detection_method"] = s.cluster_detection_method
  _set_cpu_collectives(cpu_collectives)
  # pylint: disable-next=g-import-not-at-top
  from jax._src import xla_bridge
  if xla_bridge.backends_are_initialized():
    raise RuntimeError(
        "distributed.initialize() must run before anything initialises a "
        "jax backend (jax.devices(), jnp arrays, jit calls, ...): call it "
        "first thing in the program")
  jax.distributed.initialize(initialization_timeout=initialization_timeout,
                             **kwargs)
  logging.info("jax.distributed: process %d of %d (%d local devices, %d in "
               "all)", jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())
  return True


def shutdown() -> None:
  """Stops the distributed runtime if it runs (optional at exit)."""
  if jax.distributed.is_initialized():
    jax.distributed.shutdown()


def is_primary() -> bool:
  """True on process 0 (the one that writes reports, logs, summaries)."""
  return jax.process_index() == 0


def primary_only(fn: Callable[..., T]) -> Callable[..., Optional[T]]:
  """Decorator: `fn` runs on process 0 only; elsewhere the call returns None.

  For side effects that must happen once (a report file, a JSON summary, a
  print). Not for anything collective: an Orbax save, a jitted call on
  global arrays or `jax.device_get` of a sharded array must run on every
  process.
  """
  @functools.wraps(fn)
  def wrapper(*args, **kwargs):
    return fn(*args, **kwargs) if is_primary() else None
  return wrapper


def quiet_non_primary(level: int = logging.WARNING) -> None:
  """Raises the log level of processes other than 0 (absl and Python
  logging) to `level`, so N processes do not print N copies of every INFO
  line. Process 0 is untouched."""
  if is_primary():
    return
  logging.getLogger().setLevel(level)
  try:
    # pylint: disable-next=g-import-not-at-top
    from absl import logging as absl_logging
    absl_logging.set_verbosity(
        {logging.DEBUG: absl_logging.DEBUG, logging.INFO: absl_logging.INFO,
         logging.WARNING: absl_logging.WARNING,
         logging.ERROR: absl_logging.ERROR}.get(level, absl_logging.WARNING))
  except ImportError:
    pass


def barrier(name: str, timeout_s: float = 600.0) -> None:
  """Blocks until every process reaches `barrier(name)`; no-op alone.

  E.g. after process 0 wrote a file that the others then read. Uses the
  coordination service's barrier (no device collective, so it also works
  while processes are far apart, e.g. one still compiling), else
  `multihost_utils.sync_global_devices`. Names must be unique per use.
  """
  if jax.process_count() == 1:
    return
  # pylint: disable-next=g-import-not-at-top
  from jax._src import distributed as jax_distributed
  client = getattr(jax_distributed.global_state, "client", None)
  if client is not None and hasattr(client, "wait_at_barrier"):
    client.wait_at_barrier(name, int(timeout_s * 1000))
    return
  # pylint: disable-next=g-import-not-at-top
  from jax.experimental import multihost_utils
  multihost_utils.sync_global_devices(name)


def agree(value: T) -> T:
  """Process 0's `value` (a bool / number / numpy pytree) on every process.

  For host-side decisions that steer control flow, such as a wall-time
  budget (`time.perf_counter() - t0 > budget` differs across hosts): if one
  process stops and another runs the next step, both hang in collectives.
  No-op with one process.
  """
  if jax.process_count() == 1:
    return value
  # pylint: disable-next=g-import-not-at-top
  from jax.experimental import multihost_utils
  out = multihost_utils.broadcast_one_to_all(
      jax.tree.map(np.asarray, value))
  return jax.tree.map(lambda o, v: type(v)(o) if isinstance(
      v, (bool, int, float)) else o, out, value)


def process_rows(sharding: jax.sharding.Sharding,
                 global_shape: Sequence[int]) -> np.ndarray:
  """Indices of the leading-axis rows this process's devices hold.

  A batch laid out with `sharding` (e.g. split over ('data', 'fsdp')) is
  built by `jax.make_array_from_process_local_data(sharding, local)` from
  `local = global_batch[process_rows(sharding, global_batch.shape)]` on
  every process: the rows come back in the global array in their original
  places whatever the device order of the mesh.
  """
  rows = set()
  n = int(global_shape[0])
  for index in sharding.addressable_devices_indices_map(
      tuple(global_shape)).values():
    rows.update(range(n)[index[0]] if index else range(n))
  return np.asarray(sorted(rows), np.int64)

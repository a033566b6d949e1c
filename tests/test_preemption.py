"""Preemption: SIGKILLed and restarted runs end exactly as uninterrupted ones.

The SFT trainer, the GRPO trainer and the harvester each run as
subprocesses (tests/preemption_worker.py: tiny configs, a checkpoint after
every step or unit) twice: once uninterrupted, once killed with SIGKILL at
5 seeded points (after the k-th checkpoint / unit appears plus a random
delay, or during start-up) and restarted until done. Then:

  SFT, GRPO   final params and optimiser state bitwise equal; the same
              metric lines (steps and values); GRPO: the same rollouts
  harvest     the same dataset examples (none lost, none twice), rollout
              log and counts

Two kinds run at a time (threads driving subprocesses: GRPO, the longest,
beside SFT then the harvest). Workers are forked from a zygote that
imported everything once, and compiled programs come from a JAX persistent
compilation cache per kind (shared with test_checkpoint_recovery.py in one
session), warmed by the uninterrupted run, so a restart costs the tracing of
the steps, not imports or compiles. Measured on 2 cores shared with a
training run: 95-110 s with the cache warmed by test_checkpoint_recovery.py,
120-155 s from a cold cache (load average 3.5-9.6 during those runs).
`python scripts/preemption.py` runs the same with more kills and seeds.
"""

import concurrent.futures
import time

import pytest

import preemption_worker as worker

KILLS, SEED = 5, 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """{kind: (reference seconds, KillLog, seconds) or the exception}."""
  root = tmp_path_factory.mktemp("preemption")
  # Shared with test_checkpoint_recovery.py in one session.
  cache = tmp_path_factory.getbasetemp() / "preemption_jax_cache"

  def one(kind):
    t0 = time.monotonic()
    with worker.Launcher(cache) as launcher:
      ref = worker.run_to_end(kind, root / kind / "ref", launcher)
      log = worker.run_with_kills(kind, root / kind / "killed", launcher,
                                  kills=KILLS, seed=SEED)
    return ref, log, time.monotonic() - t0

  # Two at a time for two cores: GRPO (the longest) beside SFT + harvest.
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    futures = {k: pool.submit(one, k) for k in ("grpo", "sft", "harvest")}
    out = {}
    for kind, f in futures.items():
      try:
        out[kind] = f.result()
      except Exception as e:  # pylint: disable=broad-except
        out[kind] = e
  return root, out


def test_kill_plan_is_seeded_and_spread():
  for kind in worker.KINDS:
    plan = worker.kill_plan(kind, KILLS, SEED, worker.MAX_DELAY[kind])
    assert plan == worker.kill_plan(kind, KILLS, SEED,
                                    worker.MAX_DELAY[kind])
    assert plan != worker.kill_plan(kind, KILLS, SEED + 1,
                                    worker.MAX_DELAY[kind])
    after = [a for a, _ in plan]
    assert len(plan) == KILLS and len(set(after)) == KILLS, plan
    assert after == sorted(after) and max(after) <= worker.UNITS[kind] - 2
    assert all(0 <= d < worker.MAX_DELAY[kind] for _, d in plan)


@pytest.mark.parametrize("kind", worker.KINDS)
def test_killed_and_restarted_equals_uninterrupted(runs, kind):
  root, out = runs
  result = out[kind]
  if isinstance(result, BaseException):
    raise result
  _, log, _ = result
  assert log.kills >= KILLS, log
  # Kills landed inside the work too, not only during start-up.
  assert any(p.killed and p.units_after > p.units_before
             for p in log.processes), log
  assert log.processes[-1].returncode == 0
  counts = worker.compare(kind, root / kind / "ref", root / kind / "killed")
  if kind == "harvest":
    assert counts["examples"] > 0 and counts["asked"] == 2 * 12 * 2
  else:
    assert counts["metric_lines"] >= worker.STEPS[kind]

"""The GRPO loop: it learns in the rewarded direction, logs the monitors, and
a run stopped and resumed ends bitwise where an uninterrupted one does.

One tiny world auditor (random numpy params), the real sampler, world
backend and judge; the target / references are rule-based so that rewards
vary within groups (otherwise every advantage is 0 and nothing moves).
Every test shares one config, hence one compiled sampler, scorer and step.
"""

import json

import jax
import numpy as np
import pytest

from auditdm_jax.audit import prompts as audit_prompts
from auditdm_jax.audit import rollout as rollout_lib
from auditdm_jax.audit.sources import WorldSources
from auditdm_jax.data.world_tokenizer import world_tokenizer
from auditdm_jax.imaging.world_backend import WorldBackend
from auditdm_jax.models import arch as arch_lib
from auditdm_jax.models.vlm import Model
from auditdm_jax.rl import loop as loop_lib
from auditdm_jax.rl.config import GrpoConfig
from auditdm_jax.train.config import TrainConfig
from auditdm_jax.world import prompts as world_prompts

G, S, C = 2, 2, 6
TCFG = TrainConfig(arch="gemma3_world_s", lr=3e-3, schedule="constant",
                   batch_size=G * S, total_steps=4, checkpoint_every=2,
                   keep_checkpoints=3, async_checkpointing=False,
                   progress=False, seed=0)
GCFG = GrpoConfig(group_size=G, kl_beta=0.04, max_new_tokens=C,
                  logits_chunk=8)

# Any non-empty text is a "question": the random auditor writes garbage, and
# the loop (not the parser) is under test here.
ANY = audit_prompts.register_prompt_set(audit_prompts.PromptSet(
    name="test_any_text", prompts=dict(world_prompts.PROMPTS),
    max_chars={k: 1000 for k in audit_prompts.KINDS},
    require_question_mark=False), overwrite=True)


class RuleVqa:

  def __init__(self, name, rule):
    self.name, self.rule = name, rule

  def answer(self, questions, images):
    return [self.rule(q) for q in questions]


def _rollout():
  model = Model(arch_lib.get(TCFG.arch))
  auditor = rollout_lib.Auditor(model=model, tokenizer=world_tokenizer(),
                                prompt_set=ANY)
  refs = [RuleVqa(f"r{i}", lambda q: "yes") for i in range(2)]
  # The target fails on questions with an even number of characters.
  target = RuleVqa("t", lambda q: "no" if len(q) % 2 == 0 else "yes")
  config = rollout_lib.RolloutConfig(group_size=G, max_new_tokens=C,
                                     mode_weights={"question": 1.0},
                                     prompt_len=48)
  return rollout_lib.Rollout(auditor, target, refs, WorldBackend(), config)


@pytest.fixture(scope="module")
def params0():
  rng = np.random.default_rng(0)
  return jax.tree.map(
      lambda a: (0.05 * rng.standard_normal(a.shape)).astype(np.float32),
      Model(arch_lib.get(TCFG.arch)).abstract_params())


@pytest.fixture(scope="module")
def sources():
  return WorldSources(6, seed=1)


def _train(workdir, params0, sources, **kw):
  return loop_lib.train(TCFG, GCFG, _rollout(), sources, workdir,
                        sources_per_step=S, params=params0, **kw)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, params0, sources):
  workdir = tmp_path_factory.mktemp("grpo_full")
  state = _train(workdir, params0, sources)
  return workdir, jax.device_get(state.params)


def _lines(path):
  return [json.loads(l) for l in path.read_text().splitlines()]


def test_runs_to_the_end_with_monitors(uninterrupted):
  workdir, _ = uninterrupted
  metrics = _lines(workdir / "metrics.jsonl")
  assert [m["step"] for m in metrics] == [1, 2, 3, 4]
  for key in ("rollout/reward_mean", "rollout/zero_variance_groups",
              "rollout/validity", "rollout/reference_agreement",
              "rollout/distinct_questions", "rollout/mode/question/n",
              "train/loss", "train/kl", "train/grad_norm"):
    assert all(key in m for m in metrics), key
  assert metrics[0]["train/kl"] == pytest.approx(0.0, abs=1e-6)
  pairs = loop_lib.read_rollouts(workdir)
  assert len(pairs) == 4 * G * S
  assert {p["step"] for p in pairs} == {1, 2, 3, 4}
  assert len(loop_lib.reward_curve(workdir)) == 4
  # Full fine-tuning with KL keeps the initial policy as the reference.
  assert (workdir / "reference").is_dir()
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["finished"] and summary["step"] == 4


def test_params_move_when_rewards_vary(uninterrupted, params0):
  workdir, params = uninterrupted
  rewards = [p["reward"] for p in loop_lib.read_rollouts(workdir)]
  assert 0 < np.mean(rewards) < 1, rewards
  changed = [not np.array_equal(a, b) for a, b in
             zip(jax.tree.leaves(params), jax.tree.leaves(params0))]
  assert any(changed)


def test_resume_equals_uninterrupted(tmp_path, uninterrupted, params0,
                                     sources):
  """Stop after 1 step, resume (a checkpoint at step 1), stop again after
  step 3 with a crash-like extra line, resume to the end: the same params,
  metrics steps and pairs as the uninterrupted run."""
  full_dir, full_params = uninterrupted
  _train(tmp_path, params0, sources, num_steps=1)
  _train(tmp_path, params0, sources, num_steps=2)          # -> step 3
  # A killed run may leave lines past its last checkpoint (here: a fake
  # step-4 line and a torn one); the resume drops them.
  with open(tmp_path / "rollouts.jsonl", "a") as f:
    f.write(json.dumps({"step": 4, "fake": True}) + "\n{\"step\": 4, \"to")
  state = _train(tmp_path, params0, sources)
  for a, b in zip(jax.tree.leaves(jax.device_get(state.params)),
                  jax.tree.leaves(full_params)):
    np.testing.assert_array_equal(a, b)
  strip = lambda recs: [{k: v for k, v in r.items() if k != "time"}
                        for r in recs]
  assert strip(_lines(tmp_path / "rollouts.jsonl")) == strip(
      _lines(full_dir / "rollouts.jsonl"))
  got = _lines(tmp_path / "metrics.jsonl")
  want = _lines(full_dir / "metrics.jsonl")
  assert [m["step"] for m in got] == [m["step"] for m in want]
  for g, w in zip(got, want):
    assert g["rollout/reward_mean"] == w["rollout/reward_mean"]
    assert g["train/loss"] == w["train/loss"]


def test_config_mismatches_are_refused(tmp_path, params0, sources):
  with pytest.raises(ValueError, match="batch_size"):
    loop_lib.train(TCFG.replace(batch_size=8), GCFG, _rollout(), sources,
                   tmp_path, sources_per_step=S, params=params0)
  with pytest.raises(ValueError, match="group_size"):
    loop_lib.train(TCFG, GCFG.replace(group_size=4), _rollout(), sources,
                   tmp_path, sources_per_step=S, params=params0)

"""The rollout: pairing modes, image requests, answers, rewards, GRPO batch.

The auditor's sampling is scripted (`ScriptedRollout._sample`), and the
target / references are rule-based fakes, so every pair's mode, question,
picture, answers and reward can be checked exactly; one test runs the real
sampler on a random tiny auditor for the shapes of the GRPO batch.
"""

import dataclasses

import jax
import numpy as np
import pytest

from auditdm_jax.audit import judge as judge_lib
from auditdm_jax.audit import rollout as rollout_lib
from auditdm_jax.audit import world_truth
from auditdm_jax.audit.sources import WorldSources
from auditdm_jax.data.world_tokenizer import world_tokenizer
from auditdm_jax.imaging.world_backend import WorldBackend
from auditdm_jax.models import arch as arch_lib
from auditdm_jax.models.vlm import Model
from auditdm_jax.sampling.sampler import SampleOutput
from auditdm_jax.world import scene as scene_lib

COUNT_Q = "how many objects can you see?"
ADD_EDIT = "draw a large blue diamond"
CAPTION = "a red circle and a blue square"


class FakeVqa:
  """Answers by a rule of the question; records what it was asked."""

  def __init__(self, name, rule):
    self.name, self.rule, self.asked = name, rule, []

  def answer(self, questions, images):
    assert len(questions) == len(images)
    self.asked.extend(questions)
    return [self.rule(q) for q in questions]


class ScriptedRollout(rollout_lib.Rollout):
  """The auditor writes `script[kind][j % len]` for its j-th sample."""

  def __init__(self, *args, script, **kw):
    super().__init__(*args, **kw)
    self.script = script
    self.sample_calls = []

  def _sample(self, params, texts, pixels, n, temperature, key):
    tok = self.auditor.tokenizer
    kinds = [self.auditor.prompt_set.kind_of(t) for t in texts]
    self.sample_calls.append((kinds, n))
    c = self.config.max_new_tokens
    rows, out_texts, lengths = [], [], []
    for i, kind in enumerate(kinds):
      for j in range(n):
        text = self.script[kind][(i * n + j) % len(self.script[kind])]
        ids = tok.encode(text)[:c - 1] + [tok.eos_id]
        rows.append(ids + [tok.pad_id] * (c - len(ids)))
        out_texts.append(text)
        lengths.append(len(ids))
    tokens = np.asarray(rows, np.int32)
    out = SampleOutput(tokens=tokens, logprobs=np.zeros(tokens.shape,
                                                         np.float32),
                       lengths=np.asarray(lengths, np.int32),
                       done=np.ones(len(rows), bool))
    return out, out_texts


@pytest.fixture(scope="module")
def tok():
  return world_tokenizer()


@pytest.fixture(scope="module")
def auditor(tok):
  return rollout_lib.Auditor(model=Model(arch_lib.get("gemma3_world_s")),
                             tokenizer=tok, prompt_set="world")


@pytest.fixture(scope="module")
def sources():
  return WorldSources(16, seed=3)


def _models():
  # References always say "2"; the target says "3" to counting questions
  # and "2" otherwise: counting pairs are rewarded, others are not.
  refs = [FakeVqa(f"ref{i}", lambda q: "2") for i in range(3)]
  target = FakeVqa("target", lambda q: "3" if "how many" in q else "2")
  return target, refs


def _rollout(auditor, mode_weights, kinds=None, script=None, **cfg):
  target, refs = _models()
  config = rollout_lib.RolloutConfig(
      group_size=4, mode_weights=mode_weights, max_new_tokens=16,
      image_kind_weights=kinds or {"edit": 1.0, "caption": 1.0}, **cfg)
  script = script or {"question": [COUNT_Q, "are there any red circles?",
                                   "garbage words here", ""],
                      "edit": [ADD_EDIT, "remove the nothing"],
                      "caption": [CAPTION, "what"]}
  return ScriptedRollout(auditor, target, refs, WorldBackend(), config,
                         script=script)


def test_question_mode_pairs_and_rewards(auditor, sources):
  roll = _rollout(auditor, {"question": 1.0})
  out = roll(None, [sources[i] for i in range(3)], key=jax.random.key(0))
  assert len(out.pairs) == 12 and out.rewards.shape == (12,)
  for row, p in enumerate(out.pairs):
    assert p.mode == "question" and p.kind == "question"
    assert p.group == row // 4
    src = sources[p.group]
    if p.completion in ("garbage words here", ""):
      assert not p.valid and p.reward == 0.0 and p.target_answer is None
      continue
    assert p.valid, p.error
    assert p.question == p.completion
    np.testing.assert_array_equal(p.picture.pixels, src.picture.pixels)
    assert p.reference_answers == ("2", "2", "2")
    want = 1.0 if "how many" in p.question else 0.0
    assert p.reward == want
    # The oracle's truth is recorded on the source scene.
    assert p.truth == world_truth.truth(src.picture.scene, p.question).answer
  # Only valid pairs reached the models, in one batched call each.
  assert len(roll.target.asked) == sum(p.valid for p in out.pairs)
  np.testing.assert_array_equal(out.rewards,
                                [p.reward for p in out.pairs])


def test_image_mode_asks_the_sources_question_on_the_counterfactual(
    auditor, sources):
  roll = _rollout(auditor, {"image": 1.0}, kinds={"edit": 1.0})
  items = [sources[i] for i in range(2)]
  out = roll(None, items, key=jax.random.key(1))
  for p in out.pairs:
    src = items[p.group]
    assert p.mode == "image" and p.kind == "edit"
    if p.completion != ADD_EDIT:
      assert not p.valid
      continue
    assert p.valid, p.error
    assert p.question == src.question and p.instruction == ADD_EDIT
    before = scene_lib.Scene.from_json(src.picture.scene)
    after = scene_lib.Scene.from_json(p.picture.scene)
    assert len(after.objects) == len(before.objects) + 1
    assert not np.array_equal(p.picture.pixels, src.picture.pixels)
    assert p.truth == world_truth.truth(after, src.question).answer


def test_both_mode_shares_one_sampled_question_per_group(auditor, sources):
  roll = _rollout(auditor, {"both": 1.0}, kinds={"caption": 1.0},
                  script={"question": [COUNT_Q], "edit": [ADD_EDIT],
                          "caption": [CAPTION]})
  out = roll(None, [sources[0], sources[1]], key=jax.random.key(2))
  # One call for the Q* of the two groups (n=1), one for the groups (n=G).
  assert roll.sample_calls == [(["question", "question"], 1),
                               (["caption", "caption"], 4)]
  for p in out.pairs:
    assert p.valid, p.error
    assert p.question == COUNT_Q and p.instruction == CAPTION
    assert p.truth == "2"           # the generated scene has two objects
    assert p.reward == 1.0          # target says 3, references 2


def test_image_mode_needs_a_source_question(auditor, sources):
  roll = _rollout(auditor, {"image": 1.0})
  src = dataclasses.replace(sources[0], question=None)
  with pytest.raises(ValueError, match="no question of its own"):
    roll(None, [src], key=jax.random.key(0))


def test_modes_follow_the_key_and_the_weights(auditor, sources):
  roll = _rollout(auditor, {"question": 1.0, "image": 1.0, "both": 1.0})
  items = [sources[i] for i in range(12)]

  def modes(seed):
    out = roll(None, items, key=jax.random.key(seed))
    return [out.pairs[4 * g].mode for g in range(12)]

  a, b, c = modes(5), modes(5), modes(6)
  assert a == b and a != c
  assert set(a) == {"question", "image", "both"}


def test_invalid_penalty_and_metrics(auditor, sources):
  reward = judge_lib.RewardConfig(invalid_penalty=0.5)
  roll = _rollout(auditor, {"question": 1.0}, reward=reward)
  out = roll(None, [sources[0], sources[1]], key=jax.random.key(0))
  bad = [p for p in out.pairs if not p.valid]
  assert bad and all(p.reward == -0.5 for p in bad)
  m = out.metrics()
  assert m["validity"] == pytest.approx(0.5)
  assert m["mode/question/n"] == 8.0
  assert m["reference_agreement"] == 1.0
  assert m["reward_mean"] == pytest.approx(float(out.rewards.mean()))
  # Groups hold a mix of valid / invalid / rewarded: none is flat.
  assert m["zero_variance_groups"] == 0.0
  assert 0 < m["distinct_questions"] <= 1
  assert "verified_failure" in m


def test_grpo_batch_layout(auditor, sources, tok):
  roll = _rollout(auditor, {"question": 1.0}, prompt_len=48)
  out = roll(None, [sources[0], sources[1]], key=jax.random.key(0))
  b = out.grpo_batch(np.arange(8, dtype=np.float32))
  assert b["prompt_tokens"].shape == (8, 48)
  assert b["images"].shape == (8, 1, 64, 64, 3)
  assert b["completion"].shape == b["completion_mask"].shape == (8, 16)
  # Left padding: every prompt's last column is a real token.
  assert b["prompt_input_mask"][:, -1].all()
  # Rows of a group share the prompt and the image.
  np.testing.assert_array_equal(b["prompt_tokens"][0], b["prompt_tokens"][3])
  np.testing.assert_array_equal(b["images"][4], b["images"][7])
  # The mask covers the completion up to and including its EOS.
  for row, p in enumerate(out.pairs):
    n = len(tok.encode(p.completion)) + 1
    assert b["completion_mask"][row].sum() == n
    assert b["completion"][row, n - 1] == tok.eos_id
  np.testing.assert_array_equal(b["advantages"], np.arange(8))


def test_real_sampler_on_a_random_auditor(auditor, sources):
  """The unscripted path: the jitted sampler writes the completions."""
  rng = np.random.default_rng(0)
  params = jax.tree.map(
      lambda a: (0.02 * rng.standard_normal(a.shape)).astype(np.float32),
      auditor.model.abstract_params())
  target, refs = _models()
  roll = rollout_lib.Rollout(
      auditor, target, refs, WorldBackend(),
      rollout_lib.RolloutConfig(group_size=2, max_new_tokens=8,
                                mode_weights={"question": 1.0}))
  out = roll(params, [sources[0], sources[1]], key=jax.random.key(0))
  assert out.completion.shape == (4, 8)
  assert len(out.pairs) == 4
  lengths = out.completion_mask.sum(1)
  assert ((lengths >= 1) & (lengths <= 8)).all()
  # Decoded completions are what the pairs hold.
  for row, p in enumerate(out.pairs):
    n = int(lengths[row])
    assert p.completion == auditor.tokenizer.decode(out.completion[row, :n])

"""Rectification: the augmented mix, pseudo-labelled examples, the
bootstrapped rounds' stopping rule, and a real fine-tuning run on it."""

import jax
import numpy as np
import pytest

from auditdm_jax.data.world_tokenizer import world_tokenizer
from auditdm_jax.models import arch as arch_lib
from auditdm_jax.models.vlm import Model
from auditdm_jax.train import rectify as rect
from auditdm_jax.train.config import TrainConfig
from auditdm_jax.world import render
from auditdm_jax.world import scene as scene_lib


def test_augmented_source_interleaves_one_generated_per_labelled():
  src = rect.AugmentedSource(["l0", "l1", "l2"], ["g0", "g1"], 1)
  assert len(src) == 6
  assert [src[i] for i in range(6)] == ["l0", "g0", "l1", "g1", "l2", "g0"]
  two = rect.AugmentedSource(["l0", "l1"], ["g0", "g1", "g2"], 2)
  assert [two[i] for i in range(6)] == ["l0", "g0", "g1", "l1", "g2", "g0"]
  with pytest.raises(IndexError):
    src[6]
  with pytest.raises(ValueError, match="nothing was harvested"):
    rect.AugmentedSource(["l0"], [], 1)
  with pytest.raises(ValueError, match="per_labelled"):
    rect.AugmentedSource(["l0"], ["g0"], 0)


def test_failures_train_on_the_consensus():
  rec = {"id": "f1", "image": np.zeros((4, 4, 3), np.uint8),
         "question": "how many squares?", "consensus": "5",
         "target_answer": "4"}
  ex = rect.as_training_examples([rec])[0]
  assert ex["answer"] == "5" and ex["question"] == "how many squares?"
  with pytest.raises(KeyError, match="consensus"):
    rect.as_training_example({"image": 0, "question": "q"})
  with pytest.raises(ValueError, match="no consensus"):
    rect.as_training_example({**rec, "consensus": ""})


def test_bootstrap_keeps_improving_rounds_and_stops():
  metrics = {0: 0.5, 1: 0.6, 2: 0.7, 3: 0.69}
  refreshed = []
  best, rounds = rect.bootstrap(
      0, harvest=lambda t, r: ["x"] * (r + 1),
      finetune=lambda t, gen, r: t + 1, evaluate=lambda t: metrics[t],
      refresh_auditor=lambda t, r: refreshed.append((t, r)), max_rounds=5)
  assert best == 2
  assert [(r.metric_before, r.metric_after, r.kept) for r in rounds] == [
      (0.5, 0.6, True), (0.6, 0.7, True), (0.7, 0.69, False)]
  assert refreshed == [(1, 0), (2, 1)]
  # Nothing harvested ends the rounds without fine-tuning.
  best, rounds = rect.bootstrap(
      7, harvest=lambda t, r: [], finetune=None, evaluate=lambda t: 0.1,
      refresh_auditor=None)
  assert best == 7 and rounds[0].harvested == 0 and not rounds[0].kept


def test_rectify_fine_tunes_on_the_augmented_mix(tmp_path):
  """A few SFT steps on labelled + pseudo-labelled world examples move the
  target towards the pseudo-labels."""
  arch = "paligemma2_world_s"
  rng = np.random.default_rng(0)
  params = jax.tree.map(
      lambda a: (0.05 * rng.standard_normal(a.shape)).astype(np.float32),
      Model(arch_lib.get(arch)).abstract_params())
  img = render.render(scene_lib.sample_scene(0))
  labelled = [{"image": img, "question": "how many objects are there?",
               "answer": "3"}] * 4
  failures = [{"id": "f", "image": img, "question": "what colour is it?",
               "consensus": "purple"}]
  mixed = rect.AugmentedSource(labelled, rect.as_training_examples(failures))
  cfg = TrainConfig(arch=arch, lr=3e-3, schedule="constant", batch_size=4,
                    total_steps=6, max_len=40, max_target_len=4,
                    progress=False, async_checkpointing=False, log_every=1)
  state = rect.rectify(params, mixed, cfg, tmp_path, world_tokenizer())
  assert int(state.step) == 6
  import json  # pylint: disable=g-import-not-at-top
  losses = [json.loads(l)["train/loss"] for l in
            (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert losses[-1] < losses[0]

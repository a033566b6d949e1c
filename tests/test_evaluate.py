"""The checkpoint evaluator: a training run's checkpoints scored on real-
format benchmarks (POPE yes/no and MMBench multiple choice written here)."""

import base64
import csv
import io
import json

import jax
import numpy as np
import pytest
from PIL import Image

from auditdm_jax import tokenizer as tok_lib
from auditdm_jax.data import bench
from auditdm_jax.eval import evaluate
from auditdm_jax.eval import scorers
from auditdm_jax.models.vlm import Model
from auditdm_jax.train import loop as loop_lib
from auditdm_jax.train import state as state_lib
from auditdm_jax.train.config import TrainConfig

ARCH = "paligemma2_tiny"


def _png(seed):
  arr = np.random.default_rng(seed).integers(0, 255, (20, 24, 3), np.uint8)
  buf = io.BytesIO()
  Image.fromarray(arr).save(buf, format="PNG")
  return base64.b64encode(buf.getvalue()).decode()


def _tsv(path, rows):
  with open(path, "w", newline="") as f:
    w = csv.writer(f, delimiter="\t")
    w.writerow(list(rows[0]))
    for r in rows:
      w.writerow(list(r.values()))
  return str(path)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp("bench")
  pope = [{"index": str(i), "question": f"Is there a car {i}?",
           "answer": "yes" if i % 2 else "no", "category": "random",
           "image": _png(i)} for i in range(4)]
  bench.build("pope", "test", bench.make_source(
      "vlmeval_tsv", path=_tsv(d / "POPE.tsv", pope)), d / "tfds")
  mmb = [{"index": str(i), "question": "Which one?", "hint": "",
          "A": "cat", "B": "dog", "answer": "AB"[i % 2],
          "category": "c", "l2-category": "l", "image": _png(10 + i)}
         for i in range(3)]
  bench.build("mmbench_v11", "dev", bench.make_source(
      "vlmeval_tsv", path=_tsv(d / "MMB.tsv", mmb)), d / "tfds")
  return d / "tfds"


@pytest.fixture(scope="module")
def tok(tmp_path_factory, make_gemma_corpus):
  path = tmp_path_factory.mktemp("eval_tok") / "tokenizer.model"
  return tok_lib.train_test_tokenizer(make_gemma_corpus(), path,
                                      vocab_size=512, num_loc=0, num_seg=0)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tok):
  workdir = tmp_path_factory.mktemp("run")
  cfg = TrainConfig(arch=ARCH, batch_size=2, total_steps=2, max_len=32,
                    max_target_len=4, checkpoint_every=1, keep_checkpoints=3,
                    progress=False, async_checkpointing=False, log_every=1)
  rng = np.random.default_rng(0)
  params = jax.tree.map(
      lambda a: (0.05 * rng.standard_normal(a.shape)).astype(np.float32),
      Model(state_lib.make_model(cfg).cfg).abstract_params())
  img = np.zeros((32, 32, 3), np.uint8)
  source = [{"image": img, "question": "what?", "answer": "yes"}] * 4
  loop_lib.train(cfg, workdir, source, tokenizer=tok, params=params)
  return workdir


def test_prompts_by_task():
  ex = bench.BenchExample(id="1", benchmark="mmbench_v11",
                          image=base64.b64decode(_png(0)),
                          question="Which?", options=("cat", "dog"),
                          answer_letter="A", hint="Look.", group="1")
  assert evaluate.prompt_for("multiple_choice", ex) == (
      "answer en Look.\nWhich?\nA. cat\nB. dog\n"
      "Answer with the option's letter.")
  assert evaluate.prompt_for("vqa", ex) == "answer en Which?"
  assert evaluate.prompt_for("caption", ex) == "caption en"
  with pytest.raises(ValueError, match="no prompt"):
    evaluate.prompt_for("dance", ex)


def test_each_checkpoint_is_scored_once(run_dir, data_dir, tok):
  benches = [("pope", "test"), ("mmbench_v11", "dev")]
  done = evaluate.evaluate_workdir(run_dir, tok, data_dir, benches,
                                   which="each", max_new_tokens=3)
  assert sorted(done) == [1, 2]
  for step in (1, 2):
    rec = json.loads((run_dir / "eval" / f"{step}.json").read_text())
    assert set(rec["scores"]) == {"pope:test", "mmbench_v11:dev"}
  # The scores are the scorers' on the model's own predictions.
  model, params = evaluate.restore_params(run_dir, 2)
  ex = bench.load_examples(data_dir, "pope", "test")
  preds = evaluate.predict(model, params, tok, "pope", ex, max_new_tokens=3)
  assert done[2]["scores"]["pope:test"] == scorers.score_benchmark(
      "pope", preds, ex)
  # A second pass finds the files and decodes nothing.
  (run_dir / "eval" / "1.json").write_text(json.dumps({"step": 1,
                                                       "scores": "kept"}))
  again = evaluate.evaluate_workdir(run_dir, tok, data_dir, benches,
                                    which="each")
  assert again[1]["scores"] == "kept"


def test_cli_errors(tmp_path, data_dir, capsys):
  args = ["--workdir", str(tmp_path), "--data_dir", str(data_dir),
          "--tokenizer", "missing.model"]
  assert evaluate.main(args + ["--benchmark", "pope"]) == 2
  assert "NAME:SPLIT" in capsys.readouterr().err
  assert evaluate.main(args + ["--benchmark", "nope:test"]) == 2
  assert "nope" in capsys.readouterr().err
  assert evaluate.main(args + ["--benchmark", "pope:test"]) == 2
  assert "missing.model" in capsys.readouterr().err

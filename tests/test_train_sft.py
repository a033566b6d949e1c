"""Supervised fine-tuning: loss, freezing, LoRA, resume, sharding, files.

Compile time dominates on CPU, so the tests share a few jitted shapes: one
batch shape [8, 32] (+ 8 images 32x32), one full fine-tuning config whose
100-step run (`reference_run`, module scope) serves the overfit, resume,
sharding and file tests, and one config each for freezing and LoRA.
Params are drawn with numpy: `Model.init` costs ~30 s of compile here.
"""

import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from auditdm_jax import tokenizer as tok_lib
from auditdm_jax.convert import orbax_io
from auditdm_jax.train import checkpoint as checkpoint_lib
from auditdm_jax.train import data as data_lib
from auditdm_jax.train import metrics as metrics_lib
from auditdm_jax.train import state as state_lib
from auditdm_jax.train import step as step_lib
from auditdm_jax.train.config import TrainConfig
from auditdm_jax.train import loop as loop_lib
from auditdm_jax.train.loop import train

_WORDS = "red blue green cat dog car tree sky".split()
_MESH = (("data", 2), ("fsdp", 2), ("tensor", 2))

# Freezing the vision tower also halves the step's compile time (its
# backward pass is dropped), which this suite is mostly made of.
BASE = TrainConfig(
    arch="paligemma2_tiny", freeze=("img/.*",), batch_size=8,
    total_steps=100, max_len=32,
    max_target_len=8, lr=3e-3, schedule="cosine", warmup_steps=5,
    end_lr=3e-4, log_every=1, eval_every=50, checkpoint_every=50,
    keep_checkpoints=2, progress=False)


@pytest.fixture(scope="module")
def tok(tmp_path_factory, make_gemma_corpus):
  # The tiny models have a 512-token vocabulary: no loc / seg pieces.
  path = tmp_path_factory.mktemp("sft_tok") / "tokenizer.model"
  return tok_lib.train_test_tokenizer(make_gemma_corpus(), path,
                                      vocab_size=400, num_loc=0, num_seg=0)


def _examples(n: int = 8, size: int = 32, seed: int = 0) -> list[dict]:
  rng = np.random.default_rng(seed)
  return [{"image": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
           "question": f"what is {i}?",
           "answer": f"{_WORDS[i % 8]} {_WORDS[(3 * i + 1) % 8]}"}
          for i in range(n)]


@pytest.fixture(scope="module")
def examples():
  return _examples()


def _numpy_params(model, seed=0):
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda a: (0.02 * rng.standard_normal(a.shape)).astype(np.float32),
      model.abstract_params())


@pytest.fixture(scope="module")
def model():
  return state_lib.make_model(BASE)


@pytest.fixture(scope="module")
def params0(model):
  return _numpy_params(model)


@pytest.fixture(scope="module")
def batch(tok, examples):
  return data_lib.Batcher.from_config(examples, tok, BASE).batch(0)


def _host(tree):
  return jax.tree.map(np.asarray, jax.device_get(tree))


def _assert_trees_equal(a, b):
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a),
                          jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))


# --- Config and data (no compiles) -------------------------------------------

def test_config_validation():
  with pytest.raises(ValueError, match="not both"):
    TrainConfig(freeze=("img/.*",), trainable=("llm/.*",))
  with pytest.raises(ValueError, match="bad regex"):
    TrainConfig(freeze=("img/(",))
  with pytest.raises(ValueError, match="unknown architecture"):
    TrainConfig(arch="nope")
  with pytest.raises(ValueError, match="warm-up"):
    TrainConfig(total_steps=10, warmup_fraction=1.0 - 1e-9)
  with pytest.raises(ValueError, match="lora_rank"):
    TrainConfig(lora_rank=4, freeze=("img/.*",))
  with pytest.raises(ValueError, match="unknown fields"):
    TrainConfig.from_dict({"learning_rate": 1.0})
  cd = ml_collections.ConfigDict(
      {"arch": "gemma3_tiny_text", "freeze": ["llm/embedder/.*"],
       "mesh": [["data", -1]], "total_steps": 10, "warmup_fraction": 0.2})
  cfg = TrainConfig.from_dict(cd)
  assert cfg.freeze == ("llm/embedder/.*",) and cfg.num_warmup_steps == 2
  assert cfg.rules == (("llm/embedder/.*", "frozen"), (".*", "train"))
  assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
  hash(cfg)  # jitted steps are cached on configs


def test_schedule_shapes():
  cfg = BASE.replace(total_steps=20, warmup_steps=4, end_lr=1e-4)
  for kind in ("constant", "cosine", "linear"):
    sched = state_lib.make_schedule(cfg.replace(schedule=kind))
    lrs = np.array([float(sched(i)) for i in range(21)])
    np.testing.assert_allclose(lrs[:5], [0, 7.5e-4, 1.5e-3, 2.25e-3, 3e-3],
                               rtol=1e-6)
    if kind == "constant":
      np.testing.assert_allclose(lrs[4:], 3e-3, rtol=1e-6)
    else:
      assert np.all(np.diff(lrs[4:]) <= 0)
      np.testing.assert_allclose(lrs[20], 1e-4, rtol=1e-5)


def test_param_labels_first_match_and_typos(params0):
  labels = state_lib.param_labels(
      params0, (("img/.*", "frozen"), ("img/embedding/.*", "train"),
                (".*", "train")))
  flat = {jax.tree_util.keystr(p): l
          for p, l in jax.tree_util.tree_leaves_with_path(labels)}
  assert all(l == "frozen" for k, l in flat.items() if k.startswith("['img']"))
  assert any(l == "train" for l in flat.values())
  with pytest.raises(ValueError, match="match no parameter"):
    state_lib.param_labels(params0, (("vision/.*", "frozen"), (".*", "train")))
  with pytest.raises(ValueError, match="nothing to train"):
    state_lib.param_labels(params0, ((".*", "frozen"),))


def test_batcher_layout_position_and_errors(tok, examples, batch):
  assert set(batch) == {"tokens", "mask_ar", "input_mask", "loss_mask",
                        "images"}
  assert batch["tokens"].shape == (8, 32) and batch["tokens"].dtype == np.int32
  assert batch["images"].shape == (8, 1, 32, 32, 3)
  assert batch["images"].dtype == np.float32
  # PaliGemma prefix-LM: 16 image tokens, bidirectional prefix, loss on the
  # answer + eos only, right padding.
  row = 0
  n = int(batch["input_mask"][row].sum())
  assert (batch["tokens"][row, :16] == 512).all()
  assert (batch["mask_ar"][row, :16] == 0).all()
  assert batch["tokens"][row, n - 1] == tok.eos_id
  assert batch["loss_mask"][row, n - 1] == 1
  assert not batch["input_mask"][row, n:].any()
  assert (batch["loss_mask"][row] <= batch["mask_ar"][row]).all()

  b = data_lib.Batcher.from_config(examples, tok, BASE)
  seen = [next(b) for _ in range(3)]
  assert b.get_state()["index"] == 3
  c = data_lib.Batcher.from_config(examples, tok, BASE)
  c.set_state(json.loads(json.dumps(b.get_state())))
  _assert_trees_equal(next(b), next(c))
  # Each epoch (one batch of 8 here) is a permutation of the source, and
  # epochs are shuffled differently.
  orders = {s["tokens"].tobytes() for s in seen}
  assert len(orders) > 1
  for s in seen:
    assert len({r.tobytes() for r in s["tokens"]}) == 8
  with pytest.raises(ValueError, match="batch_size"):
    data_lib.Batcher.from_config(examples, tok, BASE.replace(batch_size=4)
                                 ).set_state(b.get_state())

  enc = data_lib.ExampleEncoder(tok, BASE.arch_config, max_len=32,
                                max_target_len=8)
  with pytest.raises(ValueError, match="max_len"):
    enc({"image": None, "prefix": "the cat " * 20, "suffix": "a"})
  with pytest.raises(ValueError, match="max_target_len"):
    enc({"image": None, "prefix": "a", "suffix": "the cat sat on the mat"})
  # Same-size images are not resampled: preprocessing is exact.
  ex = examples[0]
  out = enc(ex)
  want = (ex["image"].astype(np.float64) * (1 / 255)).astype(np.float32)
  np.testing.assert_array_equal(out["images"][0], (want - 0.5) / 0.5)


# --- Loss -------------------------------------------------------------------

def _naive_loss(model, params, batch):
  """Full [B, T, V] logits; logit t scored against token t + 1."""
  emb = model.embed(params, batch["tokens"], batch["input_mask"],
                    batch["mask_ar"], batch.get("images"))
  logits = model.forward(params, emb).astype(jnp.float32)[:, :-1]
  logp = jax.nn.log_softmax(logits, axis=-1)
  w = jnp.asarray(batch["loss_mask"])[:, 1:].astype(jnp.float32)
  # PaliGemma's image placeholder id lies outside the vocabulary.
  tgt = jnp.where(w > 0, jnp.asarray(batch["tokens"])[:, 1:], 0)
  nll = -jnp.take_along_axis(logp, tgt[..., None], -1)[..., 0]
  acc = (jnp.argmax(logits, -1) == tgt).astype(jnp.float32)
  return jnp.sum(nll * w) / jnp.sum(w), jnp.sum(acc * w) / jnp.sum(w)


_naive_loss_jit = jax.jit(_naive_loss, static_argnums=0)


@pytest.mark.parametrize("arch_name", ["paligemma2_tiny", "gemma3_tiny_text"])
def test_loss_equals_naive_full_logits(arch_name, tok, examples, model,
                                       params0, batch):
  # Gemma-3 runs the chunked LM head (K = 8 in chunks of 4).
  cfg = BASE.replace(arch=arch_name, max_len=40, logits_chunk=4)
  if arch_name == "paligemma2_tiny":
    cfg, m, params, b = BASE, model, params0, batch
  else:
    # Gemma-3 chat, text only: loss on the model turn, no images in batches.
    m = state_lib.make_model(cfg)
    params = _numpy_params(m, seed=1)
    text_only = [dict(ex, image=None) for ex in examples]
    b = data_lib.Batcher.from_config(text_only, tok, cfg).batch(0)
    assert "images" not in b
  loss, metrics = step_lib.compute_loss(m, params, b, cfg)
  want, want_acc = _naive_loss_jit(m, params, b)
  np.testing.assert_allclose(loss, want, rtol=0, atol=1e-5)
  np.testing.assert_allclose(metrics["accuracy"], want_acc, atol=1e-6)
  assert float(metrics["target_tokens"]) == b["loss_mask"][:, 1:].sum()
  assert float(metrics["dropped_targets"]) == 0


def test_loss_only_on_answer_tokens(model, params0, batch):
  loss0, _ = step_lib.compute_loss(model, params0, batch, BASE)
  row = 0
  n = int(batch["input_mask"][row].sum())
  # A non-answer target whose change reaches no other position: padding
  # (masked out as an input). Its logit's weight is 0, so nothing changes.
  b = dict(batch, tokens=batch["tokens"].copy())
  b["tokens"][row, n] = 7
  loss1, _ = step_lib.compute_loss(model, params0, b, BASE)
  assert float(loss1) == float(loss0)
  # Dropping the answer weights leaves only the other rows' tokens.
  b = dict(batch, loss_mask=batch["loss_mask"].copy())
  b["loss_mask"][row] = 0
  loss2, m2 = step_lib.compute_loss(model, params0, b, BASE)
  assert float(loss2) != float(loss0)
  assert m2["target_tokens"] == batch["loss_mask"][1:, 1:].sum()
  # An answer target changes the loss: the final <eos> (as an input it only
  # feeds the logit of padding, which has weight 0).
  b = dict(batch, tokens=batch["tokens"].copy())
  b["tokens"][row, n - 1] = 7
  loss3, _ = step_lib.compute_loss(model, params0, b, BASE)
  assert float(loss3) != float(loss0)


def test_target_positions_worked_row():
  loss_mask = jnp.array([[0, 0, 0, 0, 1, 1, 1, 0]])
  idx, w, dropped = step_lib.target_positions(loss_mask, 4)
  np.testing.assert_array_equal(idx[0, :3], [3, 4, 5])
  np.testing.assert_array_equal(w[0], [1, 1, 1, 0])
  assert float(dropped) == 0
  _, _, dropped = step_lib.target_positions(loss_mask, 2)
  assert float(dropped) == 1


# --- LoRA ---------------------------------------------------------------------

def test_lora_trains_only_factors(model, params0, batch):
  cfg = BASE.replace(lora_rank=4, lr=1e-2, freeze=())
  state = state_lib.create_state(model, cfg, params0)
  lora0 = _host(state.lora.factors)
  step_fn = step_lib.make_train_step(model, cfg)
  losses = []
  for _ in range(3):
    state, metrics = step_fn(state, batch)
    losses.append(float(metrics["loss"]))
  _assert_trees_equal(_host(state.params), params0)
  lora = _host(state.lora.factors)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(lora),
                          jax.tree.leaves(lora0)):
    assert not np.array_equal(a, b), jax.tree_util.keystr(path)
  assert losses[-1] < losses[0]
  # The optimiser state covers only the factors.
  n_lora = sum(x.size for x in jax.tree.leaves(state.lora))
  assert sum(x.size for x in jax.tree.leaves(state.opt_state)
             if x.ndim > 0) == 2 * n_lora


# --- The loop: overfit, freezing, resume, sharding, files ---------------------

@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, tok, examples, params0, model, batch):
  """100 uninterrupted steps on 8 examples, vision tower frozen."""
  workdir = tmp_path_factory.mktemp("sft_ref")
  calls = []

  def eval_fn(params):
    calls.append(True)
    loss, m = step_lib.compute_loss(model, params, batch, BASE)
    return {"loss": loss, "accuracy": m["accuracy"], "note": "text"}

  state = train(BASE, workdir, examples, eval_fn, tokenizer=tok,
                params=params0)
  return {"workdir": workdir, "params": _host(state.params),
          "opt_state": _host(state.opt_state), "eval_calls": len(calls)}


def _train_losses(workdir):
  return {r["step"]: r["train/loss"]
          for r in metrics_lib.read_jsonl(pathlib.Path(workdir) /
                                          "metrics.jsonl")
          if "train/loss" in r}


def test_overfits_small_dataset(reference_run):
  losses = _train_losses(reference_run["workdir"])
  assert sorted(losses) == list(range(1, 101))
  assert losses[1] > 5.0, losses[1]
  assert losses[100] < 0.05 * losses[1], (losses[1], losses[100])
  summary = json.loads(
      (reference_run["workdir"] / "summary.json").read_text())
  assert summary["step"] == 100 and summary["finished"]
  assert summary["eval"]["accuracy"] > 0.95
  assert 0 < summary["params"]["trainable"] < summary["params"]["total"]


def test_frozen_params_bitwise_unchanged(reference_run, params0):
  final = reference_run["params"]
  _assert_trees_equal(final["img"], params0["img"])
  for path, x in jax.tree_util.tree_leaves_with_path(final["llm"]):
    y = params0["llm"]
    for k in path:
      y = y[k.key]
    assert not np.array_equal(x, y), jax.tree_util.keystr(path)
  # No Adam moments are kept for frozen params.
  n_llm = sum(x.size for x in jax.tree.leaves(final["llm"]))
  moments = sum(x.size for x in jax.tree.leaves(reference_run["opt_state"])
                if x.ndim > 0)
  assert moments == 2 * n_llm


def test_resume_is_bitwise(reference_run, tmp_path, tok, examples, params0):
  workdir = tmp_path / "resumed"
  state = train(BASE, workdir, examples, tokenizer=tok, params=params0,
                num_steps=37)
  assert int(state.step) == 37
  del state
  with checkpoint_lib.Checkpointer(workdir / "checkpoints") as ckpt:
    assert ckpt.latest_step() == 37
    assert ckpt.read_json("data")["index"] == 37
  # Everything rebuilt from the workdir; params=None: nothing else given.
  state = train(BASE, workdir, examples, tokenizer=tok)
  assert int(state.step) == 100
  _assert_trees_equal(_host(state.params), reference_run["params"])
  _assert_trees_equal(_host(state.opt_state), reference_run["opt_state"])
  with checkpoint_lib.Checkpointer(workdir / "checkpoints") as ckpt:
    assert ckpt.all_steps() == [50, 100]  # keep_checkpoints=2
    assert ckpt.read_json("data")["index"] == 100
  # The resumed run's metric lines continue the same file.
  assert sorted(_train_losses(workdir)) == list(range(1, 101))
  # A finished run is left alone.
  assert int(train(BASE, workdir, examples, tokenizer=tok).step) == 100
  # The step-50 checkpoint was written asynchronously while later steps
  # reused (donated) the buffers; resuming from it still gives the same end.
  shutil.rmtree(workdir / "checkpoints" / "100")
  state = train(BASE, workdir, examples, tokenizer=tok)
  _assert_trees_equal(_host(state.params), reference_run["params"])


def test_sharded_matches_unsharded(reference_run, tmp_path, tok, examples,
                                   params0):
  cfg = BASE.replace(mesh=_MESH)
  train(cfg, tmp_path / "sharded", examples, tokenizer=tok, params=params0,
        num_steps=2)
  # The third step runs after a restore straight into the shardings.
  state = train(cfg, tmp_path / "sharded", examples, tokenizer=tok,
                num_steps=1)
  assert int(state.step) == 3
  emb = state.params["llm"]["embedder"]["input_embedding"]
  assert not emb.sharding.is_fully_replicated
  assert len(emb.sharding.device_set) == 8
  got = _train_losses(tmp_path / "sharded")
  want = _train_losses(reference_run["workdir"])
  np.testing.assert_allclose([got[s] for s in (1, 2, 3)],
                             [want[s] for s in (1, 2, 3)], rtol=0, atol=1e-5)


def test_metric_files_and_export(reference_run, tmp_path, model):
  workdir = reference_run["workdir"]
  records = metrics_lib.read_jsonl(workdir / "metrics.jsonl")
  evals = [r for r in records if "eval/loss" in r]
  assert [r["step"] for r in evals] == [50, 100]
  assert reference_run["eval_calls"] == 2
  assert evals[-1]["eval/note"] == "text"
  last_train = [r for r in records if "train/loss" in r][-1]
  assert last_train["step"] == 100
  assert {"train/lr", "train/grad_norm", "train/accuracy",
          "train/steps_per_sec"} <= set(last_train)
  assert json.loads((workdir / "config.json").read_text()) == BASE.to_dict()

  # TensorBoard event files, read back with the protobuf definitions that
  # tensorboardX ships (records: u64 length, u32 crc, data, u32 crc).
  # pylint: disable-next=g-import-not-at-top
  from tensorboardX.proto import event_pb2
  files = list((workdir / "tensorboard").glob("events.out.tfevents.*"))
  assert len(files) == 1
  data, tags, pos = files[0].read_bytes(), {}, 0
  while pos < len(data):
    n = int.from_bytes(data[pos:pos + 8], "little")
    event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + n])
    pos += 16 + n
    for v in event.summary.value:
      tags.setdefault(v.tag, []).append((event.step, v.simple_value))
  assert len(tags["train/loss"]) == 100
  assert [s for s, _ in tags["eval/accuracy"]] == [50, 100]
  np.testing.assert_allclose(tags["train/loss"][-1][1],
                             _train_losses(workdir)[100], rtol=1e-6)

  # Params-only export for evaluation, and back in as a starting point.
  out = checkpoint_lib.export_params(workdir, tmp_path / "export")
  cfg, params = orbax_io.load_checkpoint(out)
  assert cfg == model.cfg
  _assert_trees_equal(_host(params), reference_run["params"])
  start = loop_lib._initial_params(  # pylint: disable=protected-access
      BASE.replace(init_from=str(out)), None, model, None)
  _assert_trees_equal(_host(start), reference_run["params"])

"""Harvesting: kept pairs, de-dup, provenance, the TFDS dataset, resume.

The auditors are scripted (`ScriptedRollout._sample`, as in
test_audit_rollout.py) and the target / references are rule-based fakes: the
references always say "2", the target says "3" to questions with one of
FAIL_WORDS, so a valid pair is a failure exactly when its question has one
of them. Images come from WorldSources and the world backend, so the oracle
fields are real. `world_harvest` (memoised) is shared with
test_discover_taxonomy.py.
"""

import json
import pathlib
import shutil

import jax
import numpy as np
import pytest

from auditdm_jax.audit import judge as judge_lib
from auditdm_jax.audit import rollout as rollout_lib
from auditdm_jax.audit import world_truth
from auditdm_jax.audit.sources import WorldSources
from auditdm_jax.data.world_tokenizer import world_tokenizer
from auditdm_jax.discover import dataset as dataset_lib
from auditdm_jax.discover import harvest as harvest_lib
from auditdm_jax.imaging.base import Picture
from auditdm_jax.imaging.world_backend import WorldBackend
from auditdm_jax.models import arch as arch_lib
from auditdm_jax.models.vlm import Model
from auditdm_jax.sampling.sampler import SampleOutput

COUNT_Q = "how many objects can you see?"
ADD_EDIT = "draw a large blue diamond"
CAPTION = "a red circle and a blue square"
# Holds all three planted gaps of configs/world/zoo.py for the questions
# below: the circle is purple and on the left, there are six squares.
GAP_CAPTION = "a large purple circle on the left and six small red squares"
FAIL_WORDS = ("how many", "colour", "left or")
SCRIPTS = {
    "trained": {
        "question": [COUNT_Q, "what colour is the circle?",
                     "how many squares are there?", "garbage words here"],
        "edit": [ADD_EDIT, "remove the nothing"],
        "caption": [GAP_CAPTION, CAPTION]},
    "untrained": {
        "question": ["are there any red circles?", COUNT_Q,
                     "is the circle on the left or on the right?"],
        "edit": ["make the red circle blue", ADD_EDIT],
        "caption": [CAPTION, "what"]},
}
STEPS = {"trained": 100, "untrained": 0}
POOL, CHUNK, GROUP = 10, 4, 2     # 3 chunks per auditor: 6 units.


def fails(question):
  return any(w in question for w in FAIL_WORDS)


class FakeVqa:
  """Answers by a rule of the question."""

  def __init__(self, name, rule):
    self.name, self.rule = name, rule

  def answer(self, questions, images):
    assert len(questions) == len(images)
    return [self.rule(q) for q in questions]


class ScriptedRollout(rollout_lib.Rollout):
  """The auditor writes `script[kind][j % len]` for its j-th sample; the
  `hook` runs before each call (to inject a crash)."""

  def __init__(self, *args, script, hook=None, **kw):
    super().__init__(*args, **kw)
    self.script, self.hook = script, hook

  def __call__(self, params, sources, *, key):
    if self.hook is not None:
      self.hook()
    return super().__call__(params, sources, key=key)

  def _sample(self, params, texts, pixels, n, temperature, key):
    tok = self.auditor.tokenizer
    kinds = [self.auditor.prompt_set.kind_of(t) for t in texts]
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


_SHARED = {}


def _model():
  if "model" not in _SHARED:
    _SHARED["model"] = Model(arch_lib.get("gemma3_world_s"))
    _SHARED["tok"] = world_tokenizer()
  return _SHARED["model"], _SHARED["tok"]


def specs(names=("trained", "untrained")):
  model, _ = _model()
  # Params are never read by a scripted auditor; a tag tells them apart.
  return [harvest_lib.AuditorSpec(n, STEPS[n], model, {"who": n})
          for n in names]


def make_factory(hook=None, mode_weights=None, **cfg):
  """make_rollout for `harvest`: a ScriptedRollout with the auditor's
  script; `hook()` runs before every rollout call."""
  _, tok = _model()
  config = rollout_lib.RolloutConfig(
      group_size=GROUP, max_new_tokens=16,
      mode_weights=mode_weights or {"question": 1.0, "image": 1.0,
                                    "both": 1.0}, **cfg)
  refs = [FakeVqa(f"ref{i}", lambda q: "2") for i in range(3)]
  target = FakeVqa("target", lambda q: "3" if fails(q) else "2")

  def make(spec):
    auditor = rollout_lib.Auditor(model=spec.model, tokenizer=tok,
                                  prompt_set="world")
    return ScriptedRollout(auditor, target, refs, WorldBackend(), config,
                           script=SCRIPTS[spec.name], hook=hook)
  return make


def sources():
  return WorldSources(POOL, seed=5)


def run(out, hook=None, config=None, **kw):
  return harvest_lib.harvest(
      specs(), sources(), out, make_rollout=make_factory(hook, **kw),
      config=config or harvest_lib.HarvestConfig(chunk_size=CHUNK, seed=3))


def world_harvest(root):
  """The uninterrupted harvest (memoised per session): its HarvestResult."""
  if "clean" not in _SHARED:
    _SHARED["clean"] = run(pathlib.Path(root) / "clean")
  return _SHARED["clean"]


def snapshot(out):
  """Everything a harvest's outputs hold, for comparing two runs."""
  ds = dataset_lib.read_failures(out, decode_images=False)
  examples = [ds[i] for i in range(len(ds))]
  asked = harvest_lib.read_asked(out)
  summary = json.loads((pathlib.Path(out) / "summary.json").read_text())
  for a in summary["auditors"].values():
    a.pop("seconds")
  return examples, asked, summary


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
  res = world_harvest(tmp_path_factory.mktemp("harvest"))
  return res, snapshot(res.out_dir)


# --- What is kept -------------------------------------------------------------


def _expected(names=("trained", "untrained")):
  """Kept pairs by a direct re-implementation: same rollouts, same keys,
  the rule, first-seen de-dup by (question, instruction, image hash)."""
  make, pool = make_factory(), sources()
  seen, out = set(), []
  for spec in specs(names):
    roll = make(spec)
    for c in range(-(-POOL // CHUNK)):
      items = [pool[i] for i in range(c * CHUNK, min(POOL, (c + 1) * CHUNK))]
      res = roll(spec.params, items,
                 key=jax.random.fold_in(jax.random.key(3), c))
      for p in res.pairs:
        if not (p.valid and fails(p.question)):
          continue
        k = (judge_lib.normalize_answer(p.question),
             judge_lib.normalize_answer(p.instruction or ""),
             p.picture.content_hash())
        if k not in seen:
          seen.add(k)
          out.append((spec.name, p, items[p.group]))
  return out


def test_kept_examples_are_the_failures_deduplicated(clean):
  res, (examples, asked, summary) = clean
  want = _expected()
  assert res.num_examples == len(examples) == len(want) > 10
  modes = set()
  for ex, (auditor, p, src) in zip(examples, want):
    modes.add(ex["mode"])
    assert ex["auditor"] == auditor
    assert ex["auditor_step"] == STEPS[auditor]
    assert (ex["source_id"], ex["mode"], ex["kind"], ex["question"],
            ex["instruction"], ex["completion"]) == (
                p.source_id, p.mode, p.kind, p.question,
                p.instruction or "", p.completion)
    # The failure: references agree on "2", the target says "3".
    assert fails(ex["question"]) and ex["target_differs"]
    assert ex["target_answer"] == "3" and ex["consensus"] == "2"
    assert ex["reference_answers"] == ("2", "2", "2")
    assert ex["reference_models"] == ("ref0", "ref1", "ref2")
    assert ex["target_model"] == "target"
    # Images: PNG of the pair's picture and of the source picture.
    img = dataset_lib.decode_png(ex["image"])
    np.testing.assert_array_equal(img, p.picture.pixels)
    np.testing.assert_array_equal(dataset_lib.decode_png(
        ex["original_image"]), src.picture.pixels)
    assert ex["scene"] == p.picture.scene
    # The oracle on the asked picture ("" where it cannot answer).
    t = world_truth.truth(p.picture.scene, p.question)
    assert ex["truth"] == (t.answer or "") and ex["skill"] == (t.skill or "")
    assert set(ex["tags"]) == set(t.tags)
  assert modes == {"question", "image", "both"}
  assert len({ex["id"] for ex in examples}) == len(examples)


def test_asked_log_and_summary_count_every_pair(clean):
  res, (examples, asked, summary) = clean
  assert len(asked) == 2 * POOL * GROUP
  ids = {ex["id"] for ex in examples}
  for r in asked:
    valid = r["error"] is None
    assert r["target_differs"] == (valid and fails(r["question"]))
    assert (r["example_id"] is not None) == r["target_differs"]
    if r["example_id"] is not None:
      assert r["example_id"] in ids
  tot = summary["totals"]
  assert tot["kept"] == len(examples)
  assert tot["failures"] == tot["kept"] + tot["duplicates"]
  assert tot["duplicates"] > 0      # captions regenerate equal images
  assert tot["pairs"] == len(asked)
  assert tot["valid"] == sum(r["error"] is None for r in asked)
  for name in ("trained", "untrained"):
    a = summary["auditors"][name]
    assert a["step"] == STEPS[name]
    assert a["kept"] == sum(ex["auditor"] == name for ex in examples)
  # Verified = the oracle knows the truth and the target's "3" is wrong.
  assert tot["verified"] == sum(
      bool(ex["truth"]) and ex["truth"] != "3" for ex in examples)
  # The dataset's metadata carries the settings.
  meta = dataset_lib.metadata(res.out_dir)
  assert meta["harvest"]["fingerprint"]["auditors"] == [["trained", 100],
                                                        ["untrained", 0]]


def test_decoded_reader_and_result(clean):
  res, (examples, _, _) = clean
  ds = res.read()
  first = ds[0]
  assert first["image"].dtype == np.uint8 and first["image"].ndim == 3
  assert first["id"] == examples[0]["id"]
  # The reader takes the dataset directory itself too.
  assert len(dataset_lib.read_failures(res.dataset_dir)) == len(examples)
  pic = Picture(first["image"], scene=first["scene"] or None)
  assert harvest_lib.example_id(harvest_lib.dedup_key(
      first["question"], first["instruction"],
      pic.content_hash())) == first["id"]


def test_keep_agreed_keeps_every_consensus(tmp_path):
  res = run(tmp_path, config=harvest_lib.HarvestConfig(
      chunk_size=CHUNK, seed=3, keep="agreed"))
  examples, asked, _ = snapshot(res.out_dir)
  assert any(not ex["target_differs"] for ex in examples)
  clean_ids = {ex["id"] for ex in snapshot(
      world_harvest(tmp_path).out_dir)[0]}
  assert clean_ids <= {ex["id"] for ex in examples}
  assert {ex["id"] for ex in examples if ex["target_differs"]} == clean_ids


# --- Crashes and resume -------------------------------------------------------


class Crash(RuntimeError):
  pass


def _crash_on_call(k):
  calls = {"n": 0}

  def hook():
    calls["n"] += 1
    if calls["n"] == k:
      raise Crash(f"injected at rollout call {k}")
  return hook, calls


@pytest.mark.parametrize("k", [1, 4])
def test_crash_inside_a_chunk_then_resume_equals_uninterrupted(
    clean, tmp_path, k):
  hook, _ = _crash_on_call(k)
  with pytest.raises(Crash):
    run(tmp_path, hook=hook)
  prog = json.loads((tmp_path / "progress.json").read_text())
  assert len(prog["done"]) == k - 1         # finished units are durable
  assert not (tmp_path / "failures").exists()
  assert not (tmp_path / "summary.json").exists()
  # The rerun skips the finished units: it calls the rollout only for the
  # rest.
  counter, calls = _crash_on_call(0)
  run(tmp_path, hook=counter)
  assert calls["n"] == 6 - (k - 1)
  assert snapshot(tmp_path) == clean[1]


def test_kill_between_shard_and_progress_then_resume(clean, tmp_path,
                                                     monkeypatch):
  saves = {"n": 0}
  real = harvest_lib._Workdir.save_progress

  def save(self, prog):
    saves["n"] += 1
    if saves["n"] == 4:   # The initial save, then units 1, 2: unit 3 dies.
      raise Crash("killed after the shard, before the progress")
    real(self, prog)

  monkeypatch.setattr(harvest_lib._Workdir, "save_progress", save)
  with pytest.raises(Crash):
    run(tmp_path)
  monkeypatch.setattr(harvest_lib._Workdir, "save_progress", real)
  # Unit 3's shard is on disk but not in the progress file: it is redone.
  assert len(list((tmp_path / "shards").glob("*.json"))) == 3
  assert len(json.loads((tmp_path / "progress.json").read_text())["done"]) == 2
  run(tmp_path)
  assert snapshot(tmp_path) == clean[1]


def test_crash_while_assembling_leaves_no_half_dataset(clean, tmp_path,
                                                       monkeypatch):
  real = harvest_lib.to_dataset_example
  n = {"i": 0}

  def flaky(ex):
    n["i"] += 1
    if n["i"] == 5:
      raise Crash("killed while writing the dataset")
    return real(ex)

  monkeypatch.setattr(harvest_lib, "to_dataset_example", flaky)
  with pytest.raises(Crash):
    run(tmp_path)
  monkeypatch.setattr(harvest_lib, "to_dataset_example", real)
  leftovers = [p.name for p in tmp_path.iterdir()]
  assert sorted(leftovers) == ["progress.json", "shards"]
  # What a SIGKILL mid-write would leave: a staging folder, a temp file.
  (tmp_path / ".failures-staging-killed").mkdir()
  (tmp_path / ".progress.json.tmp-123").write_text("{")
  counter, calls = _crash_on_call(0)
  run(tmp_path, hook=counter)
  assert calls["n"] == 0          # every unit was finished
  assert snapshot(tmp_path) == clean[1]
  assert not list(tmp_path.glob(".*"))
  # A lost dataset is re-assembled from the shards, without rollouts.
  shutil.rmtree(tmp_path / "failures")
  run(tmp_path, hook=counter)
  assert calls["n"] == 0 and snapshot(tmp_path) == clean[1]


def test_finished_harvest_is_only_opened(clean, tmp_path):
  counter, calls = _crash_on_call(0)
  res = run(clean[0].out_dir, hook=counter)
  assert calls["n"] == 0
  assert res.num_examples == clean[0].num_examples


def test_other_settings_are_refused_unless_overwrite(tmp_path):
  hook, _ = _crash_on_call(2)
  with pytest.raises(Crash):
    run(tmp_path, hook=hook)
  with pytest.raises(ValueError, match="other settings.*seed"):
    run(tmp_path, config=harvest_lib.HarvestConfig(chunk_size=CHUNK, seed=4))
  with pytest.raises(ValueError, match="other settings.*rollouts"):
    run(tmp_path, mode_weights={"question": 1.0})
  res = run(tmp_path, config=harvest_lib.HarvestConfig(
      chunk_size=CHUNK, seed=4, overwrite=True))
  assert res.summary["fingerprint"]["seed"] == 4


def test_a_changed_shard_is_refused(tmp_path):
  hook, _ = _crash_on_call(3)
  with pytest.raises(Crash):
    run(tmp_path, hook=hook)
  shard = sorted((tmp_path / "shards").glob("*.json"))[0]
  shard.write_text(shard.read_text().replace("2", "7"))
  with pytest.raises(ValueError, match="checksum"):
    run(tmp_path)


def test_nothing_kept_gives_an_empty_dataset(tmp_path):
  make = make_factory(mode_weights={"question": 1.0})
  spec = specs(["untrained"])
  # "are there any red circles?" etc. never fail when the target agrees.
  target = FakeVqa("target", lambda q: "2")

  def make_agree(s):
    roll = make(s)
    roll.target = target
    return roll
  res = harvest_lib.harvest(spec, WorldSources(3, seed=1), tmp_path,
                            make_rollout=make_agree)
  assert res.num_examples == 0 and res.dataset_dir is None
  assert len(dataset_lib.read_failures(tmp_path)) == 0
  assert len(harvest_lib.read_asked(tmp_path)) == 3 * GROUP


def test_bad_inputs():
  with pytest.raises(ValueError, match="name"):
    harvest_lib.AuditorSpec("a b", 0, None, None)
  with pytest.raises(ValueError, match="step"):
    harvest_lib.AuditorSpec("a", -1, None, None)
  with pytest.raises(ValueError, match="keep"):
    harvest_lib.HarvestConfig(keep="all")
  with pytest.raises(ValueError, match="chunk_size"):
    harvest_lib.HarvestConfig(chunk_size=0)
  with pytest.raises(ValueError, match="unique"):
    harvest_lib.harvest(specs(("trained", "trained")), sources(), "/nonexist",
                        make_rollout=make_factory())
  with pytest.raises(FileNotFoundError, match="no harvested failures"):
    dataset_lib.read_failures("/nonexistent/dir")


# --- Command line -------------------------------------------------------------


def test_parse_auditor_arg():
  p = harvest_lib.parse_auditor_arg
  assert p("trained=/a/export/auditor") == ("trained", "/a/export/auditor",
                                            None)
  assert p("ck=/a/audit@200") == ("ck", "/a/audit", 200)
  assert p("u=zoo") == ("u", "zoo", None)
  assert p("x=/a/b@c") == ("x", "/a/b@c", None)
  for bad in ("oops", "=path", "a b=zoo", "name="):
    with pytest.raises(ValueError):
      p(bad)


def test_load_auditor_from_an_export(tmp_path):
  from auditdm_jax.convert import orbax_io  # pylint: disable=g-import-not-at-top
  model, _ = _model()
  params = jax.tree.map(lambda a: np.zeros(a.shape, np.float32),
                        model.abstract_params())
  orbax_io.save_params(params, tmp_path / "auditor", model.cfg)
  (tmp_path / "auditor.json").write_text(json.dumps({"steps": 37}))
  spec = harvest_lib.load_auditor(f"t={tmp_path / 'auditor'}", None)
  assert (spec.name, spec.step) == ("t", 37)
  assert spec.model.cfg.name == "gemma3_world_s"
  spec = harvest_lib.load_auditor(f"t={tmp_path / 'auditor'}@5", None)
  assert spec.step == 5
  with pytest.raises(FileNotFoundError, match="no auditor export"):
    harvest_lib.load_auditor(f"t={tmp_path / 'nothing'}", None)
  with pytest.raises(ValueError, match="needs a zoo"):
    harvest_lib.load_auditor("t=zoo", None)


def test_load_auditor_from_a_grpo_checkpoint(tmp_path):
  # pylint: disable=g-import-not-at-top
  from auditdm_jax.train import checkpoint as checkpoint_lib
  from auditdm_jax.train import state as state_lib
  from auditdm_jax.train.config import TrainConfig
  # pylint: enable=g-import-not-at-top
  cfg = TrainConfig(arch="gemma3_world_s", batch_size=2, total_steps=10,
                    max_len=40, max_target_len=4)
  model = state_lib.make_model(cfg)
  params = jax.tree.map(lambda a: np.full(a.shape, 0.5, np.float32),
                        model.abstract_params())
  state = state_lib.create_state(model, cfg, params)
  state = state.replace(step=jax.numpy.asarray(7, state.step.dtype))
  with checkpoint_lib.Checkpointer(tmp_path / "checkpoints",
                                   async_save=False) as ckpt:
    ckpt.save(state, config=cfg)
  spec = harvest_lib.load_auditor(f"ck={tmp_path}", None)   # the latest
  assert (spec.name, spec.step) == ("ck", 7)
  assert spec.model.cfg.name == "gemma3_world_s"
  assert all(float(x.ravel()[0]) == 0.5 for x in jax.tree.leaves(spec.params))
  with pytest.raises(FileNotFoundError, match="step 3"):
    harvest_lib.load_auditor(f"ck={tmp_path}@3", None)


def test_cli_runs_and_resumes(tmp_path, monkeypatch, capsys):
  seen_args = []

  def build(args):
    seen_args.append(args)
    return specs(), sources(), make_factory()

  monkeypatch.setattr(harvest_lib, "build_from_args", build)
  argv = ["--auditor", "trained=x", "--n", str(POOL), "--chunk", str(CHUNK),
          "--seed", "3", "--out", str(tmp_path)]
  assert harvest_lib.main(argv) == 0
  out = capsys.readouterr().out
  assert "trained" in out and "examples ->" in out
  assert seen_args[0].group_size == 1 and seen_args[0].keep == "failures"
  assert len(dataset_lib.read_failures(tmp_path)) > 0
  # Other settings in the same dir: a clear error, exit code 2.
  assert harvest_lib.main(argv[:-4] + ["--seed", "9", "--out",
                                       str(tmp_path)]) == 2
  assert "other settings" in capsys.readouterr().err
  assert harvest_lib.main(["--out", str(tmp_path), "--n", "0"]) == 2


def test_cli_weights_are_checked(tmp_path, capsys):
  args = harvest_lib.build_parser().parse_args(
      ["--out", str(tmp_path), "--modes", "question=1,bogus=2"])
  with pytest.raises(ValueError, match="--modes"):
    harvest_lib._weights(args.modes, rollout_lib.MODES, "--modes")
  assert harvest_lib._weights("question=2, both=0.5", rollout_lib.MODES,
                              "--modes") == {"question": 2.0, "both": 0.5}
  del capsys

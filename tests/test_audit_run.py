"""The world audit from the entry point: config -> zoo -> GRPO -> export ->
success-rate protocol, on a zoo of random weights written by the test."""

import json

import jax
import numpy as np
import pytest

from auditdm_jax import main as main_lib
from auditdm_jax.convert import orbax_io
from auditdm_jax.eval import success_rate
from auditdm_jax.eval import world_bench
from auditdm_jax.models import arch as arch_lib
from auditdm_jax.models.vlm import Model
from auditdm_jax.world.zoo import load_config

# One VQA arch for the target and every reference: one compiled answerer.
ZOO = {"target": ("target", "paligemma2_world_s"),
       "ref_paligemma_m": ("reference", "paligemma2_world_s"),
       "ref_gemma_s": ("reference", "paligemma2_world_s"),
       "ref_paligemma_s": ("reference", "paligemma2_world_s"),
       "auditor": ("auditor", "gemma3_world_s")}
GAPS = {"skill:colour&answer:purple": "colour_purple"}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
  root = tmp_path_factory.mktemp("zoo") / "export"
  root.mkdir()
  for i, (name, (role, arch)) in enumerate(ZOO.items()):
    cfg = arch_lib.get(arch)
    rng = np.random.default_rng(i)
    params = jax.tree.map(
        lambda a: (0.05 * rng.standard_normal(a.shape)).astype(np.float32),
        Model(cfg).abstract_params())
    orbax_io.save_params(params, root / name, cfg)
    (root / f"{name}.json").write_text(json.dumps(
        {"name": name, "role": role, "arch": arch,
         "gap_splits": GAPS if role == "target" else {}}))
  return root


@pytest.fixture(scope="module")
def audit_dir(zoo, tmp_path_factory):
  config = load_config("configs/world/audit.py:quick")
  with config.unlocked():
    config.zoo = str(zoo)
  workdir = tmp_path_factory.mktemp("audit")
  main_lib.run(config, str(workdir))
  return workdir


def test_audit_task_trains_and_exports(audit_dir):
  info = json.loads((audit_dir / "export" / "auditor.json").read_text())
  assert info["steps"] == 2 and info["arch"] == "gemma3_world_s"
  assert [s for s, _ in info["reward_curve"]] == [1, 2]
  model, params = world_bench.load_export(audit_dir / "export" / "auditor")
  assert model.cfg.name == "gemma3_world_s"
  pairs = [json.loads(l) for l in
           (audit_dir / "rollouts.jsonl").read_text().splitlines()]
  assert len(pairs) == 2 * 2 * 2          # steps x sources x group
  assert {p["mode"] for p in pairs} <= {"question", "image", "both"}


def test_success_rate_cli(audit_dir, zoo, tmp_path, capsys):
  out = tmp_path / "result.json"
  rc = success_rate.main(["--zoo", str(zoo), "--n", "6",
                          "--auditor", "untrained=zoo",
                          "--auditor", f"trained={audit_dir}/export/auditor",
                          "--out", str(out)])
  assert rc == 0
  result = json.loads(out.read_text())
  assert set(result) == {"untrained", "trained"}
  for r in result.values():
    assert r["overall"]["n"] == 6
    assert sum(m["n"] for m in r["modes"].values()) == 6
    assert set(r["gaps"]) == {"colour_purple"}
  # Both auditors faced the same images in the same modes.
  assert ({m: v["n"] for m, v in result["trained"]["modes"].items()} ==
          {m: v["n"] for m, v in result["untrained"]["modes"].items()})
  assert "untrained" in capsys.readouterr().out


def test_success_rate_cli_errors(zoo, tmp_path, capsys):
  assert success_rate.main(["--zoo", str(tmp_path), "--n", "2"]) == 2
  assert "error" in capsys.readouterr().err
  assert success_rate.main(["--zoo", str(zoo), "--auditor", "oops"]) == 2
  assert "NAME=PATH" in capsys.readouterr().err


def test_real_config_path_with_tiny_checkpoints(tmp_path, make_gemma_corpus):
  """configs/real/audit_paper.py's plumbing (checkpoints, tokenizer, JSONL
  sources, gemma3 prompt set), with tiny random models standing in."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from auditdm_jax import tokenizer as tok_lib  # pylint: disable=g-import-not-at-top
  from auditdm_jax.audit import run as run_lib  # pylint: disable=g-import-not-at-top
  # Exactly the tiny models' 512 ids: a bigger tokenizer is refused when
  # prompts are encoded, a smaller one cannot decode every sampled id.
  tok_path = tmp_path / "tok" / "tokenizer.model"
  tok_lib.train_test_tokenizer(make_gemma_corpus(), tok_path, vocab_size=512,
                               num_loc=0, num_seg=0)
  paths = {}
  for i, (name, arch) in enumerate([("target", "paligemma2_tiny"),
                                    ("ref0", "paligemma2_tiny"),
                                    ("ref1", "gemma3_tiny"),
                                    ("auditor", "gemma3_tiny")]):
    cfg = arch_lib.get(arch)
    rng = np.random.default_rng(i)
    params = jax.tree.map(
        lambda a: (0.05 * rng.standard_normal(a.shape)).astype(np.float32),
        Model(cfg).abstract_params())
    paths[name] = str(orbax_io.save_params(params, tmp_path / name, cfg))
  pool = tmp_path / "pool"
  pool.mkdir()
  with open(pool / "sources.jsonl", "w") as f:
    for i in range(4):
      Image.fromarray(np.full((40, 48, 3), 30 * i, np.uint8)).save(
          pool / f"{i}.png")
      f.write(json.dumps({"id": f"img{i}", "image": f"{i}.png",
                          "question": "what is this?"}) + "\n")
  config = load_config("configs/real/audit_paper.py")
  with config.unlocked():
    config.archs.update(target="paligemma2_tiny", auditor="gemma3_tiny",
                        references=("paligemma2_tiny", "gemma3_tiny"))
    config.checkpoints.update(target=paths["target"], auditor=paths["auditor"],
                              references=(paths["ref0"], paths["ref1"]))
    config.image_preprocess.references = ("siglip", "gemma3")
    config.tokenizer = str(tok_path)
    config.sources = {"kind": "jsonl", "path": str(pool / "sources.jsonl"),
                      "n": 0, "seed": 0}
    config.sources_per_step = 2
    config.rollout.update(group_size=2, max_new_tokens=6, prompt_len=0,
                          mode_weights={"question": 1.0, "image": 0.0,
                                        "both": 0.0})
    config.backend = {"name": "world", "cache": False}
    config.train.update(total_steps=1, mesh=None, param_dtype="float32",
                        dtype="float32", remat=False, progress=False,
                        warmup_fraction=None, warmup_steps=0,
                        async_checkpointing=False)
  info = run_lib.run_audit(config, tmp_path / "run")
  assert info["steps"] == 1 and info["arch"] == "gemma3_tiny"
  assert info["init"] == paths["auditor"]
  pairs = [json.loads(l) for l in
           (tmp_path / "run" / "rollouts.jsonl").read_text().splitlines()]
  assert len(pairs) == 4
  assert {p["source_id"] for p in pairs} <= {f"img{i}" for i in range(4)}
  # A checkpoint that is not the arch the config names is refused.
  with config.unlocked():
    config.archs.target = "paligemma2_3b_224"
  with pytest.raises(ValueError, match="config.archs says"):
    run_lib.build_rollout(config)

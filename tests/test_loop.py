"""The whole world loop from the entry point, on a zoo the test writes.

The references share one set of random weights (so they always agree) and
the target has its own (so it often differs), and the auditor's prompt set
accepts any text: every stage then has real work — GRPO steps, kept
failures, failure types, a fine-tuning run, before/after benchmark numbers
and a report.
"""

import json

import jax
import numpy as np
import pytest

from auditdm_jax import loop as loop_lib
from auditdm_jax import main as main_lib
from auditdm_jax.audit import prompts as audit_prompts
from auditdm_jax.convert import orbax_io
from auditdm_jax.models import arch as arch_lib
from auditdm_jax.models.vlm import Model
from auditdm_jax.world import prompts as world_prompts
from auditdm_jax.world.zoo import load_config

ANY = audit_prompts.register_prompt_set(audit_prompts.PromptSet(
    name="test_loop_any_text", prompts=dict(world_prompts.PROMPTS),
    max_chars={k: 1000 for k in audit_prompts.KINDS},
    require_question_mark=False), overwrite=True)

ZOO = {"target": ("target", "paligemma2_world_s", 0),
       "ref_paligemma_m": ("reference", "paligemma2_world_s", 1),
       "ref_gemma_s": ("reference", "paligemma2_world_s", 1),
       "ref_paligemma_s": ("reference", "paligemma2_world_s", 1),
       "auditor": ("auditor", "gemma3_world_s", 2)}


@pytest.fixture(scope="module")
def loop_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("zoo") / "export"
  root.mkdir()
  for name, (role, arch, seed) in ZOO.items():
    cfg = arch_lib.get(arch)
    rng = np.random.default_rng(seed)
    params = jax.tree.map(
        lambda a: (0.05 * rng.standard_normal(a.shape)).astype(np.float32),
        Model(cfg).abstract_params())
    orbax_io.save_params(params, root / name, cfg)
    info = {"name": name, "role": role, "arch": arch}
    if role == "target":
      info["slice_weights"] = {"skill:colour&answer:purple": 0.02}
      info["gap_splits"] = {"skill:colour&answer:purple": "colour_purple"}
    (root / f"{name}.json").write_text(json.dumps(info))
  config = load_config("configs/world/loop.py:quick")
  with config.unlocked():
    config.audit.zoo = str(root)
    config.audit.prompt_set = ANY.name
    config.audit.rollout.mode_weights = {"question": 1.0, "image": 0.0,
                                         "both": 0.0}
  workdir = tmp_path_factory.mktemp("loop")
  main_lib.run(config, str(workdir))
  return workdir, config


def test_every_stage_ran(loop_dir):
  workdir, _ = loop_dir
  stages = json.loads((workdir / "stages.json").read_text())
  assert list(stages) == list(loop_lib.STAGES)
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["failures"] > 0
  ev = summary["eval"]
  assert set(ev["before"]) == set(ev["after"]) and "mean" in ev["before"]
  assert ev["gaps"] == ["colour_purple"]
  # Fine-tuning changed the target's answers somewhere.
  assert (workdir / "rectify" / "export" / "target").is_dir()
  html = (workdir / "report" / "index.html").read_text()
  assert "failure" in html.lower()
  assert (workdir / "report" / "images").is_dir()


def test_rerun_skips_finished_stages(loop_dir, capsys):
  workdir, config = loop_dir
  before = json.loads((workdir / "stages.json").read_text())
  loop_lib.run_loop(config, workdir)
  assert json.loads((workdir / "stages.json").read_text()) == before
  out = capsys.readouterr().out
  assert "report:" in out and "done in" not in out

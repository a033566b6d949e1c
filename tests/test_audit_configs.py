"""Audit run configs: the paper's real config shape-checks without weights,
the world config builds its pieces, and bad configs fail with a message."""

import pytest

from auditdm_jax.audit import dry_run
from auditdm_jax.audit import run as run_lib
from auditdm_jax.world.zoo import load_config

PAPER = "configs/real/audit_paper.py"


@pytest.mark.parametrize("variant", ["", "lora"])
def test_paper_config_dry_run(variant):
  config = load_config(f"{PAPER}:{variant}" if variant else PAPER)
  report = dry_run.dry_run(config)
  m = report["models"]
  assert m["auditor"]["arch"] == "gemma3_4b"
  assert m["target"]["arch"] == "paligemma2_3b_224"
  families = {v["arch"].split("_")[0] for k, v in m.items()
              if k.startswith("reference")}
  assert families == {"paligemma2", "gemma3"}      # both families
  # Parameter counts of the released models (HF meta-device counts).
  assert m["target"]["params"] == 3_032_242_416
  assert m["auditor"]["params"] == 4_300_079_472
  # Global batch 256 = 32 images x 8 completions, 896-px Gemma-3 images.
  assert report["batch"]["completion"] == (256, 128)
  assert report["batch"]["images"] == (256, 1, 896, 896, 3)
  assert {"loss", "kl", "clip_fraction", "grad_norm", "lr"} <= set(
      report["step_metrics"])
  if variant == "lora":
    assert report["trainable_params"] < 0.01 * m["auditor"]["params"]
  else:
    assert report["trainable_params"] == m["auditor"]["params"]
  text = dry_run.format_report(report)
  assert "gemma3_4b" in text and "GRPO batch" in text


def test_paper_schedule_matches_the_paper():
  config = load_config(PAPER)
  tcfg = run_lib.train_config(config, config.archs.auditor)
  assert tcfg.lr == 3e-6 and tcfg.end_lr == 1e-6
  assert tcfg.schedule == "cosine" and tcfg.warmup_fraction == 0.1
  assert tcfg.batch_size == 256 and tcfg.total_steps == 1000
  gcfg = run_lib.grpo_config(config)
  assert gcfg.group_size == 8 and gcfg.kl_beta > 0


def test_dry_run_rejects_a_text_only_auditor():
  config = load_config(PAPER)
  config.archs.auditor = "gemma3_1b"
  with pytest.raises(ValueError, match="text-only"):
    dry_run.dry_run(config)


def test_dry_run_cli_reports_errors(capsys):
  assert dry_run.main(["--config", f"{PAPER}:nope"]) == 1
  assert "unknown variant" in capsys.readouterr().err


def test_world_config_pieces():
  config = load_config("configs/world/audit.py")
  rcfg = run_lib.rollout_config(config)
  gcfg = run_lib.grpo_config(config)
  assert rcfg.group_size == gcfg.group_size == 8
  assert set(rcfg.mode_weights) == {"question", "image", "both"}
  tcfg = run_lib.train_config(config, "gemma3_world_m")
  assert tcfg.batch_size == config.sources_per_step * rcfg.group_size
  with pytest.raises(ValueError, match="unknown audit variant"):
    load_config("configs/world/audit.py:big")


def test_missing_zoo_is_a_clear_error(tmp_path):
  config = load_config("configs/world/audit.py")
  config.zoo = str(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match="no world zoo"):
    run_lib.zoo_root(config)
  (tmp_path / "zoo").mkdir()
  with pytest.raises(FileNotFoundError, match="not found in"):
    run_lib.load_zoo_model(tmp_path / "zoo", "target")

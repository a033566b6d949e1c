"""Topologies, per-device memory estimates and the dry run of every real
config (`auditdm_jax.plan`), all on abstract shapes: nothing is allocated."""

import math

import pytest

from auditdm_jax import plan as plan_lib
from auditdm_jax.models import arch as arch_lib
from auditdm_jax.sharding import memory
from auditdm_jax.sharding import topology
from auditdm_jax.train.config import TrainConfig

SFT = "configs/real/sft_paligemma2.py"
GiB = 2**30


# --- Topologies ---------------------------------------------------------------

def test_topologies_count_chips_not_cores():
  v5e = topology.get("v5e-8")
  assert topology.get("v5litepod-8") is v5e            # gcloud's name
  assert (v5e.chips, v5e.hbm_gib, v5e.hosts) == (8, 16, 1)
  assert v5e.accelerator_type == "v5litepod-8"
  # v4 / v5p names count TensorCores: a v5p-8 is 4 megacore chips.
  v5p = topology.get("v5p-8")
  assert (v5p.chips, v5p.devices, v5p.hbm_gib, v5p.hosts) == (4, 4, 95, 1)
  assert topology.get("v5p-32").hosts == 4
  assert topology.get("v4-8").hbm_bytes == 32 * GiB
  assert (topology.get("v5e-16").hosts, topology.get("v6e-8").hosts) == (4, 1)
  assert topology.get("v6e-8").runtime_version == "v2-alpha-tpuv6e"


def test_unknown_topology_lists_the_known_ones():
  with pytest.raises(ValueError, match="unknown TPU topology 'v9-8'.*v5e-8"):
    topology.get("v9-8")
  with pytest.raises(ValueError, match="split into hosts"):
    topology.Topology(name="x", generation="v5e", chips=6, hbm_gib=16,
                      chips_per_host=4, cores_per_chip=1,
                      accelerator_type="x", runtime_version="x")


# --- Estimates against hand-computed numbers -----------------------------------

def _one_device(config):
  return memory.estimate([memory.Training(config=config)],
                         topology.get("v5e-1"), (("fsdp", 1),))


def _items(est):
  out = {}
  for i in est.items:
    out[(i.kind, i.phase.split(":")[0])] = i.bytes
  return out


def test_tiny_full_fine_tuning_on_one_device():
  n = 231_840                                   # paligemma2_tiny
  config = TrainConfig(arch="paligemma2_tiny", batch_size=2, max_len=20,
                       max_target_len=4)
  items = _items(_one_device(config))
  assert items[("params", "resident")] == 4 * n
  # AdamW mu + nu (f32) plus a few int32 step counters.
  assert 8 * n <= items[("optimizer", "resident")] <= 8 * n + 64
  assert items[("gradients", "backward")] == 4 * n
  assert items[("gradients", "update")] == items[("updates", "update")] == 4 * n


def test_text_layer_formula_by_hand():
  cfg = arch_lib.get("paligemma2_tiny")   # D 64, N 4, K 2, H 24, F 128
  per_token = 16 * 64 + 6 * 4 * 24 + 6 * 2 * 24 + 8 * 128      # 2912
  assert per_token == 2912
  rows, tokens, s = 2, 20, 4
  want = rows * tokens * per_token * s + rows * 4 * tokens**2 * (8 + s)
  assert memory.text_layer_bytes(cfg, rows, tokens, 1, s) == want == 504_320
  # Tensor parallelism splits the head / hidden terms, not D.
  half = rows * tokens * (16 * 64 + (per_token - 16 * 64) / 2) * s
  assert memory.text_layer_bytes(cfg, rows, tokens, 2, s) == (
      half + rows * 2 * tokens**2 * (8 + s))
  act = memory.activation_bytes(cfg, rows=rows, tokens=tokens,
                                images_per_row=0, t=1, s=s, remat=True,
                                text_trained=True, vision_trained=False)
  assert act["text"] == 4 * rows * tokens * 64 * s + want   # L carries + 1
  assert act["masks"] == 2 * rows * tokens**2


def test_paligemma2_3b_bf16_weights_and_fsdp_split():
  config = TrainConfig(arch="paligemma2_3b_224", param_dtype="bfloat16",
                       dtype="bfloat16", lora_rank=8, batch_size=8,
                       max_len=300, max_target_len=16)
  est = memory.estimate([memory.Training(config=config)],
                        topology.get("v5p-8"), (("fsdp", -1),))
  (info,) = est.models
  assert info.params == 3_032_242_416
  assert info.param_bytes == 2 * 3_032_242_416                # 6.06 GB
  assert math.isclose(info.param_bytes / 1e9, 6.06, abs_tol=0.01)
  per_device = _items(est)[("params", "resident")]
  # Split 4 ways, up to the few small replicated leaves (norms, biases).
  assert info.param_bytes / 4 <= per_device <= 1.01 * info.param_bytes / 4
  assert info.trainable < 0.01 * info.params                   # LoRA only


def test_does_not_fit_names_topology_need_and_biggest_items():
  config = TrainConfig(arch="paligemma2_10b_224", batch_size=8, max_len=300,
                       max_target_len=16, remat=True)
  est = memory.estimate_train(config, topology.get("v5e-8"),
                              (("fsdp", -1),))
  assert not est.fits
  with pytest.raises(memory.DoesNotFit) as err:
    memory.fits(est)
  msg = str(err.value)
  assert "v5e-8 (v5litepod-8)" in msg and "16 GiB HBM" in msg
  assert f"needs {est.total_bytes / GiB:.2f} GiB per device" in msg
  assert "Biggest: optimizer of paligemma2_10b_224" in msg   # f32 AdamW
  ok = memory.estimate_train(config, topology.get("v5p-8"), (("fsdp", -1),))
  assert memory.fits(ok) is ok


def test_estimate_rejects_bad_meshes_batches_and_names():
  config = TrainConfig(arch="paligemma2_tiny", batch_size=6, max_len=20,
                       max_target_len=4)
  with pytest.raises(ValueError, match="does not fit v5e-8"):
    memory.estimate_train(config, topology.get("v5e-8"), (("fsdp", 3),))
  with pytest.raises(ValueError, match="6 rows does not split over data x "
                                       "fsdp = 8"):
    memory.estimate_train(config, topology.get("v5e-8"), (("fsdp", -1),))
  load = memory.Inference(arch="paligemma2_tiny", batch_size=4, prompt_len=8,
                          max_new_tokens=2)
  with pytest.raises(ValueError, match="unique"):
    memory.estimate([load, load], topology.get("v5e-8"))
  with pytest.raises(ValueError, match="params must be one of"):
    memory.Inference(arch="paligemma2_tiny", batch_size=1, prompt_len=1,
                     max_new_tokens=1, params="somewhere")


def test_phases_do_not_add_up():
  # Two checkpoints evaluated one after another: only one is ever loaded.
  loads = [memory.Inference(arch="paligemma2_3b_224", name=n, batch_size=8,
                            prompt_len=300, max_new_tokens=8, params="phase")
           for n in ("a", "b")]
  est = memory.estimate(loads, topology.get("v5e-8"))
  assert est.resident_bytes == 0
  phases = est.phase_bytes()
  assert phases["eval:a"] == phases["eval:b"] == est.total_bytes
  held = memory.estimate([memory.Inference(
      arch="paligemma2_3b_224", name=n, batch_size=8, prompt_len=300,
      max_new_tokens=8) for n in ("a", "b")], topology.get("v5e-8"))
  assert held.resident_bytes > 0 and held.total_bytes > est.total_bytes


# --- Config plumbing ----------------------------------------------------------

def test_overrides_are_typed_like_the_field():
  config = plan_lib.load_config(f"{SFT}:3b_224")
  out = plan_lib.apply_overrides(config, {
      "train.lr": "3e-06", "train.batch_size": "64", "train.remat": "false",
      "train.mesh": "(('fsdp', -1),)", "train.tokenizer": "gs://b/t.model",
      "topology": "v5p-8"})
  t = out.train
  assert (t.lr, t.batch_size, t.remat) == (3e-6, 64, False)
  assert t.mesh == (("fsdp", -1),) and t.tokenizer == "gs://b/t.model"
  assert config.train.lr == 1e-5                # the original is untouched
  with pytest.raises(KeyError, match="train.lrr"):
    plan_lib.apply_overrides(config, {"train.lrr": "1"})
  with pytest.raises(ValueError, match="expected a int"):
    plan_lib.apply_overrides(config, {"train.batch_size": "many"})


# --- Every real config --------------------------------------------------------

REAL_CONFIGS = [
    *(f"{SFT}:{v}" for v in ("3b_224", "3b_448", "10b_224", "10b_448",
                             "28b_224", "28b_448", "3b_224_lora",
                             "28b_448_lora")),
    "configs/real/audit_tpu.py:lora", "configs/real/audit_tpu.py:full",
    *(f"configs/real/audit_ensembles.py:{v}" for v in ("paper", "medium",
                                                       "small")),
    *(f"configs/real/eval_checkpoints.py:{v}" for v in ("3b_224", "10b_448",
                                                        "28b_448")),
]
# One step trace per kind of workload (tracing costs ~2 s a config; the
# audit's GRPO trace is tests/test_audit_configs.py's).
TRACED = {f"{SFT}:3b_224", f"{SFT}:28b_448_lora"}


@pytest.mark.parametrize("spec", REAL_CONFIGS)
def test_every_real_config_fits_its_topology(spec):
  config = plan_lib.load_config(spec)
  assert config.topology in topology.names()
  result = plan_lib.plan(config, trace_step=spec in TRACED)
  est = result.estimate
  assert result.fits, est.table()
  assert est.mesh["fsdp"] == est.topology.devices    # pure FSDP everywhere
  assert all(m.params > 0 for m in est.models)
  if spec in TRACED:
    assert result.traced.startswith("traced one SFT step")


def test_audit_plan_holds_every_model_and_peaks_in_one_phase():
  lora = plan_lib.plan(plan_lib.load_config("configs/real/audit_tpu.py:lora"),
                       trace_step=False).estimate
  full = plan_lib.plan(plan_lib.load_config("configs/real/audit_tpu.py:full"),
                       trace_step=False).estimate
  names = [m.name for m in lora.models]
  assert names[:3] == ["auditor", "auditor_rollout", "target"]
  assert sum(n.startswith("reference_") for n in names) == 4
  resident = {i.model for i in lora.items if i.kind == "params"
              and i.phase == memory.RESIDENT}
  assert resident == {"auditor", "target", *names[3:]}   # rollout shares
  kinds = {i.kind for i in full.items if i.model == "auditor"}
  assert "ref_copy" in kinds and "lora" not in kinds
  assert "ref_copy" not in {i.kind for i in lora.items}
  assert full.resident_bytes > lora.resident_bytes


def test_paper_config_without_topology_needs_the_flag(capsys):
  paper = "configs/real/audit_paper.py:lora"
  assert plan_lib.main([f"--config={paper}", "--no_trace"]) == 2
  assert "names no topology" in capsys.readouterr().err
  assert plan_lib.main([f"--config={paper}", "--no_trace",
                        "--topology=v5p-32"]) == 0


def test_cli_fits_does_not_fit_and_broken(capsys):
  assert plan_lib.main([f"--config={SFT}:3b_224", "--no_trace"]) == 0
  out = capsys.readouterr().out
  assert "topology  v5e-8 (v5litepod-8)" in out and ": fits" in out
  assert "3,032,242,416" in out
  # The 10B target does not fit a v5e-8 with full fine-tuning.
  assert plan_lib.main([f"--config={SFT}:10b_224", "--topology=v5e-8",
                        "--no_trace"]) == 1
  captured = capsys.readouterr()
  assert "DOES NOT FIT" in captured.out
  assert "error: does not fit on v5e-8" in captured.err
  assert "Biggest: optimizer" in captured.err
  assert plan_lib.main([f"--config={SFT}:3b_224", "--no_trace",
                        "--config.train.batch_size=100"]) == 2
  assert "does not split" in capsys.readouterr().err
  assert plan_lib.main([f"--config={SFT}:99b_224", "--no_trace"]) == 2
  assert "unknown variant" in capsys.readouterr().err
  assert plan_lib.main([f"--config={SFT}:3b_224", "--topology=v9-8"]) == 2
  assert "unknown TPU topology" in capsys.readouterr().err


def test_trace_catches_a_sequence_too_short_for_the_image():
  config = plan_lib.apply_overrides(plan_lib.load_config(f"{SFT}:3b_448"),
                                    {"train.max_len": 512})
  with pytest.raises(ValueError, match="1024 tokens each"):
    plan_lib.plan(config)

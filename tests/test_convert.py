"""Checkpoint conversion: HF safetensors, big_vision npz, Orbax, CLI.

The reference for every HF test is a transformers model with all parameters
random (`hf_reference.build_hf`) and its own `save_pretrained` output, so the
key layouts and byte layouts are the ones transformers 5 really writes.
Comparisons are bitwise: conversion only moves and reshapes numbers.
"""

import copy
import json
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import ml_dtypes
import numpy as np
import pytest
import torch
from jax.sharding import NamedSharding, PartitionSpec as P

import hf_reference
from auditdm_jax.convert import arch_json
from auditdm_jax.convert import big_vision_npz as bv
from auditdm_jax.convert import hf as hf_convert
from auditdm_jax.convert import orbax_io
from auditdm_jax.convert import safetensors_io as st
from auditdm_jax.convert.__main__ import main as cli_main
from auditdm_jax.convert.hf_config import (arch_from_hf_config,
                                           hf_config_from_arch)
from auditdm_jax.models import arch
from auditdm_jax.models.vlm import Model

ARCHS = ("paligemma2_tiny", "gemma3_tiny", "gemma3_tiny_text")
REPO = pathlib.Path(__file__).resolve().parents[1]


# --- helpers and fixtures -----------------------------------------------------


def assert_bitwise_equal(a, b):
  """Same keys, dtypes, shapes and bytes (nested params or flat dicts)."""
  fa = hf_convert.flatten(a) if not _is_flat(a) else dict(a)
  fb = hf_convert.flatten(b) if not _is_flat(b) else dict(b)
  assert sorted(fa) == sorted(fb)
  for k in fa:
    x, y = np.asarray(fa[k]), np.asarray(fb[k])
    assert (x.dtype, x.shape) == (y.dtype, y.shape), k
    assert x.tobytes() == y.tobytes(), k


def _is_flat(d):
  return all(not isinstance(v, dict) for v in d.values())


def torch_bits(t: torch.Tensor) -> np.ndarray:
  """A torch tensor as numpy, bits unchanged (bf16 -> ml_dtypes.bfloat16)."""
  t = t.detach().contiguous()
  if t.dtype == torch.bfloat16:
    return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
  return t.numpy()


def state_bits(model) -> dict[str, np.ndarray]:
  return {k: torch_bits(v) for k, v in model.state_dict().items()}


@pytest.fixture(scope="module", params=ARCHS)
def ref(request, tmp_path_factory):
  """(cfg, HF model, its params, save_pretrained dir) for one tiny arch."""
  cfg = arch.get(request.param)
  model = hf_reference.build_hf(cfg, seed=3)
  hf_dir = tmp_path_factory.mktemp(cfg.name) / "hf"
  model.save_pretrained(hf_dir)
  return cfg, model, hf_reference.params_of(model, cfg), hf_dir


@pytest.fixture(scope="module")
def pg2(tmp_path_factory):
  """The PaliGemma-2 reference alone, for the single-arch tests."""
  cfg = arch.get("paligemma2_tiny")
  model = hf_reference.build_hf(cfg, seed=5)
  hf_dir = tmp_path_factory.mktemp("pg2") / "hf"
  model.save_pretrained(hf_dir)
  return cfg, model, hf_reference.params_of(model, cfg), hf_dir


def write_hf_dir(path, tensors, config_from):
  path.mkdir(parents=True)
  shutil.copy(config_from / st.CONFIG_NAME, path / st.CONFIG_NAME)
  st.write_safetensors(path / st.SINGLE_FILE, tensors, {"format": "pt"})
  return path


def hf_inputs(cfg, seed=0):
  """Text ids and, for VLMs, pixel values (used to compare two HF models)."""
  rng = np.random.default_rng(seed)
  ids = torch.from_numpy(rng.integers(3, cfg.text.vocab_size - 2, (2, 20)))
  pixels = None
  if cfg.vision is not None:
    s = cfg.vision.image_size
    pixels = torch.from_numpy(rng.normal(size=(2, 3, s, s)).astype(np.float32))
  return ids, pixels


# --- HF safetensors: reading --------------------------------------------------


def test_load_save_pretrained_layout(ref):
  cfg, _, params, hf_dir = ref
  got_cfg, got = st.load_hf_checkpoint(hf_dir)
  assert got_cfg == cfg   # including the name, matched in the registry
  assert_bitwise_equal(got, params)


def test_load_in_memory_layout_with_tied_head(ref, tmp_path):
  """`model.language_model.*` / `model.*` names + `lm_head.weight` (tied)."""
  cfg, model, params, hf_dir = ref
  sd = {k: torch_bits(v) for k, v in model.state_dict().items()}
  assert "lm_head.weight" in sd
  assert any(k.startswith("model.") for k in sd)
  _, got = st.load_hf_checkpoint(write_hf_dir(tmp_path / "d", sd, hf_dir))
  assert_bitwise_equal(got, params)


def test_load_legacy_vision_model_layout(pg2, tmp_path):
  """Hub files from transformers < 4.52: `vision_tower.vision_model.*`."""
  cfg, _, params, hf_dir = pg2
  saved = st.read_safetensors(hf_dir / st.SINGLE_FILE)
  legacy = {k.replace("vision_tower.", "vision_tower.vision_model.", 1): v
            for k, v in saved.items()}
  legacy["language_model.lm_head.weight"] = saved[
      "language_model.model.embed_tokens.weight"]
  assert sum(k.startswith("vision_tower.vision_model.") for k in legacy) > 10
  _, got = st.load_hf_checkpoint(write_hf_dir(tmp_path / "d", legacy, hf_dir))
  assert_bitwise_equal(got, params)


def test_load_sharded_save_pretrained(pg2, tmp_path):
  cfg, model, params, _ = pg2
  model.save_pretrained(tmp_path / "d", max_shard_size="50KB")
  shards = list((tmp_path / "d").glob("model-*.safetensors"))
  assert (tmp_path / "d" / st.INDEX_FILE).exists() and len(shards) > 2
  _, got = st.load_hf_checkpoint(tmp_path / "d")
  assert_bitwise_equal(got, params)


def test_bf16_loads_as_bf16_with_identical_bits(pg2, tmp_path):
  cfg, model, _, _ = pg2
  bf = copy.deepcopy(model).to(torch.bfloat16)
  bf.save_pretrained(tmp_path / "bf")
  want = hf_convert.params_from_hf(
      {k: torch_bits(v) for k, v in bf.state_dict().items()}, cfg)
  _, got = st.load_hf_checkpoint(tmp_path / "bf")
  leaves = hf_convert.flatten(got).values()
  # No silent upcast.
  assert {a.dtype for a in leaves} == {np.dtype(ml_dtypes.bfloat16)}
  assert_bitwise_equal(got, want)
  _, f32 = st.load_hf_checkpoint(tmp_path / "bf", dtype="float32")   # asked for
  assert_bitwise_equal(f32, {k: v.astype(np.float32) for k, v in
                             hf_convert.flatten(want).items()})


# --- HF safetensors: writing --------------------------------------------------


def test_hf_to_ours_to_hf_is_identity(ref, tmp_path):
  """Same keys and bits as save_pretrained; transformers reloads it exactly."""
  cfg, model, params, hf_dir = ref
  original = st.read_safetensors(hf_dir / st.SINGLE_FILE)
  _, loaded = st.load_hf_checkpoint(hf_dir)
  assert_bitwise_equal(hf_convert.params_to_hf(loaded, cfg), original)

  out = st.save_hf_checkpoint(loaded, cfg, tmp_path / "ours")
  assert_bitwise_equal(st.read_safetensors(out / st.SINGLE_FILE), original)
  reloaded, info = type(model).from_pretrained(
      out, output_loading_info=True, attn_implementation="eager")
  assert not any(info[k] for k in ("missing_keys", "unexpected_keys",
                                   "mismatched_keys")), info
  assert_bitwise_equal(state_bits(reloaded), state_bits(model))
  ids, pixels = hf_inputs(cfg)
  with torch.no_grad():
    want = model(input_ids=ids).logits.numpy()
    got = reloaded.eval()(input_ids=ids).logits.numpy()
    np.testing.assert_array_equal(got, want)
    if pixels is not None:
      feats = [getattr(o, "pooler_output", o).numpy() for o in
               (m.model.get_image_features(pixels) for m in (model, reloaded))]
      np.testing.assert_array_equal(feats[1], feats[0])


def test_sharded_export_loads_in_transformers(pg2, tmp_path):
  cfg, model, params, _ = pg2
  out = st.save_hf_checkpoint(params, cfg, tmp_path / "sh",
                              max_shard_bytes=60_000)
  index = json.loads((out / st.INDEX_FILE).read_text())
  assert len(set(index["weight_map"].values())) > 2
  tensors = hf_convert.params_to_hf(params, cfg)
  assert index["metadata"]["total_size"] == sum(
      np.asarray(v).nbytes for v in tensors.values())
  reloaded = type(model).from_pretrained(out)
  assert_bitwise_equal(state_bits(reloaded), state_bits(model))
  _, again = st.load_hf_checkpoint(out)
  assert_bitwise_equal(again, params)


def test_export_is_atomic_and_validated(pg2, tmp_path):
  cfg, _, params, _ = pg2
  dst = tmp_path / "out"
  broken = hf_convert.flatten(params)
  del broken["llm/final_norm/scale"]
  with pytest.raises(hf_convert.CheckpointMismatch, match="final_norm"):
    st.save_hf_checkpoint(hf_convert.unflatten(broken), cfg, dst)
  assert list(tmp_path.iterdir()) == []   # neither dst nor a temp dir is left
  st.save_hf_checkpoint(params, cfg, dst)
  with pytest.raises(FileExistsError, match="out"):
    st.save_hf_checkpoint(params, cfg, dst)
  st.save_hf_checkpoint(params, cfg, dst, overwrite=True)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# --- errors -------------------------------------------------------------------


def test_mismatch_lists_every_bad_key(pg2, tmp_path):
  cfg, _, _, hf_dir = pg2
  t = st.read_safetensors(hf_dir / st.SINGLE_FILE)
  del t["language_model.model.layers.2.mlp.up_proj.weight"]
  del t["vision_tower.post_layernorm.bias"]
  t["language_model.model.layers.9.input_layernorm.weight"] = np.zeros(
      64, np.float32)
  t["vision_tower.head.probe"] = np.zeros((1, 1, 32), np.float32)
  q = "language_model.model.layers.1.self_attn.q_proj.weight"
  t[q] = np.ascontiguousarray(t[q].T)   # same size, wrong orientation
  norm = "language_model.model.layers.3.post_attention_layernorm.weight"
  t[norm] = np.zeros(65, np.float32)
  with pytest.raises(hf_convert.CheckpointMismatch) as e:
    st.load_hf_checkpoint(write_hf_dir(tmp_path / "d", t, hf_dir))
  msg = str(e.value)
  for name in ("layers.2.mlp.up_proj.weight", "post_layernorm.bias",
               "layers.9.input_layernorm.weight", "vision_tower.head.probe", q,
               norm):
    assert name in msg, (name, msg)
  assert len(e.value.missing) == 2 and len(e.value.unexpected) == 2
  assert len(e.value.misshaped) == 2


def test_corrupt_files_are_named(pg2, tmp_path):
  cfg, _, _, hf_dir = pg2
  d = tmp_path / "d"
  shutil.copytree(hf_dir, d)
  f = d / st.SINGLE_FILE
  data = f.read_bytes()
  f.write_bytes(data[: len(data) // 2])
  with pytest.raises(st.CheckpointFileError, match="truncated") as e:
    st.load_hf_checkpoint(d)
  assert str(f) in str(e.value)
  f.write_bytes(data[:5])
  with pytest.raises(st.CheckpointFileError, match=str(f)):
    st.load_hf_checkpoint(d)
  f.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
  with pytest.raises(st.CheckpointFileError, match="header"):
    st.load_hf_checkpoint(d)
  f.write_bytes(data + b"junk")
  with pytest.raises(st.CheckpointFileError, match="trailing"):
    st.load_hf_checkpoint(d)
  f.unlink()
  with pytest.raises(FileNotFoundError, match="model.safetensors"):
    st.load_hf_checkpoint(d)
  (d / st.CONFIG_NAME).unlink()
  with pytest.raises(FileNotFoundError, match="config.json"):
    st.load_hf_checkpoint(d)


def test_sharded_index_problems_are_named(pg2, tmp_path):
  cfg, model, _, _ = pg2
  d = tmp_path / "d"
  model.save_pretrained(d, max_shard_size="50KB")
  index = json.loads((d / st.INDEX_FILE).read_text())
  victim = sorted(set(index["weight_map"].values()))[1]
  (d / victim).unlink()
  with pytest.raises(FileNotFoundError, match=victim):
    st.load_hf_checkpoint(d)
  model.save_pretrained(d, max_shard_size="50KB")   # restore the shard
  key = next(k for k, v in index["weight_map"].items() if v == victim)
  index["weight_map"][key] = sorted(set(index["weight_map"].values()))[0]
  (d / st.INDEX_FILE).write_text(json.dumps(index))
  with pytest.raises(st.CheckpointFileError, match=key.replace(".", r"\.")):
    st.load_hf_checkpoint(d)


# --- configs ------------------------------------------------------------------


@pytest.mark.parametrize("name", arch.names())
def test_arch_json_and_hf_config_round_trip(name):
  cfg = arch.get(name)
  assert arch_json.arch_from_dict(json.loads(json.dumps(
      arch_json.arch_to_dict(cfg)))) == cfg
  assert arch_from_hf_config(hf_config_from_arch(cfg), name) == cfg


def test_arch_json_rejects_unknown_fields():
  d = arch_json.arch_to_dict(arch.get("gemma3_tiny"))
  d["text"]["new_knob"] = 1
  with pytest.raises(ValueError, match="new_knob"):
    arch_json.arch_from_dict(d)


# Hub config.json files hold only values that differ from transformers'
# defaults (these are the published files' fields).
_GEMMA3_4B_HUB = {
    "architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
    "boi_token_index": 255999, "eoi_token_index": 256000,
    "image_token_index": 262144, "mm_tokens_per_image": 256,
    "text_config": {"hidden_size": 2560, "intermediate_size": 10240,
                    "model_type": "gemma3_text", "num_hidden_layers": 34,
                    "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
                    "sliding_window": 1024},
    "vision_config": {"hidden_size": 1152, "image_size": 896,
                      "intermediate_size": 4304,
                      "model_type": "siglip_vision_model",
                      "num_attention_heads": 16, "num_hidden_layers": 27,
                      "patch_size": 14, "vision_use_head": False}}
_PALIGEMMA2_3B_224_HUB = {
    "architectures": ["PaliGemmaForConditionalGeneration"],
    "model_type": "paligemma", "image_token_index": 257152,
    "hidden_size": 2048, "projection_dim": 2304,
    "text_config": {"hidden_activation": "gelu_pytorch_tanh",
                    "hidden_size": 2304, "intermediate_size": 9216,
                    "model_type": "gemma2",
                    "num_hidden_layers": 26, "num_image_tokens": 256,
                    "num_key_value_heads": 4, "vocab_size": 257216},
    "vision_config": {"hidden_size": 1152, "intermediate_size": 4304,
                      "model_type": "siglip_vision_model",
                      "num_attention_heads": 16, "num_hidden_layers": 27,
                      "num_image_tokens": 256,
                      "patch_size": 14, "projection_dim": 2304,
                      "vision_use_head": False}}


# Legacy text-only keys; `rope_theta` is the global base only, so the local
# layers keep the class default 10000 although `rope_local_base_freq` is absent.
_GEMMA3_1B_LEGACY = {
    "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
    "hidden_size": 1152, "intermediate_size": 6912, "num_attention_heads": 4,
    "num_hidden_layers": 26, "num_key_value_heads": 1, "rope_theta": 1000000.0,
    "rope_scaling": None, "sliding_window": 512, "sliding_window_pattern": 6,
    "vocab_size": 262144}


@pytest.mark.parametrize("config,name", [
    (_GEMMA3_4B_HUB, "gemma3_4b"),
    (_PALIGEMMA2_3B_224_HUB, "paligemma2_3b_224"),
    (_GEMMA3_1B_LEGACY, "gemma3_1b")])
def test_sparse_hub_configs_use_transformers_defaults(config, name, tmp_path):
  (tmp_path / st.CONFIG_NAME).write_text(json.dumps(config))
  assert st.load_hf_config(tmp_path) == arch.get(name)


# --- big_vision npz -----------------------------------------------------------


def test_big_vision_npz_matches_hf_import(pg2, tmp_path):
  cfg, model, params, _ = pg2
  path = tmp_path / "pg2.npz"
  bv.params_to_big_vision_npz(params, cfg, path)
  with np.load(path) as z:
    flat = {k: z[k] for k in z.files}
  assert all(k.startswith("params/") for k in flat)
  assert_bitwise_equal(bv.load_big_vision_npz(path, cfg), params)

  # The npz layout itself, checked against the HF tensors (anchors.md §5.5)
  # rather than against our own inverse.
  t = cfg.text
  hf = {hf_convert.canonical_key(k): v.detach().numpy()
        for k, v in model.state_dict().items()}
  g = lambda k: flat["params/" + k]
  for i in range(t.num_layers):
    lm = f"lm.layers.{i}."
    np.testing.assert_array_equal(
        g("llm/layers/attn/q_einsum/w")[i].transpose(0, 2, 1).reshape(
            -1, t.embed_dim), hf[lm + "self_attn.q_proj.weight"])
    for s, name in enumerate(("k_proj", "v_proj")):
      np.testing.assert_array_equal(
          g("llm/layers/attn/kv_einsum/w")[i, s].transpose(0, 2, 1).reshape(
              -1, t.embed_dim), hf[lm + f"self_attn.{name}.weight"])
    np.testing.assert_array_equal(
        g("llm/layers/attn/attn_vec_einsum/w")[i].transpose(2, 0, 1).reshape(
            t.embed_dim, -1), hf[lm + "self_attn.o_proj.weight"])
    np.testing.assert_array_equal(g("llm/layers/mlp/gating_einsum")[i, 0].T,
                                  hf[lm + "mlp.gate_proj.weight"])
    np.testing.assert_array_equal(g("llm/layers/mlp/gating_einsum")[i, 1].T,
                                  hf[lm + "mlp.up_proj.weight"])
    np.testing.assert_array_equal(g("llm/layers/mlp/linear")[i].T,
                                  hf[lm + "mlp.down_proj.weight"])
    np.testing.assert_array_equal(g("llm/layers/post_attention_norm/scale")[i],
                                  hf[lm + "post_attention_layernorm.weight"])
  np.testing.assert_array_equal(g("img/embedding/kernel").transpose(3, 2, 0, 1),
                                hf["vis.embeddings.patch_embedding.weight"])
  np.testing.assert_array_equal(
      g("img/pos_embedding").reshape(-1, cfg.vision.width),
      hf["vis.embeddings.position_embedding.weight"])
  np.testing.assert_array_equal(g("img/head/kernel").T,
                                hf["proj.linear.weight"])


def test_big_vision_variants_and_errors(pg2):
  cfg, _, params, _ = pg2
  flat = bv.params_to_big_vision(params, cfg, prefix="")   # no `params/` prefix
  assert_bitwise_equal(bv.params_from_big_vision(flat, cfg), params)

  # bf16 as np.savez stores it (raw 2-byte void) is read back as bfloat16.
  v2 = {k: v.astype(ml_dtypes.bfloat16).view("V2") for k, v in flat.items()}
  got = bv.params_from_big_vision(v2, cfg)
  norm = hf_convert.flatten(got)["llm/final_norm/scale"]
  assert norm.dtype == ml_dtypes.bfloat16

  # big_vision's unpadded vocabulary is zero-padded unless refused.
  short = dict(flat, **{"llm/embedder/input_embedding":
                        flat["llm/embedder/input_embedding"][:-64]})
  emb = hf_convert.flatten(bv.params_from_big_vision(short, cfg))[
      "llm/embedder/input_embedding"]
  assert emb.shape == (cfg.text.vocab_size, cfg.text.embed_dim)
  assert not emb[-64:].any()
  with pytest.raises(hf_convert.CheckpointMismatch, match="input_embedding"):
    bv.params_from_big_vision(short, cfg, pad_vocab=False)

  bad = dict(flat)
  del bad["img/head/bias"]
  bad["llm/layers/attn/extra"] = np.zeros(3)
  bad["llm/layers/mlp/gating_einsum"] = np.zeros((4, 2, 128, 64), np.float32)
  with pytest.raises(hf_convert.CheckpointMismatch) as e:
    bv.params_from_big_vision(bad, cfg)
  for name in ("img/head/bias", "llm/layers/attn/extra", "gating_einsum"):
    assert name in str(e.value)
  with pytest.raises(ValueError, match="PaliGemma"):
    bv.params_from_big_vision(flat, arch.get("gemma3_tiny"))


def test_big_vision_corrupt_npz(pg2, tmp_path):
  cfg, _, params, _ = pg2
  bad = tmp_path / "bad.npz"
  bad.write_bytes(b"PK\x03\x04 definitely not a zip")
  with pytest.raises(st.CheckpointFileError, match="bad.npz"):
    bv.load_big_vision_npz(bad, cfg)
  with pytest.raises(FileNotFoundError, match="nope.npz"):
    bv.load_big_vision_npz(tmp_path / "nope.npz", cfg)
  good = tmp_path / "good.npz"
  bv.params_to_big_vision_npz(params, cfg, good)
  data = good.read_bytes()
  good.write_bytes(data[: len(data) * 2 // 3])   # cuts off the zip directory
  with pytest.raises(st.CheckpointFileError, match="good.npz"):
    bv.load_big_vision_npz(good, cfg)


# --- Orbax --------------------------------------------------------------------


def test_orbax_restores_onto_a_sharded_mesh(pg2, tmp_path):
  cfg, _, params, _ = pg2
  assert len(jax.devices()) == 8, "conftest sets 8 fake CPU devices"
  mesh = jax.sharding.Mesh(np.array(jax.devices()).reshape(2, 4),
                           ("data", "fsdp"))
  ckpt = orbax_io.save_params(params, tmp_path / "ckpt", cfg)
  assert orbax_io.arch_of_checkpoint(ckpt) == cfg

  flat = hf_convert.flatten(params)
  special = {"llm/embedder/input_embedding": P("fsdp", None),
             "llm/layers/attn/q_einsum/w": P(None, "data", "fsdp", None)}
  shardings = hf_convert.unflatten(
      {p: NamedSharding(mesh, special.get(p, P())) for p in flat})
  got = orbax_io.restore_params(ckpt, shardings=shardings)
  for p, arr in hf_convert.flatten(got).items():
    assert arr.sharding == NamedSharding(mesh, special.get(p, P())), p
    np.testing.assert_array_equal(np.asarray(arr), flat[p])
  emb = hf_convert.flatten(got)["llm/embedder/input_embedding"]
  assert {s.data.shape for s in emb.addressable_shards} == {
      (cfg.text.vocab_size // 4, cfg.text.embed_dim)}

  # Abstract targets: structure checked, dtype taken from them.
  abstract = jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, jax.numpy.bfloat16),
      Model(cfg).abstract_params())
  bf = orbax_io.restore_params(ckpt, abstract=abstract)
  norm = hf_convert.flatten(bf)["llm/final_norm/scale"]
  assert norm.dtype == jax.numpy.bfloat16
  wrong = Model(arch.get("gemma3_tiny")).abstract_params()
  with pytest.raises(hf_convert.CheckpointMismatch,
                     match="mm_input_projection"):
    orbax_io.restore_params(ckpt, abstract=wrong)
  with pytest.raises(FileExistsError):
    orbax_io.save_params(params, ckpt, cfg)
  with pytest.raises(hf_convert.CheckpointMismatch):
    orbax_io.save_params(params, tmp_path / "other", arch.get("gemma3_tiny"))
  assert not (tmp_path / "other").exists()


# --- CLI ----------------------------------------------------------------------


def test_cli_hf2orbax_subprocess(pg2, tmp_path):
  cfg, _, params, hf_dir = pg2
  dst = tmp_path / "orbax"
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run(
      [sys.executable, "-m", "auditdm_jax.convert", "hf2orbax", "--src",
       str(hf_dir), "--dst", str(dst), "--dtype", "bfloat16"],
      env=env, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr
  got_cfg, got = orbax_io.load_checkpoint(dst)
  assert got_cfg == cfg
  want = {k: v.astype(ml_dtypes.bfloat16)
          for k, v in hf_convert.flatten(params).items()}
  assert_bitwise_equal({k: np.asarray(v) for k, v in
                        hf_convert.flatten(got).items()}, want)


def test_cli_in_process(pg2, tmp_path, capsys):
  cfg, _, params, hf_dir = pg2
  npz = tmp_path / "pg2.npz"
  bv.params_to_big_vision_npz(params, cfg, npz)
  assert cli_main(["npz2orbax", "--src", str(npz), "--arch", cfg.name,
                   "--dst", str(tmp_path / "ob")]) == 0
  assert cli_main(["orbax2hf", "--src", str(tmp_path / "ob"), "--dst",
                   str(tmp_path / "hf"), "--max-shard-size", "60KB"]) == 0
  assert (tmp_path / "hf" / st.INDEX_FILE).exists()
  assert_bitwise_equal(st.read_hf_tensors(tmp_path / "hf"),
                       st.read_hf_tensors(hf_dir))
  capsys.readouterr()
  # Failures: one message, status 1, nothing written.
  assert cli_main(["hf2orbax", "--src", str(tmp_path / "missing"), "--dst",
                   str(tmp_path / "x")]) == 1
  assert "config.json" in capsys.readouterr().err
  assert cli_main(["npz2orbax", "--src", str(npz), "--arch", "gemma3_tiny",
                   "--dst", str(tmp_path / "y")]) == 1
  assert "PaliGemma" in capsys.readouterr().err
  assert cli_main(["orbax2hf", "--src", str(tmp_path / "ob"), "--dst",
                   str(tmp_path / "hf")]) == 1
  assert "exists" in capsys.readouterr().err
  assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()

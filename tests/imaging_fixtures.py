"""Shared helpers of the imaging tests: servers in threads, toy backends and
tiny random diffusers pipelines built offline.

  with serving(backend) as server:            # make_server on port 0
    RemoteBackend(server.url).edit(...)
  with raw_server(handler) as url:            # answers whatever handler says

  pipes = build_tiny_pipelines(tmp_dir)       # {"flux", "kontext", "sd",
                                              #  "ip2p"}: (pipeline, saved dir)

The tiny pipelines have the real classes and wiring (FluxTransformer2DModel,
AutoencoderKL, CLIP + T5 text encoders, UNet2DConditionModel) with a few
thousand random parameters; images are 32x32 and a call takes well under a
second on CPU. Tokenizers are built in memory: a character-level CLIP BPE
(no merges) and a T5 Unigram over letters, so nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import http.server
import string
import threading
from collections.abc import Callable, Iterator
from typing import Any

from auditdm_jax.imaging import base
from auditdm_jax.imaging import serve


# -- servers -------------------------------------------------------------------


@contextlib.contextmanager
def serving(backend: base.ImageBackend, **kwargs: Any
            ) -> Iterator[serve.ImageServer]:
  """Serves `backend` on a free loopback port in a thread."""
  server = serve.make_server(backend, "127.0.0.1", 0, **kwargs)
  thread = threading.Thread(target=server.serve_forever, args=(0.05,),
                            daemon=True)
  thread.start()
  try:
    yield server
  finally:
    server.shutdown()
    server.server_close()
    thread.join(5)


@contextlib.contextmanager
def raw_server(respond: Callable[[http.server.BaseHTTPRequestHandler], None]
               ) -> Iterator[str]:
  """A loopback server whose every request is answered by `respond`."""

  class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # pylint: disable=invalid-name
      respond(self)

    def do_POST(self):  # pylint: disable=invalid-name
      n = int(self.headers.get("Content-Length", 0))
      self.rfile.read(n)
      respond(self)

    def log_message(self, *args):
      pass

  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
  server.daemon_threads = True
  thread = threading.Thread(target=server.serve_forever, args=(0.05,),
                            daemon=True)
  thread.start()
  try:
    yield f"http://127.0.0.1:{server.server_address[1]}"
  finally:
    server.shutdown()
    server.server_close()
    thread.join(5)


def answer(handler: http.server.BaseHTTPRequestHandler, code: int,
           data: bytes) -> None:
  handler.send_response(code)
  handler.send_header("Content-Length", str(len(data)))
  handler.end_headers()
  handler.wfile.write(data)


# -- toy backends --------------------------------------------------------------


class ScriptedBackend(base.ImageBackend):
  """Delegates to `inner` after running `before(op)` (sleep, raise, ...);
  counts calls and items, so tests see what reached the backend. Its
  cache_id is inner's: caches see the same backend."""
  name = "scripted"

  def __init__(self, inner: base.ImageBackend,
               before: Callable[[str], None] = lambda op: None):
    self.inner, self.before = inner, before
    self.calls: list[tuple[str, int]] = []

  @property
  def cache_id(self) -> str:
    return self.inner.cache_id

  def edit(self, pictures, instructions, *, seed=0):
    self.calls.append(("edit", len(pictures)))
    self.before("edit")
    return self.inner.edit(pictures, instructions, seed=seed)

  def generate(self, captions, *, seed=0):
    self.calls.append(("generate", len(captions)))
    self.before("generate")
    return self.inner.generate(captions, seed=seed)


class GenerateOnlyBackend(base.ImageBackend):
  """Offers generate only, as a backend without an editor does."""
  name = "generate_only"

  def __init__(self, inner: base.ImageBackend):
    self.inner = inner

  def edit(self, pictures, instructions, *, seed=0):
    raise NotImplementedError("generate_only cannot edit")

  def generate(self, captions, *, seed=0):
    return self.inner.generate(captions, seed=seed)


# -- tiny diffusers pipelines --------------------------------------------------


def _clip_tokenizer():
  # pylint: disable-next=g-import-not-at-top
  from transformers import CLIPTokenizer
  vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
  for c in string.ascii_lowercase + string.digits:
    vocab[c] = len(vocab)
    vocab[c + "</w>"] = len(vocab)  # CLIP marks word ends with </w>.
  return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def _t5_tokenizer():
  # pylint: disable-next=g-import-not-at-top
  from transformers import T5Tokenizer
  pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)]
  pieces += [(c, -2.0) for c in string.ascii_lowercase + string.digits]
  pieces += [("\u2581" + c, -2.5) for c in string.ascii_lowercase]
  return T5Tokenizer(vocab=pieces, extra_ids=0)


def _clip_text_model(vocab_size: int):
  # pylint: disable-next=g-import-not-at-top
  from transformers import CLIPTextConfig, CLIPTextModel
  return CLIPTextModel(CLIPTextConfig(
      vocab_size=vocab_size, hidden_size=32, intermediate_size=37,
      num_attention_heads=4, num_hidden_layers=2, max_position_embeddings=77,
      projection_dim=32, bos_token_id=0, eos_token_id=1, pad_token_id=1))


def tiny_flux_components() -> dict[str, Any]:
  """Components of a FluxPipeline / FluxKontextPipeline (shared modules)."""
  # pylint: disable=g-import-not-at-top
  from diffusers import AutoencoderKL
  from diffusers import FlowMatchEulerDiscreteScheduler
  from diffusers import FluxTransformer2DModel
  from transformers import T5Config, T5EncoderModel
  # pylint: enable=g-import-not-at-top
  clip_tok, t5_tok = _clip_tokenizer(), _t5_tokenizer()
  return dict(
      scheduler=FlowMatchEulerDiscreteScheduler(),
      # One block: vae scale 1, so 32x32 images are 16x16 packed tokens.
      vae=AutoencoderKL(sample_size=32, in_channels=3, out_channels=3,
                        block_out_channels=(4,), layers_per_block=1,
                        latent_channels=1, norm_num_groups=1,
                        use_quant_conv=False, use_post_quant_conv=False,
                        shift_factor=0.0609, scaling_factor=1.5035),
      text_encoder=_clip_text_model(len(clip_tok)), tokenizer=clip_tok,
      text_encoder_2=T5EncoderModel(T5Config(
          vocab_size=len(t5_tok), d_model=32, d_kv=8, d_ff=37, num_layers=2,
          num_heads=4, decoder_start_token_id=0, pad_token_id=0,
          eos_token_id=1)),
      tokenizer_2=t5_tok,
      transformer=FluxTransformer2DModel(
          patch_size=1, in_channels=4, num_layers=1, num_single_layers=1,
          attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
          pooled_projection_dim=32, axes_dims_rope=[4, 4, 8]))


def tiny_sd_components(unet_in_channels: int) -> dict[str, Any]:
  """Components of an SD (4 input channels) or InstructPix2Pix (8) pipeline."""
  # pylint: disable=g-import-not-at-top
  from diffusers import AutoencoderKL
  from diffusers import DDIMScheduler
  from diffusers import EulerAncestralDiscreteScheduler
  from diffusers import UNet2DConditionModel
  # pylint: enable=g-import-not-at-top
  tok = _clip_tokenizer()
  # IP2P's usual scheduler draws noise each step: seeding must cover it.
  scheduler = (EulerAncestralDiscreteScheduler() if unet_in_channels == 8 else
               DDIMScheduler(steps_offset=1, clip_sample=False))
  return dict(
      vae=AutoencoderKL(block_out_channels=(8, 16), in_channels=3,
                        out_channels=3,
                        down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2,
                        latent_channels=4, norm_num_groups=4, sample_size=32),
      text_encoder=_clip_text_model(len(tok)), tokenizer=tok,
      unet=UNet2DConditionModel(
          block_out_channels=(8, 16), layers_per_block=1, sample_size=16,
          in_channels=unet_in_channels, out_channels=4,
          down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
          up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
          cross_attention_dim=32, norm_num_groups=4, attention_head_dim=4),
      scheduler=scheduler, safety_checker=None, feature_extractor=None,
      requires_safety_checker=False)


def build_tiny_pipelines(root) -> dict[str, tuple[Any, str]]:
  """Builds, saves and returns {kind: (pipeline, saved dir)}.

  Kinds: flux (FluxPipeline), kontext (FluxKontextPipeline, same modules),
  sd (StableDiffusionPipeline), ip2p (StableDiffusionInstructPix2Pix).
  """
  # pylint: disable=g-import-not-at-top
  import torch
  from diffusers import FluxKontextPipeline
  from diffusers import FluxPipeline
  from diffusers import StableDiffusionInstructPix2PixPipeline
  from diffusers import StableDiffusionPipeline
  # pylint: enable=g-import-not-at-top
  torch.manual_seed(0)
  flux = tiny_flux_components()
  pipes = {
      "flux": FluxPipeline(**flux),
      "kontext": FluxKontextPipeline(**flux),
      "sd": StableDiffusionPipeline(**tiny_sd_components(4)),
      "ip2p": StableDiffusionInstructPix2PixPipeline(**tiny_sd_components(8)),
  }
  out = {}
  for kind, pipe in pipes.items():
    d = str(root / kind)
    pipe.save_pretrained(d)
    out[kind] = (pipe, d)
  return out

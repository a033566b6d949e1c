import os; os.environ.setdefault('XLA_FLAGS','--xla_force_host_platform_device_count=8'); os.environ['HF_HUB_OFFLINE']='1'  # pylint: disable=multiple-statements,g-import-not-at-top
# Shared pytest fixtures.
#
# The line above must run before anything imports jax: XLA reads XLA_FLAGS
# once, and 8 fake CPU devices let sharding tests run on one host.
# HF_HUB_OFFLINE makes an accidental hub download fail at once instead of
# hanging.

import random

import pytest

_WORDS = (
    "the a an cat cats dog sat on mat red blue green what is in this image "
    "picture photo describe answer question detect segment left right car "
    "person people tree sky how many there are yes no and of to with "
    "0 1 2 3 7 12 345 2024 café naïve über 日本 語 ünïcödé").split()
_PUNCT = ("", "", "?", ".", ",", "!", ":")


def gemma_test_corpus(n: int = 2000, seed: int = 0) -> list[str]:
  """Deterministic sentences with newlines, digits, punctuation and unicode."""
  rng = random.Random(seed)
  lines = []
  for _ in range(n):
    s = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 12)))
    s += rng.choice(_PUNCT)
    r = rng.random()
    if r < 0.2:
      s = s + "\n" + s
    elif r < 0.3:
      s = s + "\n\n" + s
    elif r < 0.4:
      # Chat-like lines, so BPE learns pieces around the turn headers.
      s = rng.choice(("user\n", "model\n")) + s
    lines.append(s)
  return lines


@pytest.fixture(scope="session")
def make_gemma_corpus():
  """The corpus function, for tests that want more sentences or a seed."""
  return gemma_test_corpus


@pytest.fixture(scope="session")
def gemma_tokenizer_dir(tmp_path_factory):
  """A directory holding `tokenizer.model`: a Gemma-style SentencePiece BPE.

  Ids 0..3 are pad/eos/bos/unk, 4 `<mask>`, then the turn and image pieces and
  all 1024 `<locNNNN>` and 128 `<segNNN>` pieces. Load it with
  `auditdm_jax.tokenizer.Tokenizer(dir / "tokenizer.model")` or
  `transformers.GemmaTokenizer.from_pretrained(dir)`.
  """
  # Imported here so that test sessions not using it skip sentencepiece.
  # pylint: disable-next=g-import-not-at-top
  from auditdm_jax import tokenizer as tok_lib
  d = tmp_path_factory.mktemp("gemma_tokenizer")
  tok_lib.train_test_tokenizer(gemma_test_corpus(), d / "tokenizer.model",
                               vocab_size=2000)
  return d

"""The scene world's SentencePiece tokenizer: 512 pieces, word-level in effect.

  tok = world_tokenizer()              # auditdm_jax.tokenizer.Tokenizer
  tok.encode("what colour is the circle?")
  # pieces: what ▁colour ▁is ▁the ▁circle ?   (one piece per word)

The model ships as `auditdm_jax/world/assets/tokenizer.model`;
`make_world_tokenizer()` rebuilds it byte for byte (the test suite checks it),
and `python -m auditdm_jax.world.assets.make_tokenizer` rewrites the file.

Pieces, in id order (WORLD_VOCAB = 512 = `arch.WORLD_VOCAB`; the world archs'
image placeholder is id 512, just past the vocabulary):

  0..3     <pad> <eos> <bos> <unk>                      (Gemma ids)
  4..9     <mask> <start_of_turn> <end_of_turn> <start_of_image>
           <end_of_image> <image_soft_token>            (user-defined, atomic)
  10..     `<unusedN>` fillers, only if BPE ran out of merges (none today)
  then     BPE merges and the characters: every printable ASCII character
           and "\\n", so any ASCII text round-trips exactly.

Conventions differ from the Gemma ones (and `tokenizer.train_test_tokenizer`)
in two places, on purpose:

  * No `<locNNNN>` / `<segNNN>` pieces: the world has no detection or
    segmentation output, and each would cost a piece. `Tokenizer.loc_id`
    raises `MissingTokenError`.
  * No byte fallback. The 256 byte pieces would take half of the 512; without
    them every world word (in both of its spellings, "▁red" inside a sentence
    and "red" as an answer or first word) is one piece, so every answer is one
    token (as in research/world_feasibility.md) and questions are as many
    tokens as words. The price: a character outside printable ASCII and "\\n"
    encodes as `<unk>` (the world never writes one).

Otherwise: BPE, pad/eos/bos/unk = 0/1/2/3, no dummy prefix, identity
normalisation, whitespace kept, digits split (so "row 3" is `▁row ▁ 3`).

Training text (`training_text`): `world.vocab.corpus(CORPUS_SIZE, seed)`,
the same strings cut the way `auditdm_jax.prompts` tokenizes them
(PaliGemma "{prefix}\\n"; Gemma-3 "user\\n...", "\\n\\n{text}", "\\n",
"model\\n"), and each printable ASCII character once. Training is
single-threaded and therefore deterministic; the bytes depend on the
sentencepiece version (0.2.x here) and on the world's grammar: if either
changes, the asset test fails, and the asset must be regenerated (which
invalidates world checkpoints trained on the old one).
"""

from __future__ import annotations

import functools
import io
import os
import string
from collections.abc import Iterator
from typing import Optional

import sentencepiece as spm

from auditdm_jax import tokenizer as tok_lib
from auditdm_jax.world import vocab as vocab_lib

WORLD_VOCAB = 512        # == auditdm_jax.models.arch.WORLD_VOCAB.
CORPUS_SIZE = 12_000     # world.vocab.corpus strings used for training.
SEED = 0                 # Seed of the shipped model.
CHAT_SHARE = 4           # Every CHAT_SHARE-th string also as prompt pieces.

WORLD_TOKENIZER_PATH = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "world",
    "assets", "tokenizer.model")

# printable ASCII minus the whitespace other than " " (string.printable ends
# with " \t\n\r\x0b\x0c"), plus "\n" (chat turns, PaliGemma prefixes).
ALPHABET = string.printable[:95] + "\n"


def special_pieces(num_unused: int = 0) -> list[str]:
  """User-defined pieces in id order (ids 4, 5, ...): Gemma's, no loc/seg."""
  return (tok_lib.gemma_special_pieces(num_loc=0, num_seg=0)
          + [f"<unused{i}>" for i in range(num_unused)])


def training_text(seed: int = SEED, n: int = CORPUS_SIZE) -> Iterator[str]:
  """Yields the deterministic training strings (see the module docstring)."""
  for i, s in enumerate(vocab_lib.corpus(n, seed)):
    yield s
    if i % CHAT_SHARE == 0:
      k = (i // CHAT_SHARE) % 4
      if k == 0:
        yield s + "\n"                 # PaliGemma prefix.
      elif k == 1:
        yield "user\n" + s             # Gemma-3 text-only user turn.
      else:                            # Gemma-3 turn with an image.
        yield "\n\n" + s
        yield "user\n\n\n"
      yield "\n"
      yield "model\n"
  yield from ALPHABET


def _train(texts: list[str], num_unused: int) -> bytes:
  buf = io.BytesIO()
  spm.SentencePieceTrainer.Train(
      sentence_iterator=iter(texts), model_writer=buf,
      vocab_size=WORLD_VOCAB, hard_vocab_limit=False, model_type="bpe",
      byte_fallback=False, character_coverage=1.0,
      pad_id=0, eos_id=1, bos_id=2, unk_id=3,
      pad_piece=tok_lib.PAD, eos_piece=tok_lib.EOS, bos_piece=tok_lib.BOS,
      unk_piece=tok_lib.UNK, user_defined_symbols=special_pieces(num_unused),
      add_dummy_prefix=False, normalization_rule_name="identity",
      remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
      split_digits=True, num_threads=1, minloglevel=2)
  return buf.getvalue()


def make_world_tokenizer(path: Optional[str] = None, *, seed: int = SEED,
                         n: int = CORPUS_SIZE) -> bytes:
  """Trains the world tokenizer; returns (and optionally writes) its bytes.

  With the defaults the result equals the shipped `WORLD_TOKENIZER_PATH`
  byte for byte. If BPE finds fewer than 512 pieces (it runs out of merges
  on a closed vocabulary), training is repeated with that many `<unusedN>`
  pieces, so the vocabulary is exactly WORLD_VOCAB either way.

  Args:
    path: where to write the `.model` file (parents are created), or None.
    seed: corpus seed.
    n: number of `world.vocab.corpus` strings.

  Returns:
    The serialized SentencePiece model.
  """
  texts = list(training_text(seed, n))
  proto = _train(texts, 0)
  size = tok_lib.Tokenizer(proto).vocab_size
  if size < WORLD_VOCAB:
    proto = _train(texts, WORLD_VOCAB - size)
  size = tok_lib.Tokenizer(proto).vocab_size
  if size != WORLD_VOCAB:
    raise RuntimeError(f"world tokenizer has {size} pieces, not {WORLD_VOCAB}")
  if path is not None:
    parent = os.path.dirname(os.fspath(path))
    if parent:
      os.makedirs(parent, exist_ok=True)
    with open(path, "wb") as f:
      f.write(proto)
  return proto


def world_tokenizer_path() -> str:
  """Path of the shipped `tokenizer.model` (e.g. for `SFTConfig.tokenizer`)."""
  if not os.path.isfile(WORLD_TOKENIZER_PATH):
    raise FileNotFoundError(
        f"world tokenizer missing at {WORLD_TOKENIZER_PATH}; regenerate it "
        "with `python -m auditdm_jax.world.assets.make_tokenizer`")
  return WORLD_TOKENIZER_PATH


@functools.lru_cache(maxsize=1)
def world_tokenizer() -> tok_lib.Tokenizer:
  """The shipped world tokenizer (cached; Tokenizer objects are read-only)."""
  return tok_lib.Tokenizer(world_tokenizer_path())

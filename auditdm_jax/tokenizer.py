"""SentencePiece tokenizer shared by the PaliGemma-2 and Gemma-3 ports.

Special tokens are looked up by *piece*, never by a hard-coded id: the Gemma-2
vocabulary used by PaliGemma-2 has `<start_of_turn>` at 106 and no image
tokens, while Gemma-3 has it at 105 and `<start_of_image>` at 255999. A piece
the model lacks raises `MissingTokenError` when its id is asked for.

Encoding matches transformers' `GemmaTokenizer` (the tokenizers-backed class
that `GemmaTokenizer.from_pretrained(dir_with_tokenizer.model)` builds):

  * User-defined pieces (`<start_of_turn>`, `<locNNNN>`, ...) are atomic in
    both SentencePiece and transformers.
  * Control pieces (`<pad>`, `<eos>`, `<bos>`) and `<unk>` are NOT parsed from
    text by SentencePiece, but transformers treats them as special tokens and
    does parse them. `encode(..., parse_special=True)` (the default) splits the
    text on them first, so `"<bos>hi"` gives `[bos, ...]` in both.
  * Tokens outside the SentencePiece vocabulary can be registered with
    `added_tokens` (Gemma-3's `<image_soft_token>` = 262144 is such a token on
    the hub: transformers appends it, the .model file does not hold it).

Ids are plain Python ints; arrays of ids elsewhere in the project are int32.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Optional, Union

import numpy as np
import sentencepiece as spm

PAD = "<pad>"
EOS = "<eos>"
BOS = "<bos>"
UNK = "<unk>"
MASK = "<mask>"
START_OF_TURN = "<start_of_turn>"
END_OF_TURN = "<end_of_turn>"
START_OF_IMAGE = "<start_of_image>"
END_OF_IMAGE = "<end_of_image>"
IMAGE_SOFT_TOKEN = "<image_soft_token>"

NUM_LOC_TOKENS = 1024  # PaliGemma detection bins <loc0000>..<loc1023>.
NUM_SEG_TOKENS = 128   # PaliGemma segmentation codes <seg000>..<seg127>.

PathLike = Union[str, os.PathLike]


class MissingTokenError(LookupError):
  """A special piece was asked for that this vocabulary does not contain."""


def loc_piece(i: int) -> str:
  """Returns the PaliGemma location piece for bin `i` in [0, 1024)."""
  i = int(i)
  if not 0 <= i < NUM_LOC_TOKENS:
    raise ValueError(f"loc bin must be in [0, {NUM_LOC_TOKENS}), got {i}")
  return f"<loc{i:04d}>"


def seg_piece(i: int) -> str:
  """Returns the PaliGemma segmentation piece for code `i` in [0, 128)."""
  i = int(i)
  if not 0 <= i < NUM_SEG_TOKENS:
    raise ValueError(f"seg code must be in [0, {NUM_SEG_TOKENS}), got {i}")
  return f"<seg{i:03d}>"


def loc_tokens(y0: int, x0: int, y1: int, x1: int) -> str:
  """A PaliGemma box as text, e.g. `<loc0010><loc0020><loc0500><loc0600>`.

  PaliGemma writes boxes in (y0, x0, y1, x1) order; each argument is already
  a bin index in [0, 1024) along its image side.
  """
  return "".join(loc_piece(v) for v in (y0, x0, y1, x1))


class Tokenizer:
  """A SentencePiece model plus the Gemma special-token conventions.

  Attributes:
    path: the file the model was read from, or None for serialized bytes.
    pad_id, eos_id, bos_id: required; construction fails without them.
  """

  def __init__(self, model: Union[PathLike, bytes], *,
               added_tokens: Optional[Mapping[str, int]] = None):
    """Loads a SentencePiece model.

    Args:
      model: path to a `.model` file, a directory holding `tokenizer.model`
        (a hub checkpoint), or the serialized model proto (bytes).
      added_tokens: pieces that live outside the SentencePiece vocabulary,
        mapped to their ids (which must be >= the SentencePiece vocab size).

    Raises:
      FileNotFoundError: `model` is a path that does not exist.
      ValueError: the file/bytes are not a SentencePiece model, or
        `added_tokens` clash with it.
      MissingTokenError: the model lacks `<pad>`, `<eos>` or `<bos>`.
    """
    self._sp = spm.SentencePieceProcessor()
    if isinstance(model, (bytes, bytearray)):
      self.path = None
      where = "<serialized model bytes>"
      proto = bytes(model)
    else:
      self.path = os.fspath(model)
      if os.path.isdir(self.path):
        self.path = os.path.join(self.path, "tokenizer.model")
      where = self.path
      if not os.path.isfile(self.path):
        raise FileNotFoundError(
            f"SentencePiece model file not found: {self.path!r}")
      with open(self.path, "rb") as f:
        proto = f.read()
    try:
      # Loading from bytes (also for files) keeps one code path and lets
      # `serialized_model` return exactly what was loaded.
      self._sp.LoadFromSerializedProto(proto)
    except (RuntimeError, OSError) as e:
      raise ValueError(
          f"could not load a SentencePiece model from {where}: {e}") from e
    self._proto = proto
    self._where = where
    self._sp_size = self._sp.GetPieceSize()

    self._added = dict(added_tokens or {})
    for piece, i in self._added.items():
      if i < self._sp_size:
        raise ValueError(
            f"added token {piece!r} has id {i}, inside the SentencePiece "
            f"vocabulary of size {self._sp_size} ({where})")
      if self._sp.PieceToId(piece) != self._sp.unk_id() or piece == UNK:
        raise ValueError(f"added token {piece!r} is already in {where}")
    if len(set(self._added.values())) != len(self._added):
      raise ValueError(f"added_tokens map two pieces to one id: {self._added}")
    self._added_by_id = {i: p for p, i in self._added.items()}

    self.pad_id = self.token_id(PAD)
    self.eos_id = self.token_id(EOS)
    self.bos_id = self.token_id(BOS)

    # Pieces transformers parses out of raw text but SentencePiece does not:
    # control/unknown pieces and added tokens. Longest first so that a piece
    # that is a prefix of another never wins.
    special = [self._sp.IdToPiece(i) for i in range(self._sp_size)
               if self._sp.IsControl(i) or self._sp.IsUnknown(i)]
    special += list(self._added)
    special.sort(key=len, reverse=True)
    self._special_ids = {p: self.token_id(p) for p in special}
    self._special_re = (re.compile("|".join(re.escape(p) for p in special))
                        if special else None)

  # --- pickling (grain workers, multiprocessing) -----------------------------

  def __getstate__(self):
    return {"proto": self._proto, "added": self._added, "path": self.path}

  def __setstate__(self, state):
    self.__init__(state["proto"], added_tokens=state["added"])
    self.path = state["path"]

  def __repr__(self):
    return f"Tokenizer({self._where!r}, vocab_size={self.vocab_size})"

  # --- vocabulary ------------------------------------------------------------

  @property
  def serialized_model(self) -> bytes:
    """The SentencePiece model proto, e.g. to write a `tokenizer.model`."""
    return self._proto

  @property
  def vocab_size(self) -> int:
    """One more than the largest id (SentencePiece pieces + added tokens)."""
    return max([self._sp_size] + [i + 1 for i in self._added.values()])

  def maybe_token_id(self, piece: str) -> Optional[int]:
    """The id of `piece`, or None when the vocabulary does not contain it."""
    if piece in self._added:
      return self._added[piece]
    i = self._sp.PieceToId(piece)
    # PieceToId maps unknown pieces to unk_id; tell those apart from `<unk>`.
    if i == self._sp.unk_id() and piece != self._sp.IdToPiece(i):
      return None
    return i

  def token_id(self, piece: str) -> int:
    """The id of `piece`; raises MissingTokenError if absent."""
    i = self.maybe_token_id(piece)
    if i is None:
      raise MissingTokenError(
          f"token {piece!r} is not in the vocabulary of {self._where}")
    return i

  def has_token(self, piece: str) -> bool:
    return self.maybe_token_id(piece) is not None

  def id_to_piece(self, i: int) -> str:
    i = int(i)
    if i in self._added_by_id:
      return self._added_by_id[i]
    if not 0 <= i < self._sp_size:
      raise ValueError(
          f"id {i} is outside the vocabulary [0, {self.vocab_size})")
    return self._sp.IdToPiece(i)

  @property
  def unk_id(self) -> int:
    return self.token_id(UNK)

  @property
  def start_of_turn_id(self) -> int:
    return self.token_id(START_OF_TURN)

  @property
  def end_of_turn_id(self) -> int:
    return self.token_id(END_OF_TURN)

  @property
  def start_of_image_id(self) -> int:
    return self.token_id(START_OF_IMAGE)

  @property
  def end_of_image_id(self) -> int:
    return self.token_id(END_OF_IMAGE)

  @property
  def image_soft_token_id(self) -> int:
    return self.token_id(IMAGE_SOFT_TOKEN)

  def loc_id(self, i: int) -> int:
    """Id of `<locNNNN>` for bin `i`."""
    return self.token_id(loc_piece(i))

  def seg_id(self, i: int) -> int:
    """Id of `<segNNN>` for code `i`."""
    return self.token_id(seg_piece(i))

  @property
  def loc_ids(self) -> np.ndarray:
    """int32[1024]: ids of `<loc0000>`..`<loc1023>` (e.g. to mask logits)."""
    return np.array([self.loc_id(i) for i in range(NUM_LOC_TOKENS)], np.int32)

  @property
  def seg_ids(self) -> np.ndarray:
    """int32[128]: ids of `<seg000>`..`<seg127>`."""
    return np.array([self.seg_id(i) for i in range(NUM_SEG_TOKENS)], np.int32)

  @property
  def stop_ids(self) -> tuple[int, ...]:
    """Ids that end a generation: `<eos>`, and `<end_of_turn>` if present.

    Chat models (Gemma-3) end their turn with `<end_of_turn>`; PaliGemma ends
    with `<eos>`. Stopping at either is harmless for the other family.
    """
    eot = self.maybe_token_id(END_OF_TURN)
    return (self.eos_id,) if eot is None else (self.eos_id, eot)

  # --- encode / decode -------------------------------------------------------

  def encode(self, text: str, *, add_bos: bool = False, add_eos: bool = False,
             parse_special: bool = True) -> list[int]:
    """Token ids of `text`.

    Equal to transformers' `GemmaTokenizer.encode(text,
    add_special_tokens=False)` plus the requested bos/eos.

    Args:
      text: the string to encode.
      add_bos: prepend `<bos>`.
      add_eos: append `<eos>`.
      parse_special: when True, literal `<bos>`/`<eos>`/`<pad>`/`<unk>` and
        added tokens in `text` become their ids (as in transformers). When
        False they are spelled out piece by piece (as raw SentencePiece does),
        so untrusted text cannot inject control tokens.

    Returns:
      list[int] of length T.
    """
    if not isinstance(text, str):
      raise TypeError(f"text must be a str, got {type(text).__name__}")
    ids = [self.bos_id] if add_bos else []
    if parse_special and self._special_re is not None:
      # transformers splits on special tokens and encodes each piece of text
      # between them on its own; do the same.
      start = 0
      for m in self._special_re.finditer(text):
        if m.start() > start:
          ids += self._sp.EncodeAsIds(text[start:m.start()])
        ids.append(self._special_ids[m.group()])
        start = m.end()
      if start < len(text):
        ids += self._sp.EncodeAsIds(text[start:])
    elif text:
      ids += self._sp.EncodeAsIds(text)
    if add_eos:
      ids.append(self.eos_id)
    return ids

  def decode(self, ids: Union[Sequence[int], np.ndarray], *,
             stop_ids: Optional[Iterable[int]] = None) -> str:
    """Text of `ids`, for sampled outputs.

    Rules, in order:
      1. Truncate at the first id in `stop_ids` (the stop token itself is not
         rendered). Defaults to `self.stop_ids` (`<eos>`, `<end_of_turn>`);
         pass `stop_ids=()` to decode everything.
      2. Drop `<pad>` everywhere (left padding from the sampler, or padding
         after a sequence finished).
      3. Render the rest with SentencePiece: control pieces (`<bos>`, `<eos>`)
         render as "", user-defined pieces (`<loc0042>`, `<start_of_turn>`)
         as their text, byte pieces as UTF-8 (invalid bytes become U+FFFD).
         Added tokens render as their piece text.

    Args:
      ids: int[T] (list, tuple or 1-D array).
      stop_ids: ids that end the text; None means `self.stop_ids`.

    Returns:
      The decoded string.
    """
    arr = np.asarray(ids)
    if arr.ndim != 1:
      raise ValueError(
          f"decode expects a 1-D sequence of ids, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
      raise TypeError(f"decode expects integer ids, got dtype {arr.dtype}")
    stop = set(self.stop_ids if stop_ids is None
               else (int(s) for s in stop_ids))
    out, pieces = [], []
    for i in arr.tolist():
      if i in stop:
        break
      if i == self.pad_id:
        continue
      if i in self._added_by_id:
        out.append(self._sp.DecodeIds(pieces))
        out.append(self._added_by_id[i])
        pieces = []
        continue
      if not 0 <= i < self._sp_size:
        raise ValueError(
            f"id {i} is outside the vocabulary [0, {self.vocab_size})")
      pieces.append(i)
    out.append(self._sp.DecodeIds(pieces))
    return "".join(out)


def gemma_special_pieces(num_loc: int = NUM_LOC_TOKENS,
                         num_seg: int = NUM_SEG_TOKENS) -> list[str]:
  """User-defined pieces of a Gemma-style test vocabulary, in id order.

  `<mask>` comes first so it gets id 4, as in the Gemma vocabularies; then the
  chat and image pieces, then `num_loc` loc and `num_seg` seg pieces.
  """
  if not 0 <= num_loc <= NUM_LOC_TOKENS or not 0 <= num_seg <= NUM_SEG_TOKENS:
    raise ValueError(f"num_loc must be in [0, {NUM_LOC_TOKENS}] and num_seg "
                     f"in [0, {NUM_SEG_TOKENS}], got {num_loc}, {num_seg}")
  return ([MASK, START_OF_TURN, END_OF_TURN, START_OF_IMAGE, END_OF_IMAGE,
           IMAGE_SOFT_TOKEN]
          + [loc_piece(i) for i in range(num_loc)]
          + [seg_piece(i) for i in range(num_seg)])


def train_test_tokenizer(texts: Iterable[str], path: PathLike,
                         vocab_size: int, *,
                         num_loc: int = NUM_LOC_TOKENS,
                         num_seg: int = NUM_SEG_TOKENS) -> Tokenizer:
  """Trains a small Gemma-style SentencePiece BPE model offline.

  Gemma conventions: pad/eos/bos/unk ids 0/1/2/3, byte fallback (no text is
  ever unknown), no dummy prefix, identity normalisation, whitespace kept,
  digits split. The special pieces of `gemma_special_pieces` are
  user_defined_symbols, so they are atomic and get ids 4, 5, ...

  transformers' `GemmaTokenizer.from_pretrained(dir)` reads the result when it
  is named `dir/tokenizer.model`.

  Args:
    texts: training sentences (may contain newlines).
    path: where to write the `.model` file; parent directories are created.
    vocab_size: upper bound on the vocabulary size. It is a soft limit
      (`hard_vocab_limit=False`): a small corpus may give fewer pieces. It must
      leave room for 4 control pieces, the special pieces, 256 byte pieces and
      the corpus characters (about 1450 with all loc/seg pieces).
    num_loc: number of `<locNNNN>` pieces (fewer for a tiny vocabulary).
    num_seg: number of `<segNNN>` pieces.

  Returns:
    The trained Tokenizer, loaded from `path`.
  """
  texts = [t for t in texts if t]
  if not texts:
    raise ValueError("train_test_tokenizer needs at least one non-empty text")
  specials = gemma_special_pieces(num_loc, num_seg)
  buf = io.BytesIO()
  try:
    spm.SentencePieceTrainer.Train(
        sentence_iterator=iter(texts), model_writer=buf,
        vocab_size=vocab_size, hard_vocab_limit=False, model_type="bpe",
        byte_fallback=True, character_coverage=1.0,
        pad_id=0, eos_id=1, bos_id=2, unk_id=3,
        pad_piece=PAD, eos_piece=EOS, bos_piece=BOS, unk_piece=UNK,
        user_defined_symbols=specials, add_dummy_prefix=False,
        normalization_rule_name="identity", remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True, split_digits=True,
        num_threads=1, minloglevel=2)
  except RuntimeError as e:
    raise ValueError(
        f"SentencePiece training failed (vocab_size={vocab_size}, "
        f"{len(specials)} special pieces): {e}") from e
  path = os.fspath(path)
  parent = os.path.dirname(path)
  if parent:
    os.makedirs(parent, exist_ok=True)
  with open(path, "wb") as f:
    f.write(buf.getvalue())
  return Tokenizer(path)

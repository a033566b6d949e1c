"""The shipped world SentencePiece model (auditdm_jax/world/assets)."""

import random
import string

import pytest

from auditdm_jax import prompts
from auditdm_jax import tokenizer as tok_lib
from auditdm_jax.data import world_tokenizer as wt
from auditdm_jax.models import arch
from auditdm_jax.world import editor
from auditdm_jax.world import generator
from auditdm_jax.world import grammar
from auditdm_jax.world import questions
from auditdm_jax.world import scene as scene_lib
from auditdm_jax.world import vocab


@pytest.fixture(scope="module")
def tok():
  return wt.world_tokenizer()


@pytest.fixture(scope="module")
def world_text():
  """{kind: strings}: everything the world writes, on three grid sizes."""
  rng = random.Random(11)
  out = {"question": [], "answer": list(questions.ANSWER_WORDS), "edit": [],
         "caption": []}
  for grid, size in ((4, 64), (3, 48), (5, 80)):
    n = 60 if grid == 4 else 8
    for skill in questions.SKILLS:
      for _ in range(n):
        ex = questions.sample_example(rng, skill, grid=grid, image_size=size)
        out["question"].append(ex["question"])
        out["answer"].append(ex["answer"])
    for op in grammar.EDIT_OPS:
      for _ in range(n):
        s = scene_lib.sample_scene(rng, grid=grid, image_size=size)
        e = editor.sample_edit(s, rng, op)
        if e is not None:
          out["edit"].append(e[0])
    for _ in range(4 * n):
      out["caption"].append(generator.sample_caption(rng, grid=grid,
                                                     image_size=size))
      s = scene_lib.sample_scene(rng, grid=grid, image_size=size)
      out["caption"].append(generator.describe_scene(s, rng))
    for count in range(2, 9):
      out["caption"].append(generator.counting_caption(rng, grid, count))
  return out


def test_shipped_model_loads_with_512_pieces(tok):
  assert isinstance(tok, tok_lib.Tokenizer)
  assert tok.vocab_size == wt.WORLD_VOCAB == arch.WORLD_VOCAB == 512
  assert arch.WORLD_IMAGE_TOKEN == tok.vocab_size  # Placeholder past it.
  assert tok.path == wt.world_tokenizer_path()


def test_gemma_special_ids(tok):
  assert (tok.pad_id, tok.eos_id, tok.bos_id, tok.unk_id) == (0, 1, 2, 3)
  assert tok.token_id(tok_lib.MASK) == 4
  assert (tok.start_of_turn_id, tok.end_of_turn_id, tok.start_of_image_id,
          tok.end_of_image_id, tok.image_soft_token_id) == (5, 6, 7, 8, 9)
  assert tok.stop_ids == (1, 6)
  assert not tok.has_token(tok_lib.loc_piece(0))  # No loc/seg pieces.
  with pytest.raises(tok_lib.MissingTokenError):
    tok.seg_id(0)


def test_reproduction_is_byte_identical():
  with open(wt.world_tokenizer_path(), "rb") as f:
    shipped = f.read()
  assert wt.make_world_tokenizer() == shipped, (
      "auditdm_jax/world/assets/tokenizer.model is stale (world grammar or "
      "sentencepiece changed): regenerate it with `python -m "
      "auditdm_jax.world.assets.make_tokenizer` (invalidates world models)")


def test_world_text_round_trips(tok, world_text):
  for kind, texts in world_text.items():
    for s in texts:
      ids = tok.encode(s)
      assert tok.unk_id not in ids, (kind, s)
      assert tok.decode(ids) == s, (kind, s)


def test_every_world_word_is_one_piece(tok, world_text):
  """Tokens = words, plus one bare "▁" before each digit (digits split)."""
  words = vocab.words()
  lengths = {}
  for kind, texts in world_text.items():
    for s in texts:
      ids = tok.encode(s)
      pieces = [tok.id_to_piece(i).replace("▁", "") for i in ids]
      assert all(p in words or p == "" for p in pieces), (s, pieces)
      n_words = len(vocab.words_of(s))
      spaced_digits = sum(1 for i, ch in enumerate(s)
                          if ch.isdigit() and i and s[i - 1] == " ")
      assert len(ids) == n_words + spaced_digits, (s, pieces)
      lengths[kind] = max(lengths.get(kind, 0), len(ids))
  assert lengths["answer"] == 1  # Every answer is one token.
  assert lengths["question"] <= 16 and lengths["edit"] <= 16, lengths


def test_prompt_layouts_round_trip(tok, world_text):
  q, a = world_text["question"][0], world_text["answer"][0]
  p = prompts.build_prompt("gemma3_chat", tok, q, a)
  assert tok.decode(p.tokens, stop_ids=()) == (
      f"<start_of_turn>user\n{q}<end_of_turn>\n<start_of_turn>model\n"
      f"{a}<end_of_turn>")
  assert [tok.id_to_piece(i) for i in p.tokens[:4]] == [
      "<bos>", "<start_of_turn>", "user", "\n"]
  img = arch.WORLD_IMAGE_TOKEN
  p = prompts.build_prompt("gemma3_chat", tok, q, a, num_images=1,
                           tokens_per_image=4, image_token_id=img)
  text = [i for i in p.tokens.tolist() if i != img]
  assert tok.decode(text, stop_ids=()) == (
      f"<start_of_turn>user\n\n\n<start_of_image><end_of_image>\n\n{q}"
      f"<end_of_turn>\n<start_of_turn>model\n{a}<end_of_turn>")
  p = prompts.build_prompt("paligemma", tok, q, a, num_images=1,
                           tokens_per_image=4, image_token_id=img)
  assert tok.decode(p.tokens[4:], stop_ids=()) == f"{q}\n{a}"
  # Answers are one token after the prompt, as in training.
  assert int(p.loss_mask.sum()) == 2  # answer + <eos>


def test_any_ascii_round_trips_other_text_is_unk(tok):
  s = string.printable[:95] + "\nWhat colour is the Circle?  (2 spaces)"
  assert tok.decode(tok.encode(s)) == s
  assert tok.unk_id in tok.encode("é")  # No byte fallback (documented).

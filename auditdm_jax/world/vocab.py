"""The world's closed text vocabulary and a corpus for tokenizer training.

Everything the world writes (questions, answers, edit commands, captions) is
lower-case words from `words()` plus "?" and ",", so a tiny SentencePiece
model trained on `corpus()` covers it with no unknown pieces:

  import sentencepiece as spm
  spm.SentencePieceTrainer.train(sentence_iterator=corpus(20_000, seed=0), ...)
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from auditdm_jax.world import _rng
from auditdm_jax.world import editor
from auditdm_jax.world import generator
from auditdm_jax.world import grammar
from auditdm_jax.world import oracle
from auditdm_jax.world import questions
from auditdm_jax.world import scene as scene_lib

_TOKEN_RE = re.compile(r"[a-z0-9]+|[?,]")
# Share of each kind of string in corpus().
CORPUS_MIX = {"question": 0.45, "answer": 0.15, "edit": 0.2, "caption": 0.2}


def words_of(text: str) -> list[str]:
  """Splits world text into words and the punctuation marks "?" and ","."""
  return _TOKEN_RE.findall(text)


def _template_words(templates) -> set[str]:
  out = set()
  for ts in templates.values():
    for t in ts:
      out.update(words_of(re.sub(r"\{\w+\}", " ", t)))
  return out


def words(grid: int = scene_lib.DEFAULT_GRID) -> frozenset[str]:
  """Every word (and "?", ",") the world's generators can write on a grid."""
  w = set(questions.ANSWER_WORDS)
  w |= _template_words(oracle.QUESTION_TEMPLATES)
  w |= _template_words(grammar.EDIT_TEMPLATES)
  for p in grammar.CAPTION_PREFIXES:
    w.update(words_of(p))
  nouns = (*scene_lib.SHAPES, "object", "shape")
  w.update(nouns)
  w.update(n + "s" for n in nouns)
  w.update(scene_lib.COLOUR_NAMES)
  w.update(scene_lib.SIZES)
  w.update(grammar.NUMBER_WORDS[1:])  # Captions write "a"/"an" for one.
  w.update(str(i) for i in range(1, grid + 1))
  w.update(("the", "a", "an", "anything", "and", "in", "on", "at", "to",
            "top", "bottom", "left", "right", "corner", "column", "row",
            "half", "bigger", "smaller", "?", ","))
  return frozenset(w)


def corpus(n: int, seed: int = 0, grid: int = scene_lib.DEFAULT_GRID
           ) -> Iterator[str]:
  """Yields n representative world strings, deterministic for a seed.

  Mixes questions of every skill (in turn), answers (each answer word once,
  then answers of sampled questions), edit commands (ops
  in turn) and captions (every fifth a counting caption, counts in turn) in
  the CORPUS_MIX shares; the first strings cycle through every kind, so even
  a small n covers them all.
  """
  rng = _rng.as_rng(seed)
  kinds = list(CORPUS_MIX)
  weights = list(CORPUS_MIX.values())
  image_size = 16 * grid
  n_captions = n_answers = 0
  for i in range(n):
    kind = kinds[i] if i < len(kinds) else _rng.weighted_choice(rng, kinds,
                                                                 weights)
    if kind == "answer" and n_answers < len(questions.ANSWER_WORDS):
      n_answers += 1  # Every answer word once first, then sampled answers.
      yield questions.ANSWER_WORDS[n_answers - 1]
    elif kind in ("question", "answer"):
      ex = questions.sample_example(
          rng, questions.SKILLS[i % len(questions.SKILLS)], grid=grid,
          image_size=image_size)
      yield ex["question"] if kind == "question" else ex["answer"]
    elif kind == "edit":
      out = None
      while out is None:
        scene = scene_lib.sample_scene(rng, grid=grid, image_size=image_size)
        out = editor.sample_edit(scene, rng, grammar.EDIT_OPS[i % 6])
      yield out[0]
    else:
      n_captions += 1
      if n_captions % 5 == 1:  # Cycles "two" .. "eight".
        yield generator.counting_caption(rng, grid, 2 + (n_captions // 5) % 7)
      else:
        yield generator.sample_caption(rng, grid=grid, image_size=image_size,
                                       counting=0.0)

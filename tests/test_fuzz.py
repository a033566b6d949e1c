"""Property-based fuzzing of every parser and normaliser (hypothesis).

Targets (TARGETS: name -> (strategy, check)); each check asserts the
documented contract on one drawn input:

  world_normalise      refs.normalise: str -> str, idempotent, lower-case
  parse_edit           Edit | EditError("parse"); never "internal"; the
                       same on normalised text; ops in EDIT_OPS
  parse_caption_items  Caption | CaptionError (documented kinds, never
                       "internal"); at most MAX_OBJECTS objects
  parse_caption        generator: Scene | CaptionError; deterministic in
                       the seed; a Scene has the caption's objects
  apply_edit           editor: Scene | EditError (documented kinds)
  parse_question       oracle: Query | OracleError; never "internal"
  oracle_answer        an ANSWER_WORDS entry | OracleError (documented kinds)
  normalize_answer     judge: str, idempotent, single-spaced, stripped,
                       never an article; answers_match reflexive, symmetric
  parse_output         audit.prompts: Parsed | ParseError, never
                       "internal"; Parsed text non-empty, within max_chars,
                       a question ends at its first "?" (has one when the
                       set requires it); parsing the parsed text gives it
                       back
  config_override      ml_collections `--config.<field>=<text>` (what
                       main.py parses): a value of the field's type, or a
                       flags.Error, nothing else
  plan_parse_value     plan.parse_value(sweep.format_value(v), v) == v, and
                       random text -> a value of the type or ValueError

Inputs: arbitrary unicode, word salad over the world vocabulary, and valid
world text mutated at character and word level (text_mutation.mutated).
The quick run here draws EXAMPLES per target (deadline off, no example
database); `python scripts/fuzz_long.py --examples 10000` runs the same
targets long and prints counts per target.
"""

from __future__ import annotations

import math
import re
import string

import ml_collections
from absl import flags
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ml_collections import config_flags
import pytest

from auditdm_jax import plan as plan_lib
from auditdm_jax import sweep as sweep_lib
from auditdm_jax.audit import judge
from auditdm_jax.audit import prompts as audit_prompts
from auditdm_jax.world import editor
from auditdm_jax.world import generator
from auditdm_jax.world import grammar
from auditdm_jax.world import oracle
from auditdm_jax.world import questions
from auditdm_jax.world import refs
from auditdm_jax.world import scene as scene_lib
from text_mutation import mutated

EXAMPLES = 100

# --- Inputs -------------------------------------------------------------------

_VALID = sorted(
    {editor.sample_edit(scene_lib.sample_scene(i), i)[0] for i in range(60)}
    | {generator.sample_caption(i) for i in range(60)}
    | {questions.sample_example(i, questions.SKILLS[i % len(
        questions.SKILLS)])["question"] for i in range(120)})
_WORDS = sorted({w for t in _VALID for w in re.findall(r"[a-z0-9]+", t)}
                | {"and", "the", "a", "of", "with", "color", "big", "9", "0"})
_SCENES = [scene_lib.sample_scene(i) for i in range(8)]

world_text = st.one_of(
    st.text(max_size=120),
    st.lists(st.sampled_from(_WORDS + [",", "?", "."]), max_size=16).map(
        " ".join),
    mutated(_VALID, _WORDS),
    st.sampled_from(_VALID),
)
answer_text = st.one_of(
    st.text(max_size=60),
    st.text(alphabet=string.ascii_letters + string.digits + " .,'-?!:;/\"()",
            max_size=40),
    st.lists(st.sampled_from(["the", "a", "an", "two", "Two", "none",
                              "isnt", "don't", "1,000", "3.5", "red.",
                              "  ", "Yes", "NO", "left"]),
             max_size=6).map(" ".join),
)
_MARKERS = ["<start_of_turn>model\n", "<end_of_turn>", "<eos>", "**",
            "Question: ", "1. ", "- ", "\"", "'", "\n", "?", "  "]
auditor_text = st.one_of(
    world_text,
    st.lists(st.one_of(st.sampled_from(_MARKERS), st.sampled_from(_VALID),
                       st.text(max_size=10)), max_size=8).map("".join),
    st.text(min_size=200, max_size=2000),
)

# --- Checks ---------------------------------------------------------------------

_EDIT_KINDS = ("parse", "missing", "ambiguous", "occupied", "full", "noop",
               "invalid")
_CAPTION_KINDS = ("parse", "full", "occupied", "invalid")
_ORACLE_KINDS = ("parse", "ambiguous", "invalid", "unanswerable")


def check_world_normalise(text):
  t = refs.normalise(text)
  assert isinstance(t, str)
  assert refs.normalise(t) == t, (text, t)
  assert t == t.strip()


def check_parse_edit(text):
  e = grammar.parse_edit(text)
  if isinstance(e, grammar.Edit):
    assert e.op in grammar.EDIT_OPS
  else:
    assert isinstance(e, grammar.EditError) and e.kind == "parse", e
  again = grammar.parse_edit(refs.normalise(text))
  assert repr(again) == repr(e), (text, e, again)


def check_parse_caption_items(text):
  c = grammar.parse_caption_items(text)
  if isinstance(c, grammar.Caption):
    assert 1 <= c.n_objects <= scene_lib.MAX_OBJECTS
  else:
    assert isinstance(c, grammar.CaptionError) and c.kind in _CAPTION_KINDS, c


def check_parse_caption(args):
  text, seed = args
  s = generator.parse_caption(text, seed)
  if isinstance(s, scene_lib.Scene):
    cap = grammar.parse_caption_items(text)
    assert len(s.objects) == cap.n_objects
    assert repr(generator.parse_caption(text, seed)) == repr(s)
  else:
    assert isinstance(s, grammar.CaptionError) and s.kind in _CAPTION_KINDS, s


def check_apply_edit(args):
  text, seed, i = args
  out = editor.apply_edit(_SCENES[i], text, seed)
  if isinstance(out, scene_lib.Scene):
    assert len(out.objects) <= scene_lib.MAX_OBJECTS
    assert repr(editor.apply_edit(_SCENES[i], text, seed)) == repr(out)
  else:
    assert isinstance(out, grammar.EditError) and out.kind in _EDIT_KINDS, out


def check_parse_question(text):
  q = oracle.parse_question(text)
  if not isinstance(q, oracle.Query):
    assert isinstance(q, oracle.OracleError) and q.kind == "parse", q
    return
  assert q.kind in oracle.QUERY_KINDS
  again = oracle.parse_question(refs.normalise(text))
  assert repr(again) == repr(q)


def check_oracle_answer(args):
  text, i = args
  a = oracle.answer(_SCENES[i], text)
  if isinstance(a, oracle.OracleError):
    assert a.kind in _ORACLE_KINDS, a
  else:
    assert a in questions.ANSWER_WORDS, a


def check_normalize_answer(args):
  a, b = args
  n = judge.normalize_answer(a)
  assert isinstance(n, str)
  assert judge.normalize_answer(n) == n, (a, n)
  assert n == n.strip() and "  " not in n
  assert not set(n.split()) & judge.ARTICLES
  assert judge.answers_match(a, a)
  assert judge.answers_match(a, b) == judge.answers_match(b, a)


def check_parse_output(args):
  kind, text = args
  ps = audit_prompts.get_prompt_set("world")
  got = audit_prompts.parse_output(ps, kind, text)
  if not got:
    assert isinstance(got, audit_prompts.ParseError), got
    assert got.reason != "internal", got
    return
  assert got.kind == kind and got.text and got.text == got.text.strip()
  assert len(got.text) <= ps.max_chars[kind]
  if kind == "question":
    # Cut at its first "?"; one is required only by sets that say so (the
    # world set does not: its oracle reads "is it red" as well).
    assert got.text.count("?") <= 1, got.text
    assert got.text.endswith("?") or (
        "?" not in got.text and not ps.require_question_mark), got.text
  again = audit_prompts.parse_output(ps, kind, got.text)
  assert again and again.text == got.text, (text, got, again)


_FIELDS = {"n": 3, "lr": 1e-3, "name": "x", "flag": True, "mesh": (1, 2),
           "maybe": None}


def _flag_values():
  fv = flags.FlagValues()
  config_flags.DEFINE_config_dict(
      "config", ml_collections.ConfigDict(dict(_FIELDS)), flag_values=fv)
  return fv


def check_config_override(args):
  field, text = args
  fv = _flag_values()
  try:
    fv(["prog", f"--config.{field}={text}"])
  except flags.Error:
    return
  value = fv.config[field]
  old = _FIELDS[field]
  if old is None:
    return   # a None field takes whatever the text parses to
  assert type(value) is type(old) or (          # pylint: disable=unidiomatic-typecheck
      isinstance(old, float) and isinstance(value, int)), (field, text, value)


_VALUES = st.one_of(
    st.integers(-10**6, 10**6), st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.text(alphabet=string.ascii_letters + string.digits + "_-./ ",
            max_size=20),
    st.tuples(st.integers(-5, 5), st.integers(-5, 5)),
    st.tuples(st.text(alphabet=string.ascii_lowercase, max_size=5),
              st.integers(-1, 8)))


def check_plan_parse_value(args):
  value, text = args
  back = plan_lib.parse_value(sweep_lib.format_value(value), value)
  if isinstance(value, float):
    assert back == value or (math.isnan(back) and math.isnan(value))
  else:
    assert back == value and type(back) is type(value), (value, back)  # pylint: disable=unidiomatic-typecheck
  try:
    got = plan_lib.parse_value(text, value)
  except ValueError:
    return
  if isinstance(value, (bool, int, float, str)):
    assert isinstance(got, type(value)) or (
        isinstance(value, float) and isinstance(got, int)), (text, got)


TARGETS = {
    "world_normalise": (world_text, check_world_normalise),
    "parse_edit": (world_text, check_parse_edit),
    "parse_caption_items": (world_text, check_parse_caption_items),
    "parse_caption": (st.tuples(world_text, st.integers(0, 2**31 - 1)),
                      check_parse_caption),
    "apply_edit": (st.tuples(world_text, st.integers(0, 10**6),
                             st.integers(0, len(_SCENES) - 1)),
                   check_apply_edit),
    "parse_question": (world_text, check_parse_question),
    "oracle_answer": (st.tuples(world_text, st.integers(0, len(_SCENES) - 1)),
                      check_oracle_answer),
    "normalize_answer": (st.tuples(answer_text, answer_text),
                         check_normalize_answer),
    "parse_output": (st.tuples(st.sampled_from(audit_prompts.KINDS),
                               auditor_text), check_parse_output),
    "config_override": (st.tuples(st.sampled_from(sorted(_FIELDS)),
                                  st.one_of(st.text(max_size=30),
                                            st.sampled_from(
                                                ["1", "1.5", "True", "(1, 2)",
                                                 "None", "'a'", "[1]"]))),
                        check_config_override),
    "plan_parse_value": (st.tuples(_VALUES, st.text(max_size=20)),
                         check_plan_parse_value),
}


def fuzz(name: str, examples: int, counter=None):
  """A hypothesis-run callable for target `name` (no example database)."""
  strategy, check = TARGETS[name]

  @settings(max_examples=examples, deadline=None, database=None,
            suppress_health_check=list(HealthCheck))
  @given(strategy)
  def run(x):
    if counter is not None:
      counter[name] = counter.get(name, 0) + 1
    check(x)
  return run


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzz(name):
  counts = {}
  fuzz(name, EXAMPLES, counts)()
  assert counts[name] >= EXAMPLES // 2   # hypothesis may stop early on dups

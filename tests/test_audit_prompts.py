"""The auditor's prompt sets and output parsing (audit/prompts.py)."""

import random
import re

import pytest
from hypothesis import given, settings, strategies as st

from auditdm_jax import prompts as layout_lib
from auditdm_jax import tokenizer as tok_lib
from auditdm_jax.audit import prompts as ap
from auditdm_jax.world import editor
from auditdm_jax.world import generator
from auditdm_jax.world import grammar
from auditdm_jax.world import oracle
from auditdm_jax.world import prompts as world_prompts
from auditdm_jax.world import questions
from auditdm_jax.world import refs
from auditdm_jax.world import scene as scene_lib
from auditdm_jax.world import zoo
from text_mutation import mutated

Parsed = ap.Parsed
ParseError = ap.ParseError
WORLD = ap.get_prompt_set("world")
GEMMA3 = ap.get_prompt_set("gemma3")


def _ok(kind, text):
  return Parsed(kind, text)


def _err(kind, reason):
  return lambda r: isinstance(r, ParseError) and r.kind == kind and \
      r.reason == reason


# ---------------------------------------------------------------------------
# Registry and sets.


def test_registry():
  assert {"world", "gemma3"} <= set(ap.names())
  assert ap.names() == sorted(ap.names())
  assert ap.get_prompt_set(WORLD) is WORLD
  with pytest.raises(ValueError, match="known: .*gemma3"):
    ap.get_prompt_set("paligemma")
  with pytest.raises(ValueError, match="already registered"):
    ap.register_prompt_set(WORLD)
  with pytest.raises(ValueError, match="PromptSet"):
    ap.register_prompt_set("world")  # type: ignore[arg-type]
  custom = ap.PromptSet("test_custom", prompts=dict(WORLD.prompts),
                        max_chars={k: 10 for k in ap.KINDS})
  try:
    assert ap.register_prompt_set(custom) is custom
    assert ap.get_prompt_set("test_custom") is custom
    shorter = ap.PromptSet("test_custom", prompts=dict(WORLD.prompts),
                           max_chars={k: 5 for k in ap.KINDS})
    ap.register_prompt_set(shorter, overwrite=True)
    assert ap.parse_output("test_custom", "edit", "remove it").reason == \
        "too long"
  finally:
    ap._SETS.pop("test_custom", None)  # pylint: disable=protected-access


def _ps(**kw):
  args = dict(name="x", prompts=dict(GEMMA3.prompts),
              max_chars=dict(GEMMA3.max_chars))
  args.update(kw)
  return ap.PromptSet(**args)


@pytest.mark.parametrize("kw, match", [
    (dict(name=""), "name"),
    (dict(prompts={"question": "q", "edit": "e"}), "exactly the kinds"),
    (dict(prompts={"question": "q", "edit": "e", "caption": "c",
                   "answer": "a"}), "exactly the kinds"),
    (dict(prompts={"question": " ", "edit": "e", "caption": "c"}),
     "non-empty"),
    (dict(max_chars={"question": 0, "edit": 1, "caption": 1}), "max_chars"),
    (dict(max_chars={"question": 1.5, "edit": 1, "caption": 1}), "max_chars"),
    (dict(max_chars={"question": 1}), "exactly the kinds"),
    (dict(checks={"answer": len}), "unknown kinds"),
    (dict(checks={"edit": "not callable"}), "callable"),
    (dict(prompts=["q", "e", "c"]), "mapping"),
    (dict(require_question_mark=1), "bool"),
])
def test_prompt_set_validation(kw, match):
  with pytest.raises(ValueError, match=match):
    _ps(**kw)


def test_prompt_set_is_frozen_and_read_only():
  src = dict(GEMMA3.prompts)
  ps = _ps(prompts=src)
  src["question"] = "changed"
  assert ps.prompts["question"] == GEMMA3.prompts["question"]
  with pytest.raises(TypeError):
    ps.prompts["question"] = "x"  # type: ignore[index]
  with pytest.raises(AttributeError):
    ps.name = "y"  # type: ignore[misc]


def test_world_set_reuses_world_prompts():
  assert ap.KINDS == world_prompts.KINDS == ("question", "edit", "caption")
  for kind in ap.KINDS:
    assert WORLD.prompts[kind] is world_prompts.PROMPTS[kind]
    assert WORLD.kind_of(world_prompts.PROMPTS[kind]) == kind
    assert WORLD.max_chars[kind] == refs.MAX_TEXT_CHARS
  assert WORLD.checks["question"] is oracle.parse_question
  assert WORLD.checks["edit"] is grammar.parse_edit
  assert WORLD.checks["caption"] is grammar.parse_caption_items
  assert WORLD.kind_of("hello") is None


def test_gemma3_prompts_are_plain_user_text():
  assert set(GEMMA3.prompts) == set(ap.KINDS)
  assert len(set(GEMMA3.prompts.values())) == 3
  for kind, text in GEMMA3.prompts.items():
    assert text == text.strip() and "<" not in text and ">" not in text
    assert GEMMA3.kind_of(text) == kind
  assert "question mark" in GEMMA3.prompts["question"]
  assert "edit" in GEMMA3.prompts["edit"]
  assert "realistic" in GEMMA3.prompts["edit"]
  assert "text-to-image" in GEMMA3.prompts["caption"]
  assert "style" in GEMMA3.prompts["caption"]


def test_gemma3_prompts_in_the_chat_layout(gemma_tokenizer_dir):
  tok = tok_lib.Tokenizer(gemma_tokenizer_dir / "tokenizer.model")
  for text in GEMMA3.prompts.values():
    p = layout_lib.build_prompt("gemma3_chat", tok, text, num_images=1,
                                tokens_per_image=4)
    assert int(p.image_mask.sum()) == 4
    rendered = tok.decode(p.tokens, stop_ids=())
    assert rendered.startswith(tok_lib.START_OF_TURN + "user\n")
    assert rendered.endswith(text + tok_lib.END_OF_TURN + "\n" +
                             tok_lib.START_OF_TURN + "model\n")


# ---------------------------------------------------------------------------
# Parsing rules, table-driven. Each row: set, kind, completion, expected
# (a Parsed, or the ParseError reason).


RULES = [
    # Plain outputs.
    ("gemma3", "question", "How many cups are on the table?",
     "How many cups are on the table?"),
    ("world", "question", "is there a red circle?", "is there a red circle?"),
    ("world", "question", "is there a red circle", "is there a red circle"),
    ("gemma3", "edit", "Replace the red car with a blue bus.",
     "Replace the red car with a blue bus."),
    ("world", "edit", "make the red circle blue", "make the red circle blue"),
    ("gemma3", "caption", "A busy street at night.",
     "A busy street at night."),
    ("world", "caption", "a large red circle and two blue squares",
     "a large red circle and two blue squares"),
    # Whitespace.
    ("world", "edit", "  remove the green triangle \n", "remove the green "
     "triangle"),
    ("gemma3", "question", "\n\n  Is it raining?  ", "Is it raining?"),
    # Chat markers.
    ("world", "question", "is there a red circle?<end_of_turn>",
     "is there a red circle?"),
    ("world", "question", "is there a red circle?<eos><pad><pad>",
     "is there a red circle?"),
    ("world", "edit", "<start_of_turn>model\nremove the red circle"
     "<end_of_turn>\n<start_of_turn>user\nthanks", "remove the red circle"),
    ("world", "edit", "<bos>remove the red circle</s>more",
     "remove the red circle"),
    ("gemma3", "question", "<end_of_turn>\n<start_of_turn>model\nIs it red?",
     "Is it red?"),
    ("gemma3", "caption", "A dog.<end_of_turn>A cat.", "A dog."),
    ("gemma3", "question", "<end_of_turn><eos>", "empty"),
    ("gemma3", "question", "<start_of_image><image_soft_token>What is this?",
     "What is this?"),
    # Labels, bullets, numbering, quotes, emphasis.
    ("world", "question", "Question: is there a red circle?",
     "is there a red circle?"),
    ("world", "question", "Q: is there a red circle?",
     "is there a red circle?"),
    ("world", "question", "q:is there a red circle?",
     "is there a red circle?"),
    ("world", "edit", "Edit: remove the red circle", "remove the red circle"),
    ("world", "edit", "Edit command: remove the red circle",
     "remove the red circle"),
    ("gemma3", "edit", "Edit instruction: Make the sky purple.",
     "Make the sky purple."),
    ("world", "caption", "Caption: a red circle", "a red circle"),
    ("gemma3", "caption", "Image caption: A red kite.", "A red kite."),
    ("gemma3", "question", "**Question:** Is the door open?",
     "Is the door open?"),
    ("gemma3", "question", "**Question**: Is the door open?",
     "Is the door open?"),
    ("gemma3", "question", "Question 1: Is the door open?",
     "Is the door open?"),
    ("world", "question", '"is there a red circle?"', "is there a red circle?"),
    ("world", "edit", "'remove the red circle'", "remove the red circle"),
    ("world", "edit", "\u201cremove the red circle\u201d",
     "remove the red circle"),
    ("world", "edit", "`remove the red circle`", "remove the red circle"),
    ("gemma3", "question", '"Is the door open?" This probes state.',
     "Is the door open?"),
    ("gemma3", "question", "'What is the man's job?'",
     "What is the man's job?"),
    ("gemma3", "question", 'Is the door open?"', "Is the door open?"),
    ("world", "edit", "- remove the red circle", "remove the red circle"),
    ("world", "edit", "* remove the red circle", "remove the red circle"),
    ("world", "edit", "\u2022 remove the red circle", "remove the red circle"),
    ("world", "edit", "1. remove the red circle", "remove the red circle"),
    ("world", "edit", "2) remove the red circle", "remove the red circle"),
    ("world", "edit", "(3) remove the red circle", "remove the red circle"),
    ("gemma3", "question", '1. **Question:** "Is it red?"', "Is it red?"),
    ("gemma3", "question", "**Is the door open?**", "Is the door open?"),
    # Header lines and the first non-empty line.
    ("gemma3", "question", "Sure! Here is a question:\n\nIs it red?\n"
     "Is it blue?", "Is it red?"),
    ("gemma3", "question", "Question:\nIs it red?", "Is it red?"),
    ("world", "edit", "\n\nremove the red circle\nmake it blue",
     "remove the red circle"),
    ("gemma3", "question", "Here is my question:", "empty"),
    # Captions: the whole text, whitespace collapsed.
    ("gemma3", "caption", "Caption:\nA red kite\nover a   green field.\n",
     "A red kite over a green field."),
    ("world", "caption", "a large red circle,\n two blue squares",
     "a large red circle, two blue squares"),
    ("gemma3", "caption", '"A red kite\nover a field."',
     "A red kite over a field."),
    ("gemma3", "caption", "Here is the caption:\n\nA red kite.",
     "A red kite."),
    # Questions are cut after the first "?".
    ("gemma3", "question", "Is it red? It tests colour.", "Is it red?"),
    ("gemma3", "question", "Is it red? Or blue?", "Is it red?"),
    ("world", "question", "is there a red circle? yes",
     "is there a red circle?"),
    ("gemma3", "question", "Describe the image.", "no question mark"),
    ("world", "question", "how many circles are there", "how many circles "
     "are there"),
    # Empty, too long, garbage.
    ("gemma3", "question", "", "empty"),
    ("world", "edit", "   \n\t ", "empty"),
    ("gemma3", "caption", "Caption:", "empty"),
    ("world", "edit", '""', "empty"),
    ("gemma3", "question", "?", "garbage"),
    ("gemma3", "question", "123?", "garbage"),
    ("gemma3", "edit", "!!! ... ###", "garbage"),
    ("world", "edit", "42", "garbage"),
    ("gemma3", "question", "Is " + "very " * 80 + "red?", "too long"),
    ("gemma3", "edit", "Make " + "it " * 200, "too long"),
    ("gemma3", "caption", "A dog " * 400, "too long"),
    ("world", "caption", "a red circle and " * 30 + "a blue square",
     "too long"),
    # The world grammars.
    ("world", "question", "what is the meaning of life?", "grammar: parse"),
    ("world", "edit", "make it nicer", "grammar: parse"),
    ("world", "caption", "a beautiful sunset", "grammar: parse"),
    ("world", "caption", "nine red circles", "grammar: parse"),
    ("world", "caption", "five red circles and four blue squares",
     "grammar: full"),
    ("world", "caption", "two red circles at the top left",
     "grammar: occupied"),
    ("gemma3", "caption", "a beautiful sunset", "a beautiful sunset"),
    ("gemma3", "edit", "make it nicer", "make it nicer"),
]

_REASONS = {"empty", "too long", "garbage", "no question mark",
            "grammar: parse", "grammar: full", "grammar: occupied"}


@pytest.mark.parametrize("name, kind, text, want", RULES)
def test_parse_rules(name, kind, text, want):
  got = ap.parse_output(name, kind, text)
  if want in _REASONS:
    assert isinstance(got, ParseError) and not got, got
    assert (got.kind, got.reason) == (kind, want), got
  else:
    assert got == Parsed(kind, want), got
    assert got  # Truthy.


def test_parse_error_details():
  e = ap.parse_output("world", "edit", "make it nicer")
  assert e.reason == "grammar: parse" and "not an edit command" in e.detail
  assert str(e).startswith("grammar: parse: ")
  e = ap.parse_output("gemma3", "caption", "x" * 2001)
  assert e.detail == "2001 > 2000 characters" and str(e) == \
      "too long: 2001 > 2000 characters"
  assert str(ap.parse_output("gemma3", "question", "")) == "empty"


def test_parse_values_from_the_world_grammars():
  q = ap.parse_output("world", "question", "Q: is there a red circle?")
  assert q.value == oracle.parse_question("is there a red circle?")
  assert isinstance(q.value, oracle.Query)
  e = ap.parse_output(WORLD, "edit", "make the red circle blue")
  assert isinstance(e.value, grammar.Edit) and e.value.op == "recolour"
  c = ap.parse_output(WORLD, "caption", "two red circles")
  assert isinstance(c.value, grammar.Caption) and c.value.n_objects == 2
  # The value does not take part in equality.
  assert q == Parsed("question", "is there a red circle?")
  assert ap.parse_output("gemma3", "question", "Is it red?").value is None


def test_parse_never_raises_on_bad_arguments():
  for bad in (None, 3, b"is there a red circle?", ["x"], object()):
    r = ap.parse_output("world", "question", bad)  # type: ignore[arg-type]
    assert r.reason == "not text" and r.kind == "question"
  r = ap.parse_output("world", "answer", "yes")
  assert r.reason == "unknown kind" and "question" in r.detail
  r = ap.parse_output("nope", "question", "is it?")
  assert r.reason == "unknown prompt set" and "world" in r.detail
  r = ap.parse_output(WORLD, ["question"], "x")  # type: ignore[arg-type]
  assert isinstance(r, ParseError)


def test_internal_errors_are_returned():
  def boom(text):
    raise RuntimeError("bad check")
  ps = _ps(checks={"edit": boom})
  r = ap.parse_output(ps, "edit", "make it red")
  assert isinstance(r, ParseError) and r.reason == "internal"
  assert "bad check" in r.detail


# ---------------------------------------------------------------------------
# Round trip: every valid output of the world samplers parses to itself.


def _world_outputs():
  out = {k: [] for k in ap.KINDS}
  src = zoo.AuditorSource(450, seed=3)
  for i in range(len(src)):
    ex = src.example(i)
    out[ex["kind"]].append(ex["suffix"])
  rng = random.Random(0)
  for i in range(150):
    scene = scene_lib.sample_scene(rng)
    q = questions.sample_question(
        scene, questions.SKILLS[i % len(questions.SKILLS)], rng)
    if q is not None:
      out["question"].append(q["question"])
    e = editor.sample_edit(scene, rng)
    if e is not None:
      out["edit"].append(e[0])
    out["caption"].append(generator.describe_scene(
        scene, rng, positions=generator.POSITION_MODES[i % 3]))
    out["caption"].append(generator.sample_caption(rng))
  return out


WORLD_OUTPUTS = _world_outputs()
_CHECK = {"question": oracle.parse_question, "edit": grammar.parse_edit,
          "caption": grammar.parse_caption_items}


@pytest.mark.parametrize("kind", ap.KINDS)
def test_world_round_trip(kind):
  texts = WORLD_OUTPUTS[kind]
  accepted = 0
  for text in texts:
    want = _CHECK[kind](text)
    got = ap.parse_output("world", kind, text)
    if not want:  # E.g. a caption over the world's length limit.
      assert not got, (text, got)
      continue
    accepted += 1
    assert got == Parsed(kind, text), (text, got)
    assert got.value == want
    # Wrapped as a chat model might write it, it parses to the same text.
    for wrapped in (f"<start_of_turn>model\n{kind.title()}: {text}"
                    "<end_of_turn>", f'  "{text}"\n', f"- {text}<eos>"):
      assert ap.parse_output("world", kind, wrapped) == got, wrapped
  assert accepted >= 0.95 * len(texts) and accepted >= 100


def test_world_round_trip_covers_all_skills_and_ops():
  ops = {grammar.parse_edit(t).op for t in WORLD_OUTPUTS["edit"]}
  assert ops == set(grammar.EDIT_OPS)
  kinds = {oracle.parse_question(t).kind for t in WORLD_OUTPUTS["question"]}
  assert kinds == set(oracle.QUERY_KINDS)


# ---------------------------------------------------------------------------
# Fuzz: parse_output never raises and keeps its promises.


def _check_result(name, kind, text):
  ps = ap.get_prompt_set(name)
  r = ap.parse_output(name, kind, text)
  assert type(r) in (Parsed, ParseError), r
  assert r.kind == kind
  if isinstance(r, Parsed):
    assert r.text and r.text == r.text.strip()
    assert len(r.text) <= ps.max_chars[kind]
    assert any(ch.isalpha() for ch in r.text)
    assert "<end_of_turn>" not in r.text and "<eos>" not in r.text
    if kind == "caption":
      assert r.text == " ".join(r.text.split())
    else:
      assert "\n" not in r.text
    if kind == "question":
      assert r.text.count("?") <= 1
      if ps.require_question_mark:
        assert r.text.endswith("?")
    if name == "world":
      assert r.value and r.value == _CHECK[kind](r.text)
      # Parsing the parsed text again gives it back.
      assert ap.parse_output(name, kind, r.text) == r
  else:
    assert not r and r.reason
  return r


_WRAP = st.sampled_from(["{}", "{}<end_of_turn>", "Question: {}",
                         "<start_of_turn>model\n{}", '"{}"', "- {}",
                         "**Edit:** {}\nbecause", "Caption:\n{}\n\n"])


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(["world", "gemma3"]),
       kind=st.sampled_from(ap.KINDS), text=st.text(max_size=200))
def test_parse_never_raises_on_random_text(name, kind, text):
  _check_result(name, kind, text)


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(["world", "gemma3"]),
       kind=st.sampled_from(ap.KINDS),
       text=st.lists(st.sampled_from(list("ab ?:\"'*-.1\n\t<>/_") + [
           "<end_of_turn>", "<eos>", "<start_of_turn>", "model", "Q:",
           "Caption:", "**", "is there a red circle"]),
           max_size=30).map("".join))
def test_parse_never_raises_on_marker_soup(name, kind, text):
  _check_result(name, kind, text)


_VALID = [t for k in ap.KINDS for t in WORLD_OUTPUTS[k][:120]]
_WORDS = sorted({w for t in _VALID for w in re.findall(r"[a-z0-9]+", t)} |
                {"Question:", "<end_of_turn>", "?", '"', "-", "1."})


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(["world", "gemma3"]),
       kind=st.sampled_from(ap.KINDS), text=mutated(_VALID, _WORDS),
       wrap=_WRAP)
def test_parse_never_raises_on_mutated_outputs(name, kind, text, wrap):
  _check_result(name, kind, wrap.format(text))

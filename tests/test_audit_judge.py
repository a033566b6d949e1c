"""Judge D (VQA normalisation, exact and model judges), consensus, reward."""

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from auditdm_jax.audit import judge as judge_lib

normalize = judge_lib.normalize_answer
RewardConfig = judge_lib.RewardConfig


# ---------------------------------------------------------------------------
# normalize_answer.


@pytest.mark.parametrize("text, want", [
    # Case and whitespace.
    ("Yes", "yes"), ("  YES  ", "yes"), ("red\tand\nblue", "red and blue"),
    ("a  big   dog", "big dog"), ("", ""), ("   ", ""),
    # Articles.
    ("a dog", "dog"), ("An apple", "apple"), ("the red car", "red car"),
    ("The", ""), ("a the an", ""), ("theater", "theater"), ("anyone", "anyone"),
    # Number words (and "none").
    ("none", "0"), ("zero", "0"), ("one", "1"), ("Two", "2"), ("three", "3"),
    ("four", "4"), ("five", "5"), ("six", "6"), ("seven", "7"),
    ("eight", "8"), ("nine", "9"), ("ten", "10"), ("eleven", "eleven"),
    ("two dogs", "2 dogs"), ("someone", "someone"), ("nones", "nones"),
    # Contractions get their apostrophe back.
    ("dont", "don't"), ("isnt", "isn't"), ("cant", "can't"),
    ("Wont", "won't"), ("im", "i'm"), ("youre", "you're"),
    ("oclock", "o'clock"), ("yall", "y'all"), ("don't", "don't"),
    ("twas", "'twas"), ("somebodyd", "somebody'd"),
    # Apostrophes and colons are kept.
    ("man's", "man's"), ("2:50 pm", "2:50 pm"), ("ratio 3:4", "ratio 3:4"),
    # Periods: dropped unless a digit follows.
    ("yes.", "yes"), ("3.5", "3.5"), ("5.", "5"), (".5", ".5"),
    ("u.s.a.", "usa"), ("mr. smith", "mr smith"), ("wait...", "wait"),
    ("1.5.", "1.5"),
    # Commas: between digits -> deleted everywhere.
    ("1,000", "1000"), ("100,978", "100978"),
    ("1,000 red,blue", "1000 redblue"),
    # Other punctuation: a space, or deleted when touching a space.
    ("red,blue", "red blue"), ("red, blue", "red blue"),
    ("yes!", "yes"), ("what?", "what"), ("t-shirt", "t shirt"),
    ("red - blue", "red blue"), ("(left)", "left"),
    ("left/right", "left right"),
    ('"quoted"', "quoted"), ("x_y", "x y"), ("x+y=z", "x y z"),
    ("<b>", "b"), ("@home", "home"), ("semi;colon", "semi colon"),
    ("[1]", "1"), ("{a}", ""), ("back\\slash", "back slash"),
    # Extensions: markdown marks and curly quotes.
    ("**Yes**", "yes"), ("# Answer", "answer"), ("don\u2019t", "don't"),
    ("\u201cred\u201d", "red"), ("dont\u2019", "dont'"),
    # Kept as they carry meaning.
    ("$5", "$5"), ("50%", "50%"), ("black & white", "black & white"),
    # Together.
    ("It's a Dog!", "it's dog"), ("The answer is: Two.", "answer is: 2"),
    ("NONE.", "0"), ("There are three (3) cats.", "there are 3 3 cats"),
])
def test_normalize_answer(text, want):
  assert normalize(text) == want


def test_normalize_non_str_is_empty():
  assert normalize(None) == ""  # type: ignore[arg-type]
  assert normalize(3) == ""  # type: ignore[arg-type]


def test_contraction_map_is_idempotent():
  for key, value in judge_lib.CONTRACTIONS.items():
    assert key == key.lower() and value == value.lower()
    assert value not in judge_lib.CONTRACTIONS or \
        judge_lib.CONTRACTIONS[value] == value, key


_PUNCTY = st.text(alphabet=list("0123456789.,;:-?!'\"*_/ \t\nabAnoeTHE\u2019"
                                "\u201c\u00e9\u0130"), max_size=40)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=60), _PUNCTY))
def test_normalize_properties(text):
  out = normalize(text)  # Never raises on arbitrary unicode.
  assert normalize(out) == out
  assert out == out.strip() and "  " not in out
  assert out == " ".join(out.split())
  assert not set(out.split()) & judge_lib.ARTICLES


def test_answers_match():
  assert judge_lib.answers_match("Two", "2")
  assert judge_lib.answers_match("the dog.", "Dog")
  assert judge_lib.answers_match("none", "zero")
  assert not judge_lib.answers_match("dog", "dogs")
  assert not judge_lib.answers_match(None, "x")
  assert not judge_lib.answers_match(None, None)


# ---------------------------------------------------------------------------
# Judges.


class FakeAsk:
  """A 'model' for ModelJudge: replies from a table, records every call."""

  def __init__(self, synonyms=(), reply=None):
    self.synonyms = {frozenset(p) for p in synonyms}
    self.reply = reply
    self.calls = []

  def __call__(self, prompts):
    self.calls.append(list(prompts))
    out = []
    for p in prompts:
      if self.reply is not None:
        out.append(self.reply)
        continue
      a = p.split("Answer 1: ")[1].split("\n")[0]
      b = p.split("Answer 2: ")[1].split("\n")[0]
      same = frozenset((normalize(a), normalize(b))) in self.synonyms
      out.append("Yes." if same else "No, they differ.")
    return out


def test_exact_judge_and_registry():
  d = judge_lib.get_judge("exact")
  assert isinstance(d, judge_lib.ExactMatchJudge)
  assert isinstance(d, judge_lib.Judge)
  assert d.same([("Yes", "yes."), ("2", "three"), ("a cat", "Cat")]) == \
      [True, False, True]
  assert d.same([]) == []
  assert judge_lib.judge_names() == ["exact", "model"]
  with pytest.raises(ValueError, match="known: \\['exact', 'model'\\]"):
    judge_lib.get_judge("fuzzy")
  with pytest.raises(ValueError, match="already registered"):
    judge_lib.register_judge("exact", judge_lib.ExactMatchJudge)


def test_model_judge_asks_only_unequal_pairs_once():
  ask = FakeAsk(synonyms=[("sofa", "couch")])
  d = judge_lib.get_judge("model", ask=ask)
  assert isinstance(d, judge_lib.Judge)
  got = d.same([("Sofa", "couch"), ("dog", "Dog."), ("couch", "sofa"),
                ("sofa", "chair"), ("The sofa", "a couch")])
  assert got == [True, True, True, False, True]
  assert len(ask.calls) == 1
  # (sofa, couch) in either order and spelling is asked once; dog/Dog never.
  assert len(ask.calls[0]) == 2
  assert all("Answer 1:" in p and "yes or no" in p for p in ask.calls[0])
  assert d.asked == 2 and d.fallbacks == 0
  # Nothing to ask: the model is not called at all.
  assert d.same([("two", "2"), ("x", "X")]) == [True, True]
  assert len(ask.calls) == 1


@pytest.mark.parametrize("reply, want", [
    ("yes", True), ("Yes.", True), ("YES!", True), ("**Yes**", True),
    ("yes, they mean the same", True), ("I think yes.", True),
    ("Answer: yes", True), ("no", False), ("No.", False),
    ("No, the first is a dog.", False), ("no<end_of_turn>", False),
    ("They differ, so no.", False), ("not sure", None), ("", None),
    ("Either yes or no.", None), ("maybe", None), ("nope", None),
    ("yesterday", None),
])
def test_parse_yes_no(reply, want):
  assert judge_lib.parse_yes_no(reply) is want


def test_model_judge_fallback_counts_unparseable_replies():
  d = judge_lib.ModelJudge(FakeAsk(reply="Hmm, hard to say."))
  assert d.same([("sofa", "couch"), ("cat", "dog"), ("x", "x")]) == \
      [False, False, True]
  assert d.fallbacks == 2 and d.asked == 2


def test_model_judge_template_and_reply_count():
  ask = FakeAsk(reply="yes")
  d = judge_lib.ModelJudge(ask, template="Same? {a} | {b}")
  d.same([("red", "blue")])
  assert ask.calls[-1] == ["Same? red | blue"]
  for bad in ("no fields", "only {a}", "{a} {b} {c}", "{a} {b} {"):
    with pytest.raises(ValueError, match="template"):
      judge_lib.ModelJudge(ask, template=bad)
  with pytest.raises(ValueError, match="callable"):
    judge_lib.ModelJudge("not a function")  # type: ignore[arg-type]
  short = judge_lib.ModelJudge(lambda ps: [])
  with pytest.raises(ValueError, match="0 replies for 1 prompts"):
    short.same([("cat", "dog")])


# ---------------------------------------------------------------------------
# Consensus.


@pytest.mark.parametrize("answers, mode, want", [
    (["red"], "unanimous", "red"),
    (["Red", "red.", "the red"], "unanimous", "red"),
    (["red", "blue"], "unanimous", None),
    (["red", "red", "blue"], "unanimous", None),
    (["two", "2", "Two."], "unanimous", "2"),
    (["red"], "majority", "red"),
    (["red", "red", "blue"], "majority", "red"),
    (["red", "blue"], "majority", None),            # 1 of 2 is not > half.
    (["red", "red", "blue", "blue"], "majority", None),   # Tie.
    (["red", "blue", "green"], "majority", None),
    (["a", "b", "b", "c", "b"], "majority", "b"),
    (["a", "b", "b", "c"], "majority", None),        # 2 of 4.
])
def test_consensus_exact(answers, mode, want):
  assert judge_lib.consensus(answers, mode) == want


def test_consensus_errors():
  with pytest.raises(ValueError, match="at least one answer"):
    judge_lib.consensus([])
  with pytest.raises(ValueError, match="'unanimous', 'majority'"):
    judge_lib.consensus(["a"], "plurality")
  with pytest.raises(ValueError, match="majority"):
    judge_lib.consensus(["a"], "unanimous", min_agree=0.5)
  for bad in (0, 0.0, 1.5, -1, True, "half"):
    with pytest.raises(ValueError, match="min_agree"):
      judge_lib.consensus(["a"], "majority", min_agree=bad)


def test_consensus_min_agree():
  answers = ["x", "x", "y", "z", "w"]
  assert judge_lib.consensus(answers, "majority") is None       # 2 of 5.
  assert judge_lib.consensus(answers, "majority", min_agree=0.4) == "x"
  assert judge_lib.consensus(answers, "majority", min_agree=0.5) is None
  assert judge_lib.consensus(["x", "x", "y", "y"], "majority",
                             min_agree=0.5) is None              # Tie.
  assert judge_lib.consensus(["x", "x", "x", "y"], "majority",
                             min_agree=0.75) == "x"
  assert judge_lib.consensus(["x", "x", "x", "y"], "majority",
                             min_agree=1.0) is None


def test_consensus_with_model_judge_one_call():
  ask = FakeAsk(synonyms=[("sofa", "couch")])
  d = judge_lib.ModelJudge(ask)
  assert judge_lib.consensus(["sofa", "couch", "Sofa"], "unanimous", d) == \
      "sofa"
  assert len(ask.calls) == 1
  assert judge_lib.consensus(["sofa", "couch", "chair"], "unanimous", d) is None
  assert judge_lib.consensus(["sofa", "couch", "chair"], "majority", d) == \
      "sofa"
  # Synonym clusters tie 2 vs 2: no consensus.
  ask2 = FakeAsk(synonyms=[("sofa", "couch"), ("chair", "seat")])
  assert judge_lib.consensus(["sofa", "couch", "chair", "seat"], "majority",
                             judge_lib.ModelJudge(ask2)) is None
  assert len(ask2.calls) == 1


def test_consensus_non_transitive_judge():
  # y ~ x and y ~ z, but x !~ z: y gathers all three; x and z do not.
  ask = FakeAsk(synonyms=[("x", "y"), ("y", "z")])
  d = judge_lib.ModelJudge(ask)
  assert judge_lib.consensus(["x", "y", "z"], "majority", d) == "y"
  assert judge_lib.consensus(["x", "y", "z"], "unanimous", d) is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["red", "Red.", "blue", "the blue", "2",
                                 "two", "green"]), min_size=1, max_size=7))
def test_consensus_exact_matches_counting(answers):
  norm = [normalize(a) for a in answers]
  counts = {n: norm.count(n) for n in norm}
  top = max(counts.values())
  leaders = [n for n, c in counts.items() if c == top]
  want_majority = leaders[0] if top * 2 > len(norm) else None
  want_unanimous = norm[0] if len(counts) == 1 else None
  assert judge_lib.consensus(answers, "majority") == want_majority
  assert judge_lib.consensus(answers, "unanimous") == want_unanimous


# ---------------------------------------------------------------------------
# Reward.


@pytest.mark.parametrize("kw, match", [
    (dict(consensus="most"), "consensus mode"),
    (dict(invalid_penalty=-0.1), "invalid_penalty"),
    (dict(invalid_penalty=math.inf), "invalid_penalty"),
    (dict(invalid_penalty="1"), "invalid_penalty"),
    (dict(novelty_bonus=-1), "novelty_bonus"),
    (dict(novelty_bonus=math.nan), "novelty_bonus"),
    (dict(novelty_window=0), "novelty_window"),
    (dict(novelty_window=2.5), "novelty_window"),
    (dict(novelty_window=True), "novelty_window"),
    (dict(min_agree=0.6), "majority"),
    (dict(consensus="majority", min_agree=2), "min_agree"),
])
def test_reward_config_validation(kw, match):
  with pytest.raises(ValueError, match=match):
    RewardConfig(**kw)


def test_reward_config_defaults_and_frozen():
  c = RewardConfig()
  assert (c.consensus, c.invalid_penalty, c.novelty_bonus,
          c.novelty_window, c.min_agree) == ("unanimous", 0.0, 0.0, 1024, None)
  with pytest.raises(AttributeError):
    c.consensus = "majority"  # type: ignore[misc]
  RewardConfig(consensus="majority", min_agree=0.6, invalid_penalty=np.float32(
      0.5), novelty_bonus=1)
  t = RewardConfig(novelty_window=3).tracker()
  assert isinstance(t, judge_lib.NoveltyTracker) and t.window == 3


UNANIMOUS = RewardConfig()
MAJORITY = RewardConfig(consensus="majority")


@pytest.mark.parametrize("target, refs, config, reward, agree, differs, cons", [
    ("blue", ["red", "Red."], UNANIMOUS, 1.0, True, True, "red"),
    ("red", ["red", "the red"], UNANIMOUS, 0.0, True, False, "red"),
    ("Red!", ["red", "red"], UNANIMOUS, 0.0, True, False, "red"),
    ("blue", ["red", "green"], UNANIMOUS, 0.0, False, False, None),
    ("blue", ["red", "red", "green"], UNANIMOUS, 0.0, False, False, None),
    ("blue", ["red", "red", "green"], MAJORITY, 1.0, True, True, "red"),
    ("red", ["red", "red", "green"], MAJORITY, 0.0, True, False, "red"),
    ("green", ["red", "green"], MAJORITY, 0.0, False, False, None),
    ("3", ["two", "2"], UNANIMOUS, 1.0, True, True, "2"),
    ("none", ["zero"], UNANIMOUS, 0.0, True, False, "0"),
])
def test_score(target, refs, config, reward, agree, differs, cons):
  v = judge_lib.score(target, refs, valid=True, config=config)
  assert v == judge_lib.Verdict(reward=reward, valid=True, consensus=cons,
                                target_differs=differs, references_agree=agree,
                                novelty=0.0)


def test_score_invalid_and_penalty():
  v = judge_lib.score(None, [], valid=False, config=UNANIMOUS)
  assert v.reward == 0.0 and math.copysign(1, v.reward) == 1  # Not -0.0.
  assert not v.valid and v.consensus is None and not v.references_agree
  cfg = RewardConfig(invalid_penalty=0.25, novelty_bonus=1.0)
  # Invalid pairs get the penalty whatever the answers and the novelty.
  v = judge_lib.score("blue", ["red"], valid=False, config=cfg, novelty=1.0)
  assert v.reward == -0.25 and not v.target_differs


def test_score_novelty_bonus_only_when_rewarded():
  cfg = RewardConfig(novelty_bonus=0.5)
  v = judge_lib.score("blue", ["red"], valid=True, config=cfg, novelty=0.4)
  assert v.reward == pytest.approx(1.2) and v.novelty == 0.4
  v = judge_lib.score("red", ["red"], valid=True, config=cfg, novelty=1.0)
  assert v.reward == 0.0 and v.novelty == 1.0
  v = judge_lib.score("red", ["red", "blue"], valid=True, config=cfg,
                      novelty=1.0)
  assert v.reward == 0.0


def test_score_errors():
  with pytest.raises(ValueError, match="no reference answers"):
    judge_lib.score("a", [], valid=True, config=UNANIMOUS)
  with pytest.raises(ValueError, match="no target answer"):
    judge_lib.score(None, ["a"], valid=True, config=UNANIMOUS)
  for bad in (-0.1, 1.1, math.nan, True):
    with pytest.raises(ValueError, match="novelty"):
      judge_lib.score("a", ["b"], valid=True, config=UNANIMOUS, novelty=bad)
  with pytest.raises(ValueError, match="lengths differ"):
    judge_lib.score_batch(["a", "b"], [["a"]], valid=True, config=UNANIMOUS)


class CountingJudge:
  """Exact match that records each `same` call."""

  def __init__(self):
    self.calls = []

  def same(self, pairs):
    self.calls.append(list(pairs))
    return [judge_lib.answers_match(a, b) for a, b in pairs]


def test_score_batch_one_judge_call_and_per_item_equivalence():
  targets = ["blue", "red", None, "2", "cat", "sofa"]
  refs = [["red", "red"], ["red", "blue", "red"], [], ["two", "three"],
          ["Cat", "cat."], ["couch", "couch", "chair"]]
  valid = [True, True, False, True, True, True]
  novelty = [0.5, 1.0, 0.0, 0.2, 0.9, 1.0]
  cfg = RewardConfig(consensus="majority", invalid_penalty=0.5,
                     novelty_bonus=0.2)
  d = CountingJudge()
  got = judge_lib.score_batch(targets, refs, valid=valid, config=cfg, judge=d,
                              novelty=novelty)
  assert len(d.calls) == 1
  sent = d.calls[0]
  assert all(normalize(a) != normalize(b) for a, b in sent)
  assert len({frozenset((normalize(a), normalize(b))) for a, b in sent}) == \
      len(sent)
  want = [judge_lib.score(t, r, valid=v, config=cfg, novelty=n)
          for t, r, v, n in zip(targets, refs, valid, novelty)]
  assert got == want
  assert [v.reward for v in got] == pytest.approx([1.1, 0.0, -0.5, 0.0, 0.0,
                                                   1.2])


def test_score_batch_with_model_judge():
  ask = FakeAsk(synonyms=[("sofa", "couch"), ("2", "3")])
  d = judge_lib.ModelJudge(ask)
  got = judge_lib.score_batch(["couch", "chair", "3"],
                              [["sofa", "Sofa"], ["sofa", "couch"], ["2"]],
                              valid=[True, True, True], config=UNANIMOUS,
                              judge=d)
  assert len(ask.calls) == 1
  assert [v.reward for v in got] == [0.0, 1.0, 0.0]
  assert got[1].consensus == "sofa" and got[1].references_agree
  # No valid pair: nothing to compare, the judge is not called.
  judge_lib.score_batch([None], [()], valid=[False], config=UNANIMOUS, judge=d)
  assert len(ask.calls) == 1


# ---------------------------------------------------------------------------
# Novelty.


def test_novelty_tracker():
  t = judge_lib.NoveltyTracker(window=3)
  assert t.novelty("is there a red circle?") == 1.0
  t.add("Is there a red circle?")
  assert len(t) == 1
  # Exact repeats up to normalisation.
  assert t.novelty("is there red circle") == 0.0
  assert t.novelty("Is there a red circle") == 0.0
  # Same words in another order.
  assert t.novelty("there is a red circle?") == 0.0
  # {is, there, blue, circle} vs {is, there, red, circle}: 3 / 5 shared.
  assert t.novelty("is there a blue circle?") == pytest.approx(1 - 3 / 5)
  assert t.novelty("how many squares") == 1.0
  t.add("how many squares?")
  t.add("what colour is the square?")
  t.add("what shape is the diamond?")      # Evicts the first question.
  assert len(t) == 3
  assert t.novelty("is there a red circle?") > 0.0
  assert t.novelty("how many squares") == 0.0
  assert 0.0 <= t.novelty("") <= 1.0


def test_novelty_tracker_window_counts_repeats():
  t = judge_lib.NoveltyTracker(window=2)
  t.add("red circle")
  t.add("red circle")
  t.add("blue square")          # Evicts one copy of "red circle".
  assert t.novelty("red circle") == 0.0   # The other is still remembered.
  t.add("blue square")          # Evicts the last copy.
  assert t.novelty("red circle") == 1.0
  assert t.novelty("red square") == pytest.approx(1 - 1 / 3)


def test_novelty_tracker_deterministic_and_validated():
  qs = [f"how many {c} circles?" for c in ("red", "blue", "red", "green")]
  runs = []
  for _ in range(2):
    t = judge_lib.NoveltyTracker(8)
    vals = []
    for q in qs:
      vals.append(t.novelty(q))
      t.add(q)
    runs.append(vals)
  assert runs[0] == runs[1]
  assert runs[0][0] == 1.0 and runs[0][2] == 0.0
  assert all(0.0 <= v <= 1.0 for v in runs[0])
  for bad in (0, -1, 1.5, True, None):
    with pytest.raises(ValueError, match="window"):
      judge_lib.NoveltyTracker(bad)  # type: ignore[arg-type]

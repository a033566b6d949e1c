"""Benchmark scorers (auditdm_jax.eval.scorers) against hand-computed values."""

import io
import math

import numpy as np
from PIL import Image
import pytest

from auditdm_jax import tokenizer as tokenizer_lib
from auditdm_jax.eval import scorers
from auditdm_jax.eval.scorers import choice
from auditdm_jax.eval.scorers import registry
from auditdm_jax.eval.scorers import text
from auditdm_jax.eval.scorers import yesno


def _ex(**kw):
  """A scorer-side example: a plain dict, as `decode_record` yields."""
  return {"id": "0", "answers": (), "options": (), "answer_letter": "",
          "category": "", "l2_category": "", "group": "", "bbox": None, **kw}


# --- VQA accuracy -------------------------------------------------------------


def test_vqa_accuracy_hand_computed():
  # 10 answers, 2 humans said "2": each leave-one-out subset of 9 holds
  # either 1 match (the 2 subsets that drop a "2": min(1/3, 1)) or 2 matches
  # (the 8 that drop a "3": min(2/3, 1)); the mean is
  # (2 * 1/3 + 8 * 2/3) / 10 = (2/3 + 16/3) / 10 = 6/10 = 0.6.
  answers = ["2", "2"] + ["3"] * 8
  assert scorers.vqa_accuracy("2", answers) == pytest.approx(0.6)
  # The official normalisation: number words, punctuation, articles, case.
  assert scorers.vqa_accuracy("Two.", answers) == pytest.approx(0.6)
  # 8 humans said "3": every subset holds >= 7 matches -> min(., 1) = 1.
  assert scorers.vqa_accuracy("three", answers) == pytest.approx(1.0)
  # 1 match: 1 subset with 0 matches, 9 with 1 -> (0 + 9 * 1/3) / 10 = 0.3.
  assert scorers.vqa_accuracy("4", ["4"] + ["5"] * 9) == pytest.approx(0.3)
  # 3 matches: 3 subsets with 2 (2/3 each), 7 with 3 (1 each) -> 0.9.
  assert scorers.vqa_accuracy("a dog", ["dog"] * 3 + ["cat"] * 7
                              ) == pytest.approx(0.9)
  assert scorers.vqa_accuracy("bird", answers) == 0.0
  # One reference answer: exact match.
  assert scorers.vqa_accuracy("Yes!", ["yes"]) == 1.0
  with pytest.raises(ValueError):
    scorers.vqa_accuracy("x", [])


def test_vqa_accuracy_scorer_breaks_down_by_answer_type():
  exs = [_ex(answers=("2",) * 2 + ("3",) * 8, category="number"),
         _ex(answers=("yes",) * 10, category="yes/no"),
         _ex(answers=("no",) * 10, category="yes/no")]
  out = scorers.score("vqa_accuracy", ["2", "Yes", "yes"], exs)
  assert out["accuracy"] == pytest.approx(100 * (0.6 + 1 + 0) / 3)
  assert out["accuracy/number"] == pytest.approx(60.0)
  assert out["accuracy/yes/no"] == pytest.approx(50.0)


def test_exact_match():
  exs = [_ex(answers=("yes",)), _ex(answers=("the cup",)),
         _ex(answers=("left",))]
  out = scorers.score("exact_match", ["Yes.", "cup", "right"], exs)
  assert out["accuracy"] == pytest.approx(200 / 3)


# --- ANLS ---------------------------------------------------------------------


def test_levenshtein():
  assert text.levenshtein("kitten", "sitting") == 3
  assert text.levenshtein("", "abc") == 3
  assert text.levenshtein("abc", "abc") == 0


def test_anls_edge_cases():
  assert scorers.anls("hello world", ["hello world"]) == 1.0
  # Case, outer and inner spaces do not count.
  assert scorers.anls("  Hello   WORLD ", ["hello world"]) == 1.0
  # One edit in 11 characters: 1 - 1/11.
  assert scorers.anls("hello wrld", ["hello world"]) == pytest.approx(
      1 - 1 / 11)
  # NL = 1/4 < 0.5 -> 0.75; NL = 2/4 is not below the threshold -> 0.
  assert scorers.anls("abcx", ["abcd"]) == pytest.approx(0.75)
  assert scorers.anls("abxy", ["abcd"]) == 0.0
  # The best of several answers counts.
  assert scorers.anls("1 may 1990", ["May 1, 1990", "1 May 1990"]) == 1.0
  assert scorers.anls("", ["abc"]) == 0.0
  assert scorers.anls("", [""]) == 1.0  # Both empty: NL 0.
  out = scorers.score("anls", ["abcx", "zzzz"],
                      [_ex(answers=("abcd",)), _ex(answers=("abcd",))])
  assert out["anls"] == pytest.approx(37.5)


# --- relaxed accuracy ---------------------------------------------------------


def test_relaxed_accuracy_tolerance():
  assert scorers.relaxed_match("10.4", "10")       # 4% off.
  assert scorers.relaxed_match("10.5", "10")       # 5%: still in.
  assert not scorers.relaxed_match("10.6", "10")   # 6% off.
  assert scorers.relaxed_match("9.5", "10")
  assert scorers.relaxed_match("45%", "0.45")      # Percent -> fraction.
  assert scorers.relaxed_match(" 45 ", "45")
  # A target of 0 needs an exact match.
  assert not scorers.relaxed_match("0.01", "0")
  assert scorers.relaxed_match("0", "0")
  # Text: exact, case-insensitive.
  assert scorers.relaxed_match("Blue", "blue")
  assert not scorers.relaxed_match("blue sky", "blue")
  assert not scorers.relaxed_match("1990s", "1990")
  out = scorers.score("relaxed_accuracy", ["10.4", "Blue", "7"],
                      [_ex(answers=("10",)), _ex(answers=("blue",)),
                       _ex(answers=("9",))])
  assert out["relaxed_accuracy"] == pytest.approx(200 / 3)
  assert out["exact_accuracy"] == 0.0


# --- grounding ----------------------------------------------------------------


def test_loc_token_boxes_and_iou():
  assert scorers.parse_loc_box(
      "<loc0000><loc0000><loc0511><loc1023> cat") == pytest.approx(
          (0.0, 0.0, 511 / 1023, 1.0))
  # The first run of four wins; whitespace between tokens is tolerated.
  assert scorers.parse_loc_box("x <loc1023> <loc1023><loc1023> <loc1023>; "
                               "<loc0000><loc0000><loc0001><loc0001>") == (
                                   1.0, 1.0, 1.0, 1.0)
  assert scorers.parse_loc_box("<loc0001><loc0002><loc0003>") is None
  assert scorers.parse_loc_box("no box") is None
  # Half of a box: intersection .25, union .5 -> IoU .5.
  assert scorers.box_iou((0, 0, .5, .5), (0, 0, .5, 1)) == pytest.approx(0.5)
  assert scorers.box_iou((0, 0, .2, .2), (.5, .5, 1, 1)) == 0.0
  assert scorers.box_iou((.5, .5, .2, .2), (0, 0, 1, 1)) == 0.0  # Inverted.


def test_box_accuracy_at_iou_half():
  gt = (0.0, 0.0, 0.5, 1.0)
  loc = lambda *b: tokenizer_lib.loc_tokens(*(round(v * 1023) for v in b))
  preds = [loc(*gt) + " dog",              # IoU ~1.
           loc(0.0, 0.0, 0.5, 0.5),        # IoU 0.5: counts (>=).
           loc(0.0, 0.0, 0.5, 0.45),       # IoU 0.45: does not.
           "a dog"]                        # Invalid.
  out = scorers.score("box_accuracy", preds, [_ex(bbox=gt)] * 4)
  assert out["accuracy"] == pytest.approx(50.0)
  assert out["invalid"] == pytest.approx(25.0)
  ious = [scorers.box_iou(scorers.parse_loc_box(p), gt) for p in preds[:3]]
  assert ious[1] == pytest.approx(0.5, abs=1e-3)
  assert out["mean_iou"] == pytest.approx(100 * sum(ious) / 4)


# --- multiple choice ----------------------------------------------------------


@pytest.mark.parametrize("reply,want", [
    ("B", "B"), ("(B)", "B"), ("[C]", "C"), ("B.", "B"), ("**D**", "D"),
    ("B. dog", "B"), ("(B) dog", "B"), ("C: bird", "C"),
    ("The answer is B", "B"), ("The correct answer is (C).", "C"),
    ("Answer: D", "D"), ("dog", "B"), ("A dog.", "B"), ("Two.", "D"),
    ("It is a bird, I think.", "C"), ("I think B is right.", "B"),
    ("E", None), ("maybe", None), ("cat or dog", None), ("", None),
    ("A", "A"), ("b", None),
])
def test_extract_choice(reply, want):
  assert scorers.extract_choice(reply, ["cat", "dog", "bird", "2"]) == want


def test_extract_choice_prefers_the_longer_option_text():
  opts = ["red", "dark red", "blue"]
  assert scorers.extract_choice("It is dark red.", opts) == "B"
  assert scorers.extract_choice("red", opts) == "A"


def test_multiple_choice_accuracy_with_open_questions():
  exs = [_ex(options=("cat", "dog"), answer_letter="B", category="animal"),
         _ex(options=("cat", "dog"), answer_letter="A", category="animal"),
         _ex(options=("1", "2", "3"), answer_letter="C", category="count"),
         _ex(answers=("42",), category="math")]  # MMMU open question.
  out = scorers.score("multiple_choice",
                      ["B", "The answer is B", "hmm", "It is 42."], exs)
  assert out["accuracy"] == pytest.approx(50.0)
  assert out["parsed"] == pytest.approx(200 / 3)  # "hmm": no letter.
  assert out["category/animal"] == 50.0 and out["category/math"] == 100.0


def test_mmbench_circular_evaluation():
  def row(idx, opts, letter, cat="c"):
    return _ex(id=str(idx), options=opts, answer_letter=letter,
               group=str(idx % 1_000_000), category=cat)
  exs = [row(0, ("cat", "dog", "bird"), "A"),
         row(1_000_000, ("dog", "bird", "cat"), "C"),
         row(2_000_000, ("bird", "cat", "dog"), "B"),
         row(1, ("yes", "no"), "A", cat="d"),
         row(1_000_001, ("no", "yes"), "B", cat="d"),
         row(1_000_002, ("x", "y"), "A")]   # Its original (2) is absent.
  preds = ["A", "cat", "(B)",   # Question 0: every shift right.
           "A", "A",            # Question 1: second shift wrong.
           "A"]
  out = scorers.score("mmbench_circular", preds, exs)
  assert out["circular_accuracy"] == pytest.approx(50.0)
  assert out["vanilla_accuracy"] == pytest.approx(100.0)
  assert out["groups"] == 2 and out["rows"] == 5
  assert out["category/c"] == 100.0 and out["category/d"] == 0.0
  with pytest.raises(ValueError, match="no group"):
    scorers.score("mmbench_circular", ["A"], [_ex(options=("a",),
                                                  answer_letter="A")])


# --- yes / no -----------------------------------------------------------------


def test_extract_yes_no():
  assert scorers.extract_yes_no("Yes, there is.") == "yes"
  assert scorers.extract_yes_no("No.") == "no"
  assert scorers.extract_yes_no("**no**") == "no"
  assert scorers.extract_yes_no("yes or no") is None
  assert scorers.extract_yes_no("There is a dog.") is None


def test_mme_acc_plus():
  def q(cat, image, answer):
    return _ex(category=cat, group=image, answers=(answer,))
  exs = [q("existence", "e1", "Yes"), q("existence", "e1", "No"),
         q("existence", "e2", "Yes"), q("existence", "e2", "No"),
         q("code_reasoning", "c1", "Yes"), q("code_reasoning", "c1", "No")]
  preds = ["Yes", "No",         # e1: both right.
           "Yes", "Yes",        # e2: one right.
           "yes.", "no"]        # c1: both right.
  out = scorers.score("mme", preds, exs)
  # existence: acc 3/4 = 75, acc+ 1/2 images = 50 -> 125.
  assert out["existence/acc"] == 75.0 and out["existence/acc_plus"] == 50.0
  assert out["existence"] == 125.0
  assert out["code_reasoning"] == 200.0
  assert out["perception"] == 125.0 and out["cognition"] == 200.0
  assert out["total"] == 325.0
  assert set(yesno.MME_PERCEPTION) & set(yesno.MME_COGNITION) == set()
  assert len(yesno.MME_PERCEPTION) == 10 and len(yesno.MME_COGNITION) == 4


def test_pope_f1():
  exs = [_ex(answers=("yes",), category="random"),
         _ex(answers=("yes",), category="random"),
         _ex(answers=("no",), category="random"),
         _ex(answers=("no",), category="random")]
  preds = ["Yes", "no", "yes", "No, there is not."]
  # TP 1, FN 1, FP 1, TN 1.
  out = scorers.score("pope", preds, exs)
  assert out["accuracy"] == 50.0
  assert out["precision"] == 50.0 and out["recall"] == 50.0
  assert out["f1"] == 50.0 and out["yes_ratio"] == 50.0
  assert out["random/f1"] == 50.0
  # TP 2, FP 1, FN 0: precision 2/3, recall 1, F1 = 2*(2/3)/(5/3) = 0.8;
  # the unknown reply is wrong (accuracy 2/4) and counts as a "no"
  # prediction (not a false positive).
  out = scorers.score("pope", ["yes", "Yes", "yes", "yes and no"], exs)
  assert out["precision"] == pytest.approx(200 / 3)
  assert out["recall"] == 100.0 and out["f1"] == pytest.approx(80.0)
  assert out["accuracy"] == 50.0 and out["unknown"] == 25.0
  assert out["yes_ratio"] == 75.0
  # A row of several splits counts in each, and overall over those rows.
  out = scorers.score("pope", ["yes", "yes"], [
      _ex(answers=("yes",), category="adversarial,popular"),
      _ex(answers=("no",), category="popular")])
  assert out["adversarial/precision"] == 100.0
  assert out["popular/precision"] == 50.0
  assert out["precision"] == pytest.approx(200 / 3)  # 2 TP, 1 FP.


# --- CIDEr-D ------------------------------------------------------------------

_CAPTION_REFS = {
    "1": ["a man riding a horse on a beach",
          "a person rides a horse by the sea",
          "man on a brown horse near the ocean", "a rider and horse on sand",
          "a man is riding his horse along the shore"],
    "2": ["two dogs playing with a frisbee", "a pair of dogs in a park",
          "dogs chase a red frisbee on the grass", "two dogs run on grass",
          "a dog jumps for a frisbee while another watches"],
    "3": ["a plate of food with broccoli", "a meal of rice and broccoli",
          "broccoli and chicken on a white plate",
          "a dinner plate with vegetables",
          "food on a plate on a table"],
    "4": ["a red double decker bus on a street", "a bus driving down the road",
          "a large red bus in the city", "a double decker bus near buildings",
          "people wait as a red bus passes"],
    "5": ["a cat sleeping on a laptop", "a cat lying on a computer keyboard",
          "a grey cat naps on a laptop", "cat on a laptop on a desk",
          "a kitten asleep on the keys of a laptop"],
    "6": ["a snowboarder in the air", "a person jumping on a snowboard",
          "snowboarder doing a trick on a slope", "a man jumps in the snow",
          "a skier flies over a snowy hill"],
}
_CAPTIONS = {"1": "a man riding a horse on the beach",
             "2": "two dogs playing in the grass with a frisbee",
             "3": "a plate of broccoli and rice",
             "4": "a red bus",
             "5": "a cat on a laptop on a desk near a window with a lamp",
             "6": "a dog sitting on a couch"}


def test_cider_d_equals_pycocoevalcap():
  # requirements-dev.txt; its Cider is pure Python (only its PTBTokenizer
  # needs Java, and it is not used).
  # pylint: disable-next=g-import-not-at-top
  from pycocoevalcap.cider import cider as cider_mod
  # The same pre-tokenised strings go to both (no Java PTBTokenizer).
  refs = {k: [scorers.tokenize_caption(r) for r in v]
          for k, v in _CAPTION_REFS.items()}
  cands = {k: scorers.tokenize_caption(v) for k, v in _CAPTIONS.items()}
  want, want_per = cider_mod.Cider().compute_score(
      refs, {k: [c] for k, c in cands.items()})
  got, got_per = scorers.cider_d(cands, refs)
  assert got == pytest.approx(float(want), abs=1e-6)
  for i, k in enumerate(refs):  # Cider iterates the gts keys in order.
    assert got_per[k] == pytest.approx(float(want_per[i]), abs=1e-6)
  # A perfect caption scores far above a wrong one.
  assert got_per["1"] > 1.0 > got_per["6"]
  # The scorer: same number x 100, from raw captions.
  exs = [_ex(id=k, answers=tuple(v)) for k, v in _CAPTION_REFS.items()]
  out = scorers.score("cider", [_CAPTIONS[k] for k in _CAPTION_REFS], exs)
  assert out["cider"] == pytest.approx(100 * got, abs=1e-4)


def test_tokenize_caption_is_ptb_like():
  assert scorers.tokenize_caption("A man's dog doesn't bark.") == (
      "a man 's dog does n't bark")
  assert scorers.tokenize_caption('Two "black-and-white" dogs, 2.5 m.') == (
      "two black-and-white dogs 2.5 m")


# --- registry -----------------------------------------------------------------


def test_registry_and_input_checks():
  assert set(scorers.METRICS) == {
      "vqa_accuracy", "exact_match", "anls", "relaxed_accuracy",
      "box_accuracy", "cider", "multiple_choice", "mmbench_circular", "mme",
      "pope"}
  with pytest.raises(ValueError, match="unknown metric 'bleu'"):
    scorers.get_metric("bleu")
  with pytest.raises(ValueError, match="already registered"):
    scorers.register("anls", main_key="anls")(lambda p, e: {"anls": 0.0})
  with pytest.raises(ValueError, match="2 predictions for 1"):
    scorers.score("exact_match", ["a", "b"], [_ex(answers=("a",))])
  with pytest.raises(ValueError, match="no examples"):
    scorers.score("exact_match", [], [])
  with pytest.raises(TypeError, match="not str"):
    scorers.score("exact_match", [3], [_ex(answers=("3",))])
  # None = the model said nothing.
  assert scorers.score("exact_match", [None], [_ex(answers=("b",))]) == {
      "accuracy": 0.0}
  with pytest.raises(ValueError, match="metric name"):
    registry.Metric("Bad Name", lambda p, e: {}, "x")


def test_scorers_take_bench_examples_too():
  from auditdm_jax.data import bench  # pylint: disable=g-import-not-at-top
  buf = io.BytesIO()
  Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(buf, "png")
  exs = [bench.BenchExample(id=str(i), benchmark="pope", image=buf.getvalue(),
                            question="q", answers=(a,), category="random")
         for i, a in enumerate(["yes", "no"])]
  out = scorers.score_benchmark("pope", ["yes", "no"], exs)
  assert out["f1"] == 100.0 and out["accuracy"] == 100.0
  for name, m in scorers.METRICS.items():
    assert m.main_key and m.description, name
  assert math.isclose(scorers.get_metric("pope")(["yes", "yes"], exs)["f1"],
                      100 * 2 / 3)
  assert choice.open_answer_match("The value is 42 m.", ["42 m"])

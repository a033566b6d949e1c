"""Judge D, reference consensus and the auditor's reward (DESIGN.md §1.4, §3).

Judge D decides whether two answers mean the same. The default compares
answers after the official VQA answer normalisation (`normalize_answer`);
the model judge asks a reference model instead. Every judge is batched, so a
model judge costs one generate call per rollout:

  from auditdm_jax.audit import judge as judge_lib
  judge_lib.normalize_answer("Two dogs.")       # "2 dogs"
  judge_lib.answers_match("None", "zero")       # True ("0" == "0")
  d = judge_lib.get_judge("exact")              # or "model", ask=...
  d.same([("yes", "Yes."), ("2", "three")])     # [True, False]
  judge_lib.consensus(["red", "Red", "blue"], "majority")   # "red"

  cfg = judge_lib.RewardConfig(consensus="unanimous", invalid_penalty=0.1)
  v = judge_lib.score("blue", ["red", "red."], valid=True, config=cfg)
  v.reward                                      # 1.0: refs agree, target not
  judge_lib.score_batch(targets, refs, valid=flags, config=cfg, judge=d)

Reward (the paper's binary disagreement, §3 of research/paper.md):

  invalid pair (malformed auditor output, failed image)  -invalid_penalty
  references reach consensus and the target differs      1 + bonus * novelty
  otherwise                                              0

The novelty bonus is paid only on rewarded pairs: paid on every valid pair,
it would reward novel but unanswerable questions, which the consensus
requirement exists to screen out. So a valid pair earns at most
1 + novelty_bonus and at least 0, and an invalid one exactly
-invalid_penalty.

Consensus (`consensus`): "unanimous" needs every reference to agree with
one answer; "majority" needs strictly more than half of them to (or at least
`min_agree` of them), and a tie between two answers the judge tells apart is
no consensus. The consensus answer is returned normalised.

Judge protocol: `same(pairs) -> list[bool]`, one bool per (a, b) pair. Pairs
equal after normalisation are the same for every judge; callers here never
send them, and `ModelJudge` never asks its model about them.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import numbers
import re
from collections.abc import Callable, Sequence
from typing import Optional, Protocol, Union, runtime_checkable

# --------------------------------------------------------------------------
# VQA answer normalisation.
#
# The rules of the official VQA evaluation (Antol et al. 2015; the
# evaluation script by A. Agrawal), written anew from its published
# description: lower-case; punctuation other than the apostrophe and the
# colon becomes a space, or is deleted when it touches a space or when the
# text has a comma between digits ("100,978" -> "100978"); a period is
# dropped unless a digit follows it ("2.5" stays, "yes." -> "yes"); number
# words zero..ten (and "none") become digits; the articles a / an / the are
# dropped; contractions missing their apostrophe get it back ("dont" ->
# "don't"); whitespace collapses to single spaces.
#
# Deliberate differences from the script, all for model-written answers:
#   - curly quotes and apostrophes are read as ASCII ones (so "don’t" ==
#     "don't");
#   - the markdown marks * # | ~ ^ count as punctuation ("**yes**" == "yes");
#   - the script's capitalised keys ("Im", "Ive", "Id've") can never match
#     after lower-casing there; here they are lower-case and do;
#   - the script maps "somebody'd" to "somebodyd", a typo; left out.

# The official punctuation list, plus the markdown marks above.
_PUNCT = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_",
          "-", ">", "<", "@", "`", ",", "?", "!", "*", "#", "|", "~", "^")
_TRANSLATE_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'",
                                   "\u201a": "'", "\u201b": "'",
                                   "\u201c": '"', "\u201d": '"',
                                   "\u201e": '"', "\u201f": '"'})
_COMMA_IN_NUMBER = re.compile(r"\d,\d")
_PERIOD_NOT_DECIMAL = re.compile(r"\.(?!\d)")
ARTICLES = frozenset({"a", "an", "the"})
NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2",
                "three": "3", "four": "4", "five": "5", "six": "6",
                "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
# Missing-apostrophe spelling -> the contraction. No value is another key,
# so the map is idempotent (a test checks it).
CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't",
    "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't",
    "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've",
    "hasnt": "hasn't", "havent": "haven't", "hed": "he'd",
    "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "id've": "i'd've", "i'dve": "i'd've",
    "im": "i'm", "ive": "i've", "isnt": "isn't", "itd": "it'd",
    "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't",
    "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've", "somebodyd": "somebody'd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's",
    "someoned": "someone'd", "someoned've": "someone'd've",
    "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've",
    "somethingll": "something'll", "thats": "that's", "thered": "there'd",
    "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd",
    "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll",
    "theyre": "they're", "theyve": "they've", "twas": "'twas",
    "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've",
    "whens": "when's", "whered": "where'd", "wheres": "where's",
    "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's",
    "whove": "who've", "whyll": "why'll", "whyre": "why're", "whys": "why's",
    "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've",
    "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've",
    "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}


def _punctuation(text: str) -> str:
  # One decision for the whole text per mark, as the official rule does:
  # a mark touching a space is a separator already (delete it); a comma
  # between digits means thousands separators are around (delete every
  # mark, so "1,000" -> "1000"); otherwise the mark separates words.
  number_comma = _COMMA_IN_NUMBER.search(text) is not None
  out = text
  for p in _PUNCT:
    if p not in out:
      continue
    if number_comma or (p + " ") in text or (" " + p) in text:
      out = out.replace(p, "")
    else:
      out = out.replace(p, " ")
  return _PERIOD_NOT_DECIMAL.sub("", out)


def normalize_answer(text: str) -> str:
  """The VQA-normalised form of an answer (see the rules above); never raises.

  Args:
    text: an answer; None and non-str values normalise to "".

  Returns:
    Lower-case words joined by single spaces, no leading or trailing space;
    idempotent: normalize_answer(normalize_answer(x)) == normalize_answer(x).
  """
  if not isinstance(text, str):
    return ""
  t = " ".join(text.translate(_TRANSLATE_QUOTES).lower().split())
  words = []
  for w in _punctuation(t).split():
    w = NUMBER_WORDS.get(w, w)
    if w in ARTICLES:
      continue
    words.append(CONTRACTIONS.get(w, w))
  return " ".join(words)


def answers_match(a: Optional[str], b: Optional[str]) -> bool:
  """Exact match after `normalize_answer` (None matches nothing)."""
  if a is None or b is None:
    return False
  return normalize_answer(a) == normalize_answer(b)


# --------------------------------------------------------------------------
# Judges.


@runtime_checkable
class Judge(Protocol):
  """Judge D: does each (a, b) pair of answers mean the same?"""

  def same(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
    ...


class ExactMatchJudge:
  """Same iff equal after VQA normalisation (the default judge)."""

  def same(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
    return [answers_match(a, b) for a, b in pairs]

  def __repr__(self) -> str:
    return "ExactMatchJudge()"


DEFAULT_JUDGE_TEMPLATE = (
    "Two answers were given to the same question about an image.\n"
    "Answer 1: {a}\n"
    "Answer 2: {b}\n"
    "Do the two answers mean the same thing? Reply with yes or no.")

_YES_NO_RE = re.compile(r"\b(yes|no)\b")
_REPLY_MARKERS_RE = re.compile(r"<[a-z_/]+>")


def parse_yes_no(reply: str) -> Optional[bool]:
  """True for yes, False for no, None when the reply says neither clearly.

  Tolerant of case, punctuation, markdown and extra words: the first word
  decides when it is yes or no ("No, the first is a dog." -> False);
  otherwise the reply must hold exactly one of the two words ("I think
  yes." -> True, "not sure" -> None, "yes or no" -> None).
  """
  if not isinstance(reply, str):
    return None
  t = _REPLY_MARKERS_RE.sub(" ", reply.lower())
  words = re.findall(r"[a-z]+", t)
  if words and words[0] in ("yes", "no"):
    return words[0] == "yes"
  found = set(_YES_NO_RE.findall(t))
  if len(found) == 1:
    return found.pop() == "yes"
  return None


class ModelJudge:
  """A reference model asked whether two answers mean the same.

  `ask` is a batched text -> text function the caller builds from a model
  (e.g. a closure over `sampling.generate.generate` and one reference
  model), so the judge stays model-agnostic. Pairs equal after
  normalisation are answered without the model; pairs that repeat within a
  call (in either order, up to normalisation) are asked once. A reply that
  is neither yes nor no (`parse_yes_no`) falls back to exact match for that
  pair and is counted in `fallbacks`.

  Attributes:
    ask: list of prompts -> list of replies, same length and order.
    template: str.format template with the fields {a} and {b}.
    asked: prompts sent to the model so far.
    fallbacks: replies that could not be parsed so far.
  """

  def __init__(self, ask: Callable[[list[str]], list[str]],
               template: str = DEFAULT_JUDGE_TEMPLATE):
    if not callable(ask):
      raise ValueError(f"ask must be callable, got {type(ask).__name__}")
    try:
      template.format(a="", b="")
    except (KeyError, IndexError, ValueError, AttributeError) as e:
      raise ValueError(f"template must be a str.format template with only the "
                       f"fields {{a}} and {{b}}: {e!r}") from None
    if "{a}" not in template or "{b}" not in template:
      raise ValueError("template must contain both {a} and {b}")
    self.ask, self.template = ask, template
    self.asked = 0
    self.fallbacks = 0

  def same(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
    out: list[Optional[bool]] = [None] * len(pairs)
    todo: dict[tuple[str, str], list[int]] = {}
    first: dict[tuple[str, str], tuple[str, str]] = {}
    for i, (a, b) in enumerate(pairs):
      na, nb = normalize_answer(a), normalize_answer(b)
      if na == nb:
        out[i] = True
        continue
      key = (na, nb) if na < nb else (nb, na)
      todo.setdefault(key, []).append(i)
      first.setdefault(key, (a, b))
    if todo:
      keys = list(todo)
      prompts = [self.template.format(a=first[k][0], b=first[k][1])
                 for k in keys]
      replies = list(self.ask(prompts))
      if len(replies) != len(prompts):
        raise ValueError(f"ask returned {len(replies)} replies for "
                         f"{len(prompts)} prompts")
      self.asked += len(prompts)
      for k, reply in zip(keys, replies):
        verdict = parse_yes_no(reply)
        if verdict is None:
          self.fallbacks += 1
          verdict = False  # Exact match on normalised text; they differ.
        for i in todo[k]:
          out[i] = verdict
    return [bool(x) for x in out]

  def __repr__(self) -> str:
    return (f"ModelJudge(asked={self.asked}, fallbacks={self.fallbacks})")


_JUDGES: dict[str, Callable[..., Judge]] = {}


def register_judge(name: str, factory: Callable[..., Judge]) -> None:
  """Registers `factory(**kw) -> Judge` as `name` for get_judge."""
  if name in _JUDGES:
    raise ValueError(f"judge {name!r} is already registered")
  _JUDGES[name] = factory


def judge_names() -> list[str]:
  return sorted(_JUDGES)


def get_judge(name: str, **kw) -> Judge:
  """A new judge by registry name: "exact", or "model" (needs `ask=`)."""
  if name not in _JUDGES:
    raise ValueError(f"unknown judge {name!r}; known: {judge_names()}")
  return _JUDGES[name](**kw)


register_judge("exact", ExactMatchJudge)
register_judge("model", ModelJudge)


# --------------------------------------------------------------------------
# Consensus.

CONSENSUS_MODES = ("unanimous", "majority")

# Looks up whether two normalised answers are the same.
_SameFn = Callable[[str, str], bool]


def _is_real(x) -> bool:
  return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _check_consensus_args(mode: str, min_agree: Optional[float]) -> None:
  if mode not in CONSENSUS_MODES:
    raise ValueError(f"unknown consensus mode {mode!r}; known: "
                     f"{CONSENSUS_MODES}")
  if min_agree is not None:
    if mode != "majority":
      raise ValueError(f"min_agree applies to the 'majority' mode only, got "
                       f"mode {mode!r}")
    if not _is_real(min_agree) or not 0 < min_agree <= 1:
      raise ValueError(f"min_agree must be in (0, 1], got {min_agree!r}")


def _distinct(answers: Sequence[str]) -> tuple[list[str], collections.Counter,
                                                dict[str, str]]:
  """(distinct normalised answers in first-seen order, their counts,
  normalised -> first raw spelling)."""
  norm = [normalize_answer(a) for a in answers]
  counts = collections.Counter(norm)
  raw: dict[str, str] = {}
  for a, n in zip(answers, norm):
    raw.setdefault(n, a)
  return list(counts), counts, raw


def _decide(distinct: Sequence[str], counts: collections.Counter,
            same: _SameFn, mode: str, min_agree: Optional[float]
            ) -> Optional[str]:
  """The consensus among distinct normalised answers, given the judge."""
  n = sum(counts.values())
  if len(distinct) == 1:
    return distinct[0]
  if mode == "unanimous":
    if all(same(u, v) for i, u in enumerate(distinct)
           for v in distinct[i + 1:]):
      # Spelled differently but all the same: the most common spelling.
      return max(distinct, key=lambda u: counts[u])
    return None
  # Majority: an answer's support counts every reference agreeing with it.
  support = {u: sum(counts[v] for v in distinct if v == u or same(u, v))
             for u in distinct}
  best = max(support.values())
  enough = (best * 2 > n) if min_agree is None else (best >= min_agree * n)
  if not enough:
    return None
  top = [u for u in distinct if support[u] == best]
  # Tied leaders that the judge tells apart: no single consensus.
  if any(not same(u, v) for i, u in enumerate(top) for v in top[i + 1:]):
    return None
  return max(top, key=lambda u: counts[u])


def _pairs_needed(distinct: Sequence[str]) -> list[tuple[str, str]]:
  return [(u, v) for i, u in enumerate(distinct) for v in distinct[i + 1:]]


def _key(a: str, b: str) -> tuple[str, str]:
  return (a, b) if a < b else (b, a)


def consensus(answers: Sequence[str], mode: str = "unanimous",
              judge: Optional[Judge] = None,
              min_agree: Optional[float] = None) -> Optional[str]:
  """The references' consensus answer (normalised), or None without one.

  Args:
    answers: the reference answers (at least one).
    mode: "unanimous" (every answer agrees with one answer) or "majority"
      (strictly more than half do; ties give None).
    judge: judge D; default exact match after normalisation. All its
      comparisons go in one `same` call.
    min_agree: "majority" only: the fraction of answers that must agree,
      in (0, 1], replacing "more than half"; an exact tie between answers
      the judge tells apart still gives None.

  Raises:
    ValueError: no answers, an unknown mode or a bad min_agree.
  """
  _check_consensus_args(mode, min_agree)
  if not answers:
    raise ValueError("consensus needs at least one answer")
  distinct, counts, raw = _distinct(answers)
  table = _judge_table(judge, [_pairs_needed(distinct)], [raw])
  return _decide(distinct, counts, lambda u, v: table[_key(u, v)], mode,
                 min_agree)


def _judge_table(judge: Optional[Judge],
                 pair_lists: Sequence[Sequence[tuple[str, str]]],
                 raws: Sequence[dict[str, str]]
                 ) -> dict[tuple[str, str], bool]:
  """{sorted normalised pair: same?} for all pairs, in ONE judge call.

  pair_lists[i] holds normalised pairs whose raw spellings are in raws[i];
  the judge sees raw spellings (a model judge reads "Two dogs." better than
  "2 dogs"). Equal pairs and repeats are not sent.
  """
  judge = judge if judge is not None else ExactMatchJudge()
  keys, asked = [], []
  seen = set()
  for pairs, raw in zip(pair_lists, raws):
    for u, v in pairs:
      k = _key(u, v)
      if u == v or k in seen:
        continue
      seen.add(k)
      keys.append(k)
      asked.append((raw.get(u, u), raw.get(v, v)))
  table = {}
  if asked:
    verdicts = judge.same(asked)
    if len(verdicts) != len(asked):
      raise ValueError(f"judge returned {len(verdicts)} verdicts for "
                       f"{len(asked)} pairs")
    table = {k: bool(s) for k, s in zip(keys, verdicts)}
  return _EqualIsSame(table)


class _EqualIsSame(dict):
  """A pair table in which equal answers are always the same."""

  def __missing__(self, key):
    if key[0] == key[1]:
      return True
    raise KeyError(key)


# --------------------------------------------------------------------------
# Reward.


def _finite_nonneg(name: str, x) -> None:
  if not _is_real(x) or not math.isfinite(x) or x < 0:
    raise ValueError(f"{name} must be a finite number >= 0, got {x!r}")


@dataclasses.dataclass(frozen=True)
class RewardConfig:
  """How judge verdicts become the auditor's reward.

  Attributes:
    consensus: a CONSENSUS_MODES entry for the references.
    invalid_penalty: an invalid pair's reward is -invalid_penalty (>= 0;
      0 = the paper's reading, no reward).
    novelty_bonus: rewarded pairs get novelty_bonus * novelty on top of 1
      (>= 0; 0 = the paper's binary reward).
    novelty_window: how many recent questions a NoveltyTracker built for
      this config remembers (>= 1).
    min_agree: for "majority": the agreeing fraction needed instead of
      "more than half" (see `consensus`); None for the default.
  """
  consensus: str = "unanimous"
  invalid_penalty: float = 0.0
  novelty_bonus: float = 0.0
  novelty_window: int = 1024
  min_agree: Optional[float] = None

  def __post_init__(self):
    _check_consensus_args(self.consensus, self.min_agree)
    _finite_nonneg("invalid_penalty", self.invalid_penalty)
    _finite_nonneg("novelty_bonus", self.novelty_bonus)
    if (isinstance(self.novelty_window, bool) or
        not isinstance(self.novelty_window, int) or self.novelty_window < 1):
      raise ValueError(f"novelty_window must be an int >= 1, got "
                       f"{self.novelty_window!r}")

  def tracker(self) -> "NoveltyTracker":
    """A NoveltyTracker with this config's window."""
    return NoveltyTracker(self.novelty_window)


@dataclasses.dataclass(frozen=True)
class Verdict:
  """One pair's judgement.

  Attributes:
    reward: see the module docstring.
    valid: False for malformed auditor output or a failed image.
    consensus: the references' normalised consensus answer, or None.
    target_differs: the target's answer differs from the consensus (False
      when there is no consensus or the pair is invalid).
    references_agree: the references reached consensus.
    novelty: the novelty passed in (recorded even when no bonus is paid).
  """
  reward: float
  valid: bool
  consensus: Optional[str]
  target_differs: bool
  references_agree: bool
  novelty: float


def _check_novelty(x) -> float:
  if not _is_real(x) or not 0 <= x <= 1:
    raise ValueError(f"novelty must be in [0, 1], got {x!r}")
  return float(x)


def score(target_answer: Optional[str], reference_answers: Sequence[str], *,
          valid: bool, config: RewardConfig, judge: Optional[Judge] = None,
          novelty: float = 0.0) -> Verdict:
  """Judges one pair; see `score_batch`."""
  return score_batch([target_answer], [reference_answers], valid=[valid],
                     config=config, judge=judge, novelty=[novelty])[0]


def score_batch(target_answers: Sequence[Optional[str]],
                reference_answers: Sequence[Sequence[str]], *,
                valid: Union[bool, Sequence[bool]], config: RewardConfig,
                judge: Optional[Judge] = None,
                novelty: Optional[Sequence[float]] = None) -> list[Verdict]:
  """Judges a batch of pairs with ONE `judge.same` call.

  Per valid pair the judge compares every two distinct reference answers
  and the target with each distinct reference answer (so the target can be
  compared with the consensus however it comes out, without a second
  round trip); equal and repeated comparisons are sent once.

  Args:
    target_answers: per pair, the target's answer (None allowed when the
      pair is invalid).
    reference_answers: per pair, the references' answers (at least one when
      valid; ignored when invalid).
    valid: per pair (or one bool for all): False for malformed auditor
      output or a failed image.
    config: the RewardConfig.
    judge: judge D; default exact match after normalisation.
    novelty: per pair in [0, 1] (e.g. NoveltyTracker.novelty of the
      question); None = all 0.

  Returns:
    One Verdict per pair.

  Raises:
    ValueError: lengths differ, a valid pair without reference answers or
      target answer, a novelty outside [0, 1].
  """
  n = len(target_answers)
  flags = [bool(valid)] * n if isinstance(valid, bool) else list(valid)
  nov = [0.0] * n if novelty is None else [_check_novelty(x) for x in novelty]
  if not len(reference_answers) == len(flags) == len(nov) == n:
    raise ValueError(f"score_batch: lengths differ: {n} targets, "
                     f"{len(reference_answers)} reference lists, "
                     f"{len(flags)} valid flags, {len(nov)} novelties")
  prepared = {}
  for i in range(n):
    if not flags[i]:
      continue
    if target_answers[i] is None:
      raise ValueError(f"pair {i} is valid but has no target answer")
    if not reference_answers[i]:
      raise ValueError(f"pair {i} is valid but has no reference answers")
    distinct, counts, raw = _distinct(reference_answers[i])
    t = normalize_answer(target_answers[i])
    raw = {**raw}
    raw.setdefault(t, target_answers[i])
    pairs = _pairs_needed(distinct) + [(t, u) for u in distinct]
    prepared[i] = (distinct, counts, raw, t, pairs)
  table = _judge_table(judge, [p[4] for p in prepared.values()],
                       [p[2] for p in prepared.values()])
  same = lambda u, v: table[_key(u, v)]

  out = []
  for i in range(n):
    if not flags[i]:
      out.append(Verdict(reward=0.0 - float(config.invalid_penalty),
                         valid=False, consensus=None, target_differs=False,
                         references_agree=False, novelty=nov[i]))
      continue
    distinct, counts, _, t, _ = prepared[i]
    c = _decide(distinct, counts, same, config.consensus, config.min_agree)
    differs = c is not None and not same(t, c)
    reward = 1.0 + config.novelty_bonus * nov[i] if differs else 0.0
    out.append(Verdict(reward=float(reward), valid=True, consensus=c,
                       target_differs=differs, references_agree=c is not None,
                       novelty=nov[i]))
  return out


# --------------------------------------------------------------------------
# Novelty.


class NoveltyTracker:
  """How new a question is against the last `window` questions added.

  novelty(q) = 1 - max Jaccard similarity between the word set of q and
  those of the remembered questions (all normalised with
  `normalize_answer`), so 1.0 = no word in common with anything recent (or
  nothing remembered), 0.0 = an exact repeat (up to normalisation) or the
  same words in another order. Exact repeats are found in O(1) through a
  counter; otherwise the cost is O(window) set intersections of a few words
  each (~0.1 ms per question at window 1024). Deterministic: it depends only
  on the sequence of `add` calls.
  """

  def __init__(self, window: int):
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
      raise ValueError(f"window must be an int >= 1, got {window!r}")
    self.window = window
    self._recent: collections.deque = collections.deque()
    self._counts: collections.Counter = collections.Counter()

  def __len__(self) -> int:
    return len(self._recent)

  def novelty(self, question: str) -> float:
    """In [0, 1]; 1 = nothing like it in the window."""
    q = normalize_answer(question)
    if self._counts[q]:
      return 0.0
    words = frozenset(q.split())
    best = 0.0
    for _, other in self._recent:
      union = len(words | other)
      if union:
        best = max(best, len(words & other) / union)
    return 1.0 - best

  def add(self, question: str) -> None:
    """Remembers `question`, forgetting the oldest beyond the window."""
    q = normalize_answer(question)
    self._recent.append((q, frozenset(q.split())))
    self._counts[q] += 1
    if len(self._recent) > self.window:
      old, _ = self._recent.popleft()
      self._counts[old] -= 1
      if not self._counts[old]:
        del self._counts[old]

"""The auditor's prompts p_q, p_e, p_c and the parsing of what it writes.

A prompt set names the three prompts (kinds "question", "edit", "caption")
of one kind of auditor, with a length limit per kind and optional syntax
checks; `parse_output` turns a sampled completion into the text handed on
(the question asked, the edit command for E, the caption for G) or a
ParseError, and never raises:

  from auditdm_jax.audit import prompts as audit_prompts
  ps = audit_prompts.get_prompt_set("gemma3")      # or "world"
  ps.prompts["question"]                            # p_q, the user-turn text
  r = audit_prompts.parse_output(ps, "question",
                                 "Question: How many cups are there? ...")
  r.text if r else r.reason                         # "How many cups are there?"

Sets:
  world   the scene world's prompts (`world.prompts`), checked with the
          world grammars: questions with `world.oracle.parse_question`,
          edits with `world.grammar.parse_edit`, captions with
          `world.grammar.parse_caption_items`; Parsed.value holds the
          Query / Edit / Caption.
  gemma3  prompts for a Gemma-3 auditor after the paper's p_q, p_e, p_c
          (research/paper.md §1, §9: their verbatim text is unknown).

The prompt texts are the user turn's TEXT only. The chat turn markers and
the image are added by the model's prompt layout
(`auditdm_jax.prompts.build_prompt` with the arch's `prompt_format`; for
Gemma-3, "gemma3_chat" renders `<bos><start_of_turn>user\\n`, the image
block, the text, then `<end_of_turn>\\n<start_of_turn>model\\n`), so a
prompt must not contain markers of its own (tests check it).

Parsing rules, in order:
  1. Chat leftovers: text after an end marker (`<end_of_turn>`, `<eos>`,
     `</s>`) is dropped, unless nothing came before it;
     `<start_of_turn>model` / `user`, `<bos>`, `<pad>` and image markers are
     removed.
  2. Per line: leading bullets and numbering ("-", "*", "1.", "(2)"), a
     label ("Question:", "Q:", "Edit:", "Edit instruction:", "Caption:",
     ..., also in **bold**), markdown emphasis and wrapping quotes are
     stripped; lines that then end with ":" are headers ("Here is a
     question:") and skipped.
  3. Question and edit: the first non-empty line. Caption: the whole text
     from the first non-empty line on, whitespace collapsed.
  4. Errors (ParseError.reason): "empty"; for questions, the text is cut
     after its first "?" and, where the set requires one, "no question
     mark"; "too long" (over the set's max_chars for the kind); "garbage"
     (no letter at all); "grammar: <kind>" when the set's check fails
     (detail holds the grammar's message).
  Anything that is not a str gives "not text"; an unknown kind or set name
  gives "unknown kind" / "unknown prompt set".
"""

from __future__ import annotations

import dataclasses
import re
import types
from collections.abc import Callable, Mapping
from typing import Any, Optional, Union

from auditdm_jax import tokenizer as tok_lib
from auditdm_jax.world import grammar as world_grammar
from auditdm_jax.world import oracle as world_oracle
from auditdm_jax.world import prompts as world_prompts
from auditdm_jax.world import refs as world_refs

KINDS = ("question", "edit", "caption")
assert KINDS == world_prompts.KINDS  # One order everywhere.

# A check returns the parsed value (truthy) or an error with `kind` and
# `message` that is falsy, like the world grammars' results.
Check = Callable[[str], Any]


@dataclasses.dataclass(frozen=True)
class PromptSet:
  """The three prompts of one auditor and how its outputs are checked.

  Attributes:
    name: registry name.
    prompts: kind -> prompt text (the user-turn text; see the module
      docstring), for every kind in KINDS.
    max_chars: kind -> the longest accepted output in characters.
    require_question_mark: questions must contain "?" (text after the first
      "?" is always dropped).
    checks: kind -> syntax check of the parsed text (kinds without one are
      accepted as they are).
    description: one line for listings.
  """
  name: str
  prompts: Mapping[str, str]
  max_chars: Mapping[str, int]
  require_question_mark: bool = True
  checks: Mapping[str, Check] = dataclasses.field(default_factory=dict)
  description: str = ""

  def __post_init__(self):
    if not isinstance(self.name, str) or not self.name:
      raise ValueError(f"a prompt set needs a name, got {self.name!r}")
    for field in ("prompts", "max_chars", "checks"):
      value = getattr(self, field)
      if not isinstance(value, Mapping):
        raise ValueError(f"{self.name}: {field} must be a mapping, got "
                         f"{type(value).__name__}")
      # Read-only copies: the set is shared through the registry.
      object.__setattr__(self, field, types.MappingProxyType(dict(value)))
    for field in ("prompts", "max_chars"):
      keys = set(getattr(self, field))
      if keys != set(KINDS):
        raise ValueError(f"{self.name}: {field} must have exactly the kinds "
                         f"{KINDS}, got {sorted(keys)}")
    for kind, text in self.prompts.items():
      if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{self.name}: the {kind} prompt must be non-empty "
                         "text")
    for kind, n in self.max_chars.items():
      if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{self.name}: max_chars[{kind!r}] must be an int "
                         f">= 1, got {n!r}")
    unknown = sorted(set(self.checks) - set(KINDS))
    if unknown:
      raise ValueError(f"{self.name}: checks for unknown kinds {unknown}; "
                       f"known: {KINDS}")
    if not all(callable(c) for c in self.checks.values()):
      raise ValueError(f"{self.name}: checks must be callable")
    if not isinstance(self.require_question_mark, bool):
      raise ValueError(f"{self.name}: require_question_mark must be a bool")

  def kind_of(self, prompt: str) -> Optional[str]:
    """The kind whose prompt is `prompt` (after strip), or None."""
    text = prompt.strip() if isinstance(prompt, str) else None
    return next((k for k, p in self.prompts.items() if p.strip() == text),
                None)


@dataclasses.dataclass(frozen=True)
class Parsed:
  """A usable auditor output.

  Attributes:
    kind: a KINDS entry.
    text: the cleaned text handed on (question asked / edit / caption).
    value: what the set's check returned (world: Query, Edit or Caption),
      or None; not compared.
  """
  kind: str
  text: str
  value: Any = dataclasses.field(default=None, compare=False, repr=False)


@dataclasses.dataclass(frozen=True)
class ParseError:
  """Why an auditor output is unusable; returned, never raised.

  Attributes:
    kind: the kind that was parsed.
    reason: a short stable code ("empty", "too long", "garbage",
      "no question mark", "grammar: parse", ...), fit for counting.
    detail: human-readable detail ("" when the reason says it all).
  """
  kind: str
  reason: str
  detail: str = ""

  def __bool__(self) -> bool:  # So `if parse_output(...)` reads naturally.
    return False

  def __str__(self) -> str:
    return f"{self.reason}: {self.detail}" if self.detail else self.reason


# --------------------------------------------------------------------------
# Registry.

_SETS: dict[str, PromptSet] = {}


def register_prompt_set(prompt_set: PromptSet, *,
                        overwrite: bool = False) -> PromptSet:
  """Adds `prompt_set` under its name; returns it.

  Raises:
    ValueError: the name is taken (and not `overwrite`), or not a PromptSet.
  """
  if not isinstance(prompt_set, PromptSet):
    raise ValueError(f"expected a PromptSet, got {type(prompt_set).__name__}")
  if prompt_set.name in _SETS and not overwrite:
    raise ValueError(f"prompt set {prompt_set.name!r} is already registered")
  _SETS[prompt_set.name] = prompt_set
  return prompt_set


def get_prompt_set(name: Union[str, PromptSet]) -> PromptSet:
  """The set registered as `name` (a PromptSet is returned as it is)."""
  if isinstance(name, PromptSet):
    return name
  try:
    return _SETS[name]
  except (KeyError, TypeError):
    raise ValueError(f"unknown prompt set {name!r}; known: {names()}"
                     ) from None


def names() -> list[str]:
  return sorted(_SETS)


# --------------------------------------------------------------------------
# The sets.


register_prompt_set(PromptSet(
    name="world",
    prompts=world_prompts.PROMPTS,
    # The world grammars refuse longer text anyway; same limit, clearer
    # error.
    max_chars={k: world_refs.MAX_TEXT_CHARS for k in KINDS},
    # The question grammar reads questions with or without "?".
    require_question_mark=False,
    checks={"question": world_oracle.parse_question,
            "edit": world_grammar.parse_edit,
            "caption": world_grammar.parse_caption_items},
    description="the scene world's prompts, checked by the world grammars"))

GEMMA3_P_Q = (
    "Look at the image carefully and ask one challenging question about it. "
    "The question must be answerable from the image alone, with a single "
    "short answer: a word, a number or a short phrase. Prefer fine-grained "
    "details that are easy to get wrong, such as counting, colours, "
    "materials, small objects, text and signs, sizes, spatial relations, "
    "actions, or something that is absent. Write only the question, on one "
    "line, ending with a question mark.")
GEMMA3_P_E = (
    "Look at the image carefully and write one instruction for an image "
    "editor. The edit must change the answer to a question about the image, "
    "while the edited image stays realistic and natural. Change one thing "
    "only, for example the colour, number, size, position or kind of an "
    "object, a small detail, or a text or sign. Write only the edit "
    "instruction, as one sentence.")
GEMMA3_P_C = (
    "Write a detailed caption of a new image in the style of this one, as "
    "the prompt for a text-to-image model. Keep the kind of scene and the "
    "photographic style, but include challenging content: several objects "
    "to count, specific colours and materials, small objects, short text or "
    "signs, precise spatial relations and unusual combinations. Write only "
    "the caption, as one paragraph.")

register_prompt_set(PromptSet(
    name="gemma3",
    prompts={"question": GEMMA3_P_Q, "edit": GEMMA3_P_E,
             "caption": GEMMA3_P_C},
    # Captions feed FLUX.1-dev, whose T5 encoder reads 512 tokens (~2000
    # characters); questions and edits are one sentence.
    max_chars={"question": 300, "edit": 400, "caption": 2000},
    require_question_mark=True,
    description="a Gemma-3 auditor's p_q, p_e, p_c (after the paper)"))


# --------------------------------------------------------------------------
# Parsing.

_END_MARKERS = (tok_lib.END_OF_TURN, tok_lib.EOS, "</s>")
_START_TURN_RE = re.compile(re.escape(tok_lib.START_OF_TURN) +
                            r"[ \t]*(?:model|user|system)?")
_DROP_RE = re.compile("|".join(re.escape(m) for m in (
    tok_lib.BOS, tok_lib.PAD, tok_lib.START_OF_IMAGE, tok_lib.END_OF_IMAGE,
    tok_lib.IMAGE_SOFT_TOKEN, "<s>")))
_BULLET_RE = re.compile(r"^(?:[-*\u2022+]|\d{1,2}[.)]|\(\d{1,2}\))\s+")
_LABELS = ("probing question", "question", "q", "edit instruction",
           "editing instruction", "edit command", "edit", "instruction",
           "command", "image caption", "new caption", "caption",
           "description", "prompt")
_EMPH = r"(?:\*\*|__|\*|_)?"
_LABEL_RE = re.compile(
    rf"^{_EMPH}(?:{'|'.join(_LABELS)})(?:\s*\d{{1,2}})?\s*{_EMPH}\s*[:\uff1a]"
    rf"\s*{_EMPH}\s*", re.IGNORECASE)
_LEAD_EMPH_RE = re.compile(r"^(?:\*\*|__)+\s*")
_TRAIL_EMPH_RE = re.compile(r"\s*(?:\*\*|__)+$")
_QUOTES = {'"': '"\u201d', "\u201c": '\u201d"', "'": "'\u2019",
           "\u2018": "\u2019'", "\u00ab": "\u00bb", "`": "`"}
_DOUBLE = '"\u201c\u201d'


def _strip_quotes(s: str) -> str:
  if s and s[0] in _QUOTES:
    closers = _QUOTES[s[0]]
    k = max(s.rfind(c) for c in closers)
    # The quoted part is the output; a remark after the quote is not.
    s = s[1:k] if k > 0 else s[1:]
  elif s and s[-1] in _DOUBLE and sum(s.count(c) for c in _DOUBLE) == 1:
    s = s[:-1]
  return s.strip()


def _strip_line(line: str) -> str:
  """Bullets, labels, emphasis and quotes off one line (repeatedly, for
  "1. **Question:** "Is it red?"")."""
  s = line.strip()
  for _ in range(4):
    before = s
    s = _BULLET_RE.sub("", s)
    s = _LABEL_RE.sub("", s)
    s = _LEAD_EMPH_RE.sub("", s)
    s = _TRAIL_EMPH_RE.sub("", s)
    s = _strip_quotes(s)
    if s == before:
      break
  return s


def _chat_cleaned(text: str) -> str:
  """The first non-blank turn segment, chat markers removed."""
  segments = [text]
  for m in _END_MARKERS:
    segments = [part for seg in segments for part in seg.split(m)]
  cleaned = (_DROP_RE.sub("", _START_TURN_RE.sub("\n", seg))
             for seg in segments)
  return next((c for c in cleaned if c.strip()), "")


def _content_lines(text: str) -> list[str]:
  """Lines from the first content line on (first one already stripped)."""
  lines = text.splitlines()
  for i, line in enumerate(lines):
    s = _strip_line(line)
    if s and not s.endswith(":"):
      return [s] + lines[i + 1:]
  return []


def _select(kind: str, text: str) -> str:
  lines = _content_lines(_chat_cleaned(text))
  if not lines:
    return ""
  if kind != "caption":
    return lines[0]
  joined = " ".join(" ".join(lines).split())
  return _strip_line(joined)


def parse_output(prompt_set: Union[PromptSet, str], kind: str,
                 text: str) -> Union[Parsed, ParseError]:
  """Parses one auditor completion; never raises (rules: module docstring).

  Args:
    prompt_set: a PromptSet or a registered name.
    kind: a KINDS entry: what the auditor was asked for.
    text: the decoded completion.

  Returns:
    Parsed(kind, text, value) or ParseError(kind, reason, detail).
  """
  try:
    if kind not in KINDS:
      return ParseError(str(kind), "unknown kind",
                        f"{kind!r}; known: {KINDS}")
    try:
      ps = get_prompt_set(prompt_set)
    except ValueError as e:
      return ParseError(kind, "unknown prompt set", str(e))
    if not isinstance(text, str):
      return ParseError(kind, "not text", f"got {type(text).__name__}")
    s = _select(kind, text)
    if not s:
      return ParseError(kind, "empty")
    if kind == "question":
      q = s.find("?")
      if q >= 0:
        s = s[:q + 1]
      elif ps.require_question_mark:
        return ParseError(kind, "no question mark", s[:80])
    limit = ps.max_chars[kind]
    if len(s) > limit:
      return ParseError(kind, "too long", f"{len(s)} > {limit} characters")
    if not any(ch.isalpha() for ch in s):
      return ParseError(kind, "garbage", s[:80])
    value = None
    check = ps.checks.get(kind)
    if check is not None:
      value = check(s)
      if not value:
        return ParseError(kind, f"grammar: {getattr(value, 'kind', 'error')}",
                          str(getattr(value, "message", value)))
    return Parsed(kind, s, value)
  except Exception as e:  # pylint: disable=broad-except  # Contract: no raise.
    return ParseError(str(kind), "internal", f"{type(e).__name__}: {e}")

r"""Rollout: auditor completions -> (question, image) pairs -> answers -> reward.

  roll = Rollout(auditor, target, references, backend, config)
  out = roll(policy_params, sources, key=key)    # one GRPO batch of groups
  out.rewards                                    # f32[R], R = groups x G
  out.grpo_batch()                               # arrays for rl.step
  out.metrics()                                  # reward mean, validity, ...

One rollout takes a list of source items (an image, its own question Q when
the dataset has one, the world scene when known). Each source becomes one
GROUP of G = `group_size` completions of the auditor for one prompt kind,
in one of the paper's three pairing modes (§3), drawn per group with
`mode_weights`:

  mode      pair        auditor writes (prompt)         question asked
  question  (Q*, I)     a question (p_q)                 the completion, on I
  image     (Q, I*)     an edit (p_e) or caption (p_c)   the source's Q, on I*
  both      (Q*, I*)    an edit (p_e) or caption (p_c)   one auditor question
                                                         Q* (p_q, sampled once
                                                         per group) on I*

Image-mode groups pick edit or caption with `image_kind_weights`; edits go
to `backend.edit` with the source picture, captions to `backend.generate`,
each in ONE batched call per rollout. Completions are parsed with the
auditor's prompt set (`audit.prompts.parse_output`); an unparseable
completion or a failed image makes the pair invalid (reward
-invalid_penalty, no model is asked). The target and every reference answer
every valid pair greedily (one batched generate per model), judge D
compares them (`audit.judge.score_batch`), and the reward is 1 when the
references agree and the target differs (plus the novelty bonus).

Randomness: mode / kind draws come from numpy seeded by `config.seed` and
the key's data; sampling from `key`; images from the backend's per-item
seeds (`config.image_seed`). So a rollout is a pure function of (params,
sources, key) and a resumed run repeats it exactly.

World ground truth (`audit.world_truth`), when sources carry scenes, is
recorded per pair (`truth`, `skill`, `tags`) for monitoring only.

Letters: S sources (= groups), G group size, R = S * G rows, P prompt
length, C completion length (= max_new_tokens).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from auditdm_jax.audit import judge as judge_lib
from auditdm_jax.audit import prompts as audit_prompts
from auditdm_jax.audit import world_truth
from auditdm_jax.imaging.base import ImageBackend, ImageResult, Picture
from auditdm_jax.sampling import generate as generate_lib
from auditdm_jax.sampling import sampler as sampler_lib

MODES = ("question", "image", "both")
IMAGE_KINDS = ("edit", "caption")
_MODE_PAIR = {"question": "(Q*, I)", "image": "(Q, I*)", "both": "(Q*, I*)"}


# --- Inputs -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SourceItem:
  """One source image with what the dataset knows about it.

  Attributes:
    id: a stable identifier (provenance).
    picture: the image (and the world scene JSON when known).
    question: the dataset's own question Q (needed by the "image" mode).
    answer: its answer when known (not used by the reward).
  """
  id: str
  picture: Picture
  question: Optional[str] = None
  answer: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class VqaModel:
  """A model that answers questions about images (the target, a reference).

  `answer` decodes greedily with the arch's own prompt layout; answers are
  short, so `max_new_tokens` is small.
  """
  name: str
  model: Any
  params: Any
  tokenizer: Any
  max_new_tokens: int = 4
  image_preprocess: str = "siglip"
  batch_size: int = 256

  def answer(self, questions: Sequence[str],
             images: Sequence[np.ndarray]) -> list[str]:
    if not questions:
      return []
    return generate_lib.generate(
        self.model, self.params, self.tokenizer, list(questions),
        list(images), max_new_tokens=self.max_new_tokens,
        batch_size=self.batch_size, image_preprocess=self.image_preprocess)


@dataclasses.dataclass(frozen=True)
class Auditor:
  """The policy's model, tokenizer and prompt set (params come per call)."""
  model: Any
  tokenizer: Any
  prompt_set: Any = "world"          # an audit.prompts name or PromptSet
  image_preprocess: str = "siglip"

  def __post_init__(self):
    if isinstance(self.prompt_set, str):
      object.__setattr__(self, "prompt_set",
                         audit_prompts.get_prompt_set(self.prompt_set))

  def prompt_text(self, kind: str) -> str:
    return self.prompt_set.prompts[kind]


@dataclasses.dataclass(frozen=True)
class RolloutConfig:
  """How a rollout samples, pairs and rewards.

  Attributes:
    group_size: G completions per source (>= 2 to train; 1 evaluates).
    mode_weights: {mode: weight} over MODES (0 disables a mode).
    image_kind_weights: {"edit": w, "caption": w} for image-mode groups.
    temperature, top_k, top_p: the auditor's sampling distribution (GRPO
      scores log-probs under the same one).
    max_new_tokens: C, the completion buffer.
    prompt_len: P, the padded prompt length of the GRPO batch (fixed so
      the step compiles once); 0 = the longest prompt of the batch.
    question_temperature: sampling temperature of the one Q* per "both"
      group.
    reward: the judge's RewardConfig.
    judge: audit.judge registry name ("exact", or "model" via `judge_obj`).
    seed: mixes into the mode / kind draws.
    image_seed: the backend seed.
  """
  group_size: int = 8
  mode_weights: Mapping[str, float] = dataclasses.field(
      default_factory=lambda: {"question": 1.0, "image": 1.0, "both": 1.0})
  image_kind_weights: Mapping[str, float] = dataclasses.field(
      default_factory=lambda: {"edit": 1.0, "caption": 1.0})
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  max_new_tokens: int = 48
  prompt_len: int = 0
  question_temperature: float = 1.0
  reward: judge_lib.RewardConfig = judge_lib.RewardConfig()
  judge: str = "exact"
  seed: int = 0
  image_seed: int = 0

  def __post_init__(self):
    # 1 is for evaluation (one pair per image); GrpoConfig requires >= 2.
    if self.group_size < 1:
      raise ValueError(f"group_size must be >= 1, got {self.group_size}")
    for name, weights, known in (("mode_weights", self.mode_weights, MODES),
                                 ("image_kind_weights",
                                  self.image_kind_weights, IMAGE_KINDS)):
      unknown = sorted(set(weights) - set(known))
      if unknown:
        raise ValueError(f"{name} has unknown keys {unknown}; known: "
                         f"{list(known)}")
      if any(w < 0 for w in weights.values()) or not sum(weights.values()):
        raise ValueError(f"{name} must be >= 0 with a positive sum, got "
                         f"{dict(weights)}")
    if self.max_new_tokens < 1:
      raise ValueError(f"max_new_tokens must be >= 1, got "
                       f"{self.max_new_tokens}")
    if self.temperature <= 0:
      raise ValueError("the auditor samples: temperature must be > 0, got "
                       f"{self.temperature}")


# --- Outputs ------------------------------------------------------------------


@dataclasses.dataclass
class Pair:
  """One completion and the pair it made, with every answer and the verdict.

  `question` / `picture` are None when the pair is invalid; `error` says
  why. `truth` is the world oracle's answer when the pair has a scene.
  """
  source_id: str
  group: int
  mode: str
  kind: str
  completion: str
  question: Optional[str] = None
  instruction: Optional[str] = None       # the edit command or caption
  picture: Optional[Picture] = None
  error: Optional[str] = None
  target_answer: Optional[str] = None
  reference_answers: tuple[str, ...] = ()
  verdict: Optional[judge_lib.Verdict] = None
  truth: Optional[str] = None
  skill: Optional[str] = None
  tags: frozenset = frozenset()

  @property
  def valid(self) -> bool:
    return self.error is None

  @property
  def reward(self) -> float:
    return 0.0 if self.verdict is None else float(self.verdict.reward)

  @property
  def verified_failure(self) -> Optional[bool]:
    """The target is wrong per the oracle (None: no ground truth)."""
    if self.truth is None or self.target_answer is None:
      return None
    return not judge_lib.answers_match(self.target_answer, self.truth)


@dataclasses.dataclass
class RolloutOutput:
  """One rollout's pairs and the arrays GRPO needs (host numpy).

  prompt_tokens / prompt_input_mask / prompt_mask_ar: [R, P], LEFT-padded
  (row g * G + j is completion j of group g, the sampler's order);
  images f32[R, 1, S, S, 3] or None; completion int32[R, C];
  completion_mask f32[R, C] (1 up to and including EOS); rewards f32[R].
  """
  pairs: list[Pair]
  group_size: int
  prompt_tokens: np.ndarray
  prompt_input_mask: np.ndarray
  prompt_mask_ar: np.ndarray
  images: Optional[np.ndarray]
  completion: np.ndarray
  completion_mask: np.ndarray
  rewards: np.ndarray
  questions_asked: list[str] = dataclasses.field(default_factory=list)

  def grpo_batch(self, advantages: Optional[np.ndarray] = None) -> dict:
    batch = {"prompt_tokens": self.prompt_tokens,
             "prompt_input_mask": self.prompt_input_mask,
             "prompt_mask_ar": self.prompt_mask_ar,
             "completion": self.completion,
             "completion_mask": self.completion_mask}
    if self.images is not None:
      batch["images"] = self.images
    if advantages is not None:
      batch["advantages"] = np.asarray(advantages, np.float32)
    return batch

  def metrics(self) -> dict[str, float]:
    return rollout_metrics(self.pairs, self.rewards, self.group_size)


def rollout_metrics(pairs: Sequence[Pair], rewards: np.ndarray,
                    group_size: int) -> dict[str, float]:
  """Monitors of one rollout (issue #4 §5), all floats.

  reward_mean, zero_variance_groups (fraction of groups whose G rewards are
  equal: they give no gradient), validity, reference_agreement (valid pairs
  whose references reached consensus), distinct_questions (unique normalised
  questions / questions asked), per-mode `mode/<m>/{n,valid,reward}`, and,
  with ground truth, `verified_failure` (valid pairs whose target is wrong
  per the oracle), `reward_precision` (rewarded pairs that are real
  failures) and `skill/<s>` counts of valid pairs.
  """
  r = np.asarray(rewards, np.float64)
  groups = r.reshape(-1, group_size)
  out = {"reward_mean": float(r.mean()) if r.size else 0.0,
         "zero_variance_groups": float(np.mean(
             groups.max(1) == groups.min(1))) if r.size else 0.0,
         "pairs": float(len(pairs))}
  valid = [p for p in pairs if p.valid]
  out["validity"] = len(valid) / max(1, len(pairs))
  agreed = [p for p in valid if p.verdict is not None
            and p.verdict.references_agree]
  out["reference_agreement"] = len(agreed) / max(1, len(valid))
  qs = [judge_lib.normalize_answer(p.question) for p in valid
        if p.question is not None and p.mode != "image"]
  out["distinct_questions"] = len(set(qs)) / max(1, len(qs))
  for mode in MODES:
    ps = [p for p in pairs if p.mode == mode]
    out[f"mode/{mode}/n"] = float(len(ps))
    if ps:
      out[f"mode/{mode}/valid"] = sum(p.valid for p in ps) / len(ps)
      out[f"mode/{mode}/reward"] = float(np.mean([p.reward for p in ps]))
  checked = [p for p in valid if p.verified_failure is not None]
  if checked:
    out["verified_failure"] = float(np.mean(
        [p.verified_failure for p in checked]))
    rewarded = [p for p in checked if p.reward > 0]
    if rewarded:
      out["reward_precision"] = float(np.mean(
          [p.verified_failure for p in rewarded]))
    skills = collections.Counter(p.skill for p in checked if p.skill)
    out.update({f"skill/{s}": float(n) for s, n in sorted(skills.items())})
  return out


# --- The rollout --------------------------------------------------------------


def _draw(rng: np.random.Generator, weights: Mapping[str, float],
          order: Sequence[str]) -> str:
  names = [k for k in order if weights.get(k, 0) > 0]
  w = np.asarray([weights[k] for k in names], np.float64)
  return names[int(rng.choice(len(names), p=w / w.sum()))]


def _key_seed(key: jax.Array) -> int:
  data = np.asarray(jax.device_get(jax.random.key_data(key))).tobytes()
  return int.from_bytes(hashlib.sha256(data).digest()[:8], "big")


class Rollout:
  """Callable rollout over fixed models; see the module docstring."""

  def __init__(self, auditor: Auditor, target: VqaModel,
               references: Sequence[VqaModel], backend: ImageBackend,
               config: RolloutConfig, *, judge=None,
               novelty: Optional[judge_lib.NoveltyTracker] = None,
               buckets: sampler_lib.Buckets = sampler_lib.Buckets()):
    if not references:
      raise ValueError("a rollout needs at least one reference model")
    self.auditor, self.target = auditor, target
    self.references = tuple(references)
    self.backend, self.config = backend, config
    self.judge = judge if judge is not None else judge_lib.get_judge(
        config.judge)
    self.novelty = novelty
    self.sampler = sampler_lib.Sampler(auditor.model, buckets)

  # -- sampling ----------------------------------------------------------------

  def _sample(self, params, texts: Sequence[str], pixels: Sequence[np.ndarray],
              n: int, temperature: float, key: jax.Array):
    """(SampleOutput on host, decoded texts) of n completions per prompt."""
    a, c = self.auditor, self.config
    tokens, input_mask, mask_ar, ims = generate_lib.encode_prompts(
        a.model, a.tokenizer, texts, pixels,
        image_preprocess=a.image_preprocess)
    scfg = generate_lib.sampling_config(
        a.tokenizer, max_new_tokens=c.max_new_tokens, temperature=temperature,
        top_k=c.top_k, top_p=c.top_p, n_per_prompt=n)
    out = self.sampler(params, tokens, input_mask, mask_ar,
                       None if ims is None else jnp.asarray(ims), key=key,
                       config=scfg)
    out = jax.device_get(out)
    texts_out = [a.tokenizer.decode(row) for row in np.asarray(out.tokens)]
    return out, texts_out

  def _parse(self, kind: str, text: str):
    return audit_prompts.parse_output(self.auditor.prompt_set, kind, text)

  # -- images ------------------------------------------------------------------

  def _images(self, requests: list[tuple[int, str, Picture, str]]
              ) -> dict[int, ImageResult]:
    """{row: result} for (row, kind, source picture, text) requests."""
    out: dict[int, ImageResult] = {}
    seed = self.config.image_seed
    edits = [r for r in requests if r[1] == "edit"]
    if edits:
      res = self.backend.edit([r[2] for r in edits], [r[3] for r in edits],
                              seed=seed)
      out.update({r[0]: x for r, x in zip(edits, res)})
    caps = [r for r in requests if r[1] == "caption"]
    if caps:
      res = self.backend.generate([r[3] for r in caps], seed=seed)
      out.update({r[0]: x for r, x in zip(caps, res)})
    return out

  # -- the call ----------------------------------------------------------------

  def __call__(self, params, sources: Sequence[SourceItem], *,
               key: jax.Array) -> RolloutOutput:
    c, g = self.config, self.config.group_size
    if not sources:
      raise ValueError("a rollout needs at least one source")
    rng = np.random.default_rng([c.seed, _key_seed(key)])
    modes, kinds = [], []
    for s in sources:
      mode = _draw(rng, c.mode_weights, MODES)
      if mode == "image" and not s.question:
        raise ValueError(f"source {s.id!r} has no question of its own, which "
                         "the 'image' mode (Q, I*) needs; set its "
                         "mode_weights to 0")
      modes.append(mode)
      kinds.append("question" if mode == "question"
                   else _draw(rng, c.image_kind_weights, IMAGE_KINDS))
    q_key, main_key = jax.random.split(key)
    pixels = [s.picture.pixels for s in sources]

    # Q* of the "both" groups: one sampled question per group.
    both = [i for i, m in enumerate(modes) if m == "both"]
    q_star: dict[int, Any] = {}
    if both:
      _, texts = self._sample(
          params, [self.auditor.prompt_text("question")] * len(both),
          [pixels[i] for i in both], 1, c.question_temperature, q_key)
      q_star = {i: self._parse("question", t) for i, t in zip(both, texts)}

    # The groups: G completions of each source's prompt.
    out, texts = self._sample(
        params, [self.auditor.prompt_text(k) for k in kinds], pixels, g,
        c.temperature, main_key)
    pairs: list[Pair] = []
    requests = []
    for row, text in enumerate(texts):
      i = row // g
      s, mode, kind = sources[i], modes[i], kinds[i]
      pair = Pair(source_id=s.id, group=i, mode=mode, kind=kind,
                  completion=text)
      parsed = self._parse(kind, text)
      if not parsed:
        pair.error = f"{kind}: {parsed.reason}"
      elif mode == "question":
        pair.question, pair.picture = parsed.text, s.picture
      else:
        pair.instruction = parsed.text
        q = s.question if mode == "image" else q_star[i]
        if mode == "both" and not q:
          pair.error = f"question: {q.reason}"
        else:
          pair.question = q if mode == "image" else q.text
          requests.append((row, kind, s.picture, parsed.text))
      pairs.append(pair)
    for row, res in self._images(requests).items():
      if res.ok:
        pairs[row].picture = res.picture
      else:
        pairs[row].error = f"image: {res.error}"
        pairs[row].question = None

    self._answer_and_judge(pairs)
    rewards = np.asarray([p.reward for p in pairs], np.float32)
    return self._output(pairs, out, rewards, kinds, pixels)

  def _answer_and_judge(self, pairs: list[Pair]) -> None:
    valid = [p for p in pairs if p.valid]
    qs = [p.question for p in valid]
    ims = [p.picture.pixels for p in valid]
    target = self.target.answer(qs, ims)
    refs = [m.answer(qs, ims) for m in self.references]
    for j, p in enumerate(valid):
      p.target_answer = target[j]
      p.reference_answers = tuple(r[j] for r in refs)
      if p.picture.scene is not None:
        t = world_truth.truth(p.picture.scene, p.question)
        p.truth, p.skill, p.tags = t.answer, t.skill, t.tags
    novelty = [0.0] * len(valid)
    if self.novelty is not None:
      novelty = [self.novelty.novelty(q) for q in qs]
    verdicts = judge_lib.score_batch(
        [p.target_answer for p in valid],
        [p.reference_answers for p in valid],
        valid=[True] * len(valid), config=self.config.reward,
        judge=self.judge, novelty=novelty)
    for p, v in zip(valid, verdicts):
      p.verdict = v
    invalid = [p for p in pairs if not p.valid]
    if invalid:
      bad = judge_lib.score_batch(
          [None] * len(invalid), [()] * len(invalid),
          valid=[False] * len(invalid), config=self.config.reward,
          judge=self.judge)
      for p, v in zip(invalid, bad):
        p.verdict = v
    if self.novelty is not None:
      for q in qs:
        self.novelty.add(q)

  def _output(self, pairs, out, rewards, kinds, pixels) -> RolloutOutput:
    a, c, g = self.auditor, self.config, self.config.group_size
    # The GRPO batch: each group's prompt repeated G times, LEFT-padded to a
    # fixed P so the step compiles once.
    tokens, input_mask, mask_ar, ims = generate_lib.encode_prompts(
        a.model, a.tokenizer, [a.prompt_text(k) for k in kinds], pixels,
        side="left", length=c.prompt_len or None,
        image_preprocess=a.image_preprocess)
    rep = lambda x: None if x is None else np.repeat(x, g, axis=0)
    completion = np.asarray(out.tokens, np.int32)
    lengths = np.asarray(out.lengths)
    mask = (np.arange(completion.shape[1])[None, :]
            < lengths[:, None]).astype(np.float32)
    return RolloutOutput(
        pairs=pairs, group_size=g, prompt_tokens=rep(tokens),
        prompt_input_mask=rep(input_mask), prompt_mask_ar=rep(mask_ar),
        images=rep(ims), completion=completion, completion_mask=mask,
        rewards=rewards,
        questions_asked=[p.question for p in pairs if p.question])

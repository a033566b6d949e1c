r"""Harvesting: auditors -> pairs -> kept failures -> a TFDS dataset.

  specs = [AuditorSpec("trained", 1000, model, trained_params),
           AuditorSpec("ckpt500", 500, model, ckpt_params),
           AuditorSpec("untrained", 0, model, init_params)]
  make = rollout_factory(target, references, backend, rollout_config, tok)
  res = harvest(specs, WorldSources(1000, 0, namespace="world_harvest"),
                "/out", make_rollout=make,
                config=HarvestConfig(chunk_size=64, seed=0))
  res.num_examples, res.summary["auditors"]["trained"]["kept"]
  ds = read_failures("/out")           # grain.MapDataset, harvest order

  python -m auditdm_jax.discover.harvest --zoo ZOO \
      --auditor trained=AUDIT_DIR/export/auditor \
      --auditor ckpt200=AUDIT_DIR@200 --auditor untrained=zoo \
      --n 1000 --out DIR [--group_size 1] [--chunk 64] [--seed 0] \
      [--modes question=1,image=1,both=1] [--keep failures] [--overwrite]

What is kept (DESIGN.md §1.6, paper §7 "bootstrapped unlabeled data"):
every auditor runs a `Rollout` (any group size, any mode mix) over the pool
in chunks; a pair is KEPT when it is valid, the references reach consensus
(`Verdict.references_agree`) and the target differs from it
(`Verdict.target_differs`) — a candidate failure whose pseudo-label is the
consensus. keep="agreed" keeps every pair with a consensus instead (the
`target_differs` feature then tells failures apart), which is what an
unbiased model diff (taxonomy.model_diff) needs.

De-duplication: a pair's key is (normalised question, normalised
instruction, content hash of the image asked about), normalised with
`judge.normalize_answer`; the first pair with a key is kept, in the order
auditors (as given) x chunks x rollout rows, and later ones only count as
`duplicates`. The example id is "f" + 16 hex digits of sha256(key).

Randomness: chunk c of EVERY auditor runs with key fold_in(key(seed), c),
so all auditors face the same images in the same pairing modes (the
success-rate protocol's rule); a rollout is a pure function of (params,
sources, key), so a resumed harvest repeats the lost work exactly.

Resumable and crash-safe. Units of work are (auditor, chunk), done in order;
per unit:
  1. the rollout runs and the kept examples are de-duplicated against
     every finished unit;
  2. they are written to `shards/<unit>.json` (temp file, fsync, atomic
     rename, fsync of the directory);
  3. the unit is appended to `progress.json` (same protocol), with its
     shard's sha256 and counts.
A crash anywhere loses only the unit in flight: on restart finished units
are skipped, the de-dup set is rebuilt from their shards, and a shard
written before a crash that missed step 3 is rewritten identically. At the
end the dataset is assembled from the shards in unit order into
`failures/` (staging folder + rename; `dataset.write_dataset`), then
`asked.jsonl` and finally `summary.json` (its presence with the same
fingerprint means "complete"; a rerun then only opens the result). A
workdir holding a harvest with other settings (auditor names / steps, pool
size and ends, chunk size, seed, keep, rollout config, models) is refused
unless `overwrite=True`. The fingerprint identifies auditors by name and
step, not by hashing their weights.

Files in the out dir:
  progress.json   {"format", "fingerprint", "units": {unit: {...}},
                   "done": [unit, ...]}
  shards/*.json   per unit: {"unit", "auditor", "step", "chunk",
                   "examples": [example with base64 PNGs and "dedup_key"],
                   "asked": [asked record]}
  failures/       the TFDS dataset (schema: `discover.dataset`); absent when
                  nothing was kept (read_failures then yields nothing)
  asked.jsonl     the rollout log: one asked record per pair of every unit
  summary.json    settings, per-auditor counts, totals

Asked record (the denominators of taxonomy failure rates; the keys of
`rl.loop.pair_record` where they overlap): auditor, auditor_step, chunk,
source_id, group, mode, kind, completion, question, instruction, error,
target_answer, reference_answers, consensus, references_agree,
target_differs, reward, truth, skill, tags, example_id (the id of the kept
example this pair is or duplicates; null when not kept).
"""

from __future__ import annotations

import argparse
import base64
import collections
import dataclasses
import hashlib
import json
import os
import pathlib
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Optional, Union

import jax
import numpy as np
import tqdm

from auditdm_jax import atomic_io
from auditdm_jax.audit import judge as judge_lib
from auditdm_jax.audit import rollout as rollout_lib
from auditdm_jax.discover import dataset as dataset_lib
from auditdm_jax.discover.dataset import read_failures  # pylint: disable=unused-import

PathLike = Union[str, os.PathLike]
FORMAT = "auditdm_jax.harvest/1"
KEEP = ("failures", "agreed")
NAMESPACE = "world_harvest"     # The CLI's world pool (disjoint seeds).
PROGRESS, ASKED = "progress.json", "asked.jsonl"
SUMMARY = dataset_lib.HARVEST_SUMMARY   # "summary.json"
SHARDS = "shards"
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


# --- Inputs -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AuditorSpec:
  """One auditor to harvest with.

  Attributes:
    name: [A-Za-z0-9_.-]+, unique within a harvest (provenance, file names).
    step: its GRPO step (0 for the untrained initialisation).
    model: the auditor's model (`models.vlm.Model`).
    params: its parameters.
  """
  name: str
  step: int
  model: Any
  params: Any

  def __post_init__(self):
    if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
      raise ValueError(f"auditor name must match [A-Za-z0-9_.-]+, got "
                       f"{self.name!r}")
    if (isinstance(self.step, bool) or not isinstance(self.step, int)
        or self.step < 0):
      raise ValueError(f"auditor {self.name!r}: step must be an int >= 0, "
                       f"got {self.step!r}")


@dataclasses.dataclass(frozen=True)
class HarvestConfig:
  """How a harvest chunks, seeds and keeps.

  Attributes:
    chunk_size: sources per unit of work (and per rollout call); smaller
      loses less to a crash, larger batches the models better.
    seed: chunk c runs with key fold_in(key(seed), c), for every auditor.
    keep: "failures" (references agree, target differs) or "agreed"
      (references agree).
    overwrite: start over when the out dir holds a harvest with other
      settings (otherwise that is an error).
  """
  chunk_size: int = 64
  seed: int = 0
  keep: str = "failures"
  overwrite: bool = False

  def __post_init__(self):
    if (isinstance(self.chunk_size, bool) or
        not isinstance(self.chunk_size, int) or self.chunk_size < 1):
      raise ValueError(f"chunk_size must be an int >= 1, got "
                       f"{self.chunk_size!r}")
    if isinstance(self.seed, bool) or not isinstance(self.seed, int):
      raise ValueError(f"seed must be an int, got {self.seed!r}")
    if self.keep not in KEEP:
      raise ValueError(f"keep must be one of {KEEP}, got {self.keep!r}")


@dataclasses.dataclass(frozen=True)
class HarvestResult:
  """What a finished harvest left in `out_dir`.

  Attributes:
    out_dir: the harvest directory.
    dataset_dir: its TFDS dataset (`out_dir/failures`), None if empty.
    num_examples: kept (de-duplicated) examples.
    summary: the contents of summary.json.
  """
  out_dir: pathlib.Path
  dataset_dir: Optional[pathlib.Path]
  num_examples: int
  summary: dict

  def read(self, *, decode_images: bool = True):
    """The examples (`read_failures` of out_dir)."""
    return read_failures(self.out_dir, decode_images=decode_images)


def rollout_factory(target: Any, references: Sequence[Any], backend: Any,
                    config: rollout_lib.RolloutConfig, tokenizer: Any, *,
                    prompt_set: Any = "world", image_preprocess: str = "siglip",
                    rollout_cls: type = rollout_lib.Rollout, **kw
                    ) -> Callable[[AuditorSpec], rollout_lib.Rollout]:
  """make_rollout for `harvest`: one `rollout_cls` per auditor, sharing the
  target, references, backend and config (extra `kw` go to rollout_cls)."""
  def make(spec: AuditorSpec) -> rollout_lib.Rollout:
    auditor = rollout_lib.Auditor(model=spec.model, tokenizer=tokenizer,
                                  prompt_set=prompt_set,
                                  image_preprocess=image_preprocess)
    return rollout_cls(auditor, target, references, backend, config, **kw)
  return make


# --- Durable files ------------------------------------------------------------


def _json_bytes(obj: Any) -> bytes:
  return (json.dumps(obj, sort_keys=True, ensure_ascii=False) + "\n").encode(
      "utf-8")


def _sha256(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


# --- Pairs -> examples --------------------------------------------------------


def dedup_key(question: str, instruction: Optional[str],
              image_hash: str) -> str:
  """The de-duplication key of a pair (module docstring)."""
  return json.dumps([judge_lib.normalize_answer(question),
                     judge_lib.normalize_answer(instruction or ""),
                     image_hash])


def example_id(key: str) -> str:
  return "f" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def _b64(data: bytes) -> str:
  return base64.b64encode(data).decode("ascii")


def _example(p: rollout_lib.Pair, source: rollout_lib.SourceItem,
             spec: AuditorSpec, roll: rollout_lib.Rollout, key: str
             ) -> dict[str, Any]:
  """A kept pair as a shard example (images as base64 PNG)."""
  return {
      "id": example_id(key), "dedup_key": key, "source_id": p.source_id,
      "mode": p.mode, "kind": p.kind, "auditor": spec.name,
      "auditor_step": spec.step, "completion": p.completion,
      "question": p.question, "instruction": p.instruction or "",
      "image": _b64(p.picture.to_png()),
      "original_image": _b64(source.picture.to_png()),
      "scene": p.picture.scene or "",
      "target_model": str(roll.target.name),
      "target_answer": p.target_answer,
      "reference_models": [str(m.name) for m in roll.references],
      "reference_answers": list(p.reference_answers),
      "consensus": p.verdict.consensus,
      "target_differs": bool(p.verdict.target_differs),
      "truth": p.truth or "", "skill": p.skill or "",
      "tags": sorted(p.tags)}


def _asked(p: rollout_lib.Pair, spec: AuditorSpec, chunk: int,
           ex_id: Optional[str]) -> dict[str, Any]:
  v = p.verdict
  return {
      "auditor": spec.name, "auditor_step": spec.step, "chunk": chunk,
      "source_id": p.source_id, "group": p.group, "mode": p.mode,
      "kind": p.kind, "completion": p.completion, "question": p.question,
      "instruction": p.instruction, "error": p.error,
      "target_answer": p.target_answer,
      "reference_answers": list(p.reference_answers),
      "consensus": None if v is None else v.consensus,
      "references_agree": bool(v is not None and v.references_agree),
      "target_differs": bool(v is not None and v.target_differs),
      "reward": p.reward, "truth": p.truth, "skill": p.skill,
      "tags": sorted(p.tags), "example_id": ex_id}


def _kept(p: rollout_lib.Pair, keep: str) -> bool:
  v = p.verdict
  if not p.valid or v is None or not v.references_agree:
    return False
  return keep == "agreed" or v.target_differs


def to_dataset_example(ex: Mapping[str, Any]) -> dict[str, Any]:
  """A shard example -> the dataset's feature dict (PNG bytes)."""
  out = {k: ex[k] for k in dataset_lib.FIELDS if k not in
         dataset_lib.IMAGE_FIELDS}
  for k in dataset_lib.IMAGE_FIELDS:
    out[k] = base64.b64decode(ex[k])
  return out


# --- The harvest --------------------------------------------------------------


def _unit_name(ai: int, spec: AuditorSpec, chunk: int) -> str:
  # Sortable and unique: the auditor's index keeps names apart even if two
  # specs differed only in a character the file system folds.
  return f"{ai:02d}-{spec.name}-{chunk:06d}"


def _describe(obj: Any) -> Any:
  if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
    return {f.name: _describe(getattr(obj, f.name))
            for f in dataclasses.fields(obj)}
  if isinstance(obj, Mapping):
    return {str(k): _describe(v) for k, v in sorted(obj.items())}
  if isinstance(obj, (list, tuple)):
    return [_describe(x) for x in obj]
  if isinstance(obj, (str, int, float, bool)) or obj is None:
    return obj
  return repr(obj)


def _rollout_description(roll: rollout_lib.Rollout) -> dict[str, Any]:
  ps = roll.auditor.prompt_set
  return {"config": _describe(roll.config),
          "target": str(roll.target.name),
          "references": [str(m.name) for m in roll.references],
          "backend": str(getattr(roll.backend, "cache_id",
                                 type(roll.backend).__name__)),
          # The type only: a model judge's repr counts its calls.
          "judge": type(roll.judge).__name__,
          "prompt_set": str(getattr(ps, "name", ps))}


def fingerprint(auditors: Sequence[AuditorSpec], sources: Sequence[Any],
                rollouts: Sequence[rollout_lib.Rollout],
                config: HarvestConfig) -> dict[str, Any]:
  """The settings a harvest's results depend on (see the module docstring)."""
  n = len(sources)
  return {"format": FORMAT,
          "auditors": [[s.name, s.step] for s in auditors],
          "pool": {"n": n, "first": str(sources[0].id),
                   "last": str(sources[n - 1].id)},
          "chunk_size": config.chunk_size, "seed": config.seed,
          "keep": config.keep,
          "rollouts": [_rollout_description(r) for r in rollouts]}


class _Workdir:
  """The out dir's files: progress, shards, and the final outputs."""

  def __init__(self, out: pathlib.Path):
    self.out = out
    self.shards = out / SHARDS
    self.progress_path = out / PROGRESS

  def load_progress(self) -> Optional[dict]:
    if not self.progress_path.exists():
      return None
    try:
      prog = json.loads(self.progress_path.read_text(encoding="utf-8"))
    except ValueError as e:
      # Written atomically, so this is not a torn write of ours.
      raise ValueError(f"{self.progress_path} is not valid JSON ({e}); it "
                       "was not written by harvest") from None
    if prog.get("format") != FORMAT:
      raise ValueError(f"{self.progress_path} has format "
                       f"{prog.get('format')!r}, not {FORMAT!r}")
    return prog

  def save_progress(self, prog: dict) -> None:
    atomic_io.write_bytes(self.progress_path, _json_bytes(prog), durable=True)

  def shard_path(self, unit: str) -> pathlib.Path:
    return self.shards / f"{unit}.json"

  def read_shard(self, unit: str, info: Mapping[str, Any]) -> dict:
    path = self.shard_path(unit)
    try:
      data = path.read_bytes()
    except FileNotFoundError:
      raise FileNotFoundError(
          f"{path} is listed as finished in {self.progress_path} but is "
          "missing; rerun with overwrite=True (--overwrite) to start over"
      ) from None
    if _sha256(data) != info["sha256"]:
      raise ValueError(f"{path} does not match its checksum in "
                       f"{self.progress_path} (changed on disk?); rerun "
                       "with overwrite=True (--overwrite) to start over")
    return json.loads(data)

  def clear(self) -> None:
    """Removes everything a harvest writes (and nothing else)."""
    for name in (SUMMARY, ASKED, PROGRESS):
      (self.out / name).unlink(missing_ok=True)
    for name in (SHARDS, dataset_lib.DATASET_SUBDIR):
      shutil.rmtree(self.out / name, ignore_errors=True)

  def remove_temp_files(self) -> None:
    """Leftovers of a process killed mid-write (an exception cleans up
    after itself; SIGKILL cannot)."""
    for d in (self.out, self.shards):
      if d.is_dir():
        for p in d.glob(".*.tmp-*"):
          p.unlink(missing_ok=True)
    for p in self.out.glob(".failures-*"):   # dataset.write_dataset staging
      shutil.rmtree(p, ignore_errors=True)


def _run_unit(roll: rollout_lib.Rollout, spec: AuditorSpec, sources,
              chunk: int, config: HarvestConfig, seen: dict[str, str]
              ) -> dict[str, Any]:
  """One (auditor, chunk): the shard's content; adds kept keys to `seen`."""
  n = len(sources)
  start = chunk * config.chunk_size
  items = [sources[i] for i in range(start, min(n, start + config.chunk_size))]
  key = jax.random.fold_in(jax.random.key(config.seed), chunk)
  t0 = time.perf_counter()
  out = roll(spec.params, items, key=key)
  examples, asked = [], []
  stats = collections.Counter()
  for p in out.pairs:
    stats["pairs"] += 1
    stats["valid"] += p.valid
    v = p.verdict
    agreed = p.valid and v is not None and v.references_agree
    stats["agreed"] += agreed
    stats["failures"] += bool(agreed and v.target_differs)
    ex_id = None
    if _kept(p, config.keep):
      key_ = dedup_key(p.question, p.instruction, p.picture.content_hash())
      if key_ in seen:
        stats["duplicates"] += 1
        ex_id = seen[key_]
      else:
        ex = _example(p, items[p.group], spec, roll, key_)
        seen[key_] = ex_id = ex["id"]
        examples.append(ex)
        stats["kept"] += 1
        if ex["truth"]:
          stats["truth_known"] += 1
          stats["verified"] += not judge_lib.answers_match(
              ex["target_answer"], ex["truth"])
    asked.append(_asked(p, spec, chunk, ex_id))
  stats["seconds"] = time.perf_counter() - t0
  return {"auditor": spec.name, "step": spec.step, "chunk": chunk,
          "examples": examples, "asked": asked, "stats": dict(stats)}


_STAT_KEYS = ("pairs", "valid", "agreed", "failures", "kept", "duplicates",
              "truth_known", "verified")


def _summary(prog: dict, auditors: Sequence[AuditorSpec],
             units: Sequence[str]) -> dict[str, Any]:
  per = {s.name: {"step": s.step, **{k: 0 for k in _STAT_KEYS},
                  "seconds": 0.0} for s in auditors}
  for unit in units:
    info = prog["units"][unit]
    a = per[info["auditor"]]
    for k in _STAT_KEYS:
      a[k] += int(info["stats"].get(k, 0))
    a["seconds"] += float(info["stats"].get("seconds", 0.0))
  total = {k: sum(a[k] for a in per.values()) for k in _STAT_KEYS}
  return {"format": FORMAT, "complete": True,
          "fingerprint": prog["fingerprint"],
          "num_examples": total["kept"], "totals": total, "auditors": per,
          "units": len(units)}


def _iter_examples(work: _Workdir, prog: dict, units: Sequence[str]
                   ) -> Iterator[dict[str, Any]]:
  for unit in units:
    if prog["units"][unit]["stats"].get("kept", 0):
      for ex in work.read_shard(unit, prog["units"][unit])["examples"]:
        yield to_dataset_example(ex)


def harvest(auditors: Sequence[AuditorSpec], sources: Sequence[Any],
            out_dir: PathLike, *,
            make_rollout: Callable[[AuditorSpec], rollout_lib.Rollout],
            config: HarvestConfig = HarvestConfig(),
            verbose: bool = False) -> HarvestResult:
  """Runs (or resumes, or just opens) a harvest; see the module docstring.

  Args:
    auditors: the auditors, in order (the de-dup order too).
    sources: an indexable pool of `SourceItem`s (len, [i]).
    out_dir: the harvest directory (created).
    make_rollout: AuditorSpec -> Rollout (e.g. `rollout_factory(...)`).
    config: chunking, seed, what to keep, overwrite.
    verbose: a tqdm bar over the units.

  Returns:
    The HarvestResult.

  Raises:
    ValueError: bad arguments, or out_dir holds a harvest with other
      settings (without overwrite), or a shard fails its checksum.
  """
  if not isinstance(config, HarvestConfig):
    raise ValueError(f"config must be a HarvestConfig, got "
                     f"{type(config).__name__}")
  auditors = list(auditors)
  if not auditors:
    raise ValueError("harvest needs at least one auditor")
  for s in auditors:
    if not isinstance(s, AuditorSpec):
      raise ValueError(f"auditors must be AuditorSpecs, got "
                       f"{type(s).__name__}")
  names = [s.name for s in auditors]
  if len(set(names)) != len(names):
    raise ValueError(f"auditor names must be unique, got {names}")
  if len(sources) < 1:
    raise ValueError("harvest needs a non-empty source pool")
  rollouts = [make_rollout(s) for s in auditors]
  # As it reads back from JSON (tuples become lists), to compare with it.
  fp = json.loads(json.dumps(fingerprint(auditors, sources, rollouts,
                                         config)))
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  work = _Workdir(out)

  prog = work.load_progress()
  if prog is not None and prog["fingerprint"] != fp:
    if not config.overwrite:
      diff = sorted(k for k in set(fp) | set(prog["fingerprint"])
                    if json.dumps(fp.get(k), sort_keys=True) !=
                    json.dumps(prog["fingerprint"].get(k), sort_keys=True))
      raise ValueError(f"{out} holds a harvest with other settings (differ: "
                       f"{diff}); use another out dir or overwrite=True "
                       "(--overwrite) to start over")
    work.clear()
    prog = None
  if prog is None:
    if not config.overwrite and any(
        (out / n).exists() for n in (SHARDS, dataset_lib.DATASET_SUBDIR,
                                     SUMMARY, ASKED)):
      raise ValueError(f"{out} holds harvest files without {PROGRESS}; "
                       "use another out dir or overwrite=True")
    work.clear()
    prog = {"format": FORMAT, "fingerprint": fp, "units": {}, "done": []}
    work.save_progress(prog)
  work.remove_temp_files()
  work.shards.mkdir(exist_ok=True)

  n_chunks = -(-len(sources) // config.chunk_size)
  plan = [(ai, s, r, c) for ai, (s, r) in enumerate(zip(auditors, rollouts))
          for c in range(n_chunks)]
  units = [_unit_name(ai, s, c) for ai, s, _, c in plan]
  done = set(prog["done"])
  if prog["done"] != units[:len(prog["done"])]:
    raise ValueError(f"{work.progress_path} lists units out of this "
                     "harvest's order; rerun with overwrite=True")

  summary_path = out / SUMMARY
  if len(done) == len(units) and summary_path.exists():
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    dataset_ok = not summary.get("num_examples") or (
        out / dataset_lib.DATASET_SUBDIR / "dataset_info.json").is_file()
    if summary.get("fingerprint") == prog["fingerprint"] and dataset_ok:
      return _result(out, summary)

  # The de-dup set of the finished units, in order.
  seen: dict[str, str] = {}
  for unit in prog["done"]:
    if prog["units"][unit]["stats"].get("kept", 0):
      for ex in work.read_shard(unit, prog["units"][unit])["examples"]:
        seen[ex["dedup_key"]] = ex["id"]

  todo = [(u, x) for u, x in zip(units, plan) if u not in done]
  for unit, (_, spec, roll, chunk) in tqdm.tqdm(
      todo, desc="harvest", unit="chunk", disable=not verbose):
    trial = dict(seen)  # Committed to `seen` only with the unit.
    shard = {"unit": unit, **_run_unit(roll, spec, sources, chunk, config,
                                       trial)}
    stats = shard.pop("stats")
    data = _json_bytes(shard)
    atomic_io.write_bytes(work.shard_path(unit), data, durable=True)
    prog["units"][unit] = {"auditor": spec.name, "step": spec.step,
                           "chunk": chunk, "sha256": _sha256(data),
                           "stats": stats}
    prog["done"].append(unit)
    work.save_progress(prog)
    seen = trial

  return _assemble(work, prog, auditors, units)


def _assemble(work: _Workdir, prog: dict, auditors: Sequence[AuditorSpec],
              units: Sequence[str]) -> HarvestResult:
  """Dataset, rollout log and summary from the finished shards."""
  out = work.out
  summary = _summary(prog, auditors, units)
  dest = out / dataset_lib.DATASET_SUBDIR
  if summary["num_examples"]:
    meta = {"harvest": {k: summary[k] for k in
                        ("format", "fingerprint", "totals", "auditors")}}
    dataset_lib.write_dataset(
        lambda: _iter_examples(work, prog, units), dest, metadata=meta)
  elif dest.exists():
    shutil.rmtree(dest)
  lines = []
  for unit in units:
    lines.extend(json.dumps(r, sort_keys=True, ensure_ascii=False)
                 for r in work.read_shard(unit, prog["units"][unit])["asked"])
  atomic_io.write_text(out / ASKED, "".join(l + "\n" for l in lines),
                       durable=True)
  # Last: its presence (with this fingerprint) marks the harvest complete.
  atomic_io.write_bytes(out / SUMMARY, _json_bytes(summary), durable=True)
  return _result(out, summary)


def _result(out: pathlib.Path, summary: dict) -> HarvestResult:
  n = int(summary["num_examples"])
  return HarvestResult(out_dir=out,
                       dataset_dir=(out / dataset_lib.DATASET_SUBDIR) if n
                       else None, num_examples=n, summary=summary)


def read_asked(out_dir: PathLike) -> list[dict]:
  """The rollout log of a finished harvest (asked.jsonl), in order."""
  path = pathlib.Path(out_dir) / ASKED
  if not path.exists():
    raise FileNotFoundError(f"no {ASKED} in {out_dir}: the harvest has not "
                            "finished")
  return [json.loads(l) for l in path.read_text(encoding="utf-8").splitlines()
          if l.strip()]


# --- Command line -------------------------------------------------------------


def parse_auditor_arg(spec: str) -> tuple[str, str, Optional[int]]:
  """'NAME=PATH[@STEP]' -> (name, path, step or None).

  Raises:
    ValueError: not of that form.
  """
  name, sep, path = spec.partition("=")
  if not sep or not name or not path:
    raise ValueError(f"--auditor wants NAME=PATH[@STEP], got {spec!r}")
  if not _NAME_RE.match(name):
    raise ValueError(f"--auditor {spec!r}: NAME must match [A-Za-z0-9_.-]+")
  step = None
  head, at, tail = path.rpartition("@")
  if at and head and tail.isdigit():
    path, step = head, int(tail)
  return name, path, step


def load_auditor(spec: str, zoo_root: Optional[pathlib.Path]) -> AuditorSpec:
  """An AuditorSpec from 'NAME=PATH[@STEP]'.

  PATH is "zoo" (the zoo's auditor initialisation, step 0), a GRPO workdir
  (it has `checkpoints/`: the checkpoint at STEP, default the latest, LoRA
  merged), or a params-only export (`audit.run` writes
  AUDIT_DIR/export/auditor; the step is its sidecar's "steps" unless STEP
  is given).

  Raises:
    ValueError / FileNotFoundError: a bad spec or nothing loadable there.
  """
  # pylint: disable=g-import-not-at-top
  from auditdm_jax.audit import run as run_lib
  from auditdm_jax.eval import world_bench
  # pylint: enable=g-import-not-at-top
  name, path, step = parse_auditor_arg(spec)
  if path == "zoo":
    if zoo_root is None:
      raise ValueError(f"--auditor {spec!r} needs a zoo")
    model, params = run_lib.load_zoo_model(zoo_root, "auditor")
    return AuditorSpec(name, step or 0, model, params)
  p = pathlib.Path(path)
  if (p / "checkpoints").is_dir():
    model, params, got = _restore_grpo(p, step)
    return AuditorSpec(name, got, model, params)
  if not p.is_dir():
    raise FileNotFoundError(f"--auditor {spec!r}: no auditor export or GRPO "
                            f"workdir at {p}")
  model, params = world_bench.load_export(p)
  if step is None:
    side = p.with_suffix(".json")
    info = json.loads(side.read_text()) if side.is_file() else {}
    step = int(info.get("steps", 0))
  return AuditorSpec(name, step, model, params)


def _restore_grpo(workdir: pathlib.Path, step: Optional[int]):
  """(model, params with LoRA merged, step) of a GRPO workdir checkpoint."""
  # pylint: disable=g-import-not-at-top
  from auditdm_jax.train import checkpoint as checkpoint_lib
  from auditdm_jax.train import state as state_lib
  from auditdm_jax.train.config import TrainConfig
  # pylint: enable=g-import-not-at-top
  ckpt = checkpoint_lib.Checkpointer(workdir / "checkpoints")
  try:
    have = ckpt.all_steps()
    step = have[-1] if (step is None and have) else step
    if step is None or step not in have:
      raise FileNotFoundError(f"no checkpoint at step {step} in {workdir} "
                              f"(have {have})")
    config_dict = ckpt.read_json("config", step)
    if config_dict is None:
      raise FileNotFoundError(f"checkpoint {step} in {workdir} has no config")
    tcfg = TrainConfig.from_dict(config_dict)
    model = state_lib.make_model(tcfg)
    state, _ = ckpt.restore(state_lib.abstract_state(model, tcfg), step=step)
  finally:
    ckpt.close()
  params = jax.tree.map(lambda x: np.asarray(x, np.float32),
                        jax.device_get(state.model_params()))
  return model, params, int(step)


def _weights(text: str, known: Sequence[str], flag: str) -> dict[str, float]:
  out = {}
  for part in filter(None, (s.strip() for s in text.split(","))):
    k, sep, v = part.partition("=")
    if not sep or k not in known:
      raise ValueError(f"{flag} wants NAME=WEIGHT,... with NAME in "
                       f"{list(known)}, got {text!r}")
    try:
      out[k] = float(v)
    except ValueError:
      raise ValueError(f"{flag}: {v!r} is not a number") from None
  return out


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog="python -m auditdm_jax.discover.harvest",
      description="Harvest failures of a target with one or more auditors "
                  "into a TFDS dataset (resumable).")
  p.add_argument("--zoo", default="", help="world zoo export dir "
                 "('' = the shipped zoo)")
  p.add_argument("--auditor", action="append", default=[],
                 help="NAME=PATH[@STEP]: PATH an auditor export, a GRPO "
                 "workdir or 'zoo' (repeatable; default untrained=zoo)")
  p.add_argument("--n", type=int, default=1000, help="source images")
  p.add_argument("--sources", default="world",
                 help="'world' (a world pool) or a JSONL file of images "
                 "(audit.sources.JsonlSources)")
  p.add_argument("--pool_seed", type=int, default=0,
                 help="the world pool's seed")
  p.add_argument("--group_size", type=int, default=1,
                 help="completions per source image")
  p.add_argument("--modes", default="question=1,image=1,both=1")
  p.add_argument("--kinds", default="edit=1,caption=1",
                 help="image-mode prompt kinds")
  p.add_argument("--chunk", type=int, default=64, help="sources per chunk")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--temperature", type=float, default=1.0)
  p.add_argument("--max_new_tokens", type=int, default=40)
  p.add_argument("--consensus", default="unanimous",
                 choices=judge_lib.CONSENSUS_MODES)
  p.add_argument("--keep", default="failures", choices=KEEP)
  p.add_argument("--target", default="target")
  p.add_argument("--references",
                 default="ref_paligemma_m,ref_gemma_s,ref_paligemma_s")
  p.add_argument("--out", required=True, help="the harvest directory")
  p.add_argument("--overwrite", action="store_true",
                 help="start over if --out holds another harvest")
  return p


def build_from_args(args: argparse.Namespace):
  """(auditor specs, sources, make_rollout) from parsed CLI args."""
  # pylint: disable=g-import-not-at-top
  import ml_collections
  from auditdm_jax.audit import run as run_lib
  from auditdm_jax.audit.sources import JsonlSources, WorldSources
  from auditdm_jax.data.world_tokenizer import world_tokenizer
  # pylint: enable=g-import-not-at-top
  cfg = ml_collections.ConfigDict({
      "zoo": args.zoo, "target": args.target,
      "references": tuple(r for r in args.references.split(",") if r),
      "answer_max_tokens": 3, "backend": {"name": "world", "cache": True}})
  rcfg = rollout_lib.RolloutConfig(
      group_size=args.group_size,
      mode_weights=_weights(args.modes, rollout_lib.MODES, "--modes"),
      image_kind_weights=_weights(args.kinds, rollout_lib.IMAGE_KINDS,
                                  "--kinds"),
      temperature=args.temperature, max_new_tokens=args.max_new_tokens,
      seed=args.seed,
      reward=judge_lib.RewardConfig(consensus=args.consensus))
  # The source pool first: it is checked up front and cheap, so a bad one
  # fails before any model is loaded.
  if args.sources == "world":
    sources = WorldSources(args.n, args.pool_seed, namespace=NAMESPACE)
  else:
    sources = JsonlSources(args.sources, limit=args.n)
  tok = world_tokenizer()
  root = run_lib.zoo_root(cfg)
  target, refs = run_lib.vqa_models(cfg, root, tok)
  specs = [load_auditor(a, root) for a in (args.auditor or ["untrained=zoo"])]
  make = rollout_factory(target, refs, run_lib.make_backend(cfg), rcfg, tok)
  return specs, sources, make


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = build_parser().parse_args(argv)
  try:
    if args.n < 1 or args.chunk < 1 or args.group_size < 1:
      raise ValueError("--n, --chunk and --group_size must be >= 1")
    specs, sources, make = build_from_args(args)
    res = harvest(specs, sources, args.out, make_rollout=make,
                  config=HarvestConfig(chunk_size=args.chunk, seed=args.seed,
                                       keep=args.keep,
                                       overwrite=args.overwrite),
                  verbose=True)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  for name, a in res.summary["auditors"].items():
    print(f"{name:<12} step {a['step']:>6}: {a['pairs']} pairs, "
          f"{a['valid']} valid, {a['agreed']} agreed, {a['failures']} "
          f"failures, {a['kept']} kept ({a['duplicates']} duplicates), "
          f"{a['verified']}/{a['truth_known']} verified")
  print(f"{res.num_examples} examples -> "
        f"{res.dataset_dir or '(none kept)'}")
  return 0


if __name__ == "__main__":
  sys.exit(main())

r"""The failure-search success rate of auditors (paper §7, issue #4 §7).

  python -m auditdm_jax.eval.success_rate --zoo ZOO \
      --auditor trained=AUDIT_DIR/export/auditor --auditor untrained=zoo \
      --n 1000 [--seed 11] [--out result.json]

Protocol: N source images (a world pool disjoint from the training pool and
the benchmark); each auditor writes ONE pair per image (a sampled
completion, the pairing mode drawn per image from the same seeded draws for
every auditor, so all auditors face the same images in the same modes); a
pair is a SUCCESS when it is valid and the target's answer is wrong — judged
by the world oracle on the pair's own (possibly counterfactual) scene, not
by the references. Rates come with 95% Wilson intervals, overall and per
mode, together with the validity, the references' reward rate, the skills
of the successes and which planted gaps of the target (its zoo sidecar's
`slice_weights` conjunctions) they fall in.

`--auditor NAME=PATH`: PATH is an auditor export (`audit.run` writes
AUDIT_DIR/export/auditor) or "zoo" for the zoo's own initialisation, the
prompt-only baseline.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import jax
import numpy as np

from auditdm_jax import atomic_io
from auditdm_jax.audit import rollout as rollout_lib
from auditdm_jax.audit import world_truth
from auditdm_jax.audit.sources import WorldSources

NAMESPACE = "world_success"


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
  """95% Wilson score interval of k successes in n trials."""
  if n == 0:
    return (0.0, 1.0)
  p = k / n
  den = 1 + z * z / n
  mid = (p + z * z / (2 * n)) / den
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
  return (max(0.0, mid - half), min(1.0, mid + half))


def _rate(k: int, n: int) -> dict[str, Any]:
  lo, hi = wilson(k, n)
  return {"n": n, "successes": k, "rate": k / n if n else 0.0,
          "ci95": [lo, hi]}


def summarise(pairs: Sequence[rollout_lib.Pair],
              gaps: Mapping[str, str]) -> dict[str, Any]:
  """Success rates (overall, per mode), validity, skills, gaps hit."""
  success = [bool(p.valid and p.verified_failure) for p in pairs]
  out = {"overall": _rate(sum(success), len(pairs)),
         "validity": float(np.mean([p.valid for p in pairs])),
         "reward_rate": float(np.mean([p.reward > 0 for p in pairs])),
         "modes": {}}
  for mode in rollout_lib.MODES:
    idx = [i for i, p in enumerate(pairs) if p.mode == mode]
    if idx:
      out["modes"][mode] = {
          **_rate(sum(success[i] for i in idx), len(idx)),
          "validity": float(np.mean([pairs[i].valid for i in idx]))}
  hits = [p for p, s in zip(pairs, success) if s]
  out["skills"] = dict(collections.Counter(
      p.skill for p in hits if p.skill).most_common())
  out["gaps"] = {
      split: sum(world_truth.in_slice(p.tags, conj) for p in hits)
      for conj, split in gaps.items()}
  out["gap_share"] = (sum(out["gaps"].values()) / len(hits)) if hits else 0.0
  return out


def run_protocol(auditors: Mapping[str, tuple[Any, Any]], target, references,
                 backend, *, tokenizer, n: int = 1000, seed: int = 11,
                 chunk: int = 100, mode_weights=None,
                 max_new_tokens: int = 40, temperature: float = 1.0,
                 gaps: Optional[Mapping[str, str]] = None) -> dict[str, Any]:
  """{auditor: summary} on the same n sources, same modes, same keys."""
  sources = WorldSources(n, seed, namespace=NAMESPACE)
  cfg = rollout_lib.RolloutConfig(
      group_size=1, temperature=temperature, max_new_tokens=max_new_tokens,
      seed=seed, **({"mode_weights": dict(mode_weights)} if mode_weights
                    else {}))
  result = {}
  for name, (model, params) in auditors.items():
    t0 = time.perf_counter()
    auditor = rollout_lib.Auditor(model=model, tokenizer=tokenizer)
    roll = rollout_lib.Rollout(auditor, target, references, backend, cfg)
    pairs: list[rollout_lib.Pair] = []
    for c, start in enumerate(range(0, n, chunk)):
      items = [sources[i] for i in range(start, min(n, start + chunk))]
      out = roll(params, items, key=jax.random.fold_in(jax.random.key(seed),
                                                         c))
      pairs.extend(out.pairs)
    result[name] = {**summarise(pairs, gaps or {}),
                    "seconds": time.perf_counter() - t0,
                    "examples": [_example(p) for p in pairs
                                 if p.valid and p.verified_failure][:10]}
  return result


def _example(p: rollout_lib.Pair) -> dict[str, Any]:
  return {"mode": p.mode, "kind": p.kind, "question": p.question,
          "instruction": p.instruction, "target": p.target_answer,
          "references": list(p.reference_answers), "truth": p.truth,
          "skill": p.skill}


def format_table(result: Mapping[str, Any]) -> str:
  lines = [f"{'auditor':<12} {'success':>8} {'95% CI':>15} {'valid':>6} "
           + " ".join(f"{m:>16}" for m in rollout_lib.MODES) + "  gaps hit"]
  for name, r in result.items():
    o = r["overall"]
    modes = " ".join(
        f"{r['modes'][m]['rate']:>7.1%} (n={r['modes'][m]['n']:>4})"
        if m in r["modes"] else f"{'-':>16}" for m in rollout_lib.MODES)
    gaps = ", ".join(f"{k}:{v}" for k, v in r["gaps"].items())
    lines.append(f"{name:<12} {o['rate']:>8.1%} "
                 f"[{o['ci95'][0]:.3f},{o['ci95'][1]:.3f}] "
                 f"{r['validity']:>6.1%} {modes}  {gaps}")
  return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
  # pylint: disable=g-import-not-at-top
  import ml_collections
  from auditdm_jax.audit import run as run_lib
  from auditdm_jax.data.world_tokenizer import world_tokenizer
  from auditdm_jax.eval import world_bench
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--zoo", default="", help="zoo export dir ('' = shipped)")
  p.add_argument("--auditor", action="append", default=[],
                 help="NAME=PATH (an auditor export, or 'zoo')")
  p.add_argument("--n", type=int, default=1000)
  p.add_argument("--seed", type=int, default=11)
  p.add_argument("--out", default="")
  args = p.parse_args(argv)
  if not args.auditor:
    args.auditor = ["untrained=zoo"]
  cfg = ml_collections.ConfigDict({
      "zoo": args.zoo, "target": "target",
      "references": ("ref_paligemma_m", "ref_gemma_s", "ref_paligemma_s"),
      "answer_max_tokens": 3, "backend": {"name": "world", "cache": True}})
  tok = world_tokenizer()
  try:
    root = run_lib.zoo_root(cfg)
    target, refs = run_lib.vqa_models(cfg, root, tok)
    auditors = {}
    for spec in args.auditor:
      name, sep, path = spec.partition("=")
      if not sep or not name or not path:
        raise ValueError(f"--auditor wants NAME=PATH, got {spec!r}")
      auditors[name] = (run_lib.load_zoo_model(root, "auditor")
                        if path == "zoo" else world_bench.load_export(path))
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  info = json.loads((root / "target.json").read_text())
  gaps = dict(info.get("gap_splits", {}))
  result = run_protocol(auditors, target, refs, run_lib.make_backend(cfg),
                        tokenizer=tok, n=args.n, seed=args.seed, gaps=gaps)
  print(format_table(result))
  if args.out:
    atomic_io.write_json(args.out, result)
  return 0


if __name__ == "__main__":
  sys.exit(main())

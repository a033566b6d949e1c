r"""The whole AuditDM loop on the world: audit -> harvest -> taxonomy ->
rectify -> evaluate -> report (issue #5 §6).

  python -m auditdm_jax.main --config=configs/world/loop.py --workdir=DIR
  run_loop(get_config(), "DIR")           # -> the summary dict

Stages, each in its own folder of DIR and skipped when already done (a
killed run resumes at the stage it was in, and the audit and the harvest
resume inside their stage too):

  audit/      GRPO of the auditor from the zoo's prompt-only initialisation
              (`audit.run.run_audit`, config.audit) -> audit/export/auditor
  harvest/    the trained and the untrained auditor over a fresh image pool
              (`discover.harvest`): failures = references agree, target
              differs, pseudo-labelled with the consensus
  taxonomy.json  failure types (`discover.taxonomy`), rates from the
              harvest's rollout log, NMI / purity against the oracle's
              skills, the planted gaps found
  rectify/    the target fine-tuned on its own kind of labelled data plus
              one harvested failure per labelled example (augmented,
              `train.rectify`) -> rectify/export/target
  eval.json   world benchmark accuracy of the target before and after (and
              of the references, for scale)
  report/     the HTML report (`discover.report`)
  stages.json wall time of every stage (a stage skipped on resume keeps
              its first time)

`summary.json` is written last and `format_summary` prints it as one table.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import pathlib
import time
from collections.abc import Mapping
from typing import Any, Callable, Union

import jax
import jax.numpy as jnp
import numpy as np

from auditdm_jax import atomic_io

PathLike = Union[str, os.PathLike]
STAGES = ("audit", "harvest", "taxonomy", "rectify", "evaluate", "report")


def _dict(x) -> dict:
  return x.to_dict() if hasattr(x, "to_dict") else dict(x or {})


class _Stages:
  """Runs stages once, records their wall time in stages.json."""

  def __init__(self, workdir: pathlib.Path):
    self.path = workdir / "stages.json"
    self.times = (json.loads(self.path.read_text())
                  if self.path.exists() else {})

  def run(self, name: str, done: Callable[[], bool], fn: Callable[[], Any]):
    if done():
      logging.info("stage %s: done before, skipped", name)
      return None
    t0 = time.perf_counter()
    out = fn()
    self.times[name] = time.perf_counter() - t0
    atomic_io.write_json(self.path, self.times)
    print(f"loop: {name} done in {self.times[name]:.0f} s", flush=True)
    return out


def _write_json(path: pathlib.Path, obj: Any) -> None:
  atomic_io.write_json(path, obj)


# --- Stages ---------------------------------------------------------------------


def _audit(config, workdir: pathlib.Path) -> None:
  from auditdm_jax.audit import run as run_lib  # pylint: disable=g-import-not-at-top
  run_lib.run_audit(config.audit, workdir / "audit")


def _models(config, tok):
  from auditdm_jax.audit import run as run_lib  # pylint: disable=g-import-not-at-top
  root = run_lib.zoo_root(config.audit)
  target, refs = run_lib.vqa_models(config.audit, root, tok)
  return root, target, refs


def _harvest(config, workdir: pathlib.Path, tok) -> None:
  # pylint: disable=g-import-not-at-top
  from auditdm_jax.audit import rollout as rollout_lib
  from auditdm_jax.audit import run as run_lib
  from auditdm_jax.audit.sources import WorldSources
  from auditdm_jax.discover import harvest as harvest_lib
  h = config.harvest
  root, target, refs = _models(config, tok)
  auditors = [harvest_lib.load_auditor(
      f"trained={workdir / 'audit' / 'export' / 'auditor'}", root),
              harvest_lib.load_auditor("untrained=zoo", root)]
  rcfg = rollout_lib.RolloutConfig(
      group_size=h.group_size, max_new_tokens=config.audit.rollout.max_new_tokens,
      temperature=config.audit.rollout.temperature, seed=h.seed,
      mode_weights=_dict(config.audit.rollout.mode_weights))
  make = harvest_lib.rollout_factory(
      target, refs, run_lib.make_backend(config.audit), rcfg, tok,
      prompt_set=config.audit.prompt_set)
  harvest_lib.harvest(auditors, WorldSources(h.n, h.seed,
                                             namespace="world_harvest"),
                      workdir / "harvest", make_rollout=make,
                      config=harvest_lib.HarvestConfig(chunk_size=h.chunk,
                                                       seed=h.seed))


def _gaps(root: pathlib.Path) -> dict:
  side = root / "target.json"
  return dict(json.loads(side.read_text()).get("gap_splits", {})) \
      if side.exists() else {}


def _taxonomy(config, workdir: pathlib.Path) -> None:
  # pylint: disable=g-import-not-at-top
  from auditdm_jax.audit import run as run_lib
  from auditdm_jax.discover import harvest as harvest_lib
  from auditdm_jax.discover import taxonomy as tax_lib
  examples = tax_lib.load_examples(workdir / "harvest")
  out = {"num_failures": len(examples)}
  if len(examples) >= 2:
    tax = tax_lib.build_taxonomy(
        examples, config=tax_lib.TaxonomyConfig(k=config.taxonomy.k),
        asked=harvest_lib.read_asked(workdir / "harvest"),
        gaps=_gaps(run_lib.zoo_root(config.audit)))
    out = tax.to_json()
  _write_json(workdir / "taxonomy.json", out)


def _rectify(config, workdir: pathlib.Path, tok) -> None:
  # pylint: disable=g-import-not-at-top
  import grain
  from auditdm_jax.audit import run as run_lib
  from auditdm_jax.convert import orbax_io
  from auditdm_jax.data import world_tfds
  from auditdm_jax.discover import dataset as dataset_lib
  from auditdm_jax.train import rectify as rect
  from auditdm_jax.train.config import TrainConfig
  r = config.rectify
  root = run_lib.zoo_root(config.audit)
  model, params = run_lib.load_zoo_model(root, config.audit.target)
  info = json.loads((root / f"{config.audit.target}.json").read_text())
  # The target's own kind of labelled data: world VQA with ITS slice
  # weights (the gaps stay rare: only the harvested failures fill them).
  built = world_tfds.build(world_tfds.WorldVqa, workdir / "data",
                           num_examples=r.labelled_examples, seed=r.seed,
                           slice_weights=info.get("slice_weights") or None)
  labelled = grain.MapDataset.source(built["train"]).map(
      world_tfds.decode_record)
  all_failures = dataset_lib.read_failures(workdir / "harvest")
  # A consensus that normalises to nothing is no label to train on.
  failures = [all_failures[i] for i in range(len(all_failures))
              if all_failures[i]["consensus"]]
  if not failures:
    raise RuntimeError(f"the harvest kept {len(all_failures)} failures with "
                       "a usable consensus label: none to rectify with "
                       "(train the auditor longer or harvest more)")
  mixed = rect.AugmentedSource(labelled, rect.as_training_examples(failures),
                               per_labelled=r.per_labelled)
  tcfg = TrainConfig(arch=model.cfg.name, **_dict(r.train))
  state = rect.rectify(params, mixed, tcfg, workdir / "rectify", tok)
  out = workdir / "rectify" / "export" / "target"
  out.parent.mkdir(parents=True, exist_ok=True)
  orbax_io.save_params(jax.tree.map(lambda x: jnp.asarray(x, jnp.bfloat16),
                                    jax.device_get(state.model_params())),
                       out, model.cfg, overwrite=True)


def _evaluate(config, workdir: pathlib.Path, tok) -> None:
  # pylint: disable=g-import-not-at-top
  from auditdm_jax.audit import run as run_lib
  from auditdm_jax.eval import world_bench
  root = run_lib.zoo_root(config.audit)
  kw = {}
  if config.evaluate.get("examples_per_split"):
    kw["examples_per_split"] = config.evaluate.examples_per_split
  sources = world_bench.bench_sources(workdir / "bench_data", **kw)
  limit = config.evaluate.limit or None
  result = {}
  for name, path in (("before", root / config.audit.target),
                     ("after", workdir / "rectify" / "export" / "target"),
                     *((f"reference:{n}", root / n)
                       for n in config.audit.references)):
    model, params = world_bench.load_export(path)
    acc = world_bench.bench_accuracy(
        world_bench.model_answer_fn(model, params, tok), sources, limit=limit)
    acc["mean"] = float(np.mean(list(acc.values())))
    result[name] = acc
  result["gaps"] = sorted(set(_gaps(root).values()))
  _write_json(workdir / "eval.json", result)


def _png_b64(image: Any) -> str:
  from auditdm_jax.imaging.base import Picture  # pylint: disable=g-import-not-at-top
  if isinstance(image, (bytes, bytearray)):
    return base64.b64encode(bytes(image)).decode()
  return base64.b64encode(Picture(np.asarray(image, np.uint8)).to_png()
                          ).decode()


def report_data(config, workdir: pathlib.Path, max_examples: int = 6
                ) -> dict[str, Any]:
  """The ReportData JSON of a finished loop (`discover.report` schema)."""
  # pylint: disable=g-import-not-at-top
  from auditdm_jax.discover import dataset as dataset_lib
  from auditdm_jax.discover import harvest as harvest_lib
  from auditdm_jax.rl import loop as rl_loop
  tax = json.loads((workdir / "taxonomy.json").read_text())
  ev = json.loads((workdir / "eval.json").read_text())
  records = {}
  if tax.get("types"):
    ds = dataset_lib.read_failures(workdir / "harvest", decode_images=False)
    records = {ds[i]["id"]: ds[i] for i in range(len(ds))}
  types = []
  for t in tax.get("types", []):
    exs = []
    for eid in t["example_ids"][:max_examples]:
      rec = records[eid]
      mode = rec["mode"]
      exs.append({
          "id": eid, "mode": mode, "kind": rec["kind"],
          "auditor": rec["auditor"], "skill": rec["skill"] or None,
          "question": rec["question"], "instruction": rec["instruction"],
          "target_answer": rec["target_answer"],
          "reference_answers": dict(zip(rec["reference_models"],
                                        rec["reference_answers"])),
          "consensus": rec["consensus"] or None,
          "truth": rec["truth"] or None,
          "original_png": _png_b64(rec["original_image"]),
          "counterfactual_png": (None if mode == "question"
                                 else _png_b64(rec["image"]))})
    types.append({"name": t["name"], "top_terms": t["top_terms"],
                  "count": t["count"], "rate": t.get("rate"),
                  "examples": exs})
  asked = harvest_lib.read_asked(workdir / "harvest")
  rates = []
  for name in ("trained", "untrained"):
    mine = [a for a in asked if a["auditor"] == name]
    verified = [a for a in mine if a.get("truth") is not None
                and a.get("error") is None]
    wrong = sum(a["target_answer"] is not None and
                _norm(a["target_answer"]) != _norm(a["truth"])
                for a in verified)
    rates.append({"label": f"{name} auditor: target wrong (oracle)",
                  "successes": int(wrong), "n": len(mine)})
  benchmarks = {s: {"before": ev["before"][s], "after": ev["after"][s]}
                for s in ev["before"] if s != "mean"}
  return {
      "title": "AuditDM on the scene world",
      "summary": {
          "audited": ("a tiny PaliGemma-2 target with planted gaps "
                      f"({', '.join(ev.get('gaps', []))}) against "
                      f"{len(config.audit.references)} references"),
          "runs": {"target": config.audit.target,
                   "references": ", ".join(config.audit.references),
                   "auditor": "GRPO from the zoo initialisation"},
          "counts": {"pairs asked": len(asked),
                     "failures kept": int(tax.get("num_failures", 0)),
                     "failure types": len(types)},
          "rates": rates},
      "failure_types": types,
      "reward_curve": [[int(s), float(v)] for s, v in
                       rl_loop.reward_curve(workdir / "audit")],
      "benchmarks": benchmarks,
  }


def _norm(s: str) -> str:
  from auditdm_jax.audit.judge import normalize_answer  # pylint: disable=g-import-not-at-top
  return normalize_answer(s)


def _report(config, workdir: pathlib.Path) -> None:
  from auditdm_jax.discover import report  # pylint: disable=g-import-not-at-top
  data = report_data(config, workdir)
  report.write_report(report.ReportData.from_json(data), workdir / "report")


# --- The loop -------------------------------------------------------------------


def run_loop(config, workdir: PathLike) -> dict[str, Any]:
  """Runs (or resumes) every stage; writes and returns summary.json."""
  from auditdm_jax.audit import run as run_lib  # pylint: disable=g-import-not-at-top
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  tok = run_lib.tokenizer_of(config.audit)
  st = _Stages(workdir)
  st.run("audit", lambda: (workdir / "audit/export/auditor.json").exists(),
         lambda: _audit(config, workdir))
  st.run("harvest", lambda: (workdir / "harvest/summary.json").exists(),
         lambda: _harvest(config, workdir, tok))
  st.run("taxonomy", lambda: (workdir / "taxonomy.json").exists(),
         lambda: _taxonomy(config, workdir))
  st.run("rectify",
         lambda: (workdir / "rectify/export/target/_CHECKPOINT_METADATA"
                  ).exists() or (workdir / "rectify/export/target").is_dir(),
         lambda: _rectify(config, workdir, tok))
  st.run("evaluate", lambda: (workdir / "eval.json").exists(),
         lambda: _evaluate(config, workdir, tok))
  st.run("report", lambda: (workdir / "report/index.html").exists(),
         lambda: _report(config, workdir))
  ev = json.loads((workdir / "eval.json").read_text())
  tax = json.loads((workdir / "taxonomy.json").read_text())
  summary = {"stages_s": st.times, "total_s": sum(st.times.values()),
             "eval": ev, "failures": tax.get("num_failures", 0),
             "types": [t["name"] for t in tax.get("types", [])],
             "gaps_found": (tax.get("gaps") or {}).get("found"),
             "report": str(workdir / "report" / "index.html")}
  _write_json(workdir / "summary.json", summary)
  print(format_summary(summary), flush=True)
  return summary


def format_summary(summary: Mapping[str, Any]) -> str:
  ev = summary["eval"]
  gaps = set(ev.get("gaps", []))
  splits = [s for s in ev["before"] if s != "mean"]
  lines = [f"{'split':<18} {'before':>7} {'after':>7}"]
  for s in [*splits, "mean"]:
    star = "*" if s in gaps else " "
    lines.append(f"{s + star:<18} {ev['before'][s]:>7.3f} "
                 f"{ev['after'][s]:>7.3f}")
  lines.append(f"failures harvested: {summary['failures']}; types: "
               f"{len(summary['types'])}; planted gaps found: "
               f"{summary['gaps_found']}")
  lines.append("stage seconds: " + ", ".join(
      f"{k} {v:.0f}" for k, v in summary["stages_s"].items())
               + f"; total {summary['total_s']:.0f}")
  lines.append(f"report: {summary['report']}")
  return "\n".join(lines)

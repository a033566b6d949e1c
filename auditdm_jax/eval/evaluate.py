r"""Benchmark evaluation of models and of a training run's checkpoints.

  python -m auditdm_jax.eval.evaluate --workdir RUN --data_dir D \
      --benchmark vqav2:val --benchmark mmbench_v11:dev --tokenizer T \
      [--which latest|each] [--watch --poll 60 --stop_after 3600] [--limit N]
  python -m auditdm_jax.eval.evaluate --checkpoint CKPT ...   # one export

Predictions are greedy decodes of a per-task prompt (below) with the
model's own layout (`sampling.generate`), scored by the benchmark's metric
(`eval.scorers`) on the examples prepared by `data.bench`. A run's
checkpoints (`RUN/checkpoints/<step>`, the SFT / rectification trainer's)
are restored with their saved TrainConfig (LoRA merged) one at a time; each
step's scores go to `RUN/eval/<step>.json` (written atomically; a step that
has its file is not evaluated again). `--watch` keeps polling for new
checkpoints — the evaluator beside a training job.

Prompts by task (PaliGemma's task prefixes; Gemma-3 gets the same text in
its chat turn):

  vqa / yes_no     "answer en <question>"
  multiple_choice  "answer en <hint>\n<question>\nA. ..\nB. ..\nAnswer with
                   the option's letter."
  caption          "caption en"
  grounding        "detect <referring expression>"   (-> <loc> tokens)
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import pathlib
import sys
import time
from collections.abc import Sequence
from typing import Any, Optional, Union

import numpy as np

from auditdm_jax import atomic_io

PathLike = Union[str, os.PathLike]
LETTERS = "ABCDEFGHIJ"


def prompt_for(task: str, example: Any) -> str:
  """The prompt text of one benchmark example (module docstring)."""
  q = example.question.strip()
  if task in ("vqa", "yes_no"):
    return f"answer en {q}"
  if task == "multiple_choice":
    lines = [example.hint.strip()] if example.hint.strip() else []
    lines.append(q)
    lines += [f"{LETTERS[i]}. {o}" for i, o in enumerate(example.options)]
    lines.append("Answer with the option's letter.")
    return "answer en " + "\n".join(lines)
  if task == "caption":
    return "caption en"
  if task == "grounding":
    return f"detect {q}"
  raise ValueError(f"no prompt for task {task!r}")


def _rgb(image_bytes: bytes) -> np.ndarray:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(io.BytesIO(image_bytes)) as im:
    return np.asarray(im.convert("RGB"), np.uint8)


def predict(model, params, tokenizer, benchmark: str, examples: Sequence[Any],
            *, batch_size: int = 64, max_new_tokens: int = 16,
            image_preprocess: str = "siglip") -> list[str]:
  """Greedy predictions of `model` on benchmark examples."""
  from auditdm_jax.data.bench import schema  # pylint: disable=g-import-not-at-top
  from auditdm_jax.sampling import generate as generate_lib  # pylint: disable=g-import-not-at-top
  task = schema.get_benchmark(benchmark).task
  texts = [prompt_for(task, e) for e in examples]
  images = [_rgb(e.image) for e in examples]
  return generate_lib.generate(
      model, params, tokenizer, texts, images, max_new_tokens=max_new_tokens,
      batch_size=batch_size, image_preprocess=image_preprocess)


def evaluate_params(model, params, tokenizer, data_dir: PathLike,
                    benchmarks: Sequence[tuple[str, str]], *,
                    limit: Optional[int] = None, **kw) -> dict[str, Any]:
  """{"<benchmark>:<split>": scores} of one set of params."""
  # pylint: disable=g-import-not-at-top
  from auditdm_jax.data import bench
  from auditdm_jax.eval import scorers
  out = {}
  for name, split in benchmarks:
    examples = bench.load_examples(data_dir, name, split)
    if limit:
      examples = examples[:limit]
    preds = predict(model, params, tokenizer, name, examples, **kw)
    out[f"{name}:{split}"] = scorers.score_benchmark(name, preds, examples)
  return out


def checkpoint_steps(workdir: PathLike) -> list[int]:
  """The steps of a training run's checkpoints (committed ones only)."""
  from auditdm_jax.train import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  d = pathlib.Path(workdir) / "checkpoints"
  if not d.is_dir():
    return []
  ck = ckpt_lib.Checkpointer(d, async_save=False)
  try:
    return ck.all_steps()
  finally:
    ck.close()


def restore_params(workdir: PathLike, step: int):
  """(Model, params with LoRA merged) of checkpoint `step` of a run."""
  # pylint: disable=g-import-not-at-top
  from auditdm_jax.train import checkpoint as ckpt_lib
  from auditdm_jax.train import state as state_lib
  from auditdm_jax.train.config import TrainConfig
  ck = ckpt_lib.Checkpointer(pathlib.Path(workdir) / "checkpoints",
                             async_save=False)
  try:
    cfg_dict = ck.read_json("config", step)
    if cfg_dict is None:
      raise FileNotFoundError(f"checkpoint {step} of {workdir} has no config")
    config = TrainConfig.from_dict(cfg_dict)
    model = state_lib.make_model(config)
    state, _ = ck.restore(state_lib.abstract_state(model, config), step=step)
  finally:
    ck.close()
  return model, state.model_params()


def _write_json(path: pathlib.Path, obj: Any) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  atomic_io.write_json(path, obj, sort_keys=True)


def evaluate_workdir(workdir: PathLike, tokenizer, data_dir: PathLike,
                     benchmarks: Sequence[tuple[str, str]], *,
                     which: str = "latest", watch: bool = False,
                     poll_s: float = 60.0, stop_after_s: float = 0.0,
                     **kw) -> dict[int, dict]:
  """Scores the run's checkpoints; {step: scores} of those done now.

  which: "latest" (only the newest checkpoint) or "each" (every one).
  watch: keep polling for new checkpoints until `stop_after_s` (0 = until
    interrupted) has passed since the call.
  """
  if which not in ("latest", "each"):
    raise ValueError(f"which must be 'latest' or 'each', got {which!r}")
  workdir = pathlib.Path(workdir)
  done: dict[int, dict] = {}
  t0 = time.monotonic()
  while True:
    steps = checkpoint_steps(workdir)
    if which == "latest":
      steps = steps[-1:]
    for step in steps:
      out = workdir / "eval" / f"{step}.json"
      if out.exists():
        done[step] = json.loads(out.read_text())
        continue
      model, params = restore_params(workdir, step)
      scores = evaluate_params(model, params, tokenizer, data_dir, benchmarks,
                               **kw)
      _write_json(out, {"step": step, "scores": scores})
      done[step] = {"step": step, "scores": scores}
      logging.info("evaluated step %d: %s", step, scores)
    if not watch or (stop_after_s and time.monotonic() - t0 > stop_after_s):
      return done
    time.sleep(poll_s)


def _benchmarks(specs: Sequence[str]) -> list[tuple[str, str]]:
  from auditdm_jax.data.bench import schema  # pylint: disable=g-import-not-at-top
  out = []
  for spec in specs:
    name, sep, split = spec.partition(":")
    if not sep or not split:
      raise ValueError(f"--benchmark wants NAME:SPLIT, got {spec!r}")
    schema.get_benchmark(name)
    out.append((name, split))
  return out


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  src = p.add_mutually_exclusive_group(required=True)
  src.add_argument("--workdir", help="a training run (its checkpoints/)")
  src.add_argument("--checkpoint", help="a params export (convert/orbax_io)")
  p.add_argument("--data_dir", required=True)
  p.add_argument("--benchmark", action="append", default=[],
                 help="NAME:SPLIT, repeatable")
  p.add_argument("--tokenizer", required=True)
  p.add_argument("--which", default="latest", choices=("latest", "each"))
  p.add_argument("--watch", action="store_true")
  p.add_argument("--poll", type=float, default=60.0)
  p.add_argument("--stop_after", type=float, default=0.0)
  p.add_argument("--limit", type=int, default=0)
  p.add_argument("--batch_size", type=int, default=64)
  p.add_argument("--max_new_tokens", type=int, default=16)
  p.add_argument("--image_preprocess", default="siglip")
  p.add_argument("--out", default="")
  args = p.parse_args(argv)
  # pylint: disable=g-import-not-at-top
  from auditdm_jax.tokenizer import Tokenizer
  try:
    benchmarks = _benchmarks(args.benchmark)
    if not benchmarks:
      raise ValueError("give at least one --benchmark NAME:SPLIT")
    tok = Tokenizer(args.tokenizer)
    kw = dict(limit=args.limit or None, batch_size=args.batch_size,
              max_new_tokens=args.max_new_tokens,
              image_preprocess=args.image_preprocess)
    if args.checkpoint:
      from auditdm_jax.eval import world_bench
      model, params = world_bench.load_export(args.checkpoint)
      result: Any = evaluate_params(model, params, tok, args.data_dir,
                                    benchmarks, **kw)
    else:
      result = evaluate_workdir(args.workdir, tok, args.data_dir, benchmarks,
                                which=args.which, watch=args.watch,
                                poll_s=args.poll,
                                stop_after_s=args.stop_after, **kw)
      if not result:
        raise FileNotFoundError(f"no checkpoints in {args.workdir}")
  except (ValueError, KeyError, FileNotFoundError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  text = json.dumps(result, indent=2, sort_keys=True, default=str)
  if args.out:
    _write_json(pathlib.Path(args.out), result)
  print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())

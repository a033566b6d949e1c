"""Source images for audits: indexable `SourceItem`s.

  sources = WorldSources(1000, seed=7)        # world images + their questions
  sources[3].picture.scene                    # the scene graph (JSON)

World sources are training-side scenes (never `world_tfds.is_bench_scene`,
so nothing an audit finds is a benchmark image) with one question of the
world VQA distribution each — the dataset's own Q that the (Q, I*) mode
asks about a counterfactual image. Item i is a pure function of (seed, i)
and is rendered on access, so a pool of any size costs nothing up front.
"""

from __future__ import annotations

from auditdm_jax.audit.rollout import SourceItem
from auditdm_jax.data import world_tfds
from auditdm_jax.imaging.base import Picture

NAMESPACE = "world_audit"


class WorldSources:
  """`n` world source items; item i depends only on (seed, i)."""

  def __init__(self, n: int, seed: int = 0, *, namespace: str = NAMESPACE):
    if n < 1:
      raise ValueError(f"a source pool needs n >= 1, got {n}")
    self.n, self.seed, self.namespace = int(n), int(seed), namespace

  def __len__(self) -> int:
    return self.n

  def __getitem__(self, i: int) -> SourceItem:
    i = int(i)
    if not 0 <= i < self.n:
      raise IndexError(f"source {i} out of range [0, {self.n})")
    rng = world_tfds.example_rng(self.namespace, self.seed, i)
    ex = world_tfds.sample_example(rng, held_out=False)
    return SourceItem(
        id=f"{self.namespace}/{self.seed}/{i}",
        picture=Picture(pixels=ex["image"], scene=ex["scene"].to_json()),
        question=ex["question"], answer=ex["answer"])

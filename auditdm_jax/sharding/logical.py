"""Activation shardings by logical axis names (MaxText style, 10x smaller).

Model code names the dimensions of an activation and stays mesh-agnostic:

  x = constrain(x, ("act_batch", "act_len", "act_emb"))          # [B, T, D]

A rules table maps logical names to mesh axes. It is an ordered list and the
FIRST entry for a name wins (a dict would silently let a later duplicate win,
MaxText #4205). One tensor may not use a physical mesh axis twice: that is a
ValueError naming the tensor's logical axes, not an XLA error later.

Default names (B batch, T length, D model dim, N / K query / kv heads,
F MLP hidden, V vocab; the vision tower has its own names because its
[images, patches, width] activations differ from the text ones, MaxText
PR #1768):

  act_batch    B    ('data', 'fsdp')   batch split over both data axes
  act_len      T    None
  act_emb      D    None               model dim whole: no all-gather per norm
  act_heads    N    'tensor'           column-parallel attention output
  act_kv_heads K    'tensor'           KV cache / keys, when K divides
  act_mlp      F    'tensor'           column-parallel MLP hidden
  act_vocab    V    'tensor'           logits split by vocab (tied embedding)
  vis_batch         ('data', 'fsdp')
  vis_len           None
  vis_emb           None
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AxisNames = Union[None, str, tuple[str, ...]]
LogicalRules = Sequence[tuple[str, AxisNames]]

DEFAULT_RULES: tuple[tuple[str, AxisNames], ...] = (
    ("act_batch", ("data", "fsdp")),
    ("act_len", None),
    ("act_emb", None),
    ("act_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
    ("vis_batch", ("data", "fsdp")),
    ("vis_len", None),
    ("vis_emb", None),
)


def _axes(value: AxisNames) -> tuple[str, ...]:
  if value is None:
    return ()
  return (value,) if isinstance(value, str) else tuple(value)


def _lookup(name: str, rules: LogicalRules) -> tuple[str, ...]:
  for rule_name, value in rules:  # first match wins
    if rule_name == name:
      return _axes(value)
  raise ValueError(f"logical axis {name!r} has no rule; known: "
                   f"{sorted({n for n, _ in rules})}")


def logical_to_spec(names: Sequence[Optional[str]],
                    rules: LogicalRules = DEFAULT_RULES,
                    shape: Optional[Sequence[int]] = None,
                    mesh_shape: Optional[dict[str, int]] = None
                    ) -> PartitionSpec:
  """PartitionSpec for a tensor whose dimensions have logical `names`.

  Args:
    names: one logical name (or None = replicated) per dimension.
    rules: ordered [(logical name, mesh axis | tuple | None)].
    shape, mesh_shape: when both are given, mesh axes absent from the mesh
      are dropped, and for each dimension only the longest prefix of its mesh
      axes whose size product divides the dimension is kept (e.g. a batch of
      2 on data=2, fsdp=2 is split over 'data' only), so odd shapes degrade
      to less sharding instead of failing.
  Raises:
    ValueError: unknown logical name, a physical axis used twice, or a
      shape of the wrong rank.
  """
  if shape is not None and len(shape) != len(names):
    raise ValueError(f"logical names {tuple(names)} do not fit shape "
                     f"{tuple(shape)}")
  used: dict[str, str] = {}
  entries = []
  for i, name in enumerate(names):
    axes = () if name is None else _lookup(name, rules)
    for a in axes:
      if a in used:
        raise ValueError(
            f"logical axes {tuple(names)}: {name!r} and {used[a]!r} both map "
            f"to mesh axis {a!r}; a tensor may use each mesh axis once")
      used[a] = name
    if mesh_shape is not None:
      axes = tuple(a for a in axes if a in mesh_shape)
      if shape is not None:
        while axes and shape[i] % math.prod(mesh_shape[a] for a in axes):
          axes = axes[:-1]
    entries.append(None if not axes else axes[0] if len(axes) == 1 else axes)
  while entries and entries[-1] is None:
    entries.pop()
  return PartitionSpec(*entries)


def constrain(x: jax.Array, names: Sequence[Optional[str]],
              rules: LogicalRules = DEFAULT_RULES,
              mesh: Optional[Mesh] = None) -> jax.Array:
  """`with_sharding_constraint` by logical names; x unchanged without a mesh.

  The mesh is `mesh` if given, else the ambient one from `jax.set_mesh`;
  with neither (unit tests, single-device scripts) this is the identity, so
  model code can call it unconditionally.
  """
  if mesh is None:
    abstract = jax.sharding.get_abstract_mesh()
    if abstract.empty:
      return x
    spec = logical_to_spec(names, rules, x.shape, dict(abstract.shape))
    return jax.lax.with_sharding_constraint(x, spec)
  spec = logical_to_spec(names, rules, x.shape, dict(mesh.shape))
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def named_sharding(mesh: Mesh, names: Sequence[Optional[str]],
                   rules: LogicalRules = DEFAULT_RULES,
                   shape: Optional[Sequence[int]] = None) -> NamedSharding:
  """NamedSharding by logical names (jit in/out_shardings, inputs, caches)."""
  spec = logical_to_spec(names, rules, shape, dict(mesh.shape))
  return NamedSharding(mesh, spec)

"""Device mesh with the fixed axes ('data', 'fsdp', 'tensor').

  mesh = make_mesh([("data", -1), ("fsdp", 2), ("tensor", 1)])

Axis legend:
  data    pure data parallelism: batch split, params replicated.
  fsdp    fully sharded data parallelism: batch split and params split.
  tensor  tensor (model) parallelism: heads / MLP hidden / vocab split.

Axes missing from the spec have size 1, and one size may be -1 ("all the
devices left over"), as MaxText's `ici_*_parallelism`. The mesh uses `Auto`
axis types (classic GSPMD propagation): jax 0.10's `jax.make_mesh` defaults to
`Explicit` axes, which would turn every sharding into part of the array type.
"""

from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence, Union

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

AXES = ("data", "fsdp", "tensor")

MeshSpec = Union[Sequence[tuple[str, int]], Mapping[str, int]]


def resolve_mesh_shape(spec: MeshSpec, num_devices: int) -> tuple[int, ...]:
  """Sizes of ('data', 'fsdp', 'tensor') for `num_devices` devices.

  Args:
    spec: [(axis, size), ...] or {axis: size}; sizes are positive ints or -1
      (at most one), axes a subset of AXES; absent axes get size 1.
    num_devices: how many devices the mesh must cover exactly.
  Raises:
    ValueError: unknown / repeated axis, bad size, two -1s, or sizes whose
      product is not `num_devices`.
  """
  items = list(spec.items()) if isinstance(spec, Mapping) else list(spec)
  sizes: dict[str, int] = {}
  for item in items:
    if len(item) != 2:
      raise ValueError(
          f"mesh spec entries are (axis, size) pairs, got {item!r}")
    name, size = item
    if name not in AXES:
      raise ValueError(f"unknown mesh axis {name!r}; axes are {AXES}")
    if name in sizes:
      raise ValueError(f"mesh axis {name!r} given twice in {items}")
    if not isinstance(size, (int, np.integer)) or (size < 1 and size != -1):
      raise ValueError(f"mesh axis {name!r}: size must be a positive int or "
                       f"-1, got {size!r}")
    sizes[name] = int(size)
  auto = [n for n, s in sizes.items() if s == -1]
  if len(auto) > 1:
    raise ValueError(f"at most one mesh axis may be -1, got {auto}")
  fixed = math.prod(s for s in sizes.values() if s != -1)
  if auto:
    if num_devices % fixed:
      raise ValueError(
          f"cannot fill mesh axis {auto[0]!r}: the other axes multiply to "
          f"{fixed}, which does not divide the {num_devices} devices "
          f"(spec {items})")
    sizes[auto[0]] = num_devices // fixed
  shape = tuple(sizes.get(n, 1) for n in AXES)
  if math.prod(shape) != num_devices:
    raise ValueError(
        f"mesh {dict(zip(AXES, shape))} has {math.prod(shape)} devices but "
        f"there are {num_devices} (spec {items}); use -1 on one axis to fill")
  return shape


def make_mesh(spec: MeshSpec = (("data", -1),),
              devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A Mesh over `devices` (default: all) with axes AXES and Auto axis types.

  The device order comes from `mesh_utils.create_device_mesh` when it can
  lay the shape out on the physical topology (TPU ICI rings), else from the
  plain device list.
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = resolve_mesh_shape(spec, len(devices))
  try:
    grid = mesh_utils.create_device_mesh(shape, devices)
  except (ValueError, NotImplementedError, AssertionError):
    # Topology-aware layout is optional (e.g. odd shapes on TPU); any order
    # is correct, only communication cost differs.
    grid = np.asarray(devices, dtype=object).reshape(shape)
  return Mesh(grid, AXES, axis_types=(AxisType.Auto,) * len(AXES))


def axis_size(mesh: Mesh, axes) -> int:
  """Product of the sizes of one mesh axis name or a tuple of them."""
  if axes is None:
    return 1
  if isinstance(axes, str):
    axes = (axes,)
  return math.prod(mesh.shape[a] for a in axes)


def replicated(mesh: Mesh) -> NamedSharding:
  """Fully replicated sharding on `mesh` (scalars, rng keys, small state)."""
  return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, ndim: int = 1,
                   batch_axes: tuple[str, ...] = ("data", "fsdp")
                   ) -> NamedSharding:
  """Leading dim split over `batch_axes`, the other `ndim - 1` replicated."""
  return NamedSharding(mesh, PartitionSpec(batch_axes, *([None] * (ndim - 1))))

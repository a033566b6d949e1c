"""Parameter shardings from an ordered regex table (big_vision style).

A strategy is a sequence of `(regex, rule)` pairs. Each parameter's path
(dict keys joined by '/', e.g. 'llm/layers/attn/q_einsum/w') is matched with
`re.fullmatch` against the regexes in order; the FIRST match decides its
rule. A path that matches nothing is an error, so a new parameter can never
be placed by accident.

Rules are strings naming constructors from a small registry, so a strategy
is plain data that fits in an ml_collections config:

  "replicate"                         every device holds the whole array.
  "fsdp(axis='fsdp', min_size_mb=0)"  split the largest dimension that the
                                      axis size divides; replicate when none
                                      does or the array is under min_size_mb.
  "shard_dim(dim, axis, strict=True)" split dimension `dim` (negative counts
                                      from the end) over `axis`; with
                                      strict=False, skip it when the axis
                                      size does not divide the dimension.

Rules chain with '+', applied left to right, each one only touching
dimensions and mesh axes still free: "shard_dim(1, 'tensor') + fsdp()"
splits heads over 'tensor' and then the largest remaining dimension over
'fsdp'. `axis` may be one mesh axis or a tuple of them. Mesh axes of size 1
are left out of the specs, so a plan reads the same on any mesh.

Everything works on ShapeDtypeStruct trees (`Model.abstract_params()`), so
real-size models can be planned on a laptop: see `describe`.

Letters in the layout comments: L layers, N query heads, K kv heads, H head
dim, D model dim, F MLP hidden, V vocab, W vision width, M vision heads,
C vision head dim (or the 2 of fused k/v and gate/up weights).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import math
import re
from typing import Any, Callable, Optional, Sequence, Union

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from auditdm_jax.sharding.mesh import axis_size

AxisNames = Union[str, tuple[str, ...]]
Strategy = Sequence[tuple[str, str]]
# One entry per array dimension: None (replicated) or the mesh axes used.
_DimSpec = list[Optional[tuple[str, ...]]]


def _as_axes(axis: AxisNames) -> tuple[str, ...]:
  axes = (axis,) if isinstance(axis, str) else tuple(axis)
  if not axes or not all(isinstance(a, str) for a in axes):
    raise ValueError(
        f"axis must be a mesh axis name or a tuple of them, got {axis!r}")
  return axes


def _free(axes: tuple[str, ...], spec: _DimSpec, mesh: Mesh) -> tuple[str, ...]:
  """`axes` minus those of size 1; () if any of them is already in `spec`."""
  unknown = [a for a in axes if a not in mesh.shape]
  if unknown:
    raise ValueError(f"mesh axes {unknown} not in mesh {dict(mesh.shape)}")
  used = {a for d in spec if d for a in d}
  if used & set(axes):
    return ()
  return tuple(a for a in axes if mesh.shape[a] > 1)


# --- Rules --------------------------------------------------------------------
# Each rule maps (spec so far, shape, itemsize, mesh) -> refined spec.

@dataclasses.dataclass(frozen=True)
class Replicate:
  """Leaves the array replicated (whatever earlier chained rules did stays)."""

  def __call__(self, spec, shape, itemsize, mesh):
    return spec


@dataclasses.dataclass(frozen=True)
class Fsdp:
  """Splits the largest free dimension that the axis size divides."""
  axis: AxisNames = "fsdp"
  min_size_mb: float = 0.0

  def __call__(self, spec, shape, itemsize, mesh):
    axes = _free(_as_axes(self.axis), spec, mesh)
    if not axes:
      return spec
    # Small arrays (norm scales, biases) cost more in collectives than they
    # save in memory.
    if math.prod(shape) * itemsize < self.min_size_mb * 2**20:
      return spec
    n = axis_size(mesh, axes)
    candidates = [i for i, s in enumerate(shape)
                  if spec[i] is None and s % n == 0]
    if not candidates:
      return spec
    # Ties go to the later dimension: stacked weights lead with L, and
    # splitting the scanned axis would force a gather every layer.
    best = max(candidates, key=lambda i: (shape[i], i))
    spec = list(spec)
    spec[best] = axes
    return spec


@dataclasses.dataclass(frozen=True)
class ShardDim:
  """Splits dimension `dim` over `axis`."""
  dim: int
  axis: AxisNames
  strict: bool = True

  def __call__(self, spec, shape, itemsize, mesh):
    ndim = len(shape)
    if not -ndim <= self.dim < ndim:
      raise ValueError(f"shard_dim({self.dim}) out of range for shape {shape}")
    dim = self.dim % ndim
    axes = _free(_as_axes(self.axis), spec, mesh)
    if not axes:
      return spec
    if spec[dim] is not None:
      raise ValueError(f"shard_dim({self.dim}): dimension already split over "
                       f"{spec[dim]}")
    n = axis_size(mesh, axes)
    if shape[dim] % n:
      if self.strict:
        raise ValueError(
            f"shard_dim({self.dim}, {self.axis!r}): size {shape[dim]} of shape "
            f"{shape} is not divisible by {n}; use strict=False to skip")
      return spec
    spec = list(spec)
    spec[dim] = axes
    return spec


RULES: dict[str, Callable[..., Any]] = {
    "replicate": Replicate,
    "fsdp": Fsdp,
    "shard_dim": ShardDim,
}


@functools.lru_cache(maxsize=None)
def parse_rule(text: str) -> tuple[Any, ...]:
  """'shard_dim(1, "tensor") + fsdp()' -> (ShardDim(1, 'tensor'), Fsdp()).

  Only registry names with literal arguments are accepted (parsed with `ast`,
  never evaluated), so configs cannot run code.
  """
  try:
    tree = ast.parse(text.strip(), mode="eval").body
  except SyntaxError as e:
    raise ValueError(f"cannot parse sharding rule {text!r}: {e}") from None

  def terms(node):
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
      return terms(node.left) + terms(node.right)
    return [node]

  out = []
  for node in terms(tree):
    if isinstance(node, ast.Name):
      name, args, kwargs = node.id, [], {}
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
      name = node.func.id
      try:
        args = [ast.literal_eval(a) for a in node.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
      except ValueError:
        raise ValueError(f"sharding rule {text!r}: arguments must be "
                         "literals") from None
    else:
      raise ValueError(f"sharding rule {text!r}: expected name(args...) terms "
                       "joined by '+'")
    if name not in RULES:
      raise ValueError(f"unknown sharding rule {name!r} in {text!r}; known: "
                       f"{sorted(RULES)}")
    try:
      out.append(RULES[name](*args, **kwargs))
    except TypeError as e:
      raise ValueError(f"sharding rule {text!r}: {e}") from None
  return tuple(out)


# --- Paths --------------------------------------------------------------------

def _key_str(k) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def path_str(path) -> str:
  """A jax key path as 'a/b/c' (dict keys, attribute names, list indices)."""
  return "/".join(_key_str(k) for k in path)


def tree_paths(tree) -> list[str]:
  """'/'-joined paths of every leaf, in leaf order."""
  return [path_str(p) for p, _ in jax.tree_util.tree_leaves_with_path(tree)]


def match_strategy(paths: Sequence[str], strategy: Strategy) -> list[int]:
  """Index of the first matching strategy entry for each path.

  Raises:
    ValueError: listing every path no regex matches.
  """
  compiled = [(re.compile(rx), rule) for rx, rule in strategy]
  found, unmatched = [], []
  for p in paths:
    idx = next((i for i, (rx, _) in enumerate(compiled) if rx.fullmatch(p)),
               None)
    if idx is None:
      unmatched.append(p)
    found.append(idx)
  if unmatched:
    raise ValueError(
        "no sharding rule matches these parameters (add a regex or a final "
        "('.*', 'replicate')):\n  " + "\n  ".join(unmatched))
  return found


# --- Public API ---------------------------------------------------------------

def _to_partition_spec(spec: _DimSpec) -> PartitionSpec:
  entries = [None if d is None else (d[0] if len(d) == 1 else d) for d in spec]
  while entries and entries[-1] is None:  # P(a, None) == P(a); keep it short
    entries.pop()
  return PartitionSpec(*entries)


def partition_spec(shape: Sequence[int], dtype, rule: str,
                   mesh: Mesh) -> PartitionSpec:
  """The PartitionSpec that `rule` gives an array of `shape` / `dtype`."""
  spec: _DimSpec = [None] * len(shape)
  itemsize = np.dtype(dtype).itemsize
  for r in parse_rule(rule):
    spec = r(spec, tuple(shape), itemsize, mesh)
  return _to_partition_spec(spec)


def param_shardings(params, mesh: Mesh, strategy: Strategy):
  """Pytree of NamedSharding matching `params`.

  Args:
    params: arrays or ShapeDtypeStructs (anything with .shape and .dtype).
    mesh: the device mesh.
    strategy: [(regex, rule), ...]; first full match per '/'-joined path wins.
  """
  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  paths = [path_str(p) for p, _ in leaves]
  idx = match_strategy(paths, strategy)
  # Parse every rule, used or not, so a typo fails on any model.
  for _, r in strategy:
    parse_rule(r)
  out = [NamedSharding(mesh, partition_spec(x.shape, x.dtype,
                                            strategy[i][1], mesh))
         for (_, x), i in zip(leaves, idx)]
  return jax.tree_util.tree_unflatten(treedef, out)


def shard_params(params, shardings):
  """Places `params` on the devices as `shardings` says (jax.device_put)."""
  return jax.device_put(params, shardings)


def abstract_with_shardings(abstract, shardings):
  """ShapeDtypeStructs with shardings (jit `out_shardings`, Orbax restore)."""
  return jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
      abstract, shardings)


def bytes_per_device(params, shardings) -> int:
  """Parameter bytes held by the busiest device (shards are even here)."""
  total = 0
  for x, s in zip(jax.tree.leaves(params), jax.tree.leaves(shardings)):
    shard = s.shard_shape(tuple(x.shape))
    total += math.prod(shard) * np.dtype(x.dtype).itemsize
  return total


def describe(params, shardings) -> str:
  """Table of path, shape, spec and per-device shard shape, one per line."""
  rows = []
  leaves = jax.tree_util.tree_leaves_with_path(params)
  for (path, x), s in zip(leaves, jax.tree.leaves(shardings)):
    rows.append(f"{path_str(path):72s} {str(tuple(x.shape)):22s} "
                f"{str(tuple(s.spec)):36s} {s.shard_shape(tuple(x.shape))}")
  total = sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize
              for x in jax.tree.leaves(params))
  rows.append(f"total {total / 2**30:.3f} GiB, per device "
              f"{bytes_per_device(params, shardings) / 2**30:.3f} GiB")
  return "\n".join(rows)


# --- The default for PaliGemma-2 / Gemma-3 ------------------------------------
# Megatron-style tensor parallelism inside each block (column-parallel
# q / kv / gating split their output heads / hidden, row-parallel attn_vec /
# linear split their input heads / hidden, so each block needs one all-reduce
# per sub-layer), then FSDP over the largest dimension left. strict=False
# because K or M need not divide the tensor axis (gemma3_1b has K = 1).
_TP = "shard_dim({dim}, 'tensor', strict=False) + fsdp('fsdp')"

DEFAULT_STRATEGY: tuple[tuple[str, str], ...] = (
    # Decoder, stacked over L.
    (r"llm/layers/attn/q_einsum/w", _TP.format(dim=1)),          # [L, N, D, H]
    (r"llm/layers/attn/kv_einsum/w", _TP.format(dim=2)),         # [L,2,K,D,H]
    (r"llm/layers/attn/attn_vec_einsum/w", _TP.format(dim=1)),   # [L, N, H, D]
    (r"llm/layers/mlp/gating_einsum", _TP.format(dim=2)),        # [L, 2, F, D]
    (r"llm/layers/mlp/linear", _TP.format(dim=1)),               # [L, F, D]
    # Tied embedding / LM head: vocab over 'tensor' (logits come out split
    # by vocab, matching act_vocab), model dim over 'fsdp'.
    (r"llm/embedder/input_embedding", _TP.format(dim=0)),        # [V, D]
    # SigLIP encoder, stacked over depth.
    (r"img/Transformer/encoderblock/MultiHeadDotProductAttention_0/"
     r"(query|key|value)/kernel", _TP.format(dim=2)),             # [L, W, M, C]
    (r"img/Transformer/encoderblock/MultiHeadDotProductAttention_0/"
     r"(query|key|value)/bias",
     "shard_dim(1, 'tensor', strict=False)"),                     # [L, M, C]
    (r"img/Transformer/encoderblock/MultiHeadDotProductAttention_0/out/kernel",
     _TP.format(dim=1)),                                          # [L, M, C, W]
    (r"img/Transformer/encoderblock/MlpBlock_0/Dense_0/kernel",
     _TP.format(dim=2)),                                          # [L, W, F]
    (r"img/Transformer/encoderblock/MlpBlock_0/Dense_0/bias",
     "shard_dim(1, 'tensor', strict=False)"),                     # [L, F]
    (r"img/Transformer/encoderblock/MlpBlock_0/Dense_1/kernel",
     _TP.format(dim=1)),                                          # [L, F, W]
    # Everything else (norms, biases, projector, patch / pos embeddings):
    # FSDP only when big enough to be worth a gather.
    (r".*", "fsdp('fsdp', min_size_mb=4)"),
)

# LoRA factors are tiny next to the base weights; replicating them keeps the
# optimizer update local (tunix / big_vision do the same for adapters).
LORA_STRATEGY: tuple[tuple[str, str], ...] = ((r".*", "replicate"),)

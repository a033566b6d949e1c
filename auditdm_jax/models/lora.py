"""LoRA adapters on the einsum weights, as a separate parameter tree.

  lora = init_lora(params, rank=8, rng=jax.random.key(1), alpha=16)
  logits = model.forward(merge(params, lora), emb)  # grads flow to `lora`

The base params are never modified, so the LoRA-off reference policy (GRPO's
KL anchor) is simply `params`: no second copy of the model is needed.

Each targeted weight W gets factors A, B with delta = A @ B reshaped to W's
shape, and merge gives W + (alpha / rank) * delta. The factorisation splits
W's dimensions into three groups, given by a `Layout`:

  batch   an independent adapter per index (the stacked layer axis L, and the
          fused k/v or gate/up axis C, so each projection gets its own
          adapter as PEFT does for HF's separate k_proj / v_proj);
  inputs  the dimensions contracted with the activation (A's side);
  outputs the rest (B's side).

  A: [*batch, *inputs, R]   normal(0, 1 / sqrt(prod(inputs)))
  B: [*batch, R, *outputs]  zeros, so merge(params, init_lora(...)) == params

Default layouts (letters: L layers, C the 2 of fused weights, N / K query /
kv heads, H head dim, D model dim, F MLP hidden, R rank):

  q_einsum/w        [L, N, D, H]     A [L, D, R]        B [L, R, N, H]
  kv_einsum/w       [L, C, K, D, H]  A [L, C, D, R]     B [L, C, R, K, H]
  attn_vec_einsum/w [L, N, H, D]     A [L, N, H, R]     B [L, R, D]
  gating_einsum     [L, C, F, D]     A [L, C, D, R]     B [L, C, R, F]
  linear            [L, F, D]        A [L, F, R]        B [L, R, D]

All functions are pure and jit-friendly; `Lora` is a pytree whose leaves
are only the factors (scale and layouts are static metadata).

Memory: `merge` materialises W + delta for every target, and its gradient
goes through a full-shape dW before reaching A and B. That is fine for the
tiny and 3-4B models here; for larger ones apply the adapters inside the
einsums instead (x @ A @ B next to x @ W), which needs a hook in the model.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from typing import Any, Mapping, Optional, Sequence

import flax.struct
import jax
import jax.numpy as jnp

# Attention q / kv / attn_vec einsums and MLP gating / linear of the decoder.
DEFAULT_TARGETS = (r"llm/layers/(attn/(q_einsum|kv_einsum|attn_vec_einsum)/w"
                   r"|mlp/(gating_einsum|linear))")

_RANK = "R"
_STACK = "L"


@dataclasses.dataclass(frozen=True)
class Layout:
  """How one weight splits into LoRA factors.

  dims: one letter per dimension of the unstacked weight (a weight with one
    more dimension is taken as stacked over a leading L).
  inputs: the letters contracted with the activation.
  batch: letters that get an independent adapter each.
  """
  dims: str
  inputs: str
  batch: str = ""

  def __post_init__(self):
    dims = set(self.dims)
    if len(dims) != len(self.dims) or {_RANK, _STACK} & dims:
      raise ValueError(f"Layout dims {self.dims!r}: letters must be distinct "
                       f"and not {_RANK!r} / {_STACK!r}")
    if not set(self.inputs) | set(self.batch) <= set(self.dims):
      raise ValueError(f"Layout {self}: inputs/batch must be letters of dims")
    if set(self.inputs) & set(self.batch) or not self.inputs:
      raise ValueError(f"Layout {self}: need inputs, disjoint from batch")
    if not self.outputs:
      raise ValueError(f"Layout {self}: no output dimensions left")

  @property
  def outputs(self) -> str:
    return "".join(c for c in self.dims if c not in self.inputs + self.batch)

  def equation(self, ndim: int) -> str:
    """einsum 'A,B->W' for a weight of rank `ndim` (stacked or not)."""
    dims, batch = self.dims, self.batch
    if ndim == len(dims) + 1:
      dims, batch = _STACK + dims, _STACK + batch
    elif ndim != len(dims):
      raise ValueError(
          f"Layout {self.dims!r} does not fit a rank-{ndim} weight")
    outputs = "".join(c for c in dims if c not in self.inputs + batch)
    return f"{batch}{self.inputs}{_RANK},{batch}{_RANK}{outputs}->{dims}"


# Ordered, first match wins (full match on the '/'-joined path).
DEFAULT_LAYOUTS: tuple[tuple[str, Layout], ...] = (
    (r".*/q_einsum/w", Layout("NDH", "D")),
    (r".*/kv_einsum/w", Layout("CKDH", "D", batch="C")),
    (r".*/attn_vec_einsum/w", Layout("NHD", "NH")),
    (r".*/gating_einsum", Layout("CFD", "D", batch="C")),
    (r".*/mlp/linear", Layout("FD", "F")),
    # SigLIP, should a caller target it: DenseGeneral kernels.
    (r".*/(query|key|value)/kernel", Layout("WMC", "W")),
    (r".*/out/kernel", Layout("MCW", "MC")),
    # Plain [in, out] dense kernels and [W, D] projections.
    (r".*/(kernel|w)", Layout("IO", "I")),
)


@flax.struct.dataclass
class Lora:
  """LoRA parameters.

  factors: nested dicts mirroring the params' nesting, with each targeted
    weight replaced by {'a': A, 'b': B} (the only pytree leaves).
  scale: alpha / rank. Static (part of the treedef), so a jitted step
    compiles once per alpha, and optimizers never see it as a parameter.
  equations: ((path, einsum 'A,B->W'), ...) per target; path is the tuple of
    dict keys of the weight in params.
  """
  factors: dict
  scale: float = flax.struct.field(pytree_node=False)
  equations: tuple[tuple[tuple[str, ...], str], ...] = flax.struct.field(
      pytree_node=False)


def _keys(path) -> tuple[str, ...]:
  """A jax key path as a tuple of dict keys (what `_get` / `_set` walk)."""
  out = []
  for k in path:
    if not hasattr(k, "key"):
      raise TypeError(f"LoRA expects params as nested dicts, got key {k!r}")
    out.append(str(k.key))
  return tuple(out)


def _get(tree, path):
  for k in path:
    tree = tree[k]
  return tree


def _set(tree: Mapping, path: Sequence[str], value) -> dict:
  """Copy of `tree` with tree[path] = value (dicts copied along the path)."""
  out = dict(tree)
  out[path[0]] = (value if len(path) == 1 else
                  _set(tree[path[0]], path[1:], value))
  return out


def _set_or_create(tree: Mapping, path: Sequence[str], value) -> dict:
  """Like `_set`, creating missing intermediate dicts."""
  out = dict(tree)
  out[path[0]] = (value if len(path) == 1 else
                  _set_or_create(tree.get(path[0], {}), path[1:], value))
  return out


def _layout_for(path: str, layouts) -> Layout:
  for rx, layout in layouts:
    if re.fullmatch(rx, path):
      return layout
  raise ValueError(f"no LoRA layout matches {path!r}; pass `layouts`")


@functools.partial(jax.jit, static_argnums=(1, 2))
def _init_factors(rng, specs, dtype):
  """[(A, B)] for specs ((a_shape, b_shape, fan_in), ...).

  All A's come from ONE normal draw, sliced: XLA:CPU takes seconds to compile
  each threefry call, so a draw per target would dominate start-up.
  """
  sizes = [math.prod(a_shape) for a_shape, _, _ in specs]
  z = jax.random.normal(rng, (sum(sizes),), dtype)
  out, start = [], 0
  for (a_shape, b_shape, fan_in), n in zip(specs, sizes):
    a = z[start:start + n].reshape(a_shape) * jnp.asarray(fan_in ** -0.5, dtype)
    out.append((a, jnp.zeros(b_shape, dtype)))
    start += n
  return out


def init_lora(params, rank: int, targets_regex: str = DEFAULT_TARGETS,
              rng: Optional[jax.Array] = None, alpha: Optional[float] = None,
              *, layouts: Sequence[tuple[str, Layout]] = DEFAULT_LAYOUTS,
              dtype: Any = jnp.float32) -> Lora:
  """Fresh adapters (B = 0) for every weight whose path matches `targets_regex`.

  Args:
    params: base params (arrays or ShapeDtypeStructs: under `jax.eval_shape`
      this gives the abstract LoRA tree for sharding plans).
    rank: R > 0.
    targets_regex: `re.fullmatch`ed against '/'-joined param paths.
    rng: key for A (default `jax.random.key(0)`).
    alpha: scale = alpha / rank (default alpha = rank, scale 1).
    layouts: ordered [(regex, Layout)] deciding each target's factorisation.
    dtype: factor dtype; f32 since these are the trained master weights.
  Raises:
    ValueError: rank < 1, no param matches, or a target has no layout.
  """
  if rank < 1:
    raise ValueError(f"LoRA rank must be >= 1, got {rank}")
  rng = jax.random.key(0) if rng is None else rng
  scale = float(rank if alpha is None else alpha) / rank
  leaves = jax.tree_util.tree_leaves_with_path(params)
  targets = [(_keys(p), w) for p, w in leaves
             if re.fullmatch(targets_regex, "/".join(_keys(p)))]
  if not targets:
    raise ValueError(f"LoRA targets {targets_regex!r} match no parameter")
  equations, specs = [], []
  for path, w in targets:
    eqn = _layout_for("/".join(path), layouts).equation(len(w.shape))
    a_spec, rest = eqn.split(",")
    b_spec, w_spec = rest.split("->")
    size = dict(zip(w_spec, w.shape), **{_RANK: rank})
    fan_in = math.prod(size[c] for c in a_spec if c not in b_spec)
    specs.append((tuple(size[c] for c in a_spec),
                   tuple(size[c] for c in b_spec), fan_in))
    equations.append((path, eqn))
  factors: dict = {}
  made = _init_factors(rng, tuple(specs), dtype)
  for (path, _), (a, b) in zip(targets, made):
    factors = _set_or_create(factors, path, {"a": a, "b": b})
  return Lora(factors=factors, scale=scale, equations=tuple(equations))


def _delta(eqn: str, a: jax.Array, b: jax.Array, scale: float) -> jax.Array:
  d = jnp.einsum(eqn, a.astype(jnp.float32), b.astype(jnp.float32))
  return d * jnp.float32(scale)


def delta(lora: Lora, path: Sequence[str]) -> jax.Array:
  """scale * A @ B in the weight's shape (f32) for the target at `path`."""
  eqn = dict(lora.equations)[tuple(path)]
  f = _get(lora.factors, path)
  return _delta(eqn, f["a"], f["b"], lora.scale)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _combine(weights, factors, equations, scale, sign):
  """W + sign * scale * A @ B for every target, in f32, cast back to W's dtype.

  One jit over all targets so eager callers compile once per LoRA structure
  rather than once per op and shape; inside an outer jit it simply inlines.
  """
  return [(w.astype(jnp.float32) + sign * _delta(eqn, f["a"], f["b"], scale)
           ).astype(w.dtype)
          for w, f, eqn in zip(weights, factors, equations)]


def _apply(params, lora: Lora, sign: float):
  paths = [p for p, _ in lora.equations]
  weights = [_get(params, p) for p in paths]
  factors = [_get(lora.factors, p) for p in paths]
  new = _combine(weights, factors, tuple(e for _, e in lora.equations),
                 lora.scale, sign)
  out = params
  for path, w in zip(paths, new):
    out = _set(out, path, w)
  return out


def merge(params, lora: Lora):
  """params with W + scale * A @ B on every target, in each W's dtype.

  Only the targeted leaves are new arrays; the rest are the same objects.
  """
  return _apply(params, lora, 1.0)


def unmerge(merged, lora: Lora):
  """Inverse of `merge` (exact up to float rounding in the weight dtype)."""
  return _apply(merged, lora, -1.0)


def lora_param_count(lora: Lora) -> int:
  """Number of trainable LoRA scalars."""
  return sum(math.prod(x.shape) for x in jax.tree.leaves(lora))

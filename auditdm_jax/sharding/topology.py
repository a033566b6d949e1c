"""Named Cloud TPU slices: chips, HBM, hosts, and what gcloud calls them.

  topo = topology.get("v5e-8")            # also get("v5litepod-8")
  topo.devices, topo.hbm_bytes, topo.hosts, topo.accelerator_type
  topology.names()                        # every known name

One JAX device per chip on every generation listed here (v4 and v5p run
their two TensorCores as one "megacore" device), so `devices == chips` and
`hbm_bytes` is what one JAX device can hold.

Beware the naming trap this table exists for: gcloud's accelerator types
count TensorCores on v4 / v5p ("v5p-8" is 4 chips on one host) but chips
on v5e / v6e ("v5litepod-8" is 8 chips). Our names follow gcloud's
numbering; `chips` is always the real count.

HBM per chip (Cloud TPU system architecture pages): v4 32 GiB, v5e 16 GiB,
v5p 95 GiB, v6e (Trillium) 32 GiB. Runtime versions are the ones Google
recommends for JAX per generation (cloud.google.com/tpu/docs/runtimes).
"""

from __future__ import annotations

import dataclasses

GiB = 2**30

# generation -> (HBM GiB per chip, TensorCores per chip, runtime version,
#                gcloud accelerator-type prefix, most chips on a one-host
#                slice, chips per host of a multi-host slice)
_GENERATIONS: dict[str, tuple[float, int, str, str, int, int]] = {
    "v4": (32, 2, "tpu-ubuntu2204-base", "v4", 4, 4),
    "v5e": (16, 1, "v2-alpha-tpuv5-lite", "v5litepod", 8, 4),
    "v5p": (95, 2, "v2-alpha-tpuv5", "v5p", 4, 4),
    "v6e": (32, 1, "v2-alpha-tpuv6e", "v6e", 8, 4),
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Topology:
  """One TPU slice shape.

  Attributes:
    name: our name, '<generation>-<gcloud count>' (e.g. 'v5e-8', 'v5p-32').
    generation: 'v4', 'v5e', 'v5p' or 'v6e'.
    chips: TPU chips in the slice (= JAX devices).
    hbm_gib: HBM per chip in GiB.
    chips_per_host: chips attached to each TPU VM host.
    cores_per_chip: TensorCores per chip (2 = megacore, one JAX device).
    accelerator_type: gcloud's `--accelerator-type` value.
    runtime_version: gcloud's `--runtime-version` (TPU software image).
  """
  name: str
  generation: str
  chips: int
  hbm_gib: float
  chips_per_host: int
  cores_per_chip: int
  accelerator_type: str
  runtime_version: str

  def __post_init__(self):
    if self.generation not in _GENERATIONS:
      raise ValueError(f"Topology {self.name!r}: unknown generation "
                       f"{self.generation!r}; known: {sorted(_GENERATIONS)}")
    for field in ("chips", "chips_per_host", "cores_per_chip"):
      if getattr(self, field) < 1:
        raise ValueError(f"Topology {self.name!r}: {field} must be >= 1")
    if self.hbm_gib <= 0:
      raise ValueError(f"Topology {self.name!r}: hbm_gib must be > 0")
    if self.chips % self.chips_per_host:
      raise ValueError(f"Topology {self.name!r}: {self.chips} chips do not "
                       f"split into hosts of {self.chips_per_host}")

  @property
  def devices(self) -> int:
    """JAX devices of the slice (one per chip, megacore included)."""
    return self.chips

  @property
  def hosts(self) -> int:
    """TPU VM workers (`--worker=all` runs on each of them)."""
    return self.chips // self.chips_per_host

  @property
  def hbm_bytes(self) -> int:
    """HBM of one device, in bytes."""
    return int(self.hbm_gib * GiB)

  def describe(self) -> str:
    plural = lambda n, word: f"{n} {word}{'s' if n != 1 else ''}"
    return (f"{self.name} ({self.accelerator_type}): "
            f"{plural(self.chips, 'chip')} x {self.hbm_gib:g} GiB HBM, "
            f"{plural(self.hosts, 'host')}")


def _make(generation: str, count: int) -> Topology:
  hbm, cores, runtime, prefix, one_host, per_host = _GENERATIONS[generation]
  chips = count // cores  # gcloud counts TensorCores on megacore chips
  # Small slices put every chip on one VM (v5litepod-8 and v6e-8 are one
  # 8-chip host); bigger ones use hosts of `per_host` chips.
  host_chips = chips if chips <= one_host else per_host
  return Topology(name=f"{generation}-{count}", generation=generation,
                  chips=chips, hbm_gib=hbm, chips_per_host=host_chips,
                  cores_per_chip=cores,
                  accelerator_type=f"{prefix}-{count}",
                  runtime_version=runtime)


# The slices the real configs use, and their neighbours for sweeps.
_SIZES = {
    "v4": (8, 16, 32, 64),
    "v5e": (1, 4, 8, 16, 32, 64),
    "v5p": (8, 16, 32, 64, 128),
    "v6e": (1, 4, 8, 16, 32, 64),
}
TOPOLOGIES: dict[str, Topology] = {
    t.name: t for g, sizes in _SIZES.items() for t in (_make(g, n)
                                                       for n in sizes)}
# gcloud's accelerator types name the same slices (v5litepod-8 = v5e-8).
_ALIASES = {t.accelerator_type: t.name for t in TOPOLOGIES.values()}


def names() -> list[str]:
  """Every known topology name, generation by generation."""
  return list(TOPOLOGIES)


def get(name: str) -> Topology:
  """The topology called `name` (ours or gcloud's accelerator type).

  Raises:
    ValueError: an unknown name, listing the known ones.
  """
  key = _ALIASES.get(name, name)
  if key not in TOPOLOGIES:
    raise ValueError(f"unknown TPU topology {name!r}; known: "
                     f"{', '.join(names())}")
  return TOPOLOGIES[key]

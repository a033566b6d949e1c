"""Counterfactual image backends: the editor E and generator G (DESIGN.md §3).

  from auditdm_jax import imaging
  backend = imaging.CachedBackend(imaging.get_backend("world"))
  res = backend.edit([picture], ["make the red circle blue"], seed=0)
  res[0].ok, res[0].picture.pixels               # uint8[H, W, 3]
  backend.generate(["two green triangles"], seed=0)

  base.py              Picture, ImageResult, ImageBackend, item_seed
  registry.py          register / get_backend / names
  cache.py             CachedBackend: memory LRU + atomic on-disk PNGs
  world_backend.py     "world": exact scene-graph edits and captions
  diffusers_backend.py "flux" (FLUX.1 + Kontext), "stable_diffusion"
                       (SD + InstructPix2Pix); torch imported when built
  protocol.py          the HTTP service's JSON wire format
  serve.py             python -m auditdm_jax.imaging.serve --backend=NAME
  remote.py            "remote": a client of that service

Importing this package registers every backend without importing torch.
"""

from auditdm_jax.imaging import diffusers_backend
from auditdm_jax.imaging import remote
from auditdm_jax.imaging import world_backend
from auditdm_jax.imaging.base import ImageBackend
from auditdm_jax.imaging.base import ImageResult
from auditdm_jax.imaging.base import item_seed
from auditdm_jax.imaging.base import Picture
from auditdm_jax.imaging.cache import CachedBackend
from auditdm_jax.imaging.diffusers_backend import DiffusersBackend
from auditdm_jax.imaging.registry import get_backend
from auditdm_jax.imaging.registry import names
from auditdm_jax.imaging.registry import register
from auditdm_jax.imaging.remote import RemoteBackend
from auditdm_jax.imaging.remote import RemoteError
from auditdm_jax.imaging.world_backend import WorldBackend

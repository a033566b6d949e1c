"""The world's editor E and generator G as an image backend.

  backend = WorldBackend()                      # or get_backend("world")
  pic = Picture.from_scene(scene)               # pixels + scene JSON
  res = backend.edit([pic], ["make the red circle blue"], seed=0)[0]
  res.picture.scene                             # the edited scene's JSON
  backend.generate(["two green triangles on the left"], seed=0)

Edits parse `Picture.scene`, apply `world.editor.apply_edit` and render the
new scene, so the output is exact and its scene graph travels with it (the
oracle answers questions about it). Captions go through
`world.generator.parse_caption`. Each item's open choices (where "on the
left" puts an object, the colour of "add a circle") are drawn from
`item_seed(seed, op, text, input hash)`.

Nothing here raises on bad item content; errors come back as results:
  "edit: no_scene: ..."     the picture carries no scene graph
  "edit: bad_scene: ..."    its scene JSON is invalid
  "edit: mismatch: ..."     its pixels are not its scene's rendering
  "edit: <kind>: ..."       an EditError of the editor (parse, missing,
                            ambiguous, occupied, full, noop, invalid)
  "generate: <kind>: ..."   a CaptionError (parse, full, occupied, invalid)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from auditdm_jax.imaging import base
from auditdm_jax.imaging import registry
from auditdm_jax.world import editor
from auditdm_jax.world import generator
from auditdm_jax.world import grammar
from auditdm_jax.world import render as render_lib
from auditdm_jax.world import scene as scene_lib

Picture = base.Picture
ImageResult = base.ImageResult

# Bump when the world's rendering or grammar changes what an item produces,
# so on-disk caches keyed on `cache_id` stop matching old entries.
_VERSION = 1


@registry.register("world")
class WorldBackend(base.ImageBackend):
  """Exact scene-graph edits and caption-to-scene generation."""
  name = "world"

  def __init__(self, grid: int = scene_lib.DEFAULT_GRID,
               image_size: int = scene_lib.DEFAULT_IMAGE_SIZE,
               check_pixels: bool = True):
    """Builds the backend.

    Args:
      grid: cells per side of generated scenes (edits keep the input's).
      image_size: pixels per side of generated scenes.
      check_pixels: refuse to edit a picture whose pixels differ from the
        rendering of its scene (someone changed one without the other;
        editing the scene would silently drop that change). Costs one render.
    """
    try:
      scene_lib.Scene((), grid=grid, image_size=image_size)
    except scene_lib.SceneError as e:
      raise ValueError(f"WorldBackend: {e}") from None
    self.grid, self.image_size = grid, image_size
    self.check_pixels = bool(check_pixels)

  @property
  def cache_id(self) -> str:
    return (f"world/v{_VERSION}/grid={self.grid}/size={self.image_size}/"
            f"check={int(self.check_pixels)}")

  def _edit_one(self, pic: Picture, text: str, seed: int) -> ImageResult:
    if pic.scene is None:
      return ImageResult.failure(
          "edit: no_scene: the picture has no scene graph (Picture.scene); "
          "the world editor edits scenes")
    try:
      scene = scene_lib.Scene.from_json(pic.scene)
    except scene_lib.SceneError as e:
      return ImageResult.failure(f"edit: bad_scene: {e}")
    if self.check_pixels and not np.array_equal(render_lib.render(scene),
                                                pic.pixels):
      return ImageResult.failure(
          "edit: mismatch: the pixels are not the rendering of the picture's "
          "scene")
    out = editor.apply_edit(scene, text,
                            seed=base.item_seed(seed, "edit", text,
                                                pic.content_hash()))
    if isinstance(out, grammar.EditError):
      return ImageResult.failure(f"edit: {out.kind}: {out.message}")
    return ImageResult(Picture.from_scene(out))

  def edit(self, pictures: Sequence[Picture], instructions: Sequence[str], *,
           seed: int = 0) -> list[ImageResult]:
    base.check_edit_args(pictures, instructions)
    base.check_seed(seed)
    return [self._edit_one(p, t, seed) for p, t in zip(pictures, instructions)]

  def _generate_one(self, text: str, seed: int) -> ImageResult:
    out = generator.parse_caption(text, seed=base.item_seed(seed, "generate",
                                                            text),
                                  grid=self.grid, image_size=self.image_size)
    if isinstance(out, grammar.CaptionError):
      return ImageResult.failure(f"generate: {out.kind}: {out.message}")
    return ImageResult(Picture.from_scene(out))

  def generate(self, captions: Sequence[str], *,
               seed: int = 0) -> list[ImageResult]:
    base.check_texts("captions", captions)
    base.check_seed(seed)
    return [self._generate_one(c, seed) for c in captions]

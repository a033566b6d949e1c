"""The embedded scene world (DESIGN.md §4): scenes, questions, E and G.

Pure Python + numpy + PIL (no jax), deterministic from seeds.

  scene.py      Obj, Scene (4x4 grid of 16-px cells, 64x64), JSON, sample_scene
  render.py     render.render(scene) -> uint8[H, W, 3] (the module is
                exported, not the function, to keep `world.render` a module)
  refs.py       Ref / Place: the noun phrases all world text shares
  oracle.py     question grammar; answer(scene, text) -> answer | OracleError
  questions.py  14 skills, sample_question, sample_example with slice tags
  grammar.py    Edit / Caption values, parse_edit, caption grammar
  editor.py     apply_edit(scene, text) -> Scene | EditError, sample_edit
  generator.py  parse_caption(text, seed) -> Scene | CaptionError, captions
  vocab.py      closed vocabulary, corpus(n, seed) for tokenizer training
"""

from auditdm_jax.world.editor import apply_edit
from auditdm_jax.world.editor import sample_edit
from auditdm_jax.world.generator import build_scene
from auditdm_jax.world.generator import describe_scene
from auditdm_jax.world.generator import parse_caption
from auditdm_jax.world.generator import sample_caption
from auditdm_jax.world.grammar import Caption
from auditdm_jax.world.grammar import CaptionError
from auditdm_jax.world.grammar import CaptionItem
from auditdm_jax.world.grammar import Edit
from auditdm_jax.world.grammar import EDIT_OPS
from auditdm_jax.world.grammar import EditError
from auditdm_jax.world.grammar import parse_caption_items
from auditdm_jax.world.grammar import parse_edit
from auditdm_jax.world.oracle import answer
from auditdm_jax.world.oracle import evaluate
from auditdm_jax.world.oracle import OracleError
from auditdm_jax.world.oracle import parse_question
from auditdm_jax.world.oracle import Query
from auditdm_jax.world.questions import ANSWER_WORDS
from auditdm_jax.world.questions import sample_example
from auditdm_jax.world.questions import sample_question
from auditdm_jax.world.questions import SKILLS
from auditdm_jax.world.questions import slice_weight
from auditdm_jax.world.refs import Place
from auditdm_jax.world.refs import Ref
from auditdm_jax.world.render import render_batch
from auditdm_jax.world.render import to_pil
from auditdm_jax.world.scene import BACKGROUND
from auditdm_jax.world.scene import COLOUR_NAMES
from auditdm_jax.world.scene import COLOURS
from auditdm_jax.world.scene import MAX_OBJECTS
from auditdm_jax.world.scene import Obj
from auditdm_jax.world.scene import sample_scene
from auditdm_jax.world.scene import Scene
from auditdm_jax.world.scene import SceneError
from auditdm_jax.world.scene import SHAPES
from auditdm_jax.world.scene import SIZES
from auditdm_jax.world.vocab import corpus
from auditdm_jax.world.vocab import words

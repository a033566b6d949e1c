"""The auditor's three world prompts (DESIGN.md §4): p_q, p_e, p_c.

Given an image and one of these prompts the auditor writes, respectively, a
question the world oracle can answer, an edit command the world editor can
apply, or a caption the world generator can parse. The texts are short and
use only world words, so the world tokenizer (`data.world_tokenizer`)
encodes each without `<unk>` (tests check it).

  from auditdm_jax.world import prompts
  prompts.PROMPTS["question"]       # p_q
  prompts.kind_of(text)             # "question" / "edit" / "caption" / None
"""

from __future__ import annotations

from typing import Optional

P_Q = "ask a question about the image"
P_E = "write an edit command for the image"
P_C = "write a caption of a new image"

# Prompt kind -> prompt text; the order is the table order everywhere.
PROMPTS = {"question": P_Q, "edit": P_E, "caption": P_C}
KINDS = tuple(PROMPTS)


def kind_of(text: str) -> Optional[str]:
  """The kind whose prompt is `text` (after strip), or None."""
  text = text.strip()
  for kind, prompt in PROMPTS.items():
    if prompt == text:
      return kind
  return None

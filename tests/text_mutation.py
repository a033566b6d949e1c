"""Hypothesis strategy: valid world text mutated at character and word level.

Shared by the parser fuzz tests (oracle, edit and caption grammars).
"""

from hypothesis import strategies as st

_JUNK = list(" ,?.-x9é\n\t'")


@st.composite
def mutated(draw, base, words):
  """One of `base`, with 1-4 insertions, deletions, swaps or word substitutions
  (substitutes drawn from `words`)."""
  text = draw(st.sampled_from(base))
  for _ in range(draw(st.integers(1, 4))):
    op = draw(st.sampled_from(["ins", "del", "swap", "wdel", "wdup", "wswap",
                               "wsub"]))
    toks = text.split(" ")
    if op == "ins":
      i = draw(st.integers(0, len(text)))
      text = text[:i] + draw(st.sampled_from(_JUNK)) + text[i:]
    elif op == "del" and text:
      i = draw(st.integers(0, len(text) - 1))
      text = text[:i] + text[i + 1:]
    elif op == "swap" and len(text) > 1:
      i = draw(st.integers(0, len(text) - 2))
      text = text[:i] + text[i + 1] + text[i] + text[i + 2:]
    elif op == "wdel" and len(toks) > 1:
      toks.pop(draw(st.integers(0, len(toks) - 1)))
      text = " ".join(toks)
    elif op == "wdup":
      i = draw(st.integers(0, len(toks) - 1))
      text = " ".join(toks[:i + 1] + toks[i:])
    elif op == "wswap" and len(toks) > 1:
      i = draw(st.integers(0, len(toks) - 2))
      toks[i], toks[i + 1] = toks[i + 1], toks[i]
      text = " ".join(toks)
    elif op == "wsub":
      i = draw(st.integers(0, len(toks) - 1))
      toks[i] = draw(st.sampled_from(words))
      text = " ".join(toks)
  return text

"""Rebuilds `tokenizer.model` next to this file (the world SentencePiece model).

  python -m auditdm_jax.world.assets.make_tokenizer [--check]

Deterministic: the output equals the committed file byte for byte unless the
world's grammar or the sentencepiece version changed (see
auditdm_jax/data/world_tokenizer.py). With --check, writes nothing and exits
1 if the committed file differs from a fresh build.
"""

import argparse
import hashlib
import sys

from auditdm_jax.data import world_tokenizer as wt


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--check", action="store_true",
                      help="compare with the committed file, write nothing")
  args = parser.parse_args(argv)
  proto = wt.make_world_tokenizer()
  digest = hashlib.sha256(proto).hexdigest()[:16]
  if args.check:
    with open(wt.WORLD_TOKENIZER_PATH, "rb") as f:
      same = f.read() == proto
    print(f"{wt.WORLD_TOKENIZER_PATH}: {'up to date' if same else 'STALE'} "
          f"(fresh build sha256 {digest})")
    return 0 if same else 1
  with open(wt.WORLD_TOKENIZER_PATH, "wb") as f:
    f.write(proto)
  print(f"wrote {wt.WORLD_TOKENIZER_PATH}: {len(proto)} bytes, "
        f"sha256 {digest}, {wt.WORLD_VOCAB} pieces")
  return 0


if __name__ == "__main__":
  sys.exit(main())

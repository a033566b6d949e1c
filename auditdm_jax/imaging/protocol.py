"""Wire format of the image service (serve.py) and its client (remote.py).

One module for both sides, so they cannot drift. JSON bodies; pictures are
base64 PNG (lossless, so a picture arrives bit for bit) plus the scene JSON:

  POST /edit      {"seed": 0, "pictures": [{"png": "<b64>", "scene": str|null}],
                   "instructions": ["make the red circle blue"]}
  POST /generate  {"seed": 0, "captions": ["two green triangles"]}
    -> 200 {"results": [{"png": "<b64>", "scene": str|null} | {"error": str}]}
  GET /health     -> 200 {"ok": true, "backend": name, "cache_id": str}

Failures answer {"error": "<message>"} with 400 (bad request: malformed JSON,
lists of different lengths, a corrupt PNG), 404 (unknown path), 411/413
(missing or too large body), 501 (the backend does not offer the operation)
or 500 (the backend failed).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from typing import Any

from auditdm_jax.imaging import base

Picture = base.Picture
ImageResult = base.ImageResult


class ProtocolError(ValueError):
  """A message does not follow the wire format; names the bad field."""


def _field(body: Any, key: str, kind: type, where: str) -> Any:
  if not isinstance(body, dict):
    raise ProtocolError(f"{where}: expected a JSON object, got "
                        f"{type(body).__name__}")
  if key not in body:
    raise ProtocolError(f"{where}: missing field {key!r}")
  value = body[key]
  # Exact int: JSON true would otherwise pass as a seed.
  # pylint: disable-next=unidiomatic-typecheck
  ok = type(value) is int if kind is int else isinstance(value, kind)
  if not ok:
    raise ProtocolError(f"{where}.{key}: expected {kind.__name__}, got "
                        f"{type(value).__name__}")
  return value


def _str_list(body: Any, key: str, where: str) -> list[str]:
  items = _field(body, key, list, where)
  for i, t in enumerate(items):
    if not isinstance(t, str):
      raise ProtocolError(f"{where}.{key}[{i}]: expected str, got "
                          f"{type(t).__name__}")
  return items


def loads(data: bytes, where: str) -> Any:
  """Parses a JSON body; ProtocolError naming `where` if it does not."""
  try:
    return json.loads(data.decode("utf-8"))
  except (UnicodeDecodeError, ValueError) as e:
    head = data[:80].decode("utf-8", "replace")
    raise ProtocolError(f"{where}: not JSON ({e}); starts {head!r}") from None


def dumps(body: Any) -> bytes:
  return json.dumps(body, separators=(",", ":")).encode("utf-8")


# -- pictures and results -----------------------------------------------------


def encode_picture(p: Picture) -> dict[str, Any]:
  return {"png": base64.b64encode(p.to_png()).decode("ascii"),
          "scene": p.scene}


def decode_picture(d: Any, where: str) -> Picture:
  png = _field(d, "png", str, where)
  scene = d.get("scene")
  if scene is not None and not isinstance(scene, str):
    raise ProtocolError(f"{where}.scene: expected str or null, got "
                        f"{type(scene).__name__}")
  try:
    data = base64.b64decode(png, validate=True)
  except (binascii.Error, ValueError) as e:
    raise ProtocolError(f"{where}.png: not base64: {e}") from None
  try:
    return Picture.from_png(data, scene=scene)
  except ValueError as e:
    raise ProtocolError(f"{where}.png: {e}") from None


def encode_result(r: ImageResult) -> dict[str, Any]:
  return encode_picture(r.picture) if r.ok else {"error": r.error}


def decode_result(d: Any, where: str) -> ImageResult:
  if isinstance(d, dict) and "error" in d:
    return ImageResult.failure(_field(d, "error", str, where))
  return ImageResult(decode_picture(d, where))


# -- requests and responses ----------------------------------------------------


def edit_request(pictures: Sequence[Picture], instructions: Sequence[str],
                 seed: int) -> dict[str, Any]:
  return {"seed": seed, "pictures": [encode_picture(p) for p in pictures],
          "instructions": list(instructions)}


def parse_edit_request(body: Any) -> tuple[list[Picture], list[str], int]:
  """(pictures, instructions, seed) of an /edit body; ProtocolError if bad."""
  seed = _field(body, "seed", int, "request")
  raw = _field(body, "pictures", list, "request")
  instructions = _str_list(body, "instructions", "request")
  if len(raw) != len(instructions):
    raise ProtocolError(f"request: {len(raw)} pictures but "
                        f"{len(instructions)} instructions")
  pictures = [decode_picture(d, f"request.pictures[{i}]")
              for i, d in enumerate(raw)]
  return pictures, instructions, seed


def generate_request(captions: Sequence[str], seed: int) -> dict[str, Any]:
  return {"seed": seed, "captions": list(captions)}


def parse_generate_request(body: Any) -> tuple[list[str], int]:
  """(captions, seed) of a /generate body; ProtocolError if bad."""
  return _str_list(body, "captions", "request"), _field(body, "seed", int,
                                                        "request")


def results_response(results: Sequence[ImageResult]) -> dict[str, Any]:
  return {"results": [encode_result(r) for r in results]}


def parse_results(body: Any, n: int) -> list[ImageResult]:
  """The n results of a response body; ProtocolError if bad or not n."""
  raw = _field(body, "results", list, "response")
  if len(raw) != n:
    raise ProtocolError(f"response: {len(raw)} results for {n} items")
  return [decode_result(d, f"response.results[{i}]")
          for i, d in enumerate(raw)]

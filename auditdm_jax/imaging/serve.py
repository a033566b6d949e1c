r"""An HTTP service in front of any registered image backend.

  python -m auditdm_jax.imaging.serve --backend=flux \
      --backend_kwargs='{"generator": "/ckpt/FLUX.1-dev",
                         "editor": "/ckpt/FLUX.1-Kontext-dev",
                         "device": "cuda"}' \
      --host=0.0.0.0 --port=8765 --cache_dir=/tmp/imgcache

and, on the TPU host, `get_backend("remote", url="http://gpu-host:8765")`;
there, `python -m auditdm_jax.imaging.serve --check http://gpu-host:8765
[--check_generate CAPTION]` asks the service the way RemoteBackend does
(retries with backoff) and exits 0, or 2 with the reason (down, too slow,
answering outside the protocol).
In code (tests): `server = make_server(backend, port=0)`, then
`server.serve_forever()` in a thread; `server.url` is where it listens.

Endpoints and the JSON format are in protocol.py. Requests are handled on
threads, but backend calls are serialised by one lock: torch pipelines are
not thread-safe and one GPU runs one batch at a time anyway. A bad request
is answered 400 with a message, never a crash; a backend exception 500 (the
client retries those) and is logged with its traceback. The backend is
wrapped in a CachedBackend (memory, and `--cache_dir` on disk), so a retried
request costs nothing twice. With `--port=0` the OS picks a free port; the
first stdout line says which: "serving <backend> on http://HOST:PORT".
"""

from __future__ import annotations

import http.server
import json
import logging
import sys
import threading
import traceback
from typing import Any, Optional

# The package's __init__ (run first) registers every backend.
from auditdm_jax.imaging import base
from auditdm_jax.imaging import cache
from auditdm_jax.imaging import protocol
from auditdm_jax.imaging import registry

MAX_BODY_BYTES = 1 << 30  # ~350 1024x1024 PNGs; more is a client bug.


class ImageServer(http.server.ThreadingHTTPServer):
  """A ThreadingHTTPServer holding the backend and its lock."""
  daemon_threads = True  # A hung request never blocks shutdown.

  def __init__(self, address: tuple[str, int], backend: base.ImageBackend,
               max_body_bytes: int = MAX_BODY_BYTES):
    self.backend = backend
    self.max_body_bytes = max_body_bytes
    self.lock = threading.Lock()
    super().__init__(address, _Handler)

  def handle_error(self, request, client_address) -> None:
    # socketserver prints these to stderr; a client that gave up (timed
    # out, hung up) is routine for a service, so log it quietly instead.
    e = sys.exc_info()[1]
    if isinstance(e, (BrokenPipeError, ConnectionResetError, TimeoutError)):
      logging.info("image service: client %s went away: %r", client_address,
                   e)
    else:
      logging.error("image service: error serving %s:\n%s", client_address,
                    traceback.format_exc())

  @property
  def url(self) -> str:
    host, port = self.server_address[:2]
    return f"http://{host}:{port}"


class _Handler(http.server.BaseHTTPRequestHandler):
  server: ImageServer
  protocol_version = "HTTP/1.1"  # Keep-alive; every answer has a length.
  timeout = 600  # Socket reads: a client that stalls mid-body is dropped.

  # pylint: disable-next=arguments-renamed
  def log_message(self, fmt: str, *args: Any) -> None:
    logging.info("image service %s: %s", self.address_string(), fmt % args)

  def _send(self, code: int, body: dict[str, Any]) -> None:
    data = protocol.dumps(body)
    self.send_response(code)
    self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", str(len(data)))
    self.end_headers()
    self.wfile.write(data)

  def _error(self, code: int, message: str, close: bool = False) -> None:
    # `close` where the request body was not read: on a kept-alive
    # connection its bytes would be parsed as the next request.
    self.close_connection = self.close_connection or close
    self._send(code, {"error": message})

  def do_GET(self) -> None:  # pylint: disable=invalid-name
    if self.path.rstrip("/") != "/health":
      return self._error(404, f"unknown path {self.path!r}; GET /health, "
                         "POST /edit, POST /generate")
    b = self.server.backend
    try:
      cache_id = b.cache_id  # A remote backend asks its own server.
    except Exception as e:  # pylint: disable=broad-except
      return self._error(500, f"{b.name}: {type(e).__name__}: {e}")
    self._send(200, {"ok": True, "backend": b.name, "cache_id": cache_id})

  def _body(self) -> Optional[Any]:
    """The parsed JSON body, or None after answering an error."""
    length = self.headers.get("Content-Length")
    if length is None:
      self._error(411, "a request body needs a Content-Length", close=True)
      return None
    try:
      n = int(length)
      if n < 0:
        raise ValueError(length)
    except ValueError:
      self._error(400, f"bad Content-Length {length!r}", close=True)
      return None
    if n > self.server.max_body_bytes:
      self._error(413, f"body of {n} bytes exceeds the limit of "
                  f"{self.server.max_body_bytes}", close=True)
      return None
    try:
      return protocol.loads(self.rfile.read(n), "request")
    except protocol.ProtocolError as e:
      self._error(400, str(e))
      return None

  def do_POST(self) -> None:  # pylint: disable=invalid-name
    op = self.path.rstrip("/")
    if op not in ("/edit", "/generate"):
      return self._error(404, f"unknown path {self.path!r}; POST /edit or "
                         "/generate", close=True)
    body = self._body()
    if body is None:
      return None
    backend = self.server.backend
    try:
      if op == "/edit":
        pictures, instructions, seed = protocol.parse_edit_request(body)
        with self.server.lock:
          results = backend.edit(pictures, instructions, seed=seed)
      else:
        captions, seed = protocol.parse_generate_request(body)
        with self.server.lock:
          results = backend.generate(captions, seed=seed)
      response = protocol.results_response(results)
    except (protocol.ProtocolError, ValueError) as e:
      return self._error(400, str(e))
    except NotImplementedError as e:
      return self._error(501, str(e) or f"{backend.name} does not offer {op}")
    except Exception as e:  # pylint: disable=broad-except  # Answer, then log.
      logging.error("image service: %s failed:\n%s", op,
                    traceback.format_exc())
      return self._error(500, f"{backend.name}{op} failed: "
                         f"{type(e).__name__}: {e}")
    self._send(200, response)


def make_server(backend: base.ImageBackend, host: str = "127.0.0.1",
                port: int = 8765,
                max_body_bytes: int = MAX_BODY_BYTES) -> ImageServer:
  """Binds a server for `backend` (port 0: a free port); call serve_forever."""
  if not isinstance(backend, base.ImageBackend):
    raise ValueError(f"make_server needs an ImageBackend, got "
                     f"{type(backend).__name__}")
  return ImageServer((host, port), backend, max_body_bytes=max_body_bytes)


def build_backend(name: str, backend_kwargs: str = "{}",
                  cache_dir: Optional[str] = None,
                  max_cache_items: int = 1024) -> base.ImageBackend:
  """The served backend: registry name + JSON kwargs, behind a cache."""
  try:
    kwargs = json.loads(backend_kwargs)
  except ValueError as e:
    raise ValueError(f"--backend_kwargs is not JSON: {e}") from None
  if not isinstance(kwargs, dict):
    raise ValueError(f"--backend_kwargs must be a JSON object, got "
                     f"{backend_kwargs!r}")
  return cache.CachedBackend(registry.get_backend(name, **kwargs),
                             cache_dir=cache_dir or None,
                             max_items=max_cache_items)


def check(url: str, *, timeout: float = 60.0, retries: int = 3,
          backoff: float = 1.0, caption: Optional[str] = None) -> int:
  """Asks the service at `url` for /health (and one generate); 0 or 2."""
  from auditdm_jax.imaging import remote  # pylint: disable=g-import-not-at-top
  try:
    backend = remote.RemoteBackend(url, timeout=timeout, retries=retries,
                                   backoff=backoff)
    health = backend.health()
    print(f"ok: {url} serves {health.get('backend')} (cache_id "
          f"{health.get('cache_id')})", flush=True)
    if caption is not None:
      result = backend.generate([caption], seed=0)[0]
      print(f"generate: {result.picture!r}" if result.ok
            else f"generate: per-item error: {result.error}", flush=True)
  except (remote.RemoteError, NotImplementedError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


def main(argv: Optional[list[str]] = None) -> int:
  import argparse  # pylint: disable=g-import-not-at-top
  p = argparse.ArgumentParser(
      prog="python -m auditdm_jax.imaging.serve",
      description="Serve an image backend over HTTP (see protocol.py), or "
                  "--check a running service.")
  p.add_argument("--check", default=None, metavar="URL",
                 help="do not serve: check the service at URL and exit 0, "
                 "or 2 with the reason")
  p.add_argument("--check_generate", default=None, metavar="CAPTION",
                 help="with --check: also generate one image")
  p.add_argument("--timeout", type=float, default=60.0,
                 help="with --check: seconds per answer")
  p.add_argument("--retries", type=int, default=3,
                 help="with --check: retries after a connection error / 5xx")
  p.add_argument("--backoff", type=float, default=1.0,
                 help="with --check: first retry delay (doubles)")
  p.add_argument("--backend", default=None, help="registry name")
  p.add_argument("--backend_kwargs", default="{}",
                 help="JSON object of the backend's keyword arguments")
  p.add_argument("--host", default="127.0.0.1")
  p.add_argument("--port", type=int, default=8765, help="0: any free port")
  p.add_argument("--cache_dir", default=None, help="disk cache directory")
  p.add_argument("--max_cache_items", type=int, default=1024)
  args = p.parse_args(argv)
  logging.basicConfig(level=logging.INFO,
                      format="%(asctime)s %(levelname)s %(message)s")
  if args.check:
    return check(args.check, timeout=args.timeout, retries=args.retries,
                 backoff=args.backoff, caption=args.check_generate)
  if not args.backend:
    p.error("--backend is required (or --check URL)")
  try:
    backend = build_backend(args.backend, args.backend_kwargs, args.cache_dir,
                            args.max_cache_items)
  except (KeyError, ValueError) as e:
    p.error(str(e))
  server = make_server(backend, args.host, args.port)
  print(f"serving {backend.name} on {server.url}", flush=True)
  try:
    server.serve_forever()
  except KeyboardInterrupt:
    pass
  finally:
    server.server_close()
  return 0


if __name__ == "__main__":
  sys.exit(main())

"""Client of the image service: a backend whose work runs elsewhere.

  backend = RemoteBackend("http://gpu-host:8765", timeout=600, retries=3)
  backend = get_backend("remote", url="http://gpu-host:8765")
  backend.edit(pictures, instructions, seed=0)    # same results as there
  # from the shell: is the service there, and does it answer?
  python -m auditdm_jax.imaging.serve --check http://gpu-host:8765 \
      [--check_generate "two red circles"]

TPU hosts send image work to a GPU machine running
`python -m auditdm_jax.imaging.serve`. Pictures travel as PNG, so results
are bit for bit those of the served backend. stdlib only (urllib).

Failures:
  connection refused / reset, HTTP 5xx   retried `retries` times, sleeping
                                         backoff * 2^k (at most max_backoff)
  no answer within `timeout`             RemoteError at once (the server may
                                         still be working: resending would
                                         queue the same work again), unless
                                         retry_timeouts
  HTTP 501                               NotImplementedError, as in-process
  other HTTP 4xx, a body that is not     RemoteError at once
    the protocol, the wrong number of
    results
Every RemoteError names the URL and the last failure.
"""

from __future__ import annotations

import http.client
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any, Optional

from auditdm_jax.imaging import base
from auditdm_jax.imaging import protocol
from auditdm_jax.imaging import registry

Picture = base.Picture
ImageResult = base.ImageResult


class RemoteError(RuntimeError):
  """The image service is down, failed, or answered outside the protocol."""


def _http_message(e: urllib.error.HTTPError) -> str:
  """The service's {"error": ...} message, or the start of the body."""
  try:
    data = e.read()
  except OSError:
    return e.reason or ""
  try:
    return str(protocol.loads(data, "response")["error"])
  except (protocol.ProtocolError, KeyError, TypeError):
    return data[:200].decode("utf-8", "replace") or str(e.reason)


@registry.register("remote")
class RemoteBackend(base.ImageBackend):
  """Sends edit/generate calls to an image service over HTTP."""
  name = "remote"

  def __init__(self, url: str, timeout: float = 600.0, retries: int = 3,
               backoff: float = 1.0, max_backoff: float = 30.0,
               batch_size: Optional[int] = None,
               retry_timeouts: bool = False):
    """Configures the client (nothing is sent until the first call).

    Args:
      url: the service, "http://host:port" (a trailing "/" is fine).
      timeout: seconds to wait for connecting and for each answer; a
        diffusers batch on a busy GPU takes a while, so be generous.
      retries: extra attempts after a connection error or a 5xx answer.
      backoff: seconds before the first retry; doubles each time.
      max_backoff: cap on one sleep.
      batch_size: items per request (None: one request per call), to keep
        bodies and server-side latency bounded.
      retry_timeouts: also retry requests that timed out.
    """
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
      raise ValueError(f"url must look like http://host:port, got {url!r}")
    if timeout <= 0 or retries < 0 or backoff < 0 or max_backoff < 0:
      raise ValueError(f"need timeout > 0 and retries, backoff, max_backoff "
                       f">= 0; got {timeout}, {retries}, {backoff}, "
                       f"{max_backoff}")
    if batch_size is not None and batch_size < 1:
      raise ValueError(f"batch_size must be >= 1 or None, got {batch_size}")
    self.url = url.rstrip("/")
    self.timeout, self.retries = float(timeout), int(retries)
    self.backoff, self.max_backoff = float(backoff), float(max_backoff)
    self.batch_size = batch_size
    self.retry_timeouts = bool(retry_timeouts)
    self._health: Optional[dict[str, Any]] = None

  # -- transport ---------------------------------------------------------------

  def _request(self, method: str, path: str,
               body: Optional[dict[str, Any]] = None) -> Any:
    """One call with retries; returns the parsed JSON answer."""
    url = self.url + path
    data = None if body is None else protocol.dumps(body)
    attempts = self.retries + 1
    last = "no attempt"
    for attempt in range(attempts):
      if attempt:
        time.sleep(min(self.max_backoff, self.backoff * 2 ** (attempt - 1)))
      req = urllib.request.Request(
          url, data=data, method=method,
          headers={"Content-Type": "application/json"})
      try:
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
          answer = resp.read()
      except urllib.error.HTTPError as e:  # Before URLError: a subclass.
        msg = _http_message(e)
        if e.code == 501:
          raise NotImplementedError(f"image service {url}: {msg}") from None
        if e.code < 500:
          raise RemoteError(f"image service {url} rejected the request: "
                            f"HTTP {e.code}: {msg}") from None
        last = f"HTTP {e.code}: {msg}"
      except TimeoutError as e:  # Read timeout (connect ones are URLErrors).
        last = f"no answer within {self.timeout:g} s ({e})"
        if not self.retry_timeouts:
          raise RemoteError(f"image service {url}: {last}") from None
      except urllib.error.URLError as e:
        last = f"cannot connect: {e.reason}"
      except (http.client.HTTPException, OSError) as e:  # Reset mid-answer.
        last = f"{type(e).__name__}: {e}"
      else:
        try:
          return protocol.loads(answer, "response")
        except protocol.ProtocolError as e:
          raise RemoteError(f"image service {url} answered garbage: "
                            f"{e}") from None
      logging.warning("image service %s: attempt %d/%d failed: %s", url,
                      attempt + 1, attempts, last)
    raise RemoteError(f"image service {url} failed after {attempts} "
                      f"attempt(s); last: {last}")

  def health(self) -> dict[str, Any]:
    """GET /health: {"ok", "backend", "cache_id"} of the served backend."""
    body = self._request("GET", "/health")
    if not isinstance(body, dict) or not isinstance(body.get("backend"), str):
      raise RemoteError(f"image service {self.url}/health answered garbage: "
                        f"{str(body)[:200]!r}")
    return body

  @property
  def cache_id(self) -> str:
    """The served backend's cache_id (asked once, on first use)."""
    if self._health is None:
      self._health = self.health()
    return f"remote/{self._health.get('cache_id', self._health['backend'])}"

  def _results(self, path: str, body: dict[str, Any], n: int
               ) -> list[ImageResult]:
    answer = self._request("POST", path, body)
    try:
      return protocol.parse_results(answer, n)
    except protocol.ProtocolError as e:
      raise RemoteError(f"image service {self.url}{path} answered garbage: "
                        f"{e}") from None

  def _chunks(self, n: int) -> list[range]:
    step = self.batch_size or max(n, 1)
    return [range(i, min(i + step, n)) for i in range(0, n, step)]

  # -- the interface -----------------------------------------------------------

  def edit(self, pictures: Sequence[Picture], instructions: Sequence[str], *,
           seed: int = 0) -> list[ImageResult]:
    base.check_edit_args(pictures, instructions)
    base.check_seed(seed)
    out: list[ImageResult] = []
    for r in self._chunks(len(pictures)):
      body = protocol.edit_request([pictures[i] for i in r],
                                   [instructions[i] for i in r], seed)
      out += self._results("/edit", body, len(r))
    return out

  def generate(self, captions: Sequence[str], *,
               seed: int = 0) -> list[ImageResult]:
    base.check_texts("captions", captions)
    base.check_seed(seed)
    out: list[ImageResult] = []
    for r in self._chunks(len(captions)):
      body = protocol.generate_request([captions[i] for i in r], seed)
      out += self._results("/generate", body, len(r))
    return out

  def __repr__(self) -> str:
    return f"RemoteBackend({self.url!r})"


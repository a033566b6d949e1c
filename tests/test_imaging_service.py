"""Tests of the image service (imaging/serve.py) and its client (remote.py),
over loopback with the world backend and with misbehaving servers.

The diffusers backends through the service are in test_imaging_diffusers.py.
"""

import base64
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from auditdm_jax import imaging
from auditdm_jax.imaging import protocol
from auditdm_jax.world import editor
from auditdm_jax.world import scene as scene_lib

from imaging_fixtures import answer
from imaging_fixtures import GenerateOnlyBackend
from imaging_fixtures import raw_server
from imaging_fixtures import ScriptedBackend
from imaging_fixtures import serving

Picture = imaging.Picture
RemoteBackend = imaging.RemoteBackend
RemoteError = imaging.RemoteError

SCENES = [scene_lib.sample_scene(i) for i in range(5)]
# Valid commands for each scene, but the fourth: that one is an error result.
EDITS = [editor.sample_edit(s, i)[0] for i, s in enumerate(SCENES)]
EDITS[3] = "make it plaid"
CAPTIONS = ["three blue squares", "a large red circle at the top left",
            "a chair", "two green triangles on the left"]


@pytest.fixture(name="pics", scope="module")
def _pics():
  return [Picture.from_scene(s) for s in SCENES]


@pytest.fixture(name="world", scope="module")
def _world():
  return imaging.WorldBackend()


def _post(url, path, body: bytes, headers=None):
  """(status, parsed JSON) of a raw POST; 4xx/5xx do not raise."""
  host, port = url.split("//")[1].split(":")
  conn = http.client.HTTPConnection(host, int(port), timeout=10)
  try:
    conn.request("POST", path, body=body, headers=headers or {})
    resp = conn.getresponse()
    return resp.status, json.loads(resp.read())
  finally:
    conn.close()


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


# -- the world through the service ---------------------------------------------


def test_world_through_service_is_bitwise_identical(world, pics):
  local_e = world.edit(pics, EDITS, seed=7)
  local_g = world.generate(CAPTIONS, seed=7)
  with serving(world) as server:
    remote = RemoteBackend(server.url, timeout=30)
    assert remote.health() == {"ok": True, "backend": "world",
                               "cache_id": world.cache_id}
    got_e = remote.edit(pics, EDITS, seed=7)
    got_g = remote.generate(CAPTIONS, seed=7)
    # Chunked requests give the same items.
    chunked = RemoteBackend(server.url, batch_size=2).edit(pics, EDITS, seed=7)
  assert got_e == local_e and got_g == local_g and chunked == local_e
  assert [r.ok for r in got_e] == [True, True, True, False, True]
  for a, b in zip(got_e + got_g, local_e + local_g):
    if a.ok:  # Same bytes, same scene graph.
      assert a.picture.pixels.tobytes() == b.picture.pixels.tobytes()
      assert a.picture.scene == b.picture.scene
    else:
      assert a.error == b.error


def test_remote_with_cache_and_registry(world, pics):
  inner = ScriptedBackend(world)
  with serving(inner) as server:
    remote = imaging.get_backend("remote", url=server.url + "/")
    cached = imaging.CachedBackend(remote)
    assert cached.cache_id == "remote/" + world.cache_id
    a = cached.edit(pics[:2], EDITS[:2], seed=1)
    b = cached.edit(pics[:2], EDITS[:2], seed=1)
  assert a == b == world.edit(pics[:2], EDITS[:2], seed=1)
  assert inner.calls == [("edit", 2)]
  assert remote.edit([], []) == []  # Nothing to send, nothing sent.


def test_remote_validates_locally(pics):
  remote = RemoteBackend("http://127.0.0.1:9")  # Never contacted.
  with pytest.raises(ValueError, match="2 pictures and 1 instructions"):
    remote.edit(pics[:2], EDITS[:1])
  with pytest.raises(ValueError, match="seed must be an int"):
    remote.generate(["x"], seed="0")
  with pytest.raises(ValueError, match="http://host:port"):
    RemoteBackend("gpu-host:8765")
  with pytest.raises(ValueError, match="timeout > 0"):
    RemoteBackend("http://h:1", timeout=0)


# -- bad requests --------------------------------------------------------------


def test_bad_requests_get_400_and_the_server_survives(world, pics):
  good_pic = protocol.encode_picture(pics[0])
  png = base64.b64decode(good_pic["png"])
  corrupt = dict(good_pic, png=base64.b64encode(png[:30]).decode())
  cases = [
      ("/edit", b"{not json", "not JSON"),
      ("/edit", b"[1, 2]", "expected a JSON object"),
      ("/edit", json.dumps({"seed": 0, "pictures": [good_pic] * 2,
                            "instructions": ["x"]}).encode(),
       "2 pictures but 1 instructions"),
      ("/edit", json.dumps({"seed": 0, "pictures": [corrupt],
                            "instructions": ["x"]}).encode(),
       r"pictures[0].png: not a readable image"),
      ("/edit", json.dumps({"seed": 0, "pictures": [dict(good_pic, png="@@")],
                            "instructions": ["x"]}).encode(), "not base64"),
      ("/edit", json.dumps({"seed": 0, "pictures": [dict(good_pic, scene=3)],
                            "instructions": ["x"]}).encode(),
       "scene: expected str or null"),
      ("/generate", json.dumps({"captions": ["x"]}).encode(),
       "missing field 'seed'"),
      ("/generate", json.dumps({"seed": True, "captions": ["x"]}).encode(),
       "seed: expected int"),
      ("/generate", json.dumps({"seed": 0, "captions": [1]}).encode(),
       r"captions[0]: expected str"),
  ]
  with serving(world) as server:
    for path, body, message in cases:
      status, reply = _post(server.url, path, body)
      assert status == 400 and message in reply["error"], (message, reply)
    status, reply = _post(server.url, "/nope", b"{}")
    assert status == 404 and "/generate" in reply["error"]
    with pytest.raises(urllib.error.HTTPError, match="404"):
      urllib.request.urlopen(server.url + "/nope", timeout=10)
    # Still serving after all that.
    assert RemoteBackend(server.url).generate(CAPTIONS[:1]) == world.generate(
        CAPTIONS[:1])


def test_body_limits(world):
  with serving(world, max_body_bytes=100) as server:
    status, reply = _post(server.url, "/generate", b"x" * 101)
    assert status == 413 and "exceeds the limit of 100" in reply["error"]
    host, port = server.url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.putrequest("POST", "/generate")  # No Content-Length header.
    conn.endheaders()
    resp = conn.getresponse()
    assert resp.status == 411 and b"Content-Length" in resp.read()
    conn.close()
    with pytest.raises(RemoteError, match="rejected the request: HTTP 413"):
      RemoteBackend(server.url).generate(["a red circle"] * 20)


# -- failures seen by the client -----------------------------------------------


def test_unsupported_operation_is_not_implemented_remotely(world, pics):
  with serving(GenerateOnlyBackend(world)) as server:
    remote = RemoteBackend(server.url)
    with pytest.raises(NotImplementedError, match="generate_only cannot edit"):
      remote.edit(pics[:1], EDITS[:1])
    assert remote.generate(CAPTIONS[:1])[0].ok


def test_server_errors_are_retried(world):
  failures = [RuntimeError("CUDA out of memory")] * 2

  def before(op):
    del op
    if failures:
      raise failures.pop()
  inner = ScriptedBackend(world, before)
  with serving(inner) as server:
    res = RemoteBackend(server.url, retries=2, backoff=0.01).generate(
        CAPTIONS[:1])
    assert res == world.generate(CAPTIONS[:1]) and len(inner.calls) == 3
    failures[:] = [RuntimeError("CUDA out of memory")] * 5
    with pytest.raises(RemoteError) as e:
      RemoteBackend(server.url, retries=1, backoff=0.01).generate(["x"])
  msg = str(e.value)
  assert server.url in msg and "2 attempt(s)" in msg
  assert "HTTP 500" in msg and "CUDA out of memory" in msg


def test_service_down_is_a_clear_error_after_retries():
  url = f"http://127.0.0.1:{_free_port()}"
  remote = RemoteBackend(url, retries=2, backoff=0.05)
  t = time.monotonic()
  with pytest.raises(RemoteError) as e:
    remote.generate(["a red circle"])
  assert time.monotonic() - t >= 0.05 + 0.1  # Backoff doubled between tries.
  msg = str(e.value)
  assert url in msg and "3 attempt(s)" in msg and "cannot connect" in msg
  with pytest.raises(RemoteError, match="cannot connect"):
    _ = remote.cache_id  # Asking the backend's identity needs the service.


def test_slow_server_times_out(world):
  release = threading.Event()
  slow = ScriptedBackend(world, lambda op: release.wait(10))
  with serving(slow) as server:
    remote = RemoteBackend(server.url, timeout=0.3, retries=3, backoff=0.01)
    t = time.monotonic()
    with pytest.raises(RemoteError, match=r"no answer within 0.3 s") as e:
      remote.generate(["a red circle"])
    release.set()
  assert server.url in str(e.value)
  assert time.monotonic() - t < 5 and len(slow.calls) == 1  # Not resent.


@pytest.mark.parametrize("code, body, message", [
    (200, b"<html>hello</html>", "answered garbage: response: not JSON"),
    (200, b'{"results": []}', "0 results for 1 items"),
    (200, b'{"results": [{"png": "AAAA"}]}', "not a readable image"),
    (200, b'{"answers": []}', "missing field 'results'"),
    (404, b"no such thing", "HTTP 404: no such thing"),
    (400, b'{"error": "bad seed"}', "HTTP 400: bad seed"),
])
def test_garbage_answers_are_clear_errors(code, body, message):
  with raw_server(lambda h: answer(h, code, body)) as url:
    with pytest.raises(RemoteError, match=message) as e:
      RemoteBackend(url, retries=0).generate(["a red circle"])
  assert url in str(e.value)


def test_connection_dropped_mid_answer_is_retried():
  calls = []

  def respond(h):
    calls.append(1)
    h.send_response(200)
    h.send_header("Content-Length", "1000")
    h.end_headers()
    h.wfile.write(b'{"res')  # And hang up.
    h.close_connection = True

  with raw_server(respond) as url:
    with pytest.raises(RemoteError, match="2 attempt") as e:
      RemoteBackend(url, retries=1, backoff=0.01).generate(["x"])
  assert len(calls) == 2 and "IncompleteRead" in str(e.value)


# -- the command line ----------------------------------------------------------


def test_serve_command_line(tmp_path):
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  cmd = [sys.executable, "-m", "auditdm_jax.imaging.serve", "--backend",
         "world", "--backend_kwargs", '{"grid": 2, "image_size": 32}',
         "--port", "0", "--cache_dir", str(tmp_path)]
  proc = subprocess.Popen(cmd, cwd=repo, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True)
  try:
    line = proc.stdout.readline()
    assert line.startswith("serving world on http://127.0.0.1:"), line
    url = line.split()[-1]
    res = RemoteBackend(url, timeout=30).generate(["a red circle"], seed=2)
    assert res == imaging.WorldBackend(grid=2, image_size=32).generate(
        ["a red circle"], seed=2)
    assert list(tmp_path.rglob("*.png"))  # Served through the disk cache.
  finally:
    proc.terminate()
    proc.wait(10)
  bad = subprocess.run(cmd[:4] + ["nope"], cwd=repo, capture_output=True,
                       text=True, timeout=60)
  assert bad.returncode == 2 and "unknown image backend 'nope'" in bad.stderr
  assert "world" in bad.stderr

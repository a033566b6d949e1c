"""Whole-or-nothing file writes.

A reader, or a run restarted after a crash, sees the old file or the new
one, never a torn one: the data goes to a temp file in the same directory
and is renamed over the target. `durable=True` also fsyncs the file before
the rename and the directory after it, so the rename itself survives a
power loss (harvest shards, image cache entries); summaries and reports
that a rerun rewrites anyway skip the two syncs.
"""

from __future__ import annotations

import json
import os
import pathlib
import threading
from typing import Any, Union

PathLike = Union[str, os.PathLike]


def fsync_dir(path: PathLike) -> None:
  """fsync a directory (after a rename in it); a no-op where unsupported."""
  try:
    fd = os.open(path, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass  # Some filesystems refuse fsync on a directory; the rename holds.
  finally:
    os.close(fd)


def write_bytes(path: PathLike, data: bytes, *, durable: bool = False
                ) -> None:
  """Writes `data` to `path` atomically (see the module doc)."""
  path = pathlib.Path(path)
  # Unique per process and thread: concurrent writers never share a temp.
  tmp = path.with_name(
      f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
  try:
    with open(tmp, "wb") as f:
      f.write(data)
      if durable:
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise
  if durable:
    fsync_dir(path.parent)


def write_text(path: PathLike, text: str, *, durable: bool = False) -> None:
  write_bytes(path, text.encode("utf-8"), durable=durable)


def write_json(path: PathLike, obj: Any, *, durable: bool = False,
               sort_keys: bool = False) -> None:
  """`obj` as indented JSON plus a newline, atomically."""
  write_text(path, json.dumps(obj, indent=2, sort_keys=sort_keys) + "\n",
             durable=durable)

"""atomic_io: whole-or-nothing writes leave the old file on failure."""

import json

import pytest

from auditdm_jax import atomic_io


@pytest.mark.parametrize("durable", [False, True])
def test_write_json_replaces_whole_file(tmp_path, durable):
  path = tmp_path / "summary.json"
  path.write_text("old")
  atomic_io.write_json(path, {"b": 1, "a": [2]}, durable=durable,
                       sort_keys=True)
  assert path.read_text() == '{\n  "a": [\n    2\n  ],\n  "b": 1\n}\n'
  assert json.loads(path.read_text()) == {"a": [2], "b": 1}
  assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path):
  path = tmp_path / "shard.bin"
  path.write_bytes(b"old")
  with pytest.raises(TypeError):
    atomic_io.write_bytes(path, "not bytes")  # f.write fails mid-way
  assert path.read_bytes() == b"old"
  assert [p.name for p in tmp_path.iterdir()] == ["shard.bin"]


def test_unserialisable_json_writes_nothing(tmp_path):
  path = tmp_path / "out.json"
  with pytest.raises(TypeError):
    atomic_io.write_json(path, {"x": object()})
  assert list(tmp_path.iterdir()) == []

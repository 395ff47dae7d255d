"""panolam.atomic: a write either lands whole or leaves the old file (and no temporary) behind."""

from __future__ import annotations

import os

import pytest

from panolam.atomic import atomic_path, atomic_write_bytes


def _mode(path) -> int:
    return path.stat().st_mode & 0o777


def test_atomic_path_renames_onto_the_target_with_plain_permissions(tmp_path):
    target = tmp_path / "sub" / "clip.mp4"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".mp4" and tmp.name.startswith(".")
        tmp.write_bytes(b"new")
        assert not target.exists()  # nothing visible until the block ends
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["clip.mp4"]
    mask = os.umask(0)
    os.umask(mask)
    assert _mode(target) == 0o666 & ~mask


def test_atomic_path_keeps_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "shard.tar"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard.tar"]


def test_atomic_path_overwrites_what_a_killed_run_left(tmp_path):
    target = tmp_path / "g.safetensors"
    with atomic_path(target) as stale:
        stale.write_bytes(b"first")
    # A hard kill mid-write leaves the temporary itself behind; the next write of the target reuses it.
    stale.write_bytes(b"half written by a killed run")
    with atomic_path(target) as tmp:
        assert tmp == stale
        tmp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.safetensors"]


def test_atomic_write_bytes_replaces_whole(tmp_path):
    target = tmp_path / "a" / "b.json"
    atomic_write_bytes(target, b"1")
    atomic_write_bytes(target, b"22")
    assert target.read_bytes() == b"22"
    assert sorted(p.name for p in target.parent.iterdir()) == ["b.json"]

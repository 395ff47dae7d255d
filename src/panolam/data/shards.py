"""Atomic WebDataset shard writing and a strict shard reader.

A shard is written with ``webdataset.TarWriter`` to a temporary name (``.<name>.tmp.tar``), fsynced
and renamed to ``<name>.tar`` (:func:`panolam.atomic.atomic_path`), then the directory is fsynced:
a killed run leaves at most that hidden file, which readers never open and the next run
overwrites. The reader groups tar members by WebDataset key (basename up to the first dot) and
turns any tar/decoding problem into a :class:`~panolam.data.format.CorruptShardError` naming the
shard file.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path
from typing import Iterable, Iterator

from panolam.atomic import atomic_path
from panolam.data.format import CorruptShardError, SubjectRecord, encode_record


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_shard(path: str | Path, records: Iterable[SubjectRecord]) -> int:
    """Write ``records`` to the tar ``path`` atomically; returns the number of samples."""
    import webdataset

    path = Path(path)
    n = 0
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        # mtime fixed so the same subjects give byte-identical shards (reproducible datasets).
        writer = webdataset.TarWriter(f, encoder=False, mtime=0.0)
        try:
            for rec in records:
                writer.write(encode_record(rec))
                n += 1
        finally:
            writer.close()  # also on failure, so the tar stream is not flushed into a closed file later
    fsync_dir(path.parent)
    return n


def _split_name(member: str) -> tuple[str, str]:
    base = member.rsplit("/", 1)[-1]
    if "." not in base:
        return base, ""
    key, suffix = base.split(".", 1)
    return key, suffix


def iter_raw_samples(path: str | Path) -> Iterator[dict[str, bytes]]:
    """Yield ``{"__key__": id, suffix: bytes, ...}`` per sample, in file order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"shard {path} does not exist (was the dataset moved or generation not finished?)")
    current: dict[str, bytes] | None = None
    try:
        with tarfile.open(path, mode="r|") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, suffix = _split_name(member.name)
                fobj = tar.extractfile(member)
                data = fobj.read() if fobj is not None else b""
                if len(data) != member.size:
                    raise CorruptShardError(f"{path}: member {member.name} is truncated")
                if current is None or current["__key__"] != key:
                    if current is not None:
                        yield current
                    current = {"__key__": key}  # type: ignore[dict-item]
                current[suffix] = data
    except (tarfile.TarError, EOFError, OSError) as e:
        raise CorruptShardError(f"{path}: corrupt or truncated shard ({e}); delete it and its .json record and rerun generation to rebuild it") from e
    if current is not None:
        yield current


def tar_end_looks_complete(path: str | Path) -> bool:
    """Cheap check (no decoding): a finished tar is whole 512-byte blocks ending in two zero blocks."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size < 1024 or size % 512:
            return False
        with open(path, "rb") as f:
            f.seek(size - 1024)
            return f.read(1024) == bytes(1024)
    except OSError:
        return False


def verify_shard(path: str | Path, subjects: list[str]) -> str | None:
    """Read every member of the shard; None when it holds exactly ``subjects`` intact, else the problem."""
    path = Path(path)
    if not tar_end_looks_complete(path):
        return f"{path}: truncated (the tar does not end where a finished shard ends)"
    try:
        keys = [sample["__key__"] for sample in iter_raw_samples(path)]
    except (CorruptShardError, FileNotFoundError) as e:
        return str(e)
    if keys != list(subjects):
        return f"{path}: holds {len(keys)} samples, its record lists {len(subjects)} ({', '.join(sorted(set(subjects) - set(keys))[:5]) or 'different names'} missing)"
    return None

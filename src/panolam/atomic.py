"""File writes that readers never see half done: a temporary file or directory beside the target,
then one rename (``os.replace``), with the permissions a plain ``open``/``mkdir`` would give. Used for
every file the project writes that a crash must not corrupt (heads, previews, checkpoints, caches,
dataset shards, converted GAN weights).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file + rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """For writers that want a file name rather than bytes (tar streams, safetensors, video encoders):
    yields ``.<stem>.tmp<suffix>`` beside ``path`` (same suffix, so format-sniffing writers still work);
    when the block ends without error the file is fsynced and renamed onto ``path``, otherwise removed.
    The name is fixed per target, so what a hard kill leaves behind is overwritten by the next run
    instead of piling up (readers never open it: it is hidden and does not end in the target's name)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def staging_dir(parent: str | Path, prefix: str) -> Path:
    """A fresh directory in ``parent`` to fill and then rename into place, with the usual permissions
    (``mkdtemp`` makes 0700 directories, which would survive the rename)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    path.chmod(0o777 & ~_umask())
    return path

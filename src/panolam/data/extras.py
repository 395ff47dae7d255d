"""Per-subject extra arrays stored beside the shards (``extras/<name>/<subject>.npy``).

Later pipeline steps (e.g. fitting teacher spherical tri-planes) cannot rewrite shards, so they
write sidecar arrays here, atomically; :class:`~panolam.data.dataset.MultiViewDataset` attaches
each present array as ``sample[name]``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from panolam.data.format import decode_npy, encode_npy
from panolam.atomic import atomic_write_bytes

EXTRAS_DIR = "extras"
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _path(root: str | Path, name: str, subject: str) -> Path:
    if not _NAME.match(name):
        raise ValueError(f"extra name {name!r} must be 1-64 letters, digits, '_' or '-'")
    if not _NAME.match(subject):
        raise ValueError(f"subject id {subject!r} is not a valid file name")
    return Path(root) / EXTRAS_DIR / name / f"{subject}.npy"


def write_extra(root: str | Path, name: str, subject_id: str, array: np.ndarray) -> Path:
    path = _path(root, name, subject_id)
    atomic_write_bytes(path, encode_npy(np.asarray(array)))
    return path


def read_extra(root: str | Path, name: str, subject_id: str) -> np.ndarray | None:
    """The array, or None when this subject has none."""
    path = _path(root, name, subject_id)
    if not path.is_file():
        return None
    return decode_npy(path.read_bytes(), str(path))


def extra_names(root: str | Path) -> list[str]:
    d = Path(root) / EXTRAS_DIR
    return sorted(p.name for p in d.iterdir() if p.is_dir()) if d.is_dir() else []

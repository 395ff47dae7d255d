"""A small on-disk cache for deterministic, expensive results keyed by their inputs (the built-in
head template: ~1 s of every cold start).

Entries live in ``$PANOLAM_CACHE_DIR`` (default ``~/.cache/panolam``; the value ``off`` disables the
cache) as uncompressed ``.npz`` files read with ``allow_pickle=False``. The file name is a SHA-256
over the entry's name, :data:`FORMAT_VERSION` and every input that determines the result (callers
include a hash of the generating source file). Writes are atomic (temporary file + ``os.replace``);
an unreadable or mismatching entry is recomputed and overwritten with a warning, and a cache that
cannot be written only warns: the cache never raises.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from panolam.atomic import atomic_write_bytes

FORMAT_VERSION = 1
ENV = "PANOLAM_CACHE_DIR"
_KEY_FIELD = "__panolam_cache_key__"


def cache_dir() -> Path | None:
    """The cache directory, or None when ``$PANOLAM_CACHE_DIR`` is ``off``."""
    value = os.environ.get(ENV, "").strip()
    if value.lower() == "off":
        return None
    return Path(value).expanduser() if value else Path.home() / ".cache" / "panolam"


def source_hash(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (use the module that computes an entry, so a code change misses)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def cache_key(name: str, inputs: dict[str, Any]) -> str:
    """Hex key of ``name`` + :data:`FORMAT_VERSION` + ``inputs`` (JSON-serialisable, order-independent)."""
    blob = json.dumps({"name": name, "format": FORMAT_VERSION, "inputs": inputs}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _read(path: Path, key: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    if str(arrays.pop(_KEY_FIELD, "")) != key:
        raise ValueError("entry's stored key does not match its name")
    return arrays


def _write(path: Path, key: str, arrays: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays, **{_KEY_FIELD: np.array(key)})
    atomic_write_bytes(path, buf.getvalue())


def cached_arrays(name: str, inputs: dict[str, Any],
                  compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """``compute()`` (a dict of numpy arrays, no object dtypes), read from the cache when an entry for
    ``(name, inputs)`` exists, else computed and stored."""
    root = cache_dir()
    if root is None:
        return compute()
    key = cache_key(name, inputs)
    path = root / f"{name}-{key[:32]}.npz"
    if path.exists():
        try:
            return _read(path, key)
        except Exception as exc:  # noqa: BLE001 - any unreadable entry is recomputed, never fatal
            warnings.warn(f"panolam cache entry {path} is unreadable ({exc}); recomputing it", RuntimeWarning,
                          stacklevel=2)
    arrays = compute()
    try:
        _write(path, key, arrays)
    except OSError as exc:
        warnings.warn(f"cannot write panolam cache entry {path} ({exc}); set {ENV}=off to skip the cache",
                      RuntimeWarning, stacklevel=2)
    return arrays

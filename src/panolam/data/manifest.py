"""The dataset manifest: a header plus per-shard completion records, merged on read.

Each generation process writes, after a shard's tar is safely renamed into place, a small
``shards/<name>.json`` record (subjects, split, count) — atomically. Those records are the source
of truth: :func:`load_manifest` merges every record whose tar exists, so several processes
(``--shard i/n``) never clobber each other and a stale ``manifest.json`` is harmless. The
``manifest.json`` summary (format version, generator, camera set, image size, views, planned and
completed counts, shard list) is rewritten atomically under a file lock after each shard for
people and tools that only want to read one file.

:func:`load_manifest` is strict about what is gone: a shard whose record exists but whose tar was
deleted (or one listed in ``manifest.json`` with neither) is an error, never silently fewer subjects.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Iterator

from panolam.data.format import FORMAT_VERSION, SPLITS
from panolam.errors import PanoLAMError
from panolam.atomic import atomic_write_bytes

MANIFEST = "manifest.json"
SHARD_DIR = "shards"
# Header fields that must agree between a resumed run and the existing dataset.
HEADER_KEYS = ("format_version", "generator", "generator_config", "camera_set", "views", "size", "background", "seed", "subjects_per_shard")
# Header fields every reader relies on.
REQUIRED_KEYS = ("format_version", "generator", "camera_set", "views", "size")


class DatasetError(PanoLAMError):
    """A dataset folder whose manifest or shards are missing or damaged; the message names the file."""


@dataclasses.dataclass
class ShardInfo:
    name: str  # file name of the tar, e.g. "train-00003.tar"
    split: str
    index: int
    subjects: list[str]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Manifest:
    root: Path
    header: dict[str, Any]
    shards: list[ShardInfo]

    def shards_of(self, split: str) -> list[ShardInfo]:
        return [s for s in self.shards if s.split == split]

    def subjects(self, split: str | None = None) -> list[str]:
        return [sub for s in self.shards if split is None or s.split == split for sub in s.subjects]

    def counts(self) -> dict[str, int]:
        return {split: len(self.subjects(split)) for split in SPLITS}

    def shard_path(self, shard: ShardInfo) -> Path:
        return self.root / SHARD_DIR / shard.name

    def find_subject(self, subject: str) -> ShardInfo:
        for s in self.shards:
            if subject in s.subjects:
                return s
        raise KeyError(f"subject {subject!r} is not in the dataset at {self.root}")

    @property
    def size(self) -> int:
        return int(self.header["size"])

    def summary(self) -> dict[str, Any]:
        return {**self.header, "counts": self.counts(), "shards": [s.to_dict() for s in self.shards]}


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:05d}.tar"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: unreadable JSON ({e})") from e


def record_path(root: Path, name: str) -> Path:
    return Path(root) / SHARD_DIR / (name[: -len(".tar")] + ".json")


def write_shard_record(root: str | Path, info: ShardInfo) -> None:
    atomic_write_bytes(record_path(Path(root), info.name), json.dumps({**info.to_dict(), "time": time.time()}, indent=1).encode())


def completed_shards(root: str | Path) -> list[ShardInfo]:
    """Records whose tar exists (a record without its tar, or a tar without a record, is incomplete)."""
    shard_dir = Path(root) / SHARD_DIR
    out = []
    for rec in sorted(shard_dir.glob("*.json")) if shard_dir.is_dir() else []:
        d = _read_json(rec)
        info = ShardInfo(d["name"], d["split"], int(d["index"]), list(d["subjects"]))
        if (shard_dir / info.name).is_file():
            out.append(info)
    return sorted(out, key=lambda s: (SPLITS.index(s.split) if s.split in SPLITS else 99, s.index))


def load_manifest(root: str | Path) -> Manifest:
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no dataset at {root}: {path} is missing (make one with `panolam data synth --out {root}`)")
    header = _read_json(path)
    if not isinstance(header, dict):
        raise DatasetError(f"{path}: expected a JSON object (the dataset header), got {type(header).__name__}; "
                           f"the manifest is damaged, regenerate it with `panolam data synth --out {root}` and the same settings")
    missing = [k for k in REQUIRED_KEYS if k not in header]
    if missing:
        raise DatasetError(f"{path}: lacks {', '.join(missing)}; not a PanoLAM dataset manifest (regenerate it with "
                           f"`panolam data synth --out {root}` and the same settings)")
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        raise DatasetError(f"{path}: dataset format version {version!r}, this code reads version {FORMAT_VERSION}")
    listed = [s.get("name") for s in header.get("shards", []) if isinstance(s, dict)] if isinstance(header.get("shards"), list) else []
    header = {k: v for k, v in header.items() if k not in ("shards", "counts")}
    shards = completed_shards(root)
    gone = missing_shards(root)
    done = {s.name for s in shards}
    gone += [n for n in listed if n and n not in done and n not in gone]
    if gone:
        raise DatasetError(f"{root / SHARD_DIR}: shard(s) {', '.join(sorted(gone))} are listed as complete but their tar is "
                           f"missing; restore them, or rerun `panolam data synth --out {root}` with the same settings to regenerate them")
    return Manifest(root, header, shards)


def missing_shards(root: str | Path) -> list[str]:
    """Tars whose completion record exists but whose file is gone (deleted or moved)."""
    shard_dir = Path(root) / SHARD_DIR
    recs = sorted(shard_dir.glob("*.json")) if shard_dir.is_dir() else []
    return [str(_read_json(r).get("name")) for r in recs if not (shard_dir / str(_read_json(r).get("name"))).is_file()]


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Serialise manifest rewrites between processes on one machine (advisory flock)."""
    import fcntl

    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".manifest.lock", "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def init_manifest(root: str | Path, header: dict[str, Any]) -> None:
    """Create ``manifest.json`` or check that an existing one agrees with ``header`` (resume)."""
    root = Path(root)
    header = {"format_version": FORMAT_VERSION, **header}
    with _locked(root):
        path = root / MANIFEST
        old = _read_json(path) if path.is_file() else None
        if isinstance(old, dict) and not completed_shards(root) and not missing_shards(root):
            old = None  # nothing was generated under the old header (e.g. a run that stopped on bad arguments): start afresh
        if old is not None:
            if not isinstance(old, dict):
                raise DatasetError(f"{path}: not a dataset header (got {type(old).__name__}); delete it to start the dataset afresh")
            diff = {k: (old.get(k), header.get(k)) for k in HEADER_KEYS if old.get(k) != header.get(k)}
            if diff:
                detail = ", ".join(f"{k}: existing {a!r} vs requested {b!r}" for k, (a, b) in diff.items())
                raise DatasetError(f"{path} was made with different settings ({detail}); use another --out or the same settings to resume")
            planned = {s: max(old.get("planned", {}).get(s, 0), header.get("planned", {}).get(s, 0)) for s in SPLITS}
            header = {**old, "planned": planned}
        _write_summary(root, header)


def refresh_manifest(root: str | Path) -> None:
    """Rewrite ``manifest.json`` from the header and every completed shard record."""
    root = Path(root)
    with _locked(root):
        header = {k: v for k, v in _read_json(root / MANIFEST).items() if k not in ("shards", "counts")}
        _write_summary(root, header)


def _write_summary(root: Path, header: dict[str, Any]) -> None:
    header = {k: v for k, v in header.items() if k not in ("shards", "counts")}
    m = Manifest(root, header, completed_shards(root))
    atomic_write_bytes(root / MANIFEST, json.dumps(m.summary(), indent=1).encode())


"""Accept/reject decisions from the labelling tool, one file per labeller, merged on read.

``labels/<labeller>.json`` holds ``{"labeller": name, "decisions": {subject: {"decision":
"accept"|"reject"|"clear", "time": unix seconds}}}``. Each labeller writes only their own file
(atomically, on every change, holding an exclusive ``fcntl`` lock on ``labels/.<labeller>.lock`` for the
read-modify-write, so two processes or tabs writing the same labeller's file never lose a decision),
so people labelling different shards never clobber each other;
:func:`read_labels` merges all files and the latest decision per subject wins by timestamp
("clear" withdraws an earlier decision). The loader drops subjects whose merged decision is reject.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from pathlib import Path
from typing import Any, Iterator

from panolam.atomic import atomic_write_bytes

DECISIONS = ("accept", "reject", "clear")
LABEL_DIR = "labels"
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def label_file(root: Path, labeller: str) -> Path:
    if not _NAME.match(labeller) or labeller.startswith("."):
        raise ValueError(f"labeller name {labeller!r} must be 1-64 letters, digits, '_', '-' or '.'")
    return root / LABEL_DIR / f"{labeller}.json"


def _load(path: Path) -> dict[str, Any]:
    try:
        d = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: unreadable labels file ({e})") from e
    if not isinstance(d, dict) or not isinstance(d.get("decisions"), dict):
        raise ValueError(f"{path}: not a labels file (expected a 'decisions' object)")
    return d


def set_label(root: str | Path, labeller: str, subject: str, decision: str, when: float | None = None) -> None:
    """Record ``decision`` for ``subject`` in ``labeller``'s file (atomic rewrite)."""
    if decision not in DECISIONS:
        raise ValueError(f"decision {decision!r} must be one of {', '.join(DECISIONS)}")
    path = label_file(Path(root), labeller)
    with _locked(path):
        d = _load(path) if path.is_file() else {"labeller": labeller, "decisions": {}}
        d["decisions"][subject] = {"decision": decision, "time": time.time() if when is None else when}
        atomic_write_bytes(path, json.dumps(d, indent=1, sort_keys=True).encode())


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive advisory lock for one labeller's file (the file itself is replaced on write, so lock a sibling)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.stem}.lock", "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def read_labels(root: str | Path) -> dict[str, str]:
    """Merged decisions ``{subject: "accept"|"reject"}`` (cleared or unlabelled subjects absent)."""
    latest: dict[str, tuple[float, str]] = {}
    label_dir = Path(root) / LABEL_DIR
    for path in sorted(label_dir.glob("*.json")) if label_dir.is_dir() else []:
        for subject, entry in _load(path)["decisions"].items():
            t, dec = float(entry["time"]), str(entry["decision"])
            if subject not in latest or t >= latest[subject][0]:
                latest[subject] = (t, dec)
    return {s: dec for s, (_, dec) in latest.items() if dec != "clear"}


def rejected(root: str | Path) -> set[str]:
    return {s for s, dec in read_labels(root).items() if dec == "reject"}

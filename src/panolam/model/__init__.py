"""The PanoLAM network: image encoder, transformer blocks, Gaussian heads, the point and spherical
tri-plane branches, the frozen tri-plane decoder, and checkpoints. It never renders and never reads
datasets. The main names are re-exported lazily (``from panolam.model import PanoLAM, load_model``)
so importing one submodule does not import the others.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PanoLAM": "panolam.model.panolam",
    "PanoLAMOutput": "panolam.model.panolam",
    "save_model": "panolam.model.checkpoint",
    "load_model": "panolam.model.checkpoint",
    "CheckpointError": "panolam.model.checkpoint",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'panolam.model' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)

"""Training state (optimiser, scheduler, RNG, data positions) saved without pickle.

A nested Python structure of dicts, lists, tuples, scalars, ``torch.Tensor`` and ``numpy.ndarray``
is split into ``state.safetensors`` (every array, under a generated key) and ``state.json`` (the
structure, with ``{"__tensor__": key}`` / ``{"__ndarray__": key}`` placeholders; tuples and dicts
with non-string keys are tagged so they come back exactly). Reading it never runs code from the
file: safetensors holds only raw arrays, JSON only data. Both files are written in the checkpoint's
staging folder, so they appear together when it is renamed into place.

Checkpoints from before this format hold a pickled ``state.pt``; :func:`load_legacy_state` reads
those with ``torch.load(weights_only=True)`` and an allow-list of the numpy types the RNG state
needs, so a planted pickle that wants to call anything else is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from panolam.errors import PanoLAMError

STATE_JSON, STATE_TENSORS, LEGACY_STATE = "state.json", "state.safetensors", "state.pt"
_FORMAT = "panolam-train-state"


class TrainStateError(PanoLAMError):
    """A training state that cannot be read (missing, truncated, not our format, or a refused pickle)."""


def _encode(obj: Any, arrays: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        key = f"t{len(arrays)}"
        arrays[key] = obj.detach().to("cpu").clone().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        key = f"t{len(arrays)}"
        arrays[key] = torch.from_numpy(np.ascontiguousarray(obj).copy())
        return {"__ndarray__": key}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj) and not any(k.startswith("__") for k in obj):
            return {k: _encode(v, arrays) for k, v in obj.items()}
        return {"__items__": [[_encode(k, arrays), _encode(v, arrays)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, arrays) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, arrays) for v in obj]
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"training state holds a {type(obj).__name__}, which this format cannot store")


def _decode(obj: Any, arrays: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, arrays) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return arrays[obj["__tensor__"]]
    if "__ndarray__" in obj:
        return arrays[obj["__ndarray__"]].numpy()
    if "__tuple__" in obj:
        return tuple(_decode(v, arrays) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {_hashable(_decode(k, arrays)): _decode(v, arrays) for k, v in obj["__items__"]}
    return {k: _decode(v, arrays) for k, v in obj.items()}


def _hashable(k: Any) -> Any:
    return tuple(k) if isinstance(k, list) else k


def save_state(state: dict[str, Any], folder: str | Path) -> None:
    """Write ``state`` as ``folder/state.safetensors`` + ``folder/state.json``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    arrays: dict[str, torch.Tensor] = {}
    tree = _encode(state, arrays)
    save_file(arrays, str(folder / STATE_TENSORS), metadata={"format": _FORMAT})
    (folder / STATE_JSON).write_text(json.dumps({"format": _FORMAT, "version": 1, "state": tree}))


def has_state(folder: str | Path) -> bool:
    folder = Path(folder)
    return (folder / STATE_JSON).is_file() or (folder / LEGACY_STATE).is_file()


def load_state(folder: str | Path) -> dict[str, Any]:
    """Read the state saved by :func:`save_state` (or a legacy ``state.pt``); :class:`TrainStateError` if unusable."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / STATE_JSON).is_file():
        if (folder / LEGACY_STATE).is_file():
            return load_legacy_state(folder / LEGACY_STATE)
        raise TrainStateError(f"{folder}: no {STATE_JSON} (the checkpoint is incomplete)")
    try:
        doc = json.loads((folder / STATE_JSON).read_text())
        if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
            raise ValueError("not a PanoLAM training state")
        arrays = load_file(str(folder / STATE_TENSORS), device="cpu")
        state = _decode(doc["state"], arrays)
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as exc:
        raise TrainStateError(f"{folder}: training state is damaged or truncated ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict):
        raise TrainStateError(f"{folder / STATE_JSON}: not a PanoLAM training state")
    return state


def load_legacy_state(path: str | Path) -> dict[str, Any]:
    """A pre-safetensors ``state.pt``, unpickled with ``weights_only=True`` (numpy RNG arrays allowed, nothing else)."""
    import pickle

    path = Path(path)
    allowed = [np.core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]
    try:
        with torch.serialization.safe_globals(allowed):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrainStateError(f"{path}: refused or unreadable training state (only plain tensors and numbers are loaded, "
                              f"never arbitrary pickled objects): {first}") from exc
    if not isinstance(state, dict):
        raise TrainStateError(f"{path}: not a PanoLAM training state")
    return state

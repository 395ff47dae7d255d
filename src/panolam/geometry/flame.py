"""Read the neutral mesh (``v_template``, ``f``) from a FLAME model file the user owns, safely, and
place it in the GAN world frame. Nothing FLAME-derived ships with PanoLAM (DESIGN §7).

Accepted files: FLAME 2020/2023 pickles (``generic_model.pkl``, ``flame2023.pkl``; Python-2
pickles holding numpy arrays, ``chumpy.ch.Ch`` objects and scipy sparse matrices) and ``.npz``
archives with ``v_template`` and ``f``. Pickles are read by an unpickler with a ``find_class``
whitelist: numpy array reconstruction, inert stand-ins for chumpy objects (they keep only their
state, whose array ``x`` is the value) and for scipy sparse matrices (never needed here); any
other global — ``os.system``, ``builtins.eval``, … — is refused with an error naming the file.
Neither chumpy nor scipy is imported.

Transform into our frame (FLAME: metres, y up, face +z, origin near the neck): scale uniformly so
the chin-to-crown height equals the built-in template's (crown = highest vertex, chin = lowest
vertex in the front quarter of the depth), then translate so the crown sits at the built-in
crown height and the x/z bounding-box centre at 0.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch


class ChumpyStandIn:
    """Inert replacement for ``chumpy.ch.Ch`` (and other chumpy classes): keeps the state only."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.x = args[0] if args else None

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            state = state[0] or state[1]
        self.state = state
        if isinstance(state, dict) and "x" in state:
            self.x = state["x"]


class OpaqueStandIn:
    """Inert replacement for scipy sparse matrices: keeps the state, is never used."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _safe_reconstructor(cls: type, base: type, state: Any) -> Any:
    """``copyreg._reconstructor`` restricted to our stand-ins (Python-2 pickles use it for Ch)."""
    if cls not in (ChumpyStandIn, OpaqueStandIn):
        raise pickle.UnpicklingError(f"refusing to reconstruct {cls!r}")
    return cls.__new__(cls)


_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # protocol-2 pickles written by Python 3 store array bytes this way
}
_BUILTINS = {"object": object, "set": set, "frozenset": frozenset}


class SafeFlameUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals a FLAME model needs (see module docstring)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_GLOBALS:
            return super().find_class(module, name)
        if module == "chumpy" or module.startswith("chumpy."):
            return ChumpyStandIn
        if (module == "scipy.sparse" or module.startswith("scipy.sparse.")) and name.endswith("_matrix"):
            return OpaqueStandIn
        if (module, name) in (("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor")):
            return _safe_reconstructor
        if module in ("__builtin__", "builtins") and name in _BUILTINS:
            return _BUILTINS[name]  # plain containers inside chumpy state
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}: not part of a FLAME model")


def _as_array(value: Any, key: str, path: Path) -> np.ndarray:
    if isinstance(value, ChumpyStandIn):
        if not isinstance(value.x, np.ndarray):
            raise ValueError(f"{path}: field {key!r} is a chumpy object without an array 'x' in its state")
        value = value.x
    if not isinstance(value, np.ndarray):
        raise ValueError(f"{path}: field {key!r} is {type(value).__name__}, expected an array")
    return value


def read_flame_arrays(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(v_template (V, 3) float64, f (F, 3) int64)`` from a FLAME .pkl or .npz file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FLAME model {str(path)!r} not found")
    if path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ("v_template", "f") if k not in data.files]
            if missing:
                raise ValueError(f"{path}: missing {', '.join(missing)} (has {', '.join(data.files)})")
            verts, faces = data["v_template"], data["f"]
    else:
        try:
            with path.open("rb") as fh:
                model = SafeFlameUnpickler(fh, encoding="latin1").load()
        except pickle.UnpicklingError as exc:
            raise ValueError(f"{path}: not a FLAME model we can read safely: {exc}") from exc
        except (EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
            raise ValueError(f"{path}: unreadable pickle: {exc}") from exc
        if not isinstance(model, dict) or "v_template" not in model or "f" not in model:
            raise ValueError(f"{path}: expected a dict with 'v_template' and 'f'")
        verts, faces = _as_array(model["v_template"], "v_template", path), _as_array(model["f"], "f", path)
    verts = np.asarray(verts, dtype=np.float64)
    faces = np.asarray(faces).astype(np.int64)
    if verts.ndim != 2 or verts.shape[1] != 3 or len(verts) < 4:
        raise ValueError(f"{path}: v_template must be (V, 3), got {verts.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.min() < 0 or faces.max() >= len(verts):
        raise ValueError(f"{path}: f must be (F, 3) indices into {len(verts)} vertices")
    return verts, faces


def flame_to_world(verts: np.ndarray) -> np.ndarray:
    """FLAME metres → GAN world frame (see module docstring for the rule)."""
    from panolam.geometry.template import HEAD_CHIN_Y, HEAD_TOP_Y

    y, z = verts[:, 1], verts[:, 2]
    zmin, zmax = z.min(), z.max()
    front = z >= zmin + 0.75 * (zmax - zmin)
    crown, chin = y.max(), y[front].min()
    if not crown > chin:
        raise ValueError("FLAME mesh has no height (crown <= chin): not a head?")
    scale = (HEAD_TOP_Y - HEAD_CHIN_Y) / (crown - chin)
    out = verts * scale
    centre = 0.5 * (out.min(0) + out.max(0))
    out[:, 0] -= centre[0]
    out[:, 2] -= centre[2]
    out[:, 1] += HEAD_TOP_Y - crown * scale
    return out


def load_flame_template(path: str | Path):
    """A :class:`~panolam.geometry.template.HeadTemplate` from a FLAME file, in our world frame."""
    from panolam.geometry.template import HeadTemplate, label_regions

    verts, faces = read_flame_arrays(path)
    world = flame_to_world(verts)
    return HeadTemplate(
        vertices=torch.from_numpy(world.astype(np.float32)),
        faces=torch.from_numpy(faces),
        regions=torch.from_numpy(label_regions(world)),
        name=f"flame:{Path(path).name}",
    )

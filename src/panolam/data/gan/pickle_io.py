"""Read official EG3D-family ``.pkl`` checkpoints without running any code in them; convert to safetensors.

The official training code pickles its networks through ``torch_utils.persistence``: each network
module is reduced to ``_reconstruct_persistent_obj(meta)`` where ``meta`` holds the module's
*source code* (``module_src``), its ``class_name`` and its ``state`` (the ``nn.Module.__dict__``:
``_parameters``, ``_buffers``, ``_modules``, ``_init_kwargs``, …). Unpickling it normally executes
that source. :class:`RestrictedUnpickler` instead

* maps ``_reconstruct_persistent_obj`` to a function that keeps ``class_name`` and ``state`` in a
  :class:`PersistentStub` and ignores ``module_src`` (it is never compiled or imported);
* maps plain classes of the official packages (``training.*``, ``torch_utils.*``, ``dnnlib.*``)
  and of ``torch.nn.modules`` to inert stub classes that only record their pickled state;
* allows the handful of functions that rebuild tensors (``torch._utils._rebuild_tensor_v2``,
  ``_rebuild_parameter``; the storage bytes inside go through ``torch.load(weights_only=True)``),
  ordered dicts, numpy scalars/dtypes and torch dtypes;
* refuses every other global with :class:`UnsafePickleError` naming it — e.g. ``os.system``.

From the rebuilt tree :func:`load_official_pickle` collects a flat state dict (parameters and
persistent buffers, as ``module.state_dict()`` would name them) and the constructor kwargs of the
chosen network (``G_ema`` by default). :func:`save_converted` writes that as safetensors with the
class name and kwargs as JSON metadata; :func:`load_gan_checkpoint` reads either form.
"""

from __future__ import annotations

import codecs
import collections
import dataclasses
import hashlib
import io
import json
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

META_KEY = "panolam_gan"
STUB_PREFIXES = ("training.", "torch_utils.", "dnnlib.", "torch.nn.modules.", "_imported_module_")
STUB_MODULES = ("training", "torch_utils", "dnnlib")


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """The pickle references something other than tensors, containers and the official network classes."""


class Stub:
    """An inert stand-in for a pickled object of a class we never import; keeps its state."""

    _stub_module = ""
    _stub_name = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.state = args, {}

    def __setstate__(self, state: Any) -> None:
        self.state = state if isinstance(state, dict) else {"_state": state}

    def __repr__(self) -> str:
        return f"<stub {self._stub_module}.{self._stub_name}>"


class StubDict(dict):
    """Stand-in for ``dnnlib.EasyDict`` (a dict subclass)."""


@dataclasses.dataclass
class PersistentStub:
    """A ``torch_utils.persistence`` object: its class name and state; its source is only hashed."""

    class_name: str
    state: dict
    source_sha256: str


@dataclasses.dataclass
class GanCheckpoint:
    class_name: str
    init_kwargs: dict
    state_dict: dict[str, torch.Tensor]
    source: str  # "pkl" or "safetensors"
    extra: dict = dataclasses.field(default_factory=dict)


_stub_classes: dict[tuple[str, str], type] = {}


def _stub_class(module: str, name: str) -> type:
    key = (module, name)
    if key not in _stub_classes:
        base = StubDict if name == "EasyDict" else Stub
        _stub_classes[key] = type(name, (base,), {"_stub_module": module, "_stub_name": name})
    return _stub_classes[key]


def _reconstruct_persistent_obj(meta: Any) -> PersistentStub:
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("class_name"), str):
        raise UnsafePickleError("malformed torch_utils.persistence record (expected a dict with type 'class' and class_name)")
    src = meta.get("module_src", "")
    digest = hashlib.sha256(src.encode() if isinstance(src, str) else b"").hexdigest()
    state = meta.get("state") or {}
    if not isinstance(state, dict):
        raise UnsafePickleError(f"persistent object {meta['class_name']} has a non-dict state")
    return PersistentStub(meta["class_name"], dict(state), digest)


def _load_storage_bytes(b: bytes):
    try:
        return torch.load(io.BytesIO(b), weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafePickleError(f"a tensor storage inside the pickle is not plain tensor data: {e}") from None


def _rebuild_parameter(data, requires_grad, backward_hooks, *_):
    return data.detach()


def _np_scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise UnsafePickleError("numpy object scalars are not allowed")
    return np.core.multiarray.scalar(dtype, data)


def _np_dtype(*args):
    dt = np.dtype(*args)
    if dt.hasobject:
        raise UnsafePickleError("numpy object dtypes are not allowed")
    return dt


def _codecs_encode(obj, encoding="utf-8"):
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1", "utf-8", "ascii"):
        raise UnsafePickleError("unexpected _codecs.encode call")
    return codecs.encode(obj, encoding)


_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage_bytes,
    ("numpy.core.multiarray", "scalar"): _np_scalar,
    ("numpy._core.multiarray", "scalar"): _np_scalar,
    ("numpy", "dtype"): _np_dtype,
    ("_codecs", "encode"): _codecs_encode,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals listed in the module docstring."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module in STUB_MODULES or module.startswith(STUB_PREFIXES):
            if module == "torch_utils.persistence":
                raise UnsafePickleError(f"refusing torch_utils.persistence.{name}: only _reconstruct_persistent_obj is expected")
            return _stub_class(module, name)
        raise UnsafePickleError(f"refusing to load: the pickle references {module}.{name}, which is not a tensor, a container "
                                "or a class of the EG3D/PanoHead/SphereHead code (no code from a pickle is ever run)")


def restricted_load(f) -> Any:
    return RestrictedUnpickler(f).load()


def _state_of(obj: Any) -> dict:
    if isinstance(obj, PersistentStub):
        return obj.state
    if isinstance(obj, Stub):
        return obj.state
    raise TypeError(f"not a module stub: {type(obj).__name__}")


def collect_state_dict(obj: Any, prefix: str = "", out: dict | None = None) -> dict[str, torch.Tensor]:
    """Parameters and persistent buffers of a stubbed module tree, named as ``state_dict()`` would."""
    out = {} if out is None else out
    st = _state_of(obj)
    for name, p in (st.get("_parameters") or {}).items():
        if p is not None:
            out[prefix + name] = p
    skip = st.get("_non_persistent_buffers_set") or set()
    for name, b in (st.get("_buffers") or {}).items():
        if b is not None and name not in skip:
            out[prefix + name] = b
    for name, child in (st.get("_modules") or {}).items():
        if child is not None:
            collect_state_dict(child, f"{prefix}{name}.", out)
    return out


def _plain(x: Any) -> Any:
    """JSON-able copy of pickled kwargs (EasyDict stubs -> dict, tuples -> lists, numpy scalars -> numbers)."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    raise UnsafePickleError(f"constructor kwargs hold a {type(x).__name__}, which cannot be recorded")


def load_official_pickle(path: str | os.PathLike, key: str = "G_ema") -> GanCheckpoint:
    """State dict and constructor kwargs of network ``key`` of an official pickle, running none of its code."""
    with open(path, "rb") as f:
        try:
            data = restricted_load(f)
        except UnsafePickleError:
            raise
        except Exception as e:  # truncated or not a pickle at all
            raise UnsafePickleError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict) or key not in data:
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise UnsafePickleError(f"{path}: expected a dict with a {key!r} network (official training snapshot); found {keys}")
    net = data[key]
    if not isinstance(net, PersistentStub):
        raise UnsafePickleError(f"{path}: {key!r} is not a torch_utils.persistence network")
    state = {k: v.detach().clone().contiguous() for k, v in collect_state_dict(net).items()}
    args = net.state.get("_init_args") or ()
    if args:
        raise UnsafePickleError(f"{path}: {net.class_name} was built with positional args; only keyword args are supported")
    kwargs = _plain(dict(net.state.get("_init_kwargs") or {}))
    return GanCheckpoint(net.class_name, kwargs, state, "pkl", {"module_src_sha256": net.source_sha256})


def save_converted(ckpt: GanCheckpoint, out: str | os.PathLike) -> Path:
    """Write the state dict as safetensors (atomically) with class name and kwargs as metadata."""
    from safetensors.torch import save_file

    from panolam.atomic import atomic_path

    out = Path(out)
    meta = {META_KEY: json.dumps({"class_name": ckpt.class_name, "init_kwargs": ckpt.init_kwargs, **ckpt.extra})}
    with atomic_path(out) as tmp:
        save_file({k: v.contiguous() for k, v in ckpt.state_dict.items()}, str(tmp), metadata=meta)
    return out


def load_gan_checkpoint(path: str | os.PathLike, key: str = "G_ema") -> GanCheckpoint:
    """Read an official ``.pkl`` (restricted) or a converted ``.safetensors``; refuse anything else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GAN checkpoint {path} does not exist")
    with open(path, "rb") as f:
        head = f.read(2)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
        info = json.loads(meta[META_KEY]) if META_KEY in meta else {}
        return GanCheckpoint(info.pop("class_name", ""), info.pop("init_kwargs", {}), state, "safetensors", info)
    if path.suffix == ".pkl" and head[:1] == b"\x80":
        return load_official_pickle(path, key)
    raise ValueError(f"{path}: not a GAN checkpoint this project reads; give the official .pkl or a .safetensors "
                     "made by `panolam data convert-gan`")

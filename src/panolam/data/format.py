"""The on-disk subject record (format version 1) and its encode/decode.

A dataset directory holds::

    manifest.json                 summary: format version, generator, camera set, sizes, shards, counts
    shards/<split>-<k:05d>.tar    WebDataset tar shards, one sample per subject
    shards/<split>-<k:05d>.json   completion record of that shard (the source of truth for the manifest)
    labels/<labeller>.json        accept/reject decisions (see :mod:`panolam.data.labels`)
    extras/<name>/<subject>.npy   optional per-subject arrays written later (see :mod:`panolam.data.extras`)

One sample (WebDataset key = subject id) has the entries ``<id>.view000.png`` … one RGBA PNG
per view (RGB already composited on the stored background, A = the alpha mask),
``<id>.cameras.npy`` (V, 25) float32 EG3D labels per view (cam2world 4×4 row-major in the project
convention — OpenCV axes, world y-up, head at the origin facing +z — then the 3×3 intrinsics
normalised by the image size), and ``<id>.meta.json`` (subject id, generator id, seed, split,
camera set, image size, background, per-view yaw/pitch/radius/FOV, generator attributes).
"""

from __future__ import annotations

import dataclasses
import io
import json
from typing import Any, Sequence

import numpy as np
import torch

from panolam.errors import PanoLAMError
from panolam.geometry.cameras import Cameras

FORMAT_VERSION = 1
SPLITS = ("train", "test")


class CorruptShardError(PanoLAMError):
    """A shard (or one of its samples) that cannot be read; the message names the file."""


@dataclasses.dataclass
class SubjectRecord:
    """One subject in memory: uint8 images, EG3D camera labels and metadata."""

    subject: str
    rgb: np.ndarray  # (V, H, W, 3) uint8, composited on meta["background"]
    mask: np.ndarray  # (V, H, W) uint8 alpha
    cameras: np.ndarray  # (V, 25) float32 EG3D labels
    meta: dict[str, Any]

    def __post_init__(self) -> None:
        v = len(self.rgb)
        if self.rgb.ndim != 4 or self.rgb.shape[-1] != 3 or self.rgb.dtype != np.uint8:
            raise ValueError(f"subject {self.subject}: rgb must be (V,H,W,3) uint8, got {self.rgb.shape} {self.rgb.dtype}")
        if self.mask.shape != self.rgb.shape[:3] or self.mask.dtype != np.uint8:
            raise ValueError(f"subject {self.subject}: mask must be (V,H,W) uint8 matching rgb, got {self.mask.shape}")
        if self.cameras.shape != (v, 25):
            raise ValueError(f"subject {self.subject}: cameras must be ({v}, 25), got {self.cameras.shape}")
        if "." in self.subject or "/" in self.subject:
            raise ValueError(f"subject id {self.subject!r} must not contain '.' or '/' (it is a WebDataset key)")


def view_key(i: int) -> str:
    return f"view{i:03d}.png"


def encode_png(rgba: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    # Level 1: the shards are written once and read many times, but generation time matters more than bytes.
    Image.fromarray(rgba).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def decode_png(data: bytes, where: str) -> np.ndarray:
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception as e:  # PIL raises several types for truncated/garbled data
        raise CorruptShardError(f"{where}: unreadable PNG ({e})") from e
    arr = np.asarray(img)
    if arr.ndim != 3 or arr.shape[-1] != 4:
        raise CorruptShardError(f"{where}: expected an RGBA PNG, got shape {arr.shape}")
    return arr


def encode_npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def decode_npy(data: bytes, where: str) -> np.ndarray:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as e:
        raise CorruptShardError(f"{where}: unreadable .npy ({e})") from e


def encode_record(rec: SubjectRecord) -> dict[str, bytes | str]:
    """The WebDataset sample dict (``__key__`` + entry suffix -> bytes)."""
    sample: dict[str, bytes | str] = {"__key__": rec.subject}
    for i in range(len(rec.rgb)):
        sample[view_key(i)] = encode_png(np.concatenate([rec.rgb[i], rec.mask[i][..., None]], axis=-1))
    sample["cameras.npy"] = encode_npy(rec.cameras.astype(np.float32))
    sample["meta.json"] = json.dumps(rec.meta, sort_keys=True).encode("utf-8")
    return sample


def decode_meta(sample: dict[str, bytes], where: str) -> dict[str, Any]:
    if "meta.json" not in sample:
        raise CorruptShardError(f"{where}: sample {sample.get('__key__')!r} has no meta.json")
    try:
        return json.loads(sample["meta.json"])
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptShardError(f"{where}: sample {sample.get('__key__')!r} has unreadable meta.json ({e})") from e


def decode_record(sample: dict[str, bytes], where: str, views: Sequence[int] | None = None) -> SubjectRecord:
    """Decode a raw sample, optionally only the listed views (in that order)."""
    key = sample.get("__key__", "?")
    meta = decode_meta(sample, where)
    cams = decode_npy(sample.get("cameras.npy", b""), f"{where} [{key}.cameras.npy]")
    n = meta.get("views", len(cams))
    if cams.shape != (n, 25):
        raise CorruptShardError(f"{where}: {key}.cameras.npy has shape {cams.shape}, expected ({n}, 25)")
    idx = list(range(n)) if views is None else list(views)
    rgba = []
    for i in idx:
        name = view_key(i)
        if name not in sample:
            raise CorruptShardError(f"{where}: sample {key!r} is missing {name}")
        rgba.append(decode_png(sample[name], f"{where} [{key}.{name}]"))
    stack = np.stack(rgba)
    return SubjectRecord(key, np.ascontiguousarray(stack[..., :3]), np.ascontiguousarray(stack[..., 3]), cams[idx].astype(np.float32), meta)


def cameras_from_labels(labels: np.ndarray | torch.Tensor, size: int) -> Cameras:
    """Project-convention :class:`Cameras` from stored (V, 25) labels for a square ``size`` image."""
    return Cameras.from_eg3d_label(torch.as_tensor(np.asarray(labels), dtype=torch.float32), size, size)

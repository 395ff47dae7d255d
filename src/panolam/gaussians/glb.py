"""The reconstructed head as a coloured triangle mesh in binary glTF 2.0 (``head.glb``).

The dense Gaussians sit 1:1 on the points of the subdivided template (``PanoLAM.dense_faces``
indexes them), so the mesh is those triangles with the Gaussian means as vertices and the Gaussian
colours as per-vertex ``COLOR_0``. It opens in Blender, three.js, Windows 3D Viewer and
any glTF 2.0 reader. The writer is the small subset of the format we need (one node, one indexed
triangle primitive, one material), written directly: header, JSON chunk, BIN chunk.

glTF conventions honoured: +Y up and the asset facing +Z (our world frame already), metres as
units (the head keeps the project's scale), ``COLOR_0`` in *linear* RGB (our colours are sRGB
display values, so they are converted), counter-clockwise front faces (the template's outward
orientation). The material is unlit (``KHR_materials_unlit``: the colours already contain the
photo's lighting) and double-sided; readers without the extension fall back to a matte white
PBR material multiplied by the vertex colours.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np

from panolam import __version__
from panolam.atomic import atomic_write_bytes

GLB_MAGIC, GLB_VERSION = 0x46546C67, 2  # b"glTF"
CHUNK_JSON, CHUNK_BIN = 0x4E4F534A, 0x004E4942  # b"JSON", b"BIN\0"
FLOAT, UNSIGNED_INT = 5126, 5125
ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963
TRIANGLES = 4


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1 decoding of values in [0, 1] (clamped first)."""
    c = np.clip(c, 0.0, 1.0)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _pad(data: bytes, fill: bytes) -> bytes:
    return data + fill * (-len(data) % 4)


def glb_bytes(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None = None, name: str = "head") -> bytes:
    """GLB file contents for a triangle mesh: vertices (V, 3), faces (F, 3) indices, colors (V, 3) sRGB in [0, 1]."""
    v = np.ascontiguousarray(np.asarray(vertices, dtype=np.float32))
    f = np.asarray(faces)
    if v.ndim != 2 or v.shape[1] != 3 or len(v) == 0:
        raise ValueError(f"vertices must be (V, 3) with V > 0, got {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3 or len(f) == 0:
        raise ValueError(f"faces must be (F, 3) with F > 0, got {f.shape}")
    if f.min() < 0 or f.max() >= len(v):
        raise ValueError(f"face indices must lie in [0, {len(v)}), got [{f.min()}, {f.max()}]")
    if not np.isfinite(v).all():
        raise ValueError("vertices contain NaN or infinity")
    blobs = [v.tobytes()]
    attributes = {"POSITION": 0}
    accessors = [{"bufferView": 0, "componentType": FLOAT, "count": len(v), "type": "VEC3",
                  "min": v.min(0).tolist(), "max": v.max(0).tolist()}]  # min/max are required for POSITION
    views = [{"target": ARRAY_BUFFER}]
    if colors is not None:
        c = np.asarray(colors, dtype=np.float64)
        if c.shape != v.shape:
            raise ValueError(f"colors must be (V, 3) like the vertices {v.shape}, got {c.shape}")
        blobs.append(srgb_to_linear(c).astype(np.float32).tobytes())
        attributes["COLOR_0"] = len(accessors)
        accessors.append({"bufferView": len(views), "componentType": FLOAT, "count": len(v), "type": "VEC3"})
        views.append({"target": ARRAY_BUFFER})
    blobs.append(np.ascontiguousarray(f, dtype=np.uint32).tobytes())
    indices = len(accessors)
    accessors.append({"bufferView": len(views), "componentType": UNSIGNED_INT, "count": int(f.size), "type": "SCALAR"})
    views.append({"target": ELEMENT_ARRAY_BUFFER})
    binary = b""
    for view, blob in zip(views, blobs):  # every blob is a multiple of 4 bytes, so offsets stay aligned
        view.update(buffer=0, byteOffset=len(binary), byteLength=len(blob))
        binary += blob
    doc = {
        "asset": {"version": "2.0", "generator": f"PanoLAM {__version__}"},
        "extensionsUsed": ["KHR_materials_unlit"],
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0, "name": name}],
        "meshes": [{"name": name, "primitives": [{"attributes": attributes, "indices": indices, "material": 0, "mode": TRIANGLES}]}],
        "materials": [{"name": "vertex colours", "doubleSided": True, "extensions": {"KHR_materials_unlit": {}},
                       "pbrMetallicRoughness": {"baseColorFactor": [1, 1, 1, 1], "metallicFactor": 0.0, "roughnessFactor": 1.0}}],
        "buffers": [{"byteLength": len(binary)}],
        "bufferViews": views,
        "accessors": accessors,
    }
    js = _pad(json.dumps(doc, separators=(",", ":")).encode(), b" ")
    binary = _pad(binary, b"\0")
    total = 12 + 8 + len(js) + 8 + len(binary)
    return (struct.pack("<III", GLB_MAGIC, GLB_VERSION, total) + struct.pack("<II", len(js), CHUNK_JSON) + js
            + struct.pack("<II", len(binary), CHUNK_BIN) + binary)


def save_glb(path: str | os.PathLike, vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None = None) -> Path:
    """Write a coloured triangle mesh as ``path`` (atomically); see :func:`glb_bytes`."""
    atomic_write_bytes(path, glb_bytes(vertices, faces, colors, name=Path(path).stem))
    return Path(path)

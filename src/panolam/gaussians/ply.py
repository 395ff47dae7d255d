"""INRIA 3DGS PLY and antimatter15 ``.splat`` files (DESIGN §3).

PLY: binary little-endian, one ``vertex`` element with float fields x y z nx ny nz f_dc_0..2
opacity scale_0..2 rot_0..3 — opacity as logit, scale as log, rotation wxyz (unnormalised is
allowed on read), colour as SH DC: f_dc = (rgb - 0.5) / C0. Positions are absolute. Files with
extra properties (f_rest_*, other writers' fields) load; the extras are ignored. Writes are atomic.
Loading validates: a vertex count that is negative or zero is an error, rows with a non-finite value
(or a zero rotation) are dropped with a :class:`PlyWarning` saying how many, and a file with nothing
left is an error; every error names the file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from panolam.atomic import atomic_write_bytes
from panolam.errors import PanoLAMError
from panolam.gaussians.container import SH_C0, Gaussians

PLY_FIELDS = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
              "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
# Opacities are clamped to [1e-8, 1 - 1e-8] (|logit| <= 18.4) before the logit: within that range the
# float64 sigmoid/logit pair is exact to far below float32 resolution, so files round-trip bit-exactly.
_EPS = 1e-8


class PlyFormatError(PanoLAMError):
    """A PLY file that is not a readable 3DGS splat file."""


class PlyWarning(UserWarning):
    """A PLY that loaded, but only after dropping unusable (non-finite) Gaussians."""


def gaussians_to_ply_array(g: Gaussians) -> np.ndarray:
    """Structured float32 array in the INRIA vertex layout."""
    if g.means.ndim != 2:
        raise ValueError("save_ply takes one head (unbatched Gaussians)")
    g = g.detach().to("cpu", torch.float64)
    op = g.opacities.clamp(_EPS, 1 - _EPS)
    cols = {
        "x": g.means[:, 0], "y": g.means[:, 1], "z": g.means[:, 2],
        "nx": torch.zeros_like(op), "ny": torch.zeros_like(op), "nz": torch.zeros_like(op),
        **{f"f_dc_{i}": (g.colors[:, i] - 0.5) / SH_C0 for i in range(3)},
        "opacity": torch.log(op) - torch.log1p(-op),
        **{f"scale_{i}": torch.log(g.scales[:, i].clamp_min(1e-12)) for i in range(3)},
        **{f"rot_{i}": g.quats[:, i] for i in range(4)},
    }
    arr = np.empty(len(op), dtype=[(name, "<f4") for name in PLY_FIELDS])
    for name in PLY_FIELDS:
        arr[name] = cols[name].numpy()
    return arr


def save_ply(g: Gaussians, path: str | Path) -> None:
    arr = gaussians_to_ply_array(g)
    header = "ply\nformat binary_little_endian 1.0\n"
    header += f"element vertex {len(arr)}\n" + "".join(f"property float {n}\n" for n in PLY_FIELDS) + "end_header\n"
    atomic_write_bytes(path, header.encode("ascii") + arr.tobytes())


def _parse_header(raw: bytes, path: Path) -> tuple[int, list[tuple[str, str]], int, str]:
    end = raw.find(b"end_header\n")
    if not raw.startswith(b"ply\n") or end < 0:
        raise PlyFormatError(f"{path}: not a PLY file (missing 'ply' magic or 'end_header')")
    lines = raw[:end].decode("ascii", errors="replace").splitlines()
    fmt, count, props, in_vertex = None, None, [], False
    for line in lines[1:]:
        parts = line.split()
        if not parts or parts[0] in ("comment", "obj_info"):
            continue
        if parts[0] == "format":
            fmt = parts[1]
        elif parts[0] == "element":
            in_vertex = parts[1] == "vertex"
            if in_vertex:
                try:
                    count = int(parts[2])
                except (IndexError, ValueError):
                    raise PlyFormatError(f"{path}: bad vertex count in header line {line!r}") from None
                if count < 0:
                    raise PlyFormatError(f"{path}: header says {count} vertices; a vertex count cannot be negative (damaged file?)")
            elif count is None:
                raise PlyFormatError(f"{path}: element {parts[1]!r} before 'vertex' is not supported")
        elif parts[0] == "property" and in_vertex:
            if parts[1] == "list":
                raise PlyFormatError(f"{path}: list properties in 'vertex' are not a 3DGS layout")
            props.append((parts[-1], parts[1]))
    if fmt not in ("binary_little_endian", "ascii") or count is None:
        raise PlyFormatError(f"{path}: need a 'vertex' element in binary_little_endian or ascii format (got format {fmt!r})")
    return count, props, end + len(b"end_header\n"), fmt


_PLY_TYPES = {"float": "<f4", "float32": "<f4", "double": "<f8", "float64": "<f8", "uchar": "u1", "uint8": "u1",
              "char": "i1", "int8": "i1", "short": "<i2", "int16": "<i2", "ushort": "<u2", "uint16": "<u2",
              "int": "<i4", "int32": "<i4", "uint": "<u4", "uint32": "<u4"}


def load_ply(path: str | Path, dtype: torch.dtype = torch.float32) -> Gaussians:
    """Read a 3DGS PLY written by us or another 3DGS tool; raises :class:`PlyFormatError` with the reason.

    Activations run in float64; with ``dtype=torch.float64`` a PLY -> Gaussians -> PLY round trip
    is bit-exact for opacity logits within ±18.4 (float32 saturates sigmoid(opacity) above ~17).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise PlyFormatError(f"cannot read {path}: {e.strerror or e}") from e
    count, props, offset, fmt = _parse_header(raw, path)
    try:
        layout = np.dtype([(n, _PLY_TYPES[t]) for n, t in props])
    except KeyError as e:
        raise PlyFormatError(f"{path}: unsupported property type {e.args[0]!r}") from e
    missing = [n for n in PLY_FIELDS if n not in layout.names and n not in ("nx", "ny", "nz")]
    if missing:
        raise PlyFormatError(f"{path}: not a 3DGS PLY, missing vertex properties {missing}")
    if count == 0:
        raise PlyFormatError(f"{path}: holds 0 Gaussians (empty head); nothing to show or render")
    if fmt == "ascii":
        rows = [r for r in raw[offset:].decode("ascii", errors="replace").split("\n") if r.strip()][:count]
        if len(rows) < count:
            raise PlyFormatError(f"{path}: truncated (header says {count} vertices, found {len(rows)})")
        values = []
        for i, r in enumerate(rows):
            try:
                fields = tuple(float(v) for v in r.split())
            except ValueError as e:
                raise PlyFormatError(f"{path}: vertex {i} (ASCII body line {i + 1}) is not a row of numbers ({e})") from None
            if len(fields) != len(props):
                raise PlyFormatError(f"{path}: vertex {i} (ASCII body line {i + 1}) has {len(fields)} values; the header declares {len(props)}")
            values.append(fields)
        arr = np.array(values, dtype=layout)
    else:
        need = count * layout.itemsize
        if len(raw) - offset < need:
            raise PlyFormatError(f"{path}: truncated (header says {count} vertices = {need} bytes, file has {len(raw) - offset})")
        arr = np.frombuffer(raw, dtype=layout, count=count, offset=offset)
    col = lambda n: torch.from_numpy(np.ascontiguousarray(arr[n], dtype=np.float64))  # noqa: E731
    stack = lambda names: torch.stack([col(n) for n in names], dim=-1)  # noqa: E731
    quats = stack([f"rot_{i}" for i in range(4)])
    raw_scales, raw_opacity, raw_dc = stack([f"scale_{i}" for i in range(3)]), col("opacity"), stack([f"f_dc_{i}" for i in range(3)])
    means, scales = stack(["x", "y", "z"]), torch.exp(raw_scales)
    opacities, colors = torch.sigmoid(raw_opacity), raw_dc * SH_C0 + 0.5
    norm = quats.norm(dim=-1, keepdim=True)
    # Every stored value must be finite (an inf opacity logit is as broken as a NaN), and so must the activated scale.
    ok = (torch.isfinite(torch.cat([means, quats, raw_scales, scales.to(dtype), raw_opacity[:, None], raw_dc], dim=-1)).all(dim=-1)
          & (norm[:, 0] > 0) & torch.isfinite(norm[:, 0]))
    if not ok.all():
        bad = int((~ok).sum())
        if bad == count:
            raise PlyFormatError(f"{path}: all {count} Gaussians have non-finite values (NaN/inf) or zero rotations; the file is unusable")
        warnings.warn(f"{path}: dropped {bad} of {count} Gaussians with non-finite values (NaN/inf) or zero rotations",
                      PlyWarning, stacklevel=2)
        means, quats, scales, opacities, colors, norm = means[ok], quats[ok], scales[ok], opacities[ok], colors[ok], norm[ok]
    return Gaussians(
        means=means,
        quats=quats / norm if not torch.allclose(norm, torch.ones_like(norm), atol=1e-5) else quats,
        scales=scales,
        opacities=opacities,
        colors=colors,
    ).to("cpu", dtype)


def save_splat(g: Gaussians, path: str | Path) -> None:
    """antimatter15 ``.splat``: 32 bytes per Gaussian (xyz f32, scale f32, rgba u8, quat u8), sorted by size·opacity."""
    if g.means.ndim != 2:
        raise ValueError("save_splat takes one head (unbatched Gaussians)")
    g = g.detach().to("cpu", torch.float32)
    order = torch.argsort(-(g.scales.prod(-1) * g.opacities))
    rec = np.zeros(len(g), dtype=[("xyz", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)])
    rgba = torch.cat([g.colors.clamp(0, 1), g.opacities[:, None].clamp(0, 1)], dim=-1)
    q = torch.nn.functional.normalize(g.quats, dim=-1)
    rec["xyz"] = g.means[order].numpy()
    rec["scale"] = g.scales[order].numpy()
    rec["rgba"] = (rgba[order] * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    rec["rot"] = (q[order] * 128 + 128).round().clamp(0, 255).to(torch.uint8).numpy()
    atomic_write_bytes(path, rec.tobytes())

"""The neutral head template: a built-in, open, procedurally generated full head (face, skull, back
of the head, ears, neck) and the single entry point :func:`load_template` that also reads a
user-owned FLAME file. The built-in mesh is made by our own code only: a Fibonacci-sphere
triangulation (exactly ``target_vertices`` points) is swept onto an implicit head surface (smooth
union of ellipsoids: cranium, face, jaw, chin, cheeks, brow ridge, nose, lips, eyeballs in carved
sockets, ear flaps, and a capped neck tube) and relaxed so its vertices spread evenly. It is a
closed genus-0 mesh with outward (counter-clockwise) faces. Placement in the GAN world frame
(DESIGN §3: y up, face toward +z, head at the origin), measured on the default mesh: crown
y ≈ +0.265, chin y ≈ −0.247 (head height ≈ 0.51), width ≈ 0.35 without ears and ≈ 0.39 with
them, depth ≈ 0.45 (back of the head z ≈ −0.225, nose tip z ≈ +0.221), neck (radius ≈ 0.095)
down to a flat cap at y = −0.40, centred on x = 0. A camera at radius 2.7 with the EG3D FOV sees
about ±0.32 at the origin, so the head fills most of the frame as in EG3D/SphereHead renders.
The same call gives the same bytes (cached per process and on disk, see :mod:`panolam.cache`:
generation takes about a second).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np
import torch

REGION_NAMES: tuple[str, ...] = ("skin", "scalp", "ear", "neck", "eye_l", "eye_r", "brow", "nose", "lips")
REGION = {name: i for i, name in enumerate(REGION_NAMES)}

# Crown and chin heights of the built-in head: other templates (FLAME) are scaled to match them.
HEAD_TOP_Y = 0.265
HEAD_CHIN_Y = -0.245
NECK_BOTTOM_Y = -0.40


@dataclasses.dataclass
class HeadTemplate:
    """A triangle mesh with per-vertex region labels (indices into :data:`REGION_NAMES`)."""

    vertices: torch.Tensor  # (V, 3) float32
    faces: torch.Tensor  # (F, 3) int64, counter-clockwise seen from outside
    regions: torch.Tensor  # (V,) int64
    name: str

    def face_normals(self) -> torch.Tensor:
        """Unnormalised face normals (F, 3); their length is twice the face area."""
        v = self.vertices[self.faces]
        return torch.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0], dim=-1)

    def face_areas(self) -> torch.Tensor:
        """Face areas (F,)."""
        return 0.5 * self.face_normals().norm(dim=-1)

    def vertex_normals(self) -> torch.Tensor:
        """Area-weighted unit vertex normals (V, 3)."""
        fn = self.face_normals()
        vn = torch.zeros_like(self.vertices)
        for k in range(3):
            vn.index_add_(0, self.faces[:, k], fn)
        return torch.nn.functional.normalize(vn, dim=-1)

    def to(self, device: torch.device | str) -> "HeadTemplate":
        """A copy with all tensors on ``device``."""
        return dataclasses.replace(
            self, vertices=self.vertices.to(device), faces=self.faces.to(device), regions=self.regions.to(device)
        )

    def region_mask(self, name: str) -> torch.Tensor:
        """Boolean (V,) mask of the vertices labelled ``name``."""
        if name not in REGION:
            raise ValueError(f"unknown region {name!r}; known: {', '.join(REGION_NAMES)}")
        return self.regions == REGION[name]


# ---------------------------------------------------------------------------------------------
# Implicit head surface (negative inside). Numbers in world units; see module docstring.

# (centre, radii) of the ellipsoids joined by smooth union; ears are thin flaps in x.
_BLOBS = {
    "cranium": ((0.0, 0.06, -0.025), (0.175, 0.205, 0.2)),
    "face": ((0.0, -0.06, 0.045), (0.13, 0.165, 0.135)),
    "jaw_l": ((0.085, -0.13, 0.02), (0.05, 0.06, 0.08)),
    "jaw_r": ((-0.085, -0.13, 0.02), (0.05, 0.06, 0.08)),
    "chin": ((0.0, -0.2, 0.105), (0.045, 0.045, 0.05)),
    "cheek_l": ((0.07, -0.045, 0.12), (0.05, 0.04, 0.045)),
    "cheek_r": ((-0.07, -0.045, 0.12), (0.05, 0.04, 0.045)),
    "brow": ((0.0, 0.062, 0.14), (0.12, 0.025, 0.04)),
    "nose": ((0.0, -0.015, 0.185), (0.022, 0.05, 0.035)),
    "nose_tip": ((0.0, -0.05, 0.2), (0.025, 0.02, 0.022)),
    "lips": ((0.0, -0.115, 0.158), (0.045, 0.024, 0.025)),
    "ear_l": ((0.168, 0.0, -0.02), (0.026, 0.055, 0.035)),
    "ear_r": ((-0.168, 0.0, -0.02), (0.026, 0.055, 0.035)),
}
_EYES = {"eye_l": (0.052, 0.022, 0.132), "eye_r": (-0.052, 0.022, 0.132)}  # eyeball centres (subject's left = +x)
_EYE_RADIUS = 0.024
_SOCKET_RADIUS = 0.03
_NECK_CENTRE_XZ = (0.0, -0.03)
_NECK_RADII_XZ = (0.092, 0.098)
_NECK_TOP_Y = -0.05


def _ellipsoid(p: np.ndarray, centre, radii) -> np.ndarray:
    """Approximate signed distance to an ellipsoid (exact scale near the surface along the min radius)."""
    q = (p - np.asarray(centre)) / np.asarray(radii)
    return (np.linalg.norm(q, axis=-1) - 1.0) * min(radii)


def _smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum (smooth union) with blend width ``k``."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b * (1 - h) + a * h - k * h * (1 - h)


def _smax(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    return -_smin(-a, -b, k)


def _head_sdf(p: np.ndarray) -> np.ndarray:
    """Signed implicit function of the head (< 0 inside), p (..., 3)."""
    d = _ellipsoid(p, *_BLOBS["cranium"])
    d = _smin(d, _ellipsoid(p, *_BLOBS["face"]), 0.05)
    for name in ("jaw_l", "jaw_r", "chin"):
        d = _smin(d, _ellipsoid(p, *_BLOBS[name]), 0.04)
    for name in ("cheek_l", "cheek_r", "brow"):
        d = _smin(d, _ellipsoid(p, *_BLOBS[name]), 0.03)
    for centre in _EYES.values():  # eye sockets carved before the eyeballs go in
        socket = np.linalg.norm(p - (np.asarray(centre) + (0.0, 0.0, 0.02)), axis=-1) - _SOCKET_RADIUS
        d = _smax(d, -socket, 0.015)
    for centre in _EYES.values():
        d = _smin(d, np.linalg.norm(p - np.asarray(centre), axis=-1) - _EYE_RADIUS, 0.006)
    d = _smin(d, _ellipsoid(p, *_BLOBS["nose"]), 0.025)
    d = _smin(d, _ellipsoid(p, *_BLOBS["nose_tip"]), 0.015)
    d = _smin(d, _ellipsoid(p, *_BLOBS["lips"]), 0.015)
    for name in ("ear_l", "ear_r"):
        d = _smin(d, _ellipsoid(p, *_BLOBS[name]), 0.012)
    # Neck: elliptic tube from below the jaw down to a flat cap at NECK_BOTTOM_Y.
    q = (p[..., [0, 2]] - np.asarray(_NECK_CENTRE_XZ)) / np.asarray(_NECK_RADII_XZ)
    tube = (np.linalg.norm(q, axis=-1) - 1.0) * min(_NECK_RADII_XZ)
    tube = _smax(tube, NECK_BOTTOM_Y - p[..., 1], 0.01)
    tube = _smax(tube, p[..., 1] - _NECK_TOP_Y, 0.01)
    return _smin(d, tube, 0.04)


_TETRA = np.array([[1.0, -1.0, -1.0], [-1.0, -1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, 1.0, 1.0]])


def _sdf_grad(p: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    """Gradient of :func:`_head_sdf` by the 4-point tetrahedral difference (O(eps²) accurate)."""
    vals = _head_sdf(p[:, None, :] + eps * _TETRA[None])  # (N, 4)
    return vals @ _TETRA / (4 * eps)


# ---------------------------------------------------------------------------------------------
# Sphere triangulation and sweep onto the surface.


def _fibonacci_sphere(n: int) -> np.ndarray:
    """n near-uniform unit vectors (polar axis +y), deterministic."""
    i = np.arange(n, dtype=np.float64) + 0.5
    y = 1.0 - 2.0 * i / n
    r = np.sqrt(np.clip(1.0 - y * y, 0.0, None))
    phi = i * np.pi * (3.0 - np.sqrt(5.0))
    return np.stack([r * np.sin(phi), y, r * np.cos(phi)], axis=-1)


def _sphere_faces(points: np.ndarray) -> np.ndarray:
    """Outward-oriented triangulation of points on the unit sphere, in a canonical order."""
    from scipy.spatial import ConvexHull  # scipy comes with scikit-image

    faces = ConvexHull(points).simplices.astype(np.int64)
    v = points[faces]
    normal = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    flip = (normal * v.mean(axis=1)).sum(-1) < 0
    faces[flip] = faces[flip][:, [0, 2, 1]]
    # Canonical order: rotate each triangle so its smallest index comes first, then sort rows.
    roll = np.argmin(faces, axis=1)
    idx = (roll[:, None] + np.arange(3)[None]) % 3
    faces = np.take_along_axis(faces, idx, axis=1)
    return faces[np.lexsort((faces[:, 2], faces[:, 1], faces[:, 0]))]


def _sweep_rays(dirs: np.ndarray, neck_fraction: float = 0.22) -> tuple[np.ndarray, np.ndarray]:
    """Ray origins and directions that reach the whole head-and-neck without crossing.

    The upper sphere maps to rays from a fixed centre; the lowest ``neck_fraction`` of the sphere
    (by area) maps to rays from a point sliding down the neck axis, bending further down. Rays in
    one azimuthal half-plane then never cross, so the sweep keeps the sphere's triangulation valid.
    """
    polar = np.arccos(np.clip(dirs[:, 1], -1.0, 1.0))
    azimuth = np.arctan2(dirs[:, 0], dirs[:, 2])
    t_split = np.arccos(1.0 - 2.0 * (1.0 - neck_fraction))  # polar angle above which the neck sweep starts
    alpha_split = 0.78 * np.pi
    centre = np.array([0.0, -0.02, -0.01])
    bottom = np.array([0.0, -0.32, -0.025])
    upper = polar <= t_split
    s = np.clip((polar - t_split) / (np.pi - t_split), 0.0, 1.0)
    alpha = np.where(upper, polar * alpha_split / t_split, alpha_split + s * (np.pi - alpha_split))
    origins = np.where(upper[:, None], centre, centre + s[:, None] ** 0.7 * (bottom - centre))
    ray = np.stack([np.sin(alpha) * np.sin(azimuth), np.cos(alpha), np.sin(alpha) * np.cos(azimuth)], axis=-1)
    return origins, ray


def _first_hit(origins: np.ndarray, rays: np.ndarray, t_max: float = 0.6, steps: int = 80) -> np.ndarray:
    """Outermost surface crossing along each ray, by marching inward from t_max and bisecting."""
    ts = np.linspace(t_max, 0.0, steps)  # steps of 0.0075: finer than the thinnest feature (ear ≈ 0.05)
    vals = _head_sdf(origins[:, None, :] + ts[None, :, None] * rays[:, None, :])  # (N, steps)
    first = np.argmax(vals < 0, axis=1)  # first step (from outside) that is inside
    hi, lo = ts[np.maximum(first - 1, 0)], ts[first]  # hi outside, lo inside
    for _ in range(24):
        mid = 0.5 * (hi + lo)
        out = _head_sdf(origins + mid[:, None] * rays) > 0
        hi, lo = np.where(out, mid, hi), np.where(out, lo, mid)
    return origins + (0.5 * (hi + lo))[:, None] * rays


def _newton(p: np.ndarray, g: np.ndarray) -> np.ndarray:
    """One Newton step toward the zero level set along the gradient g."""
    return p - (_head_sdf(p) / np.maximum((g * g).sum(-1), 1e-12))[:, None] * g


def _relax(p: np.ndarray, faces: np.ndarray, iters: int, step: float = 0.5) -> np.ndarray:
    """Tangential umbrella smoothing + re-projection: evens out vertex spacing on the surface."""
    n = p.shape[0]
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    deg = np.bincount(edges[:, 0], minlength=n).astype(np.float64)
    g = _sdf_grad(p)
    for _ in range(iters):
        mean = np.zeros_like(p)
        np.add.at(mean, edges[:, 0], p[edges[:, 1]])
        lap = mean / deg[:, None] - p
        nrm = g / np.maximum(np.linalg.norm(g, axis=-1, keepdims=True), 1e-12)
        lap -= (lap * nrm).sum(-1, keepdims=True) * nrm
        p = p + step * lap
        g = _sdf_grad(p)  # also the next iteration's normal: the step is small
        p = _newton(p, g)
    for _ in range(2):
        p = _newton(p, _sdf_grad(p))
    return p


def label_regions(p: np.ndarray) -> np.ndarray:
    """Region labels (V,) from vertex positions in the world frame (later rules win).

    Tuned to the built-in head; also used as the heuristic for other templates placed at the same
    size (FLAME after :func:`panolam.geometry.flame.flame_to_world`).
    """
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    regions = np.full(p.shape[0], REGION["skin"], dtype=np.int64)
    # Hairline: scalp over the top and back; the forehead/temples stay skin.
    hairline = 0.115 - 0.45 * np.clip(-z, 0.0, None)
    front_limit = z < 0.13 - 0.35 * np.clip(y - 0.12, 0.0, None)
    scalp = (y > hairline) & front_limit & (y > -0.05)
    scalp |= (z < -0.06) & (y > -0.12)  # back of the head
    regions[scalp] = REGION["scalp"]
    neck_r = np.hypot((x - _NECK_CENTRE_XZ[0]) / _NECK_RADII_XZ[0], (z - _NECK_CENTRE_XZ[1]) / _NECK_RADII_XZ[1])
    neck = (y < -0.15) & (neck_r < 1.08)
    neck &= ~((z > 0.06) & (y > -0.26))  # keep the chin as skin
    regions[neck] = REGION["neck"]
    _, cy, cz = _BLOBS["ear_l"][0]
    regions[(np.abs(x) > 0.155) & (np.abs(y - cy) < 0.07) & (np.abs(z - cz) < 0.05)] = REGION["ear"]
    brow = (np.abs(x) > 0.015) & (np.abs(x) < 0.095) & (np.abs(y - 0.065) < 0.014) & (z > 0.1)
    regions[brow] = REGION["brow"]
    nose = (np.abs(x) < 0.032) & (y > -0.08) & (y < 0.04) & (z > 0.16)
    regions[nose] = REGION["nose"]
    lips = ((x / 0.048) ** 2 + ((y + 0.115) / 0.026) ** 2 < 1.0) & (z > 0.13)
    regions[lips] = REGION["lips"]
    for name, centre in _EYES.items():
        eye = (np.linalg.norm(p - np.asarray(centre), axis=-1) < _EYE_RADIUS + 0.003) & (z > centre[2] + 0.008)
        regions[eye] = REGION[name]
    return regions


@functools.lru_cache(maxsize=4)
def _builtin_arrays(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vertices (float32), faces and regions of the built-in head; cached in this process and on disk
    (:mod:`panolam.cache`, keyed by ``n``, this file's source and the numpy version): it takes ~1-3 s."""
    from panolam.cache import cached_arrays, source_hash

    def compute() -> dict[str, np.ndarray]:
        dirs = _fibonacci_sphere(n)
        faces = _sphere_faces(dirs)
        origins, rays = _sweep_rays(dirs)
        p = _relax(_first_hit(origins, rays), faces, iters=30)
        return {"vertices": p.astype(np.float32), "faces": faces, "regions": label_regions(p)}

    inputs = {"n": n, "source": source_hash(__file__), "numpy": np.__version__}
    out = cached_arrays("builtin-template", inputs, compute)
    return out["vertices"], out["faces"], out["regions"]


def builtin_template(target_vertices: int = 5023) -> HeadTemplate:
    """The built-in head mesh with exactly ``target_vertices`` vertices (deterministic)."""
    if isinstance(target_vertices, bool) or int(target_vertices) != target_vertices or target_vertices < 200:
        raise ValueError(f"target_vertices must be an integer >= 200, got {target_vertices!r}")
    n = int(target_vertices)
    verts, faces, regions = _builtin_arrays(n)
    # Fresh tensors per call: callers may modify them in place without touching the cache.
    return HeadTemplate(
        vertices=torch.from_numpy(verts.copy()),
        faces=torch.from_numpy(faces.copy()),
        regions=torch.from_numpy(regions.copy()),
        name=f"builtin-{n}",
    )


def load_template(source: str = "builtin", target_vertices: int = 5023) -> HeadTemplate:
    """``"builtin"`` for the procedural head, or a path to a user-owned FLAME file (.pkl / .npz).

    ``target_vertices`` applies to the built-in head only; a FLAME mesh keeps its own vertices.
    """
    if str(source) == "builtin":
        return builtin_template(target_vertices)
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"head template {str(path)!r} not found (use 'builtin' or a FLAME .pkl/.npz file)")
    from panolam.geometry.flame import load_flame_template

    return load_flame_template(path)

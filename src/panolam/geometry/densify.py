"""Network-free densification (DESIGN §2, paper §3.2): a sparse (M_D × M_C) matrix W whose rows are
barycentric weights of the coarse template vertices, so dense positions and features are one
sparse matmul, ``P_D = W·p`` and ``F_D = W·F_P``. W is computed from whatever template is loaded by
repeated 1-to-4 midpoint subdivision of the faces whose area exceeds a threshold, or — with a
target count — of the largest faces first until exactly that many points exist. Every new vertex
lies inside one ORIGINAL triangle (it is a convex combination of that triangle's corners), so a row
has at most three non-zeros; vertices shared by neighbouring faces (edge midpoints) are created
once. Rows 0..M_C−1 are the identity (the original vertices); new rows follow in creation order.
Weights are tracked as exact dyadic integers, so the result is deterministic and duplicates are
found by exact comparison.
"""

from __future__ import annotations

import numpy as np
import torch

_LEVEL_BITS = 40  # weights are integers over 2**40: exact for up to 40 halvings of an edge
_DEN = 1 << _LEVEL_BITS
_MAX_POINTS = 5_000_000


def _canonical(ids: np.ndarray, nums: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zero weights get id −1; entries sorted by id, so equal points have equal (ids, nums) rows."""
    ids = np.where(nums > 0, ids, -1)
    order = np.argsort(ids, axis=1, kind="stable")
    return np.take_along_axis(ids, order, 1), np.take_along_axis(nums, order, 1)


def _weights_on_corners(ids: np.ndarray, nums: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """Weights (n, 3) of points (ids, nums) over the triangle corners (n, 3)."""
    return ((ids[:, None, :] == corners[:, :, None]) * nums[:, None, :]).sum(-1)


class _Subdivider:
    """State of the subdivision: dense vertices as (ids, nums) over original vertices, current faces."""

    def __init__(self, vertices: np.ndarray, faces: np.ndarray):
        n = vertices.shape[0]
        self.orig = vertices
        self.ids = np.stack([np.full(n, -1), np.full(n, -1), np.arange(n)], 1).astype(np.int64)
        self.nums = np.zeros((n, 3), dtype=np.int64)
        self.nums[:, 2] = _DEN
        self.pos = vertices.copy()
        self.faces = faces.copy()  # dense vertex ids
        self.corners = faces.copy()  # the original triangle each face lies in
        self.depth = np.zeros(faces.shape[0], dtype=np.int64)
        self.lookup: dict[bytes, int] = {}
        self._index(np.arange(n))

    def _key(self, ids: np.ndarray, nums: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.concatenate([ids, nums], 1)).view(np.dtype((np.void, 48))).ravel()

    def _index(self, rows: np.ndarray) -> None:
        for k, r in zip(self._key(self.ids[rows], self.nums[rows]), rows.tolist()):
            self.lookup[k.tobytes()] = r

    @property
    def count(self) -> int:
        return self.ids.shape[0]

    def areas(self) -> np.ndarray:
        v = self.pos[self.faces]
        return 0.5 * np.linalg.norm(np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]), axis=-1)

    def midpoints(self, sel: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Edge midpoints of faces ``sel`` in edge order (01, 12, 20): ids, nums (3·len(sel), 3), keys."""
        corners = np.repeat(self.corners[sel], 3, axis=0)
        f = self.faces[sel]
        a = np.stack([f[:, 0], f[:, 1], f[:, 2]], 1).ravel()
        b = np.stack([f[:, 1], f[:, 2], f[:, 0]], 1).ravel()
        wa = _weights_on_corners(self.ids[a], self.nums[a], corners)
        wb = _weights_on_corners(self.ids[b], self.nums[b], corners)
        ids, nums = _canonical(corners, (wa + wb) // 2)
        return ids, nums, self._key(ids, nums)

    def add_points(self, ids: np.ndarray, nums: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """Dense vertex ids of the given points, creating the ones not seen yet (in order)."""
        out = np.empty(len(keys), dtype=np.int64)
        new_rows = []
        for i, k in enumerate(keys):
            kb = k.tobytes()
            r = self.lookup.get(kb)
            if r is None:
                r = self.count + len(new_rows)
                self.lookup[kb] = r
                new_rows.append(i)
            out[i] = r
        if new_rows:
            rows = np.asarray(new_rows)
            self.ids = np.concatenate([self.ids, ids[rows]])
            self.nums = np.concatenate([self.nums, nums[rows]])
            w = nums[rows].astype(np.float64) / _DEN
            self.pos = np.concatenate([self.pos, (self.orig[np.maximum(ids[rows], 0)] * w[..., None]).sum(1)])
        return out

    def new_point_ranks(self, keys: np.ndarray) -> np.ndarray:
        """For each key: −1 if it exists already or repeats an earlier key, else its position."""
        seen: set[bytes] = set()
        rank = np.full(len(keys), -1, dtype=np.int64)
        for i, k in enumerate(keys):
            kb = k.tobytes()
            if kb not in self.lookup and kb not in seen:
                seen.add(kb)
                rank[i] = i
        return rank

    def split(self, sel: np.ndarray) -> None:
        """1-to-4 midpoint split of faces ``sel`` (orientation kept)."""
        if len(sel) == 0:
            return
        if self.depth[sel].max() >= _LEVEL_BITS - 1:
            raise ValueError("densification needs more than 40 subdivision levels; is area_threshold tiny?")
        ids, nums, keys = self.midpoints(sel)
        m = self.add_points(ids, nums, keys).reshape(-1, 3)
        f = self.faces[sel]
        children = np.stack(
            [
                np.stack([f[:, 0], m[:, 0], m[:, 2]], 1),
                np.stack([m[:, 0], f[:, 1], m[:, 1]], 1),
                np.stack([m[:, 2], m[:, 1], f[:, 2]], 1),
                m,
            ],
            1,
        ).reshape(-1, 3)
        keep = np.ones(self.faces.shape[0], dtype=bool)
        keep[sel] = False
        self.faces = np.concatenate([self.faces[keep], children])
        self.corners = np.concatenate([self.corners[keep], np.repeat(self.corners[sel], 4, axis=0)])
        self.depth = np.concatenate([self.depth[keep], np.repeat(self.depth[sel] + 1, 4)])

    def matrix(self) -> torch.Tensor:
        rows = np.repeat(np.arange(self.count), 3)
        cols, vals = self.ids.ravel(), self.nums.ravel().astype(np.float64) / _DEN
        nz = vals > 0
        idx = torch.from_numpy(np.stack([rows[nz], cols[nz]]))
        w = torch.sparse_coo_tensor(
            idx, torch.from_numpy(vals[nz]).float(), (self.count, self.orig.shape[0]), check_invariants=False
        )
        return w.coalesce()


def _check_mesh(vertices: torch.Tensor, faces: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    v = torch.as_tensor(vertices).detach().cpu().double().numpy()
    f = torch.as_tensor(faces).detach().cpu().long().numpy()
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"vertices must be (V, 3), got {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3 or (f.size and (f.min() < 0 or f.max() >= v.shape[0])):
        raise ValueError(f"faces must be (F, 3) indices into {v.shape[0]} vertices")
    return v, f


def build_densification(
    vertices: torch.Tensor, faces: torch.Tensor, area_threshold: float, target_points: int | None = None
) -> torch.Tensor:
    """Sparse coalesced COO W (M_D, M_C) float32; rows are barycentric weights (≤ 3 non-zeros, sum 1).
    See :func:`build_densified_mesh` (the same W, plus the subdivided faces)."""
    return build_densified_mesh(vertices, faces, area_threshold, target_points)[0]


def build_densified_mesh(
    vertices: torch.Tensor, faces: torch.Tensor, area_threshold: float, target_points: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """W (M_D, M_C) as in :func:`build_densification` and the subdivided triangles (F_D, 3) int64 over the
    M_D dense points, so ``(W·V, faces)`` is the template surface as a finer mesh (same area, same
    orientation). The few points added by the final top-up (single edge midpoints) are in no face.

    Without ``target_points``: split every face with area > ``area_threshold`` (1-to-4 at the edge
    midpoints), repeatedly, until none exceeds it. With ``target_points``: split the largest faces
    first, batch by batch (a batch holds the faces within 4× of the largest, so its children never
    outrank a face still waiting), and stop at exactly ``target_points`` rows; the last batch is cut
    short and, if needed, topped up with single edge midpoints of the next face. The count is a
    config value the network relies on, so in this mode ``area_threshold`` does not stop splitting.
    """
    v, f = _check_mesh(vertices, faces)
    sub = _Subdivider(v, f)
    if target_points is None:
        if not area_threshold > 0:
            raise ValueError(f"area_threshold must be > 0 without target_points, got {area_threshold}")
        while True:
            sel = np.flatnonzero(sub.areas() > area_threshold)
            if len(sel) == 0:
                break
            sub.split(sel)
            if sub.count > _MAX_POINTS:
                raise ValueError(f"area_threshold={area_threshold} gives more than {_MAX_POINTS} points")
        return sub.matrix(), torch.from_numpy(sub.faces.copy())
    target = int(target_points)
    if target < sub.count:
        raise ValueError(f"target_points={target} is below the template's {sub.count} vertices")
    if target > _MAX_POINTS:
        raise ValueError(f"target_points={target} exceeds the limit of {_MAX_POINTS}")
    while sub.count < target:
        areas = sub.areas()
        order = np.argsort(-areas, kind="stable")
        batch = order[areas[order] > 0.25 * areas[order[0]]]
        if len(batch) == 0:  # every face degenerate: fall back to the largest one
            batch = order[:1]
        _, _, keys = sub.midpoints(batch)
        rank = sub.new_point_ranks(keys)
        new_per_face = (rank >= 0).reshape(-1, 3).sum(1)
        room = target - sub.count
        cum = np.cumsum(new_per_face)
        k = int(np.searchsorted(cum, room, side="right"))  # faces whose split fits in the room left
        sub.split(batch[:k])
        if k < len(batch) and sub.count < target:
            ids, nums, keys = sub.midpoints(batch[k : k + 1])
            fresh = np.flatnonzero(sub.new_point_ranks(keys) >= 0)[: target - sub.count]
            sub.add_points(ids[fresh], nums[fresh], keys[fresh])
    return sub.matrix(), torch.from_numpy(sub.faces.copy())


def densify(W: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """W·x for x (M_C, C) -> (M_D, C) or (B, M_C, C) -> (B, M_D, C); differentiable in x."""
    if x.dim() not in (2, 3) or x.shape[-2] != W.shape[1]:
        raise ValueError(f"x must be (M_C, C) or (B, M_C, C) with M_C={W.shape[1]}, got {tuple(x.shape)}")
    if W.device != x.device:
        W = W.to(x.device)
    # Sparse matmul kernels exist for float32/64 only; compute there and cast back (bf16 training).
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    W = W.to(dtype)
    xd = x.to(dtype)
    if x.dim() == 2:
        return torch.sparse.mm(W, xd).to(x.dtype)
    b, m, c = xd.shape
    flat = xd.permute(1, 0, 2).reshape(m, b * c)
    return torch.sparse.mm(W, flat).reshape(-1, b, c).permute(1, 0, 2).to(x.dtype)


def surface_transfer(src_points: torch.Tensor, src_faces: torch.Tensor, dst_points: torch.Tensor, candidates: int = 8) -> torch.Tensor:
    """Sparse (N_dst, N_src) matrix T with ``T·src_points = dst_points`` for points lying on the triangle
    surface ``(src_points, src_faces)``: each row holds the barycentric weights of the source triangle
    containing the point (the nearest of the ``candidates`` triangles with the closest centroids); a
    point that coincides with a source point gets exactly that point (a one-hot row). Features known at
    the source points are then interpolated to the destination ones by one sparse matmul, as W does."""
    from scipy.spatial import cKDTree

    src = src_points.detach().cpu().double().numpy()
    faces = src_faces.detach().cpu().long().numpy()
    dst = dst_points.detach().cpu().double().numpy()
    if src.ndim != 2 or dst.ndim != 2 or src.shape[1] != 3 or dst.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError("surface_transfer takes (N, 3) points and (F, 3) faces")
    tri = src[faces]  # (F, 3, 3)
    _, cand = cKDTree(tri.mean(1)).query(dst, k=min(candidates, len(faces)))
    cand = cand.reshape(len(dst), -1)
    a, b, c = (tri[cand, i] for i in range(3))  # (N, k, 3)
    e0, e1, e2 = b - a, c - a, dst[:, None] - a
    d00, d01, d11 = (e0 * e0).sum(-1), (e0 * e1).sum(-1), (e1 * e1).sum(-1)
    d20, d21 = (e2 * e0).sum(-1), (e2 * e1).sum(-1)
    den = np.where(np.abs(d00 * d11 - d01 * d01) > 0, d00 * d11 - d01 * d01, 1.0)
    v, w = (d11 * d20 - d01 * d21) / den, (d00 * d21 - d01 * d20) / den
    bary = np.stack([1 - v - w, v, w], -1)
    # How far each candidate is from containing the point: off its plane plus outside its edges.
    off_plane = np.linalg.norm(dst[:, None] - (a + v[..., None] * e0 + w[..., None] * e1), axis=-1)
    edge = np.sqrt(d00)
    miss = off_plane + np.clip(-bary, 0, None).sum(-1) * edge
    best = miss.argmin(1)
    rows = np.arange(len(dst))
    weights = np.clip(bary[rows, best], 0, None)
    weights /= weights.sum(1, keepdims=True)
    cols = faces[cand[rows, best]]  # (N, 3)
    dist, nearest = cKDTree(src).query(dst)
    scale = np.abs(src).max() if src.size else 1.0
    same = dist <= 1e-9 * scale
    weights[same], cols[same] = np.array([1.0, 0.0, 0.0]), nearest[same, None]
    keep = weights > 0
    index = torch.from_numpy(np.stack([np.repeat(rows, 3)[keep.ravel()], cols.ravel()[keep.ravel()]]))
    values = torch.from_numpy(weights.ravel()[keep.ravel()]).float()
    return torch.sparse_coo_tensor(index, values, (len(dst), len(src)), check_invariants=False).coalesce()


def finer_layout(vertices: torch.Tensor, faces: torch.Tensor, area_threshold: float, trained_points: int,
                 count: int, trained: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A ``count``-point subdivision of the mesh next to the trained one, ``trained`` = (W, faces) of
    :func:`build_densified_mesh` with ``trained_points`` (0 = by ``area_threshold``; the cache key): its W
    (count × V), its faces, and :func:`surface_transfer` from the trained points onto it (count × trained).
    Deterministic, so kept in the on-disk cache (:mod:`panolam.cache`): it costs ~0.5 s of every cold
    start otherwise."""
    import hashlib

    from panolam.cache import cached_arrays, source_hash

    v = vertices.detach().cpu().float()
    f = torch.as_tensor(faces).detach().cpu().long()

    def compute() -> dict[str, np.ndarray]:
        W_trained, trained_faces = (t.detach().cpu() for t in trained)
        W, fine_faces = build_densified_mesh(v, f, area_threshold, count)
        W = W.float().coalesce()
        T = surface_transfer(densify(W_trained.float(), v), trained_faces, densify(W, v))
        return {"w_indices": W.indices().numpy(), "w_values": W.values().numpy(), "faces": fine_faces.numpy(),
                "t_indices": T.indices().numpy(), "t_values": T.values().numpy(),
                "sizes": np.array([W.shape[0], v.shape[0], T.shape[1]], dtype=np.int64)}

    mesh = hashlib.sha256(v.numpy().tobytes() + f.numpy().tobytes()).hexdigest()
    inputs = {"mesh": mesh, "area_threshold": float(area_threshold), "trained_points": int(trained_points), "count": int(count),
              "source": source_hash(__file__), "numpy": np.__version__}
    a = cached_arrays("finer-layout", inputs, compute)
    n, m, k = (int(x) for x in a["sizes"])

    def sparse(indices: np.ndarray, values: np.ndarray, shape: tuple[int, int]) -> torch.Tensor:
        return torch.sparse_coo_tensor(torch.from_numpy(indices), torch.from_numpy(values), shape, check_invariants=False).coalesce()

    return sparse(a["w_indices"], a["w_values"], (n, m)), torch.from_numpy(a["faces"]), sparse(a["t_indices"], a["t_values"], (n, k))

"""Network-free densification: barycentric rows, exact counts, points on the template surface, densify."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from panolam.geometry.densify import build_densification, build_densified_mesh, densify
from panolam.geometry.template import builtin_template


@pytest.fixture(scope="module")
def head():
    return builtin_template(1200)


def _rows(W: torch.Tensor) -> list[dict[int, float]]:
    idx, val = W.indices(), W.values()
    rows: list[dict[int, float]] = [dict() for _ in range(W.shape[0])]
    for r, c, v in zip(idx[0].tolist(), idx[1].tolist(), val.tolist()):
        rows[r][c] = v
    return rows


def _check_rows(W: torch.Tensor, faces: torch.Tensor) -> None:
    m_c = W.shape[1]
    assert W.is_sparse and W.is_coalesced() and W.dtype == torch.float32
    assert (W.values() >= 0).all()
    sums = torch.zeros(W.shape[0]).index_add_(0, W.indices()[0], W.values())
    assert torch.allclose(sums, torch.ones(W.shape[0]), atol=1e-6)
    nnz = torch.bincount(W.indices()[0], minlength=W.shape[0])
    assert nnz.max() <= 3 and nnz.min() >= 1
    # Original vertices: identity rows.
    head_rows = W.index_select(0, torch.arange(m_c)).to_dense()
    assert torch.equal(head_rows, torch.eye(m_c))
    # Every other row mixes the corners of ONE original face (or the two ends of one of its edges).
    f = faces.tolist()
    tris = {tuple(sorted(t)) for t in f}
    edges = {tuple(sorted(e)) for t in f for e in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0]))}
    for row in _rows(W)[m_c:]:
        key = tuple(sorted(row))
        assert (len(key) == 3 and key in tris) or (len(key) == 2 and key in edges), key


def _single_triangle():
    v = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    return v, torch.tensor([[0, 1, 2]])


def test_threshold_levels_on_one_triangle():
    v, f = _single_triangle()  # area 0.5
    assert build_densification(v, f, area_threshold=0.6).shape == (3, 3)
    assert build_densification(v, f, area_threshold=0.5 / 3).shape == (6, 3)  # one split
    W = build_densification(v, f, area_threshold=0.5 / 5)  # two levels: the 5-per-side grid
    assert W.shape == (15, 3)
    pts = densify(W, v)
    grid = {(i / 4, j / 4) for i in range(5) for j in range(5 - i)}
    assert {(round(x, 6), round(y, 6)) for x, y in pts[:, :2].tolist()} == grid
    _check_rows(W, f)


def test_shared_edge_midpoints_created_once():
    v = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    f = torch.tensor([[0, 1, 2], [0, 2, 3]])
    W = build_densification(v, f, area_threshold=0.3)
    assert W.shape == (9, 4)  # 3×3 grid: the diagonal midpoint is shared
    pts = densify(W, v)
    assert torch.unique(pts, dim=0).shape[0] == 9
    _check_rows(W, f)


@pytest.mark.parametrize("target", [1200, 1201, 1202, 2500, 4321, 12000])
def test_exact_target_counts(head, target):
    W = build_densification(head.vertices, head.faces, area_threshold=1e-9, target_points=target)
    assert W.shape == (target, 1200)
    _check_rows(W, head.faces)
    pts = densify(W, head.vertices)
    assert torch.unique(pts, dim=0).shape[0] == target  # no duplicate points


def test_dense_points_lie_in_their_source_faces(head):
    W = build_densification(head.vertices, head.faces, area_threshold=1e-9, target_points=5000)
    pts = densify(W, head.vertices.double().float())
    v = head.vertices
    for r, row in enumerate(_rows(W)[1200:], start=1200):
        ids = list(row)
        if len(ids) < 3:
            continue
        a, b, c = v[ids]
        n = torch.linalg.cross(b - a, c - a)
        assert abs(torch.dot(pts[r] - a, n)) / n.norm() < 1e-6  # in the face's plane
        bary = torch.tensor([row[i] for i in ids])
        assert torch.allclose(bary @ torch.stack([a, b, c]), pts[r], atol=1e-6) and (bary > 0).all()


def test_largest_faces_split_first(head):
    areas = head.face_areas()
    W = build_densification(head.vertices, head.faces, area_threshold=1e-9, target_points=1300)
    big = head.faces[areas > torch.quantile(areas, 0.85)].tolist()
    big_edges = {tuple(sorted(e)) for t in big for e in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0]))}
    new_rows = _rows(W)[1200:]
    assert all(len(row) == 2 for row in new_rows)  # one level: edge midpoints only
    assert all(tuple(sorted(row)) in big_edges for row in new_rows)


def test_threshold_mode_bounds_face_area(head):
    thr = float(head.face_areas().median())
    W = build_densification(head.vertices, head.faces, area_threshold=thr)
    n_big = int((head.face_areas() > thr).sum())
    assert W.shape[0] > 1200 + n_big  # each big face adds at least one interior-edge midpoint
    _check_rows(W, head.faces)


def test_deterministic(head):
    a = build_densification(head.vertices, head.faces, 1e-9, 3000)
    b = build_densification(head.vertices, head.faces, 1e-9, 3000)
    assert torch.equal(a.indices(), b.indices()) and torch.equal(a.values(), b.values())


def test_bad_arguments(head):
    with pytest.raises(ValueError, match="below the template"):
        build_densification(head.vertices, head.faces, 1e-6, 100)
    with pytest.raises(ValueError, match="area_threshold"):
        build_densification(head.vertices, head.faces, 0.0)
    with pytest.raises(ValueError, match="faces"):
        build_densification(head.vertices, head.faces + 5000, 1e-6, 2000)


def test_densify_matches_dense_and_is_differentiable(head):
    W = build_densification(head.vertices, head.faces, 1e-9, 2000)
    x = torch.randn(1200, 5, requires_grad=True)
    y = densify(W, x)
    assert torch.allclose(y, W.to_dense() @ x, atol=1e-6)
    g = torch.randn_like(y)
    y.backward(g)
    assert torch.allclose(x.grad, W.to_dense().T @ g, atol=1e-5)
    xb = torch.randn(3, 1200, 4)
    yb = densify(W, xb)
    assert yb.shape == (3, 2000, 4)
    assert torch.allclose(yb[1], densify(W, xb[1]), atol=1e-6)
    assert densify(W, xb.to(torch.bfloat16)).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="M_C=1200"):
        densify(W, torch.zeros(7, 3))


def test_paper_sizes_are_fast():
    head = builtin_template()
    for target in (10_000, 30_000, 100_000):
        t0 = time.perf_counter()
        W = build_densification(head.vertices, head.faces, 2e-6, target)
        elapsed = time.perf_counter() - t0
        assert W.shape == (target, 5023)
        assert elapsed < 10.0, (target, elapsed)  # ~1 s on a quiet 2-core box; generous for shared CI
    sums = torch.zeros(W.shape[0]).index_add_(0, W.indices()[0], W.values())
    assert torch.allclose(sums, torch.ones_like(sums)) and np.isclose(W.values().min().item(), 0.125, atol=0.13)


def test_densified_mesh_covers_the_template_surface_with_the_same_orientation(head):
    from panolam.geometry.densify import build_densified_mesh

    W, faces = build_densified_mesh(head.vertices, head.faces, area_threshold=1e-9, target_points=3001)
    torch.testing.assert_close(W.to_dense(), build_densification(head.vertices, head.faces, 1e-9, 3001).to_dense())
    assert faces.dtype == torch.int64 and faces.min() >= 0 and faces.max() < 3001
    dense = densify(W, head.vertices.float()).double()

    def area(v, f):
        t = v[f]
        return 0.5 * torch.linalg.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]).norm(dim=-1).sum()

    torch.testing.assert_close(area(dense, faces), area(head.vertices.double(), head.faces), rtol=1e-5, atol=0)  # midpoint splits are planar: same surface
    # Outward normals: the signed volume (divergence theorem) is positive and unchanged.
    vol = lambda v, f: (v[f[:, 0]] * torch.linalg.cross(v[f[:, 1]], v[f[:, 2]])).sum() / 6
    torch.testing.assert_close(vol(dense, faces), vol(head.vertices.double(), head.faces), rtol=1e-5, atol=0)
    assert vol(dense, faces) > 0
    # Every dense point but the final top-up midpoints is a mesh vertex.
    assert len(torch.unique(faces)) >= 3001 - 2


def test_surface_transfer_maps_a_coarser_layout_onto_a_finer_one(head):
    """T·W_coarse = W_fine: features known at the coarser dense points interpolate exactly onto the finer
    ones (barycentric inside the containing triangle), and shared points take their own value."""
    from panolam.geometry.densify import surface_transfer

    verts = head.vertices.float()
    W_a, faces_a = build_densified_mesh(verts, head.faces, 1e-3, target_points=verts.shape[0] + 700)
    W_b, _ = build_densified_mesh(verts, head.faces, 1e-3, target_points=verts.shape[0] + 2500)
    pa, pb = densify(W_a, verts), densify(W_b, verts)
    T = surface_transfer(pa, faces_a, pb)
    assert T.shape == (pb.shape[0], pa.shape[0])
    dense = T.to_dense()
    assert (dense >= 0).all() and torch.allclose(dense.sum(1), torch.ones(pb.shape[0]), atol=1e-5)
    assert ((dense > 0).sum(1) <= 3).all()
    torch.testing.assert_close(torch.sparse.mm(T, pa), pb, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.sparse.mm(T, W_a.to_dense()), W_b.to_dense(), atol=1e-5, rtol=0)
    dist, idx = torch.cdist(pb, pa).min(dim=1)
    shared = dist < 1e-7
    assert shared.sum() >= verts.shape[0]  # at least the template's own vertices
    assert torch.equal(dense[shared].argmax(1), idx[shared]) and (dense[shared].max(1).values == 1).all()


def test_surface_transfer_rejects_bad_shapes():
    from panolam.geometry.densify import surface_transfer

    with pytest.raises(ValueError, match="points"):
        surface_transfer(torch.zeros(4, 2), torch.zeros(1, 3, dtype=torch.long), torch.zeros(2, 3))


def test_finer_layout_is_the_direct_computation_and_is_cached(head, tmp_path, monkeypatch):
    from panolam.geometry.densify import finer_layout, surface_transfer

    monkeypatch.setenv("PANOLAM_CACHE_DIR", str(tmp_path))
    verts, n = head.vertices.float(), head.vertices.shape[0]
    W_t, faces_t = build_densified_mesh(verts, head.faces, 1e-3, n + 700)
    W, faces, T = finer_layout(verts, head.faces, 1e-3, n + 700, n + 2500, (W_t, faces_t))
    W_d, faces_d = build_densified_mesh(verts, head.faces, 1e-3, n + 2500)
    assert torch.equal(W.to_dense(), W_d.float().to_dense()) and torch.equal(faces, faces_d)
    T_d = surface_transfer(densify(W_t, verts), faces_t, densify(W_d, verts))
    assert torch.equal(T.to_dense(), T_d.to_dense())
    entries = list(tmp_path.glob("finer-layout-*.npz"))
    assert len(entries) == 1
    W2, faces2, T2 = finer_layout(verts, head.faces, 1e-3, n + 700, n + 2500, (W_t, faces_t))  # read back from the file
    assert torch.equal(W2.to_dense(), W.to_dense()) and torch.equal(faces2, faces) and torch.equal(T2.to_dense(), T.to_dense())
    assert list(tmp_path.glob("finer-layout-*.npz")) == entries

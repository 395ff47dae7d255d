"""Built-in head template (shape, frame, topology, regions, determinism) and the safe FLAME loader."""

from __future__ import annotations

import os
import pickle
import sys
import types

import numpy as np
import pytest
import scipy.sparse
import torch

from panolam.geometry import template as tpl
from panolam.geometry.flame import read_flame_arrays
from panolam.geometry.template import REGION_NAMES, builtin_template, load_template


@pytest.fixture(scope="module")
def head():
    return builtin_template()


def _edges(faces: torch.Tensor) -> torch.Tensor:
    return torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])


def test_default_size_types_and_count(head):
    assert head.vertices.shape == (5023, 3) and head.vertices.dtype == torch.float32
    assert head.faces.dtype == torch.int64 and head.faces.shape[1] == 3
    assert head.regions.shape == (5023,) and head.regions.dtype == torch.int64
    assert int(head.faces.min()) == 0 and int(head.faces.max()) == 5022


@pytest.mark.parametrize("n", [600, 1500])
def test_target_vertices_within_ten_percent(n):
    t = builtin_template(n)
    assert abs(t.vertices.shape[0] - n) <= 0.1 * n


def test_closed_consistently_oriented_sphere_topology(head):
    edges = _edges(head.faces)
    # Each directed edge exactly once and its reverse exists: closed, manifold, consistently oriented.
    key = edges[:, 0] * 10**6 + edges[:, 1]
    rev = edges[:, 1] * 10**6 + edges[:, 0]
    assert torch.unique(key).numel() == key.numel()
    assert torch.isin(rev, key).all()
    v, e, f = head.vertices.shape[0], key.numel() // 2, head.faces.shape[0]
    assert v - e + f == 2  # genus 0
    tri = head.vertices.double()[head.faces]
    volume = (tri[:, 0] * torch.cross(tri[:, 1], tri[:, 2], dim=-1)).sum() / 6
    assert volume > 0.02  # outward faces enclose the head (≈ 0.039)
    assert head.face_areas().min() > 1e-7


def test_placed_in_gan_world_frame(head):
    v = head.vertices
    lo, hi = v.min(0).values, v.max(0).values
    assert hi[1] == pytest.approx(tpl.HEAD_TOP_Y, abs=0.003)
    assert lo[1] == pytest.approx(tpl.NECK_BOTTOM_Y, abs=0.005)
    front = v[v[:, 2] > 0.1]
    chin = front[:, 1].min()
    assert chin == pytest.approx(tpl.HEAD_CHIN_Y, abs=0.005)
    assert 0.5 <= hi[1] - chin <= 0.55
    assert 0.37 <= hi[0] - lo[0] <= 0.41  # with ears
    no_ears = v[~head.region_mask("ear")]
    assert 0.33 <= no_ears[:, 0].max() - no_ears[:, 0].min() <= 0.37
    assert 0.42 <= hi[2] - lo[2] <= 0.48
    assert abs(hi[0] + lo[0]) < 0.01 and abs(hi[2] + lo[2]) < 0.03  # centred in x and z
    nose_tip = v[v[:, 2].argmax()]
    assert abs(nose_tip[0]) < 0.02 and -0.1 < nose_tip[1] < 0.05  # the face looks toward +z
    # The camera at radius 2.7 sees about ±0.32: the head must fit inside.
    assert v[:, :2].abs().max() < 0.42 and v[v[:, 1] > -0.3, :2].abs().max() < 0.32


def test_vertex_normals_point_outward(head):
    n = head.vertex_normals()
    assert torch.allclose(n.norm(dim=-1), torch.ones(n.shape[0]), atol=1e-5)
    top = head.vertices[:, 1] > 0.2
    assert (n[top, 1] > 0.3).all()
    assert (n[head.vertices[:, 1] < -0.39, 1] < -0.5).float().mean() > 0.5  # neck cap faces down


def test_regions_cover_expected_places(head):
    v, r = head.vertices, head.regions
    assert r.min() >= 0 and r.max() < len(REGION_NAMES)
    for name in REGION_NAMES:
        assert head.region_mask(name).sum() >= 5, name
    centre = {name: v[head.region_mask(name)].mean(0) for name in REGION_NAMES}
    assert centre["eye_l"][0] > 0.03 and centre["eye_r"][0] < -0.03
    assert centre["eye_l"][2] > 0.12 and centre["lips"][2] > 0.12 and centre["nose"][2] > 0.15
    assert centre["lips"][1] < centre["nose"][1] < centre["brow"][1]
    assert centre["scalp"][1] > 0.05 and centre["neck"][1] < -0.2
    assert v[head.region_mask("ear"), 0].abs().min() > 0.14
    with pytest.raises(ValueError, match="unknown region"):
        head.region_mask("tail")


def test_deterministic_same_bytes(monkeypatch):
    monkeypatch.setenv("PANOLAM_CACHE_DIR", "off")  # two real computations, not one and a cache read
    a = tpl._builtin_arrays.__wrapped__(700)
    b = tpl._builtin_arrays.__wrapped__(700)
    assert all(x.tobytes() == y.tobytes() for x, y in zip(a, b))
    t1, t2 = builtin_template(700), builtin_template(700)
    t1.vertices.add_(1.0)  # callers get their own tensors, not the cache
    assert torch.equal(t2.vertices, torch.from_numpy(a[0]))


def test_load_template_builtin_and_errors(tmp_path):
    assert load_template("builtin", 600).vertices.shape[0] == 600
    with pytest.raises(FileNotFoundError, match="nope.pkl"):
        load_template(str(tmp_path / "nope.pkl"))
    with pytest.raises(ValueError, match="target_vertices"):
        builtin_template(10)


# ---------------------------------------------------------------------------------------------
# FLAME loader


def _fake_flame_mesh() -> tuple[np.ndarray, np.ndarray]:
    """A FLAME-like mesh in metres: the built-in head, shrunk and moved off centre."""
    t = builtin_template(600)
    return t.vertices.double().numpy() * 0.4 + np.array([0.01, -0.03, 0.02]), t.faces.numpy().astype(np.uint32)


@pytest.fixture()
def fake_chumpy(monkeypatch):
    """A stand-in ``chumpy.ch.Ch`` registered in sys.modules only while pickling."""
    pkg, mod = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")

    class Ch:
        def __init__(self, x):
            self.x = x
            self._dirty_vars = set()

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    mod.Ch, pkg.ch = Ch, mod
    monkeypatch.setitem(sys.modules, "chumpy", pkg)
    monkeypatch.setitem(sys.modules, "chumpy.ch", mod)
    return Ch


def _check_similarity(src: np.ndarray, out: torch.Tensor) -> None:
    out = out.double().numpy()
    d_src = np.linalg.norm(src[1:] - src[:-1], axis=1)
    d_out = np.linalg.norm(out[1:] - out[:-1], axis=1)
    ratio = d_out / d_src
    assert np.allclose(ratio, ratio[0], rtol=1e-4)  # uniform scale, no distortion
    assert out[:, 1].max() == pytest.approx(tpl.HEAD_TOP_Y, abs=1e-5)
    front = out[out[:, 2] >= out[:, 2].min() + 0.75 * np.ptp(out[:, 2])]
    assert out[:, 1].max() - front[:, 1].min() == pytest.approx(tpl.HEAD_TOP_Y - tpl.HEAD_CHIN_Y, abs=1e-5)
    assert abs(out[:, 0].max() + out[:, 0].min()) < 1e-5 and abs(out[:, 2].max() + out[:, 2].min()) < 1e-5


@pytest.mark.parametrize("protocol", [2, 4])
def test_flame_pickle_with_chumpy_and_sparse(tmp_path, fake_chumpy, monkeypatch, protocol):
    verts, faces = _fake_flame_mesh()
    model = {
        "v_template": fake_chumpy(verts),
        "f": faces,
        "shapedirs": fake_chumpy(np.zeros((verts.shape[0], 3, 2))),
        "J_regressor": scipy.sparse.csc_matrix(np.eye(5, verts.shape[0])),
        "kintree_table": np.zeros((2, 5), dtype=np.int64),
        "bs_style": "lbs",
    }
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(pickle.dumps(model, protocol=protocol))
    monkeypatch.delitem(sys.modules, "chumpy")  # the loader must not need chumpy itself
    monkeypatch.delitem(sys.modules, "chumpy.ch")
    t = load_template(str(path))
    assert torch.equal(t.faces, torch.from_numpy(faces.astype(np.int64)))
    assert t.vertices.dtype == torch.float32 and t.regions.shape == (verts.shape[0],)
    assert t.name == "flame:generic_model.pkl"
    _check_similarity(verts, t.vertices)


def test_flame_npz(tmp_path):
    verts, faces = _fake_flame_mesh()
    path = tmp_path / "flame.npz"
    np.savez(path, v_template=verts, f=faces)
    t = load_template(str(path))
    _check_similarity(verts, t.vertices)
    np.savez(tmp_path / "bad.npz", v_template=verts)
    with pytest.raises(ValueError, match="missing f"):
        load_template(str(tmp_path / "bad.npz"))


class _Evil:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalEvil:
    def __reduce__(self):
        return (eval, ("1+1",))


@pytest.mark.parametrize("payload", ["system", "eval"])
def test_malicious_pickle_is_refused(tmp_path, payload):
    marker = tmp_path / "pwned"
    evil = _Evil(str(marker)) if payload == "system" else _EvalEvil()
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(pickle.dumps({"v_template": evil, "f": np.zeros((1, 3))}, protocol=2))
    with pytest.raises(ValueError, match=r"generic_model\.pkl.*refusing to load global"):
        read_flame_arrays(path)
    assert not marker.exists()


def test_flame_bad_fields(tmp_path):
    path = tmp_path / "m.pkl"
    path.write_bytes(pickle.dumps({"v_template": np.zeros((10, 2)), "f": np.zeros((1, 3), dtype=np.int64)}))
    with pytest.raises(ValueError, match=r"m\.pkl: v_template must be"):
        read_flame_arrays(path)
    path.write_bytes(pickle.dumps({"f": np.zeros((1, 3))}))
    with pytest.raises(ValueError, match="expected a dict"):
        read_flame_arrays(path)

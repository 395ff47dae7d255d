"""head.glb: our glTF 2.0 writer read back by an independent reader (pygltflib), and the mesh of a real model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pygltflib = pytest.importorskip("pygltflib")

from panolam.gaussians.glb import save_glb, srgb_to_linear  # noqa: E402


def read_glb(path):
    """(positions, faces, colours, gltf) through pygltflib's own GLB parser and accessor metadata."""
    gltf = pygltflib.GLTF2().load(str(path))
    blob = gltf.binary_blob()
    prim = gltf.meshes[0].primitives[0]

    def accessor(i, dtype, width):
        acc = gltf.accessors[i]
        view = gltf.bufferViews[acc.bufferView]
        start = view.byteOffset + (acc.byteOffset or 0)
        return np.frombuffer(blob, dtype=dtype, count=acc.count * width, offset=start).reshape(acc.count, width), acc

    pos, pos_acc = accessor(prim.attributes.POSITION, np.float32, 3)
    col, _ = accessor(prim.attributes.COLOR_0, np.float32, 3)
    idx, idx_acc = accessor(prim.indices, np.uint32, 1)
    assert pos_acc.componentType == pygltflib.FLOAT and idx_acc.componentType == pygltflib.UNSIGNED_INT
    assert prim.mode == pygltflib.TRIANGLES
    return pos, idx.reshape(-1, 3), col, gltf


def test_glb_round_trips_through_pygltflib(tmp_path):
    rng = np.random.default_rng(0)
    v = rng.normal(size=(7, 3)).astype(np.float32)
    f = np.array([[0, 1, 2], [2, 3, 4], [4, 5, 6], [6, 0, 3]])
    c = rng.uniform(size=(7, 3))
    path = save_glb(tmp_path / "m.glb", v, f, c)
    pos, faces, col, gltf = read_glb(path)
    np.testing.assert_array_equal(pos, v)
    np.testing.assert_array_equal(faces, f)
    np.testing.assert_allclose(col, srgb_to_linear(c), rtol=1e-6)
    assert gltf.asset.version == "2.0" and gltf.accessors[0].min == v.min(0).tolist() and gltf.accessors[0].max == v.max(0).tolist()
    assert gltf.materials[0].doubleSided and "KHR_materials_unlit" in gltf.materials[0].extensions
    assert path.stat().st_size % 4 == 0 and not list(tmp_path.glob(".*tmp"))  # 4-byte aligned, no temporary left


def test_srgb_to_linear_matches_the_standard():
    np.testing.assert_allclose(srgb_to_linear(np.array([0.0, 0.04045, 0.5, 1.0, 1.5, -1.0])),
                               [0.0, 0.04045 / 12.92, 0.21404114, 1.0, 1.0, 0.0], rtol=1e-6)


@pytest.mark.parametrize("v,f,c,msg", [
    (np.zeros((3, 3)), np.array([[0, 1, 3]]), None, "face indices"),
    (np.zeros((3, 2)), np.array([[0, 1, 2]]), None, "vertices must be"),
    (np.zeros((3, 3)), np.zeros((0, 3), int), None, "faces must be"),
    (np.zeros((3, 3)), np.array([[0, 1, 2]]), np.zeros((2, 3)), "colors must be"),
    (np.full((3, 3), np.nan), np.array([[0, 1, 2]]), None, "NaN"),
])
def test_glb_rejects_bad_meshes(tmp_path, v, f, c, msg):
    with pytest.raises(ValueError, match=msg):
        save_glb(tmp_path / "x.glb", v, f, c)
    assert not (tmp_path / "x.glb").exists()


@pytest.mark.parametrize("points", [None, 1500])
def test_reconstruction_mesh_is_the_gaussians_on_the_dense_template(tmp_path, points):
    """The tiny model's head.glb: one vertex per Gaussian at its mean, its colour, the dense template's faces
    (also when the head has more dense points than the network was trained with)."""
    from panolam.gaussians.ply import load_ply
    from panolam.pipeline import Reconstructor, write_outputs

    with pytest.warns(UserWarning, match="UNTRAINED"):
        rec = Reconstructor(None, "tiny", device="cpu", points=points)
    photo = (np.random.default_rng(0).uniform(size=(64, 64, 3)) * 255).astype(np.uint8)
    result = rec.reconstruct(photo, preprocess=False, size=56)
    paths = write_outputs(result, tmp_path, previews=False)
    pos, faces, col, _ = read_glb(paths["glb"])
    head = load_ply(paths["ply"])
    assert len(pos) == len(head) == (points or rec.model.num_dense) == rec.model.num_inference_dense
    np.testing.assert_allclose(pos, head.means.numpy(), atol=1e-6)
    np.testing.assert_allclose(col, srgb_to_linear(result.gaussians.colors.numpy()), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(faces, rec.model.output_faces.numpy())
    # The mesh before the network's offsets is the template surface: dense template points = W·V.
    from panolam.geometry.densify import densify

    dense_template = densify(rec.model.inference_densify_matrix, rec.model.template_vertices)
    tri = dense_template[torch.from_numpy(faces.astype(np.int64))]
    assert torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]).norm(dim=-1).min() > 0  # no degenerate faces

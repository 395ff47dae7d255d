import numpy as np
import plyfile
import pytest
import torch

from panolam.gaussians import Gaussians
from panolam.gaussians.container import SH_C0
from panolam.gaussians.ply import PLY_FIELDS, PlyFormatError, load_ply, save_ply, save_splat


def random_gaussians(n=50, seed=0) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    return Gaussians(
        means=torch.randn(n, 3, generator=g) * 0.3,
        quats=torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1),
        scales=torch.rand(n, 3, generator=g) * 0.02 + 1e-3,
        opacities=torch.rand(n, generator=g) * 0.98 + 0.01,
        colors=torch.rand(n, 3, generator=g),
    )


def test_ply_layout_parses_with_plyfile(tmp_path):
    g = random_gaussians()
    save_ply(g, tmp_path / "head.ply")
    ply = plyfile.PlyData.read(str(tmp_path / "head.ply"))
    v = ply["vertex"]
    assert [p.name for p in v.properties] == PLY_FIELDS
    assert all(p.val_dtype in ("f4", "<f4", "float32") or str(p.val_dtype).endswith("f4") for p in v.properties)
    assert np.allclose(v["x"], g.means[:, 0].numpy())
    assert np.allclose(v["f_dc_1"], ((g.colors[:, 1] - 0.5) / SH_C0).numpy(), atol=1e-5)
    assert np.allclose(1 / (1 + np.exp(-v["opacity"])), g.opacities.numpy(), atol=1e-6)
    assert np.allclose(np.exp(v["scale_2"]), g.scales[:, 2].numpy(), rtol=1e-5)
    assert np.allclose(v["rot_0"], g.quats[:, 0].numpy())  # w first


def test_round_trip_gaussians_and_file(tmp_path):
    g = random_gaussians()
    save_ply(g, tmp_path / "a.ply")
    back = load_ply(tmp_path / "a.ply")
    for k, v in g.fields().items():
        assert torch.allclose(back.fields()[k], v, atol=1e-6, rtol=1e-5), k
    save_ply(back, tmp_path / "b.ply")
    a = plyfile.PlyData.read(str(tmp_path / "a.ply"))["vertex"].data
    b = plyfile.PlyData.read(str(tmp_path / "b.ply"))["vertex"].data
    for name in PLY_FIELDS:
        assert np.allclose(a[name], b[name], rtol=2e-6, atol=1e-6), name


def test_reads_other_writers_layout_with_extra_fields(tmp_path):
    g = random_gaussians(7)
    from panolam.gaussians.ply import gaussians_to_ply_array

    arr = gaussians_to_ply_array(g)
    extra = [(n, "f4") for n in PLY_FIELDS] + [(f"f_rest_{i}", "f4") for i in range(3)]
    full = np.zeros(len(arr), dtype=extra)
    for n in PLY_FIELDS:
        full[n] = arr[n]
    plyfile.PlyData([plyfile.PlyElement.describe(full, "vertex")]).write(str(tmp_path / "other.ply"))
    back = load_ply(tmp_path / "other.ply")
    assert torch.allclose(back.means, g.means) and len(back) == 7


@pytest.mark.parametrize("content, msg", [
    (b"not a ply at all", "not a PLY"),
    (b"ply\nformat binary_little_endian 1.0\nelement vertex 2\nproperty float x\nend_header\n" + b"\0" * 8, "missing vertex properties"),
])
def test_corrupt_ply_errors(tmp_path, content, msg):
    (tmp_path / "bad.ply").write_bytes(content)
    with pytest.raises(PlyFormatError, match=msg):
        load_ply(tmp_path / "bad.ply")


def test_truncated_ply(tmp_path):
    save_ply(random_gaussians(10), tmp_path / "a.ply")
    raw = (tmp_path / "a.ply").read_bytes()
    (tmp_path / "cut.ply").write_bytes(raw[:-20])
    with pytest.raises(PlyFormatError, match="truncated"):
        load_ply(tmp_path / "cut.ply")


def test_missing_file_error(tmp_path):
    with pytest.raises(PlyFormatError, match="cannot read"):
        load_ply(tmp_path / "nope.ply")


def test_splat_export_layout(tmp_path):
    g = random_gaussians(20)
    save_splat(g, tmp_path / "h.splat")
    raw = np.fromfile(tmp_path / "h.splat", dtype=[("xyz", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)])
    assert len(raw) == 20
    order = torch.argsort(-(g.scales.prod(-1) * g.opacities))
    assert np.allclose(raw["xyz"], g.means[order].numpy())
    assert np.abs(raw["rgba"][:, 3] / 255 - g.opacities[order].numpy()).max() < 1 / 255


def test_file_round_trip_is_bit_exact_even_for_saturated_opacities(tmp_path):
    g = random_gaussians(200)
    g.opacities[:10] = torch.tensor([1e-9, 1 - 1e-9, 0.999999, 1e-6, 0.5, 1.0 - 2e-8, 3e-8, 0.9999, 1e-4, 0.99999])
    save_ply(g, tmp_path / "a.ply")
    save_ply(load_ply(tmp_path / "a.ply", dtype=torch.float64), tmp_path / "b.ply")
    assert (tmp_path / "a.ply").read_bytes() == (tmp_path / "b.ply").read_bytes()

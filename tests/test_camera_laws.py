"""Camera laws of App. E: ranges, moments, framing and the equator ring."""

import math

import pytest
import torch

from panolam.data import camera_laws as cl


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_front_ranges_and_moments():
    s = cl.sample_front(20000, _gen(1))
    assert s.yaw.abs().max() <= 36.0 and s.pitch.abs().max() <= 26.0
    assert s.yaw.abs().max() > 35.0 and s.pitch.abs().max() > 25.0  # the whole range is used
    assert abs(s.yaw.std().item() - 36 / math.sqrt(3)) < 0.5
    assert abs(s.radius.mean().item() - 2.7) < 0.005 and abs(s.radius.std().item() - 0.1) < 0.005
    assert abs(s.fov.mean().item() - 18.83) < 0.05 and abs(s.fov.std().item() - 1.0) < 0.03


def test_360_equator_ring_evenly_spaced_and_random_views_uniform_on_sphere():
    s = cl.sample_360(32, _gen(2))
    assert len(s) == 32
    assert torch.all(s.pitch[:8] == 0)
    assert torch.allclose(cl.equator_spacing_deg(s.yaw[:8]), torch.full((8,), 45.0), atol=1e-4)
    big = cl.sample_360(8 + 30000, _gen(3))
    h = torch.sin(torch.deg2rad(big.pitch[8:]))  # uniform on the sphere <=> height uniform in [-1, 1]
    assert abs(h.mean().item()) < 0.02 and abs(h.var().item() - 1 / 3) < 0.01
    assert abs((h > 0.5).float().mean().item() - 0.25) < 0.02
    assert abs(big.radius.std().item() - 0.1) < 0.005


def test_cameras_look_at_the_head():
    for s in (cl.sample_front(16, _gen(4)), cl.sample_360(32, _gen(5))):
        cams = s.cameras(64)
        origin = torch.tensor([0.0, 0.0, 0.0, 1.0])
        pc = (cams.world_to_cam @ origin)[:, :3]
        assert torch.all(pc[:, 2] > 2.0)  # in front of every camera, at about the radius
        uv = (cams.K @ pc[:, :, None])[:, :, 0]
        uv = uv[:, :2] / uv[:, 2:]
        assert torch.allclose(uv, torch.full_like(uv, 32.0), atol=1e-3)
        assert torch.allclose(cams.centers.norm(dim=1), s.radius, atol=1e-4)


def test_seeded_and_dispatch():
    a, b = cl.sample_cameras("360", 32, _gen(7)), cl.sample_cameras("360", 32, _gen(7))
    assert torch.equal(a.yaw, b.yaw) and torch.equal(a.fov, b.fov)
    assert not torch.equal(a.yaw, cl.sample_cameras("360", 32, _gen(8)).yaw)
    with pytest.raises(ValueError, match="camera set"):
        cl.sample_cameras("side", 4)
    with pytest.raises(ValueError, match="at least 8"):
        cl.sample_360(4)


def test_eval_views_front_back_left_right():
    cams = cl.eval_views(32)
    c = cams.centers
    assert len(cams) == 4
    assert c[0, 2] > 2.6 and c[3, 2] < -2.6  # front on +z, back on -z
    assert c[1, 0] > 2.6 and c[2, 0] < -2.6  # left on +x, right on -x
    assert torch.allclose(cl.frontalness(cams.world_to_cam), torch.tensor([1.0, 0.0, 0.0, -1.0]), atol=1e-5)

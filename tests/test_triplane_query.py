"""Spherical tri-plane query (DESIGN §2), checked by hand on axis points and against an independent
matrix-form reimplementation of SphereHead's sampler; virtual cameras and ray samples (eq. 6)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from panolam.geometry.triplane import (
    query_spherical_triplane,
    ray_sample_points,
    sample_spherical_planes,
    virtual_camera_centers,
)

H = W = 8


def _ramp_planes(a_const=(1.0, 2.0, 3.0), b_const=(10.0, 20.0, 30.0)) -> torch.Tensor:
    """(1, 6, 3, H, W): channel 0 = u (grid x) ramp, channel 1 = v (grid y) ramp, channel 2 = a constant per plane."""
    u = (2 * torch.arange(W) + 1) / W - 1  # pixel centres, align_corners=False
    v = (2 * torch.arange(H) + 1) / H - 1
    planes = torch.zeros(1, 6, 3, H, W)
    planes[:, :, 0] = u[None, :].expand(H, W)
    planes[:, :, 1] = v[:, None].expand(H, W)
    for k, c in enumerate(list(a_const) + list(b_const)):
        planes[:, k, 2] = c
    return planes


R_N_HALF = 2 * 0.5 / math.sqrt(3) - 1  # r_n of a point at |p| = 0.5 after box-warp scaling


def test_point_on_plus_z_axis_reads_sphere_a_only():
    # p = (0, 0, .25), box_warp 1 -> (0, 0, .5). Sphere A: (z, y, -x) = (.5, 0, 0): θ_n = 0, φ_n = 0, w_A = 1.
    # Sphere B: (-z, -x, y) = (-.5, 0, 0): φ = π -> φ_n = 1 -> w_B = 0 (B's seam).
    out = query_spherical_triplane(_ramp_planes(), torch.tensor([[[0.0, 0.0, 0.25]]]))
    expected = torch.tensor([(0 + 0 + 0) / 3, (0 + R_N_HALF + R_N_HALF) / 3, (1 + 2 + 3) / 3])
    assert torch.allclose(out[0, 0], expected, atol=1e-5)


def test_point_on_plus_x_axis_reads_sphere_b_only():
    # p -> (.5, 0, 0). Sphere A: (0, 0, -.5): θ = π -> θ_n = 1 -> w_A = 0 (A's pole).
    # Sphere B: (0, -.5, 0): θ_n = 0, φ = -π/2 -> φ_n = -.5, w_B = 1/2.
    out = query_spherical_triplane(_ramp_planes(), torch.tensor([[[0.25, 0.0, 0.0]]]))
    expected = torch.tensor([(0 + 0 - 0.5) / 3, (-0.5 + 2 * R_N_HALF) / 3, (10 + 20 + 30) / 3])
    assert torch.allclose(out[0, 0], expected, atol=1e-5)


def test_point_on_top_reads_sphere_a():
    # p -> (0, .5, 0). A: (0, .5, 0): θ_n = 0, φ = π/2 -> φ_n = .5, w_A = 1/2. B: (0, 0, .5): θ = 0 -> w_B = 0.
    out = query_spherical_triplane(_ramp_planes(), torch.tensor([[[0.0, 0.25, 0.0]]]))
    expected = torch.tensor([(0 + 0 + 0.5) / 3, (0.5 + 2 * R_N_HALF) / 3, 2.0])
    assert torch.allclose(out[0, 0], expected, atol=1e-5)


def test_equator_point_blends_both_spheres_and_box_warp():
    # p = (.3, 0, .3) with box_warp 2 -> unchanged. A: (.3, 0, -.3): θ = 3π/4 -> θ_n = .5, φ_n = 0, w_A = 1/2.
    # B: (-.3, -.3, 0): θ_n = 0, φ = -3π/4 -> φ_n = -.75, w_B = (1 - √2/2)/2.
    out = query_spherical_triplane(_ramp_planes(), torch.tensor([[[0.3, 0.0, 0.3]]]), box_warp=2.0)
    w_a, w_b = 0.5, (1 - math.sqrt(2) / 2) / 2
    r = 2 * math.sqrt(0.18) / math.sqrt(3) - 1
    fa = torch.tensor([(0.5 + 0.5 + 0.0) / 3, (0.0 + r + r) / 3, 2.0])
    fb = torch.tensor([(0.0 + 0.0 - 0.75) / 3, (-0.75 + r + r) / 3, 20.0])
    expected = (w_a * fa + w_b * fb) / (w_a + w_b)
    assert torch.allclose(out[0, 0], expected, atol=1e-5)


def _reference_spherehead(planes: torch.Tensor, points: torch.Tensor, box_warp: float) -> torch.Tensor:
    """Independent matrix form: rotation matrices as in SphereHead (roty/rotz), planes by axis matrices."""

    def roty(b):
        return torch.tensor([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]], dtype=torch.float64)

    def rotz(g):
        return torch.tensor([[math.cos(g), -math.sin(g), 0], [math.sin(g), math.cos(g), 0], [0, 0, 1]], dtype=torch.float64)

    axes = torch.tensor(
        [[[1, 0, 0], [0, 1, 0], [0, 0, 1]], [[1, 0, 0], [0, 0, 1], [0, 1, 0]], [[0, 1, 0], [0, 0, 1], [1, 0, 0]]],
        dtype=torch.float64,
    )
    p = points.double() * (2 / box_warp)
    out = []
    for rmat, sphere in ((roty(math.pi / 2).T, planes[:, :3]), ((roty(-math.pi / 2) @ rotz(-math.pi / 2)).T, planes[:, 3:])):
        q = p @ rmat
        r = 2 * q.norm(dim=-1) / math.sqrt(3) - 1
        th = 2 * torch.atan2(q[..., :2].norm(dim=-1), q[..., 2]) / math.pi - 1
        ph = torch.atan2(q[..., 1], q[..., 0]) / math.pi
        w = (1 + torch.cos(math.pi * th)) / 2 * (1 + torch.cos(math.pi * ph)) / 2
        coords = torch.stack([th, ph, r], -1)
        feats = []
        for k in range(3):
            uv = (coords @ torch.linalg.inv(axes[k]))[..., :2]
            feats.append(F.grid_sample(sphere[:, k].double(), uv[:, None], align_corners=False)[:, :, 0].transpose(1, 2))
        out.append((torch.stack(feats, 1), w[:, None, :, None]))
    (fa, wa), (fb, wb) = out
    return ((wa * fa + wb * fb) / (wa + wb + 1e-8)).mean(1)


def test_matches_matrix_form_reference_on_random_points():
    g = torch.Generator().manual_seed(0)
    planes = torch.randn(2, 6, 4, 16, 16, generator=g)
    points = (torch.rand(2, 50, 3, generator=g) - 0.5) * 0.9
    ours = query_spherical_triplane(planes, points, box_warp=1.0)
    ref = _reference_spherehead(planes, points, 1.0)
    assert ours.shape == (2, 50, 4)
    assert torch.allclose(ours.double(), ref, atol=1e-5)
    assert sample_spherical_planes(planes, points).shape == (2, 3, 50, 4)


def test_gradients_flow_to_planes_and_points():
    g = torch.Generator().manual_seed(1)
    planes = torch.randn(1, 6, 2, 6, 6, generator=g, dtype=torch.float64, requires_grad=True)
    points = ((torch.rand(1, 7, 3, generator=g, dtype=torch.float64) - 0.5) * 0.8).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda pl, pt: query_spherical_triplane(pl, pt), (planes, points), atol=1e-6)
    origin = torch.zeros(1, 1, 3, requires_grad=True)  # degenerate point: finite (zero) output and gradient
    out = query_spherical_triplane(planes.detach().float(), origin)
    out.sum().backward()
    assert torch.isfinite(origin.grad).all() and torch.isfinite(out).all()


def test_shape_errors():
    with pytest.raises(ValueError, match=r"\(B, 6, C, H, W\)"):
        query_spherical_triplane(torch.zeros(1, 3, 2, 4, 4), torch.zeros(1, 5, 3))
    with pytest.raises(ValueError, match="points must be"):
        query_spherical_triplane(torch.zeros(2, 6, 2, 4, 4), torch.zeros(1, 5, 3))


def test_virtual_camera_centers():
    c = virtual_camera_centers()
    assert torch.allclose(c, 2.7 * torch.tensor([[0.0, 0, 1], [1, 0, 0], [-1, 0, 0], [0, 0, -1]]))
    assert torch.allclose(virtual_camera_centers(2, radius=1.0), torch.tensor([[0.0, 0, 1], [1, 0, 0]]))
    c6 = virtual_camera_centers(6)
    assert c6.shape == (6, 3) and torch.allclose(c6.norm(dim=-1), torch.full((6,), 2.7))
    assert torch.allclose(c6[0], torch.tensor([0.0, 0.0, 2.7]), atol=1e-6) and (c6[:, 1] == 0).all()
    with pytest.raises(ValueError):
        virtual_camera_centers(0)


def test_ray_samples_on_line_centred_and_spanning_interval():
    g = torch.Generator().manual_seed(2)
    points = torch.rand(2, 5, 3, generator=g) - 0.5
    centers = virtual_camera_centers(4)
    s = ray_sample_points(points, centers, num_samples=7, interval=0.1)
    assert s.shape == (2, 5, 4, 7, 3)
    p = points[:, :, None, None, :]
    to_cam = centers[None, None, :, None, :] - p
    assert torch.linalg.cross(s - p, to_cam.expand_as(s), dim=-1).norm(dim=-1).max() < 1e-6  # collinear
    assert torch.allclose(s.mean(dim=3), points[:, :, None, :].expand(2, 5, 4, 3), atol=1e-6)  # centred
    assert torch.allclose((s[:, :, :, -1] - s[:, :, :, 0]).norm(dim=-1), torch.full((2, 5, 4), 0.1), atol=1e-6)
    steps = (s[:, :, :, 1:] - s[:, :, :, :-1]).norm(dim=-1)
    assert torch.allclose(steps, torch.full_like(steps, 0.1 / 6), atol=1e-6)  # evenly spaced
    d_first = (s[:, :, :, 0] - centers[None, None]).norm(dim=-1)
    d_last = (s[:, :, :, -1] - centers[None, None]).norm(dim=-1)
    assert (d_first < d_last).all()  # first sample nearest the camera
    one = ray_sample_points(points, centers, num_samples=1, interval=0.1)
    assert torch.allclose(one[:, :, :, 0], points[:, :, None].expand(2, 5, 4, 3))


def test_ray_samples_differentiable_and_queryable():
    points = (torch.rand(1, 4, 3) * 0.4 - 0.2).requires_grad_(True)
    s = ray_sample_points(points, virtual_camera_centers(4), num_samples=3, interval=0.05)
    feats = query_spherical_triplane(torch.randn(1, 6, 2, 8, 8), s.reshape(1, -1, 3))
    assert feats.shape == (1, 4 * 4 * 3, 2)
    feats.sum().backward()
    assert torch.isfinite(points.grad).all() and points.grad.abs().sum() > 0

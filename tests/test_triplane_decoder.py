"""Frozen tri-plane decoder + volume renderer: shapes, gradients, empty space, analytic alpha for known
density fields, importance sampling finding a thin surface, and SphereHead-layout state loading."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from panolam.geometry.cameras import Cameras, named_views
from panolam.model.triplane_decoder import OSGDecoder, TriplaneRenderer, camera_rays, renderer_from_state


def _renderer(**kw) -> TriplaneRenderer:
    torch.manual_seed(0)
    return TriplaneRenderer(4, samples_coarse=8, samples_fine=8, **kw)


def test_shapes_and_gradients_to_planes():
    r = _renderer()
    planes = torch.randn(2, 6, 4, 8, 8, requires_grad=True)
    cams = named_views(("front", "back"), size=64)
    out = r.render(planes, [cams, cams[[1, 0]]], size=6)
    assert out.rgb.shape == (2, 2, 6, 6, 3) and out.alpha.shape == (2, 2, 6, 6, 1) and out.depth.shape == (2, 2, 6, 6, 1)
    assert torch.isfinite(out.rgb).all() and ((out.alpha >= 0) & (out.alpha <= 1)).all()
    out.rgb.sum().backward()
    assert planes.grad is not None and planes.grad.abs().sum() > 0


def test_empty_planes_render_background():
    r = _renderer(background=0.25)
    with torch.no_grad():
        r.decoder.net[2].bias[0] = -40.0  # σ' = softplus(-41) ≈ 0 everywhere
    out = r.render(torch.zeros(1, 6, 4, 8, 8), named_views(("front",), size=16), size=5)
    assert out.alpha.max() < 1e-6
    assert torch.allclose(out.rgb, torch.full_like(out.rgb, 0.25), atol=1e-5)


def test_constant_density_gives_analytic_alpha(monkeypatch):
    r = _renderer()
    s = 1.3

    def const(planes, points):
        return torch.full((*points.shape[:2], 1), s), torch.full((*points.shape[:2], 4), 0.5)

    monkeypatch.setattr(r, "_decode", const)
    out = r.render(torch.zeros(1, 6, 4, 8, 8), named_views(("left",), size=16), size=4)
    expected = 1 - math.exp(-F.softplus(torch.tensor(s - 1)).item() * (r.ray_end - r.ray_start))
    assert torch.allclose(out.alpha, torch.full_like(out.alpha, expected), atol=1e-5)
    assert torch.allclose(out.rgb, 0.5 * out.alpha + (1 - out.alpha), atol=1e-5)


def test_importance_sampling_finds_a_solid_sphere(monkeypatch):
    r = TriplaneRenderer(4, samples_coarse=16, samples_fine=32)
    radius = 0.3

    def ball(planes, points):
        inside = points.norm(dim=-1, keepdim=True) < radius
        return torch.where(inside, 200.0, -50.0), torch.ones(*points.shape[:2], 4) * 0.2

    monkeypatch.setattr(r, "_decode", ball)
    cams = named_views(("front",), size=64)
    out = r.render(torch.zeros(1, 6, 4, 8, 8), cams, size=9)
    centre = out.alpha[0, 0, 4, 4, 0]
    corner = out.alpha[0, 0, 0, 0, 0]
    assert centre > 0.99 and corner < 1e-4
    # The ray through the centre enters the ball at distance 2.7 − radius; the depth lands within one coarse step.
    step = (r.ray_end - r.ray_start) / 15
    assert abs(out.depth[0, 0, 4, 4, 0].item() - (2.7 - radius)) < step


def test_rays_point_at_the_origin_through_the_centre_pixel():
    cams = named_views(("front", "left"), size=3)
    origins, dirs = camera_rays(cams)
    centre_dir = dirs[:, 4]
    assert torch.allclose(centre_dir, F.normalize(-origins[:, 4], dim=-1), atol=1e-5)
    assert torch.allclose(dirs.norm(dim=-1), torch.ones(2, 9), atol=1e-6)


def test_decoder_form_and_state_loading():
    dec = OSGDecoder(8)
    sigma, rgb = dec(torch.randn(5, 8))
    assert sigma.shape == (5, 1) and rgb.shape == (5, 8)
    assert rgb.min() >= -0.001 and rgb.max() <= 1.001
    # Equalised LR: the effective weight is the stored weight / sqrt(fan_in).
    x = torch.randn(3, 8)
    lin = dec.net[0]
    assert torch.allclose(lin(x), x @ (lin.weight / math.sqrt(8)).T + lin.bias, atol=1e-6)
    state = {f"decoder.{k}": v for k, v in dec.state_dict().items()}
    r = renderer_from_state(state, samples_coarse=4, samples_fine=0)
    assert torch.equal(r.decoder.net[2].weight, dec.net[2].weight)
    with pytest.raises(ValueError, match="net.0.weight"):
        renderer_from_state({"foo": torch.zeros(1)})
    with pytest.raises(ValueError, match="one Cameras"):
        r.render(torch.zeros(2, 6, 8, 4, 4), [named_views(("front",), size=4)])
    assert isinstance(named_views(("front",), size=4), Cameras)

"""geometry.triplane.resample_planes: stored teacher planes at another resolution for L_st."""

from __future__ import annotations

import pytest
import torch

from panolam.geometry.triplane import query_spherical_triplane, resample_planes


def test_shapes_and_identity():
    p = torch.randn(2, 6, 4, 16, 16)
    assert resample_planes(p, 8).shape == (2, 6, 4, 8, 8)
    assert resample_planes(p, 32).shape == (2, 6, 4, 32, 32)
    assert resample_planes(p, (8, 4)).shape == (2, 6, 4, 8, 4)
    assert resample_planes(p, 16) is p
    with pytest.raises(ValueError):
        resample_planes(p, 0)


def test_constant_planes_stay_constant():
    p = torch.full((1, 6, 3, 12, 12), 0.7)
    for r in (3, 5, 12, 24, 31):
        torch.testing.assert_close(resample_planes(p, r), torch.full((1, 6, 3, r, r), 0.7))


def test_downsample_of_a_linear_ramp_is_the_cell_mean():
    # Ramp over cell centres along W; 2x area downsample = mean of each pair of cells = the ramp at the
    # coarse cell centres (a linear function's block mean is its value at the block centre).
    w = 16
    x = (torch.arange(w, dtype=torch.float64) + 0.5) / w * 2 - 1  # cell centres in [-1, 1]
    p = (3.0 * x + 0.25).expand(1, 6, 2, 8, w).clone()
    out = resample_planes(p, (4, 8))
    xc = (torch.arange(8, dtype=torch.float64) + 0.5) / 8 * 2 - 1
    torch.testing.assert_close(out, (3.0 * xc + 0.25).expand(1, 6, 2, 4, 8))


def test_upsample_keeps_the_field_and_is_differentiable():
    torch.manual_seed(0)
    p = torch.randn(1, 6, 4, 8, 8, requires_grad=True)
    up = resample_planes(p, 16)
    up.sum().backward()
    assert p.grad is not None and torch.isfinite(p.grad).all()
    # Queried at the same points, the bilinear upsample matches the original closely away from the edges.
    pts = torch.rand(1, 200, 3) * 0.3 - 0.15
    a = query_spherical_triplane(p.detach(), pts)
    b = query_spherical_triplane(up.detach(), pts)
    assert (a - b).abs().mean() < 0.25 * a.abs().mean()

"""The gsplat (CUDA) path without a GPU: argument mapping, output conversion and install errors."""

from __future__ import annotations

import sys

import pytest
import torch

from panolam.gaussians import Gaussians
from panolam.geometry.cameras import Cameras
from panolam.render import _gsplat, rasterize
from panolam.render._project import project
from panolam.render._torch_raster import blend_torch


def _scene() -> tuple[Gaussians, Cameras]:
    gen = torch.Generator().manual_seed(0)
    g = Gaussians(
        (torch.rand(10, 3, generator=gen) * 2 - 1) * 0.25, torch.randn(10, 4, generator=gen),
        torch.rand(10, 3, generator=gen) * 0.08 + 0.03, torch.rand(10, generator=gen) * 0.8 + 0.1, torch.rand(10, 3, generator=gen),
    )
    return g, Cameras.orbit([0.0, 60.0], [0.0, 10.0], 2.7, 18.837, 12, 10)


def fake_rasterization(**kw):
    """Stand-in for gsplat.rasterization built from the documented "RGB+D" contract (no background)."""
    assert kw["render_mode"] == "RGB+D" and kw["backgrounds"] is None
    g = Gaussians(kw["means"], kw["quats"], kw["scales"], kw["opacities"], kw["colors"])
    cams = Cameras(kw["viewmats"], kw["Ks"], kw["width"], kw["height"])
    proj = project(g, cams)
    feats = torch.cat([g.colors[None].expand(len(cams), -1, -1), proj.depths[..., None]], dim=-1)
    render, alpha = blend_torch(proj, feats, kw["width"], kw["height"])
    return render, alpha[..., None], {}


def test_arguments_match_cpu_rules():
    g, cams = _scene()
    kw = _gsplat.gsplat_arguments(g, cams)
    assert kw["near_plane"] == 0.01 and kw["eps2d"] == 0.3 and kw["radius_clip"] == 0.0
    assert kw["rasterize_mode"] == "classic" and kw["render_mode"] == "RGB+D" and kw["backgrounds"] is None
    assert (kw["width"], kw["height"]) == (12, 10)
    assert torch.equal(kw["viewmats"], cams.world_to_cam) and torch.equal(kw["Ks"], cams.K)
    assert kw["opacities"].shape == (10,) and kw["colors"].shape == (10, 3)


def test_output_conversion_reproduces_cpu_render(monkeypatch):
    g, cams = _scene()
    feats, alpha = _gsplat.render_with(fake_rasterization, g, cams)
    monkeypatch.setattr(_gsplat, "rasterize_gsplat", lambda gs, cs: _gsplat.render_with(fake_rasterization, gs, cs))
    # The package re-exports the function `rasterize`, which shadows the module of the same name.
    monkeypatch.setattr(sys.modules["panolam.render.rasterize"], "_resolve_backend", lambda backend, device: backend)
    via_gsplat = rasterize(g, cams, background=[0.3, 0.2, 0.1], backend="gsplat")
    cpu = rasterize(g, cams, background=[0.3, 0.2, 0.1], backend="cpu")
    assert feats.shape == (2, 10, 12, 4) and alpha.shape == (2, 10, 12)
    for name in ("rgb", "alpha", "depth"):
        torch.testing.assert_close(getattr(via_gsplat, name), getattr(cpu, name), atol=2e-5, rtol=1e-5)


def test_missing_gsplat_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "gsplat", None)  # makes `import gsplat` raise ImportError
    with pytest.raises(_gsplat.GsplatUnavailableError) as err:
        _gsplat.load_gsplat_rasterization()
    msg = str(err.value)
    assert 'pip install "panolam[cuda]"' in msg and "nvcc" in msg and "minutes" in msg


def test_gsplat_backend_refuses_cpu_tensors():
    g, cams = _scene()
    with pytest.raises(ValueError, match="CUDA"):
        _gsplat.rasterize_gsplat(g, cams)


def test_float64_inputs_are_cast_for_gsplat_and_back():
    g, cams = _scene()
    g64 = g.to("cpu", torch.float64).map(lambda t: t.requires_grad_(True))
    kw = _gsplat.gsplat_arguments(g64, cams)
    assert all(kw[k].dtype == torch.float32 for k in ("means", "quats", "scales", "opacities", "colors", "viewmats", "Ks"))
    feats, alpha = _gsplat.render_with(fake_rasterization, g64, cams)
    assert feats.dtype == alpha.dtype == torch.float64
    feats.sum().backward()
    assert g64.means.grad is not None and g64.means.grad.dtype == torch.float64 and g64.means.grad.abs().sum() > 0

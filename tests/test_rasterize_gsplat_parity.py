"""CPU rasteriser vs real gsplat on CUDA (issue 2 parity). Needs a CUDA GPU and `panolam[cuda]`;
on CPU-only machines (CI) these tests are reported as skipped, never as passed."""

from __future__ import annotations

import pytest
import torch

from panolam.geometry.cameras import Cameras
from panolam.render import rasterize
from test_rasterize import random_gaussians

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on a lent GPU machine)")


def _head_scene(n: int, seed: int = 0):
    g = random_gaussians(n, seed=seed, spread=0.3)
    g.scales.mul_(0.2)
    return g, Cameras.orbit([0.0, 90.0, 180.0, -45.0], [0.0, 10.0, -5.0, 30.0], 2.7, 18.837, 96, 80)


@cuda
@pytest.mark.parametrize("n", [1, 50, 2000])
def test_cpu_and_gsplat_renders_agree(n):
    pytest.importorskip("gsplat")
    g, cams = _head_scene(n)
    cpu = rasterize(g, cams, background=1.0, backend="cpu")
    gpu = rasterize(g.to("cuda"), cams.to("cuda"), background=1.0, backend="gsplat")
    assert (cpu.rgb - gpu.rgb.cpu()).abs().max() < 4e-3
    assert (cpu.alpha - gpu.alpha.cpu()).abs().max() < 4e-3
    hit = cpu.alpha[..., 0] > 0.5
    assert torch.allclose(cpu.depth[..., 0][hit], gpu.depth.cpu()[..., 0][hit], rtol=2e-3, atol=2e-3)


@cuda
def test_cpu_and_gsplat_gradients_agree():
    pytest.importorskip("gsplat")
    g, cams = _head_scene(300, seed=1)
    grads = []
    for device, backend in (("cpu", "cpu"), ("cuda", "gsplat")):
        leaves = {k: v.detach().to(device).requires_grad_(True) for k, v in g.fields().items()}
        from panolam.gaussians import Gaussians

        out = rasterize(Gaussians(**leaves), cams.to(device), background=1.0, backend=backend)
        (out.rgb.square().sum() + out.alpha.sum()).backward()
        grads.append({k: v.grad.cpu() for k, v in leaves.items()})
    for k in grads[0]:
        a, b = grads[0][k], grads[1][k]
        assert torch.allclose(a, b, rtol=5e-2, atol=5e-2 * float(a.abs().max()) + 1e-6), k

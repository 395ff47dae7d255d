"""Rasteriser tests: the fast paths against a slow per-pixel reference written out below."""

from __future__ import annotations

import math
import multiprocessing
import sys

import pytest
import torch

from panolam.gaussians import Gaussians
from panolam.geometry.cameras import Cameras
from panolam.render import RenderOutput, rasterize

FIELDS = ("means", "quats", "scales", "opacities", "colors")


# ---------------------------------------------------------------- slow, obviously-correct reference
def _ref_camera_gaussian(g: Gaussians, i: int, w2c: torch.Tensor, K: torch.Tensor, width: int, height: int):
    """Screen-space mean, inverse covariance and camera z of Gaussian i (None when culled)."""
    p = w2c[:3, :3] @ g.means[i] + w2c[:3, 3]
    x, y, z = p[0], p[1], p[2]
    if z < 0.01 or g.opacities[i] < 1 / 255:
        return None
    q = g.quats[i] / g.quats[i].norm()
    w, qx, qy, qz = q
    rot = torch.stack([
        torch.stack([1 - 2 * (qy * qy + qz * qz), 2 * (qx * qy - w * qz), 2 * (qx * qz + w * qy)]),
        torch.stack([2 * (qx * qy + w * qz), 1 - 2 * (qx * qx + qz * qz), 2 * (qy * qz - w * qx)]),
        torch.stack([2 * (qx * qz - w * qy), 2 * (qy * qz + w * qx), 1 - 2 * (qx * qx + qy * qy)]),
    ])
    cov = w2c[:3, :3] @ rot @ torch.diag(g.scales[i] ** 2) @ rot.T @ w2c[:3, :3].T
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    # gsplat clamps x/z, y/z to 1.3x the half-FOV inside the Jacobian only.
    u = torch.clamp(x / z, -(cx / fx + 0.3 * 0.5 * width / fx), (width - cx) / fx + 0.3 * 0.5 * width / fx)
    v = torch.clamp(y / z, -(cy / fy + 0.3 * 0.5 * height / fy), (height - cy) / fy + 0.3 * 0.5 * height / fy)
    zero = torch.zeros((), dtype=z.dtype)
    J = torch.stack([torch.stack([fx / z, zero, -fx * u / z]), torch.stack([zero, fy / z, -fy * v / z])])
    cov2 = J @ cov @ J.T + 0.3 * torch.eye(2, dtype=z.dtype)
    mean2 = torch.stack([fx * x / z + cx, fy * y / z + cy])
    return mean2, torch.linalg.inv(cov2), z


def reference_render(g: Gaussians, cams: Cameras, background) -> RenderOutput:
    """Python loop per camera, pixel and Gaussian, following gsplat 1.5's blending rules."""
    bg = torch.as_tensor(background, dtype=g.means.dtype).expand(3)
    rgbs, alphas, depths = [], [], []
    for c in range(len(cams)):
        proj = [(i, _ref_camera_gaussian(g, i, cams.world_to_cam[c].to(g.means.dtype), cams.K[c].to(g.means.dtype), cams.width, cams.height)) for i in range(len(g))]
        proj = sorted([(p[2].item(), i, p) for i, p in proj if p is not None], key=lambda t: (t[0], t[1]))
        rgb_rows, a_rows, d_rows = [], [], []
        for py in range(cams.height):
            for px in range(cams.width):
                T = torch.ones((), dtype=g.means.dtype)
                col = torch.zeros(3, dtype=g.means.dtype)
                dep = torch.zeros((), dtype=g.means.dtype)
                for _, i, (mean2, inv, z) in proj:
                    d = mean2 - torch.tensor([px + 0.5, py + 0.5], dtype=g.means.dtype)
                    power = 0.5 * d @ inv @ d
                    if power < 0:
                        continue
                    alpha = torch.clamp(g.opacities[i] * torch.exp(-power), max=0.999)
                    if alpha < 1 / 255:
                        continue
                    if T * (1 - alpha) <= 1e-4:
                        break
                    col = col + g.colors[i] * alpha * T
                    dep = dep + z * alpha * T
                    T = T * (1 - alpha)
                a = 1 - T
                rgb_rows.append(col + (1 - a) * bg)
                a_rows.append(a)
                d_rows.append(dep / torch.clamp(a, min=1e-10))
        rgbs.append(torch.stack(rgb_rows).reshape(cams.height, cams.width, 3))
        alphas.append(torch.stack(a_rows).reshape(cams.height, cams.width, 1))
        depths.append(torch.stack(d_rows).reshape(cams.height, cams.width, 1))
    return RenderOutput(torch.stack(rgbs), torch.stack(alphas), torch.stack(depths))


# ---------------------------------------------------------------- scenes
def random_gaussians(n: int, seed: int = 0, dtype=torch.float32, spread: float = 0.25) -> Gaussians:
    gen = torch.Generator().manual_seed(seed)
    return Gaussians(
        means=(torch.rand(n, 3, generator=gen) * 2 - 1) * spread,
        quats=torch.randn(n, 4, generator=gen),  # unnormalised on purpose: the rasteriser normalises
        scales=torch.rand(n, 3, generator=gen) * 0.08 + 0.03,
        opacities=torch.rand(n, generator=gen) * 0.8 + 0.1,
        colors=torch.rand(n, 3, generator=gen),
    ).to("cpu", dtype)


def tiny_cameras(width: int = 12, height: int = 10, yaws=(0.0, 35.0)) -> Cameras:
    return Cameras.orbit(list(yaws), [5.0, -10.0][: len(yaws)] or 0.0, 2.7, 18.837, width, height)


def with_grad(g: Gaussians) -> Gaussians:
    return g.map(lambda t: t.detach().clone().requires_grad_(True))


def weighted_loss(out: RenderOutput, seed: int = 3) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    w = [torch.rand(t.shape, generator=gen).to(t.dtype) for t in (out.rgb, out.alpha, out.depth)]
    return (out.rgb * w[0]).sum() + (out.alpha * w[1]).sum() + (out.depth * out.alpha.detach() * w[2]).sum() * 0.1


# ---------------------------------------------------------------- parity with the reference
@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_forward_matches_reference(backend):
    g, cams = random_gaussians(12, seed=1), tiny_cameras()
    ref = reference_render(g, cams, [0.1, 0.5, 0.9])
    out = rasterize(g, cams, background=[0.1, 0.5, 0.9], backend=backend)
    assert out.rgb.shape == (2, 10, 12, 3) and out.alpha.shape == (2, 10, 12, 1) and out.depth.shape == (2, 10, 12, 1)
    assert out.alpha.max() > 0.5  # the scene covers the image: a real comparison
    for name in ("rgb", "alpha", "depth"):
        torch.testing.assert_close(getattr(out, name), getattr(ref, name), atol=2e-5, rtol=1e-5, msg=name)


@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_gradients_match_reference_autograd(backend):
    g0, cams = random_gaussians(10, seed=2, dtype=torch.float64), tiny_cameras(11, 9)
    g_ref, g_fast = with_grad(g0), with_grad(g0)
    weighted_loss(reference_render(g_ref, cams, 0.3)).backward()
    weighted_loss(rasterize(g_fast, cams, background=0.3, backend=backend)).backward()
    for name in FIELDS:
        ref, fast = getattr(g_ref, name).grad, getattr(g_fast, name).grad
        assert ref.abs().max() > 0, name
        torch.testing.assert_close(fast, ref, atol=1e-7, rtol=1e-6, msg=name)


def test_float32_gradients_match_float64():
    g0, cams = random_gaussians(12, seed=4), tiny_cameras()
    g32, g64 = with_grad(g0), with_grad(g0.to("cpu", torch.float64))
    weighted_loss(rasterize(g32, cams, backend="cpu")).backward()
    weighted_loss(rasterize(g64, cams, backend="cpu")).backward()
    for name in FIELDS:
        a, b = getattr(g32, name).grad, getattr(g64, name).grad
        assert a.dtype == torch.float32
        torch.testing.assert_close(a.double(), b, atol=1e-3 * b.abs().max().item(), rtol=1e-3, msg=name)


@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_gradcheck_float64(backend):
    g0 = random_gaussians(4, seed=5, dtype=torch.float64, spread=0.15)
    cams = tiny_cameras(7, 6, yaws=(10.0,))
    names = list(FIELDS)

    def render(*tensors):
        out = rasterize(Gaussians(*tensors), cams, background=0.2, backend=backend)
        return out.rgb, out.alpha, out.depth * out.alpha

    inputs = tuple(getattr(g0, n).clone().requires_grad_(True) for n in names)
    assert torch.autograd.gradcheck(render, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------- edge cases
def test_single_gaussian_at_pixel_centre_is_analytic():
    cams = tiny_cameras(9, 7, yaws=(0.0,))
    # Put the mean on the ray through pixel (4, 3)'s centre at depth 2.0 from the camera.
    K, c2w = cams.K[0], cams.cam_to_world[0]
    ray = torch.tensor([(4.5 - K[0, 2]) / K[0, 0], (3.5 - K[1, 2]) / K[1, 1], 1.0]) * 2.0
    mean = c2w[:3, :3] @ ray + c2w[:3, 3]
    g = Gaussians(mean[None], torch.tensor([[1.0, 0, 0, 0]]), torch.full((1, 3), 0.02), torch.tensor([0.7]), torch.tensor([[0.2, 0.4, 0.8]]))
    out = rasterize(g, cams, background=[1.0, 0.0, 0.5])
    torch.testing.assert_close(out.alpha[0, 3, 4, 0], torch.tensor(0.7))
    torch.testing.assert_close(out.rgb[0, 3, 4], torch.tensor([0.7 * 0.2 + 0.3, 0.7 * 0.4, 0.7 * 0.8 + 0.15]))
    torch.testing.assert_close(out.depth[0, 3, 4, 0], torch.tensor(2.0), atol=1e-5, rtol=1e-5)
    assert out.alpha[0, 3, 4, 0] == out.alpha.max()


def test_empty_scene_renders_background():
    g = random_gaussians(0)
    g = with_grad(g)
    cams = tiny_cameras(5, 4)
    out = rasterize(g, cams, background=torch.tensor([0.25, 0.5, 0.75]))
    assert out.rgb.shape == (2, 4, 5, 3)
    torch.testing.assert_close(out.rgb, torch.tensor([0.25, 0.5, 0.75]).expand(2, 4, 5, 3))
    assert (out.alpha == 0).all() and (out.depth == 0).all()


def test_nothing_visible_is_background_and_zero_gradient():
    g = random_gaussians(6, seed=7)
    g.means = g.means + torch.tensor([0.0, 0.0, 10.0])  # all behind the front camera (which sits at z = 2.7)
    g = with_grad(g)
    out = rasterize(g, tiny_cameras(6, 5, yaws=(0.0,)), background=0.6)
    torch.testing.assert_close(out.rgb, torch.full_like(out.rgb, 0.6))
    assert (out.alpha == 0).all()
    out.rgb.sum().backward()
    assert all(getattr(g, n).grad is None or (getattr(g, n).grad == 0).all() for n in FIELDS)


def test_behind_camera_and_near_plane_are_culled_without_nans():
    cams = tiny_cameras(8, 6, yaws=(0.0,))
    base = random_gaussians(5, seed=8)
    centre, forward = cams.centers[0], cams.cam_to_world[0, :3, 2]
    extra = Gaussians(  # camera z = 0, -0.5, 0.005 (< near 0.01) and 0.012 on the optical axis
        means=torch.stack([centre + z * forward for z in (0.0, -0.5, 0.005, 0.012)]),
        quats=torch.tensor([[1.0, 0, 0, 0]]).repeat(4, 1),
        scales=torch.full((4, 3), 0.01),
        opacities=torch.full((4,), 0.9),
        colors=torch.ones(4, 3),
    )
    g = with_grad(Gaussians.cat([base, extra.select(torch.tensor([0, 1, 2]))]))
    out = rasterize(g, cams, backend="cpu")
    clean = rasterize(base, cams, backend="cpu")
    for name in ("rgb", "alpha", "depth"):  # z = 0, z = -0.5 and z = 0.005 < near are all culled
        torch.testing.assert_close(getattr(out, name), getattr(clean, name))
    weighted_loss(out).backward()
    assert all(torch.isfinite(getattr(g, n).grad).all() for n in FIELDS)
    # Just beyond the near plane a Gaussian is kept and, being so close, covers the whole image.
    at_near = rasterize(Gaussians.cat([base, extra.select(torch.tensor([3]))]), cams, backend="cpu")
    assert (at_near.alpha > 0.5).all()


def test_degenerate_scales_and_quaternions_are_finite():
    g = random_gaussians(8, seed=9)
    g.scales[:3] = 0.0
    g.scales[3:5, 0] = 1e-8
    g = with_grad(g)
    out = rasterize(g, tiny_cameras(), backend="cpu")
    ref = reference_render(g.detach(), tiny_cameras(), 0.0)
    torch.testing.assert_close(out.rgb, ref.rgb, atol=2e-5, rtol=1e-5)
    weighted_loss(out).backward()
    assert all(torch.isfinite(getattr(g, n).grad).all() for n in FIELDS)


def test_camera_batch_equals_single_renders():
    g = random_gaussians(12, seed=10)
    cams = Cameras.orbit([0.0, 70.0, 180.0], [0.0, 20.0, -15.0], 2.7, 18.837, 14, 9)
    batch = rasterize(g, cams, background=0.5)
    for c in range(len(cams)):
        one = rasterize(g, cams[c], background=0.5)
        for name in ("rgb", "alpha", "depth"):
            torch.testing.assert_close(getattr(batch, name)[c : c + 1], getattr(one, name))


def test_background_compositing():
    g, cams = random_gaussians(12, seed=11), tiny_cameras()
    black = rasterize(g, cams, background=0.0)
    coloured = rasterize(g, cams, background=(0.2, 0.4, 1.0))
    torch.testing.assert_close(coloured.rgb, black.rgb + (1 - black.alpha) * torch.tensor([0.2, 0.4, 1.0]))
    assert 0.0 <= black.alpha.min() and black.alpha.max() <= 1.0


def test_deep_stack_terminates_like_reference():
    # Many opaque Gaussians on the same pixels make transmittance hit the 1e-4 stop and the 0.999 clamp.
    g = random_gaussians(12, seed=12, spread=0.05)
    g.opacities = torch.full((12,), 0.9995)
    g.scales = g.scales * 3
    cams = tiny_cameras(6, 5, yaws=(0.0,))
    ref = reference_render(g, cams, 0.0)
    out = rasterize(g, cams, backend="cpu")
    torch.testing.assert_close(out.rgb, ref.rgb, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(out.depth, ref.depth, atol=2e-5, rtol=1e-5)
    g64 = with_grad(g.to("cpu", torch.float64))
    g_ref = with_grad(g.to("cpu", torch.float64))
    weighted_loss(rasterize(g64, cams, backend="cpu")).backward()
    weighted_loss(reference_render(g_ref, cams, 0.0)).backward()
    for name in FIELDS:
        torch.testing.assert_close(getattr(g64, name).grad, getattr(g_ref, name).grad, atol=1e-7, rtol=1e-6, msg=name)


def test_repeated_calls_in_a_training_loop():
    g = with_grad(random_gaussians(12, seed=13))
    opt = torch.optim.Adam([g.colors], lr=0.1)
    cams, target = tiny_cameras(), torch.zeros(2, 10, 12, 3)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = ((rasterize(g, cams).rgb - target) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_bad_inputs_raise_clear_errors():
    g, cams = random_gaussians(3), tiny_cameras()
    with pytest.raises(ValueError, match="unknown rasteriser backend"):
        rasterize(g, cams, backend="vulkan")
    with pytest.raises(ValueError, match="unbatched"):
        rasterize(g.map(lambda t: t[None]), cams)
    with pytest.raises(ValueError, match="background"):
        rasterize(g, cams, background=[0.1, 0.2])
    with pytest.raises(ValueError, match="CUDA"):
        rasterize(g, cams, backend="gsplat")


def test_auto_backend_on_cpu_uses_numba_path():
    g, cams = random_gaussians(12, seed=14), tiny_cameras()
    auto, cpu = rasterize(g, cams, backend="auto"), rasterize(g, cams, backend="cpu")
    assert torch.equal(auto.rgb, cpu.rgb)


def test_cuda_rasterizer_environment_variable_picks_the_auto_backend_for_cuda_tensors(monkeypatch):
    from panolam.render.rasterize import _resolve_backend

    cuda, cpu = torch.device("cuda"), torch.device("cpu")  # only the choice is tested: no GPU is touched
    monkeypatch.delenv("PANOLAM_CUDA_RASTERIZER", raising=False)
    assert _resolve_backend("auto", cuda) == "gsplat"
    monkeypatch.setenv("PANOLAM_CUDA_RASTERIZER", "torch")
    assert _resolve_backend("auto", cuda) == "torch" and _resolve_backend("torch", cuda) == "torch"
    assert _resolve_backend("auto", cpu) == "cpu"  # CPU tensors keep the Numba kernels
    assert _resolve_backend("gsplat", cuda) == "gsplat"  # an explicit backend wins
    with pytest.raises(ValueError, match="needs CPU tensors"):
        _resolve_backend("cpu", cuda)
    monkeypatch.setenv("PANOLAM_CUDA_RASTERIZER", "opengl")
    with pytest.raises(ValueError, match="PANOLAM_CUDA_RASTERIZER='opengl': choose gsplat or torch"):
        _resolve_backend("auto", cuda)


def test_large_gaussian_near_image_edge_matches_torch_backend():
    g = random_gaussians(12, seed=15, spread=0.4)
    g.scales = g.scales * 4
    cams = Cameras.orbit([0.0], [0.0], 1.2, 40.0, 33, 20)
    a, b = rasterize(g, cams, backend="cpu"), rasterize(g, cams, backend="torch")
    for name in ("rgb", "alpha", "depth"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), atol=2e-5, rtol=1e-5)
    assert math.isfinite(a.depth.max().item())


def test_dense_head_scene_cpu_matches_torch_backend_with_gradients():
    # Thousands of overlapping splats: most pixels hit the 1e-4 transmittance stop.
    gen = torch.Generator().manual_seed(16)
    n = 1500
    means = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen), dim=-1) * (0.3 + 0.15 * torch.rand(n, 1, generator=gen))
    g0 = Gaussians(means, torch.randn(n, 4, generator=gen), 0.01 + 0.03 * torch.rand(n, 3, generator=gen),
                   0.2 + 0.79 * torch.rand(n, generator=gen), torch.rand(n, 3, generator=gen)).to("cpu", torch.float64)
    cams = Cameras.orbit([0.0, 120.0], [10.0, -20.0], 2.7, 18.837, 40, 36)
    grads = {}
    for backend in ("cpu", "torch"):
        g = with_grad(g0)
        out = rasterize(g, cams, background=0.5, backend=backend)
        weighted_loss(out).backward()
        grads[backend] = (out, [getattr(g, f).grad for f in FIELDS])
    (a, ga), (b, gb) = grads["cpu"], grads["torch"]
    assert (a.alpha > 0.99).float().mean() > 0.3
    for name in ("rgb", "alpha", "depth"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), atol=1e-9, rtol=1e-9)
    for name, x, y in zip(FIELDS, ga, gb):
        torch.testing.assert_close(x, y, atol=1e-8 * y.abs().max().item(), rtol=1e-6, msg=name)


def test_float32_row_kernels_match_exact_kernels_on_a_dense_scene():
    """Float32 inputs run the vectorised row kernels, float64 the exact ones: same images and gradients on a
    head-like scene whose 45×37 images end in partial tiles, with many pixels at the 1e-4 stop."""
    gen = torch.Generator().manual_seed(18)
    n = 2000
    means = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen), dim=-1) * (0.3 + 0.15 * torch.rand(n, 1, generator=gen))
    g32 = Gaussians(means, torch.randn(n, 4, generator=gen), 0.01 + 0.03 * torch.rand(n, 3, generator=gen),
                    0.05 + 0.9499 * torch.rand(n, generator=gen), torch.rand(n, 3, generator=gen))
    cams = Cameras.orbit([0.0, 100.0, 200.0], [10.0, -20.0, 0.0], 2.7, 18.837, 45, 37)
    outs, grads = [], []
    for g in (with_grad(g32), with_grad(g32.to("cpu", torch.float64))):
        out = rasterize(g, cams, background=0.5, backend="cpu")
        weighted_loss(out).backward()
        outs.append(out)
        grads.append([getattr(g, f).grad for f in FIELDS])
    (a, b), (ga, gb) = outs, grads
    assert a.rgb.dtype == torch.float32 and (b.alpha > 0.99).float().mean() > 0.3
    for name in ("rgb", "alpha", "depth"):
        diff = (getattr(a, name).double() - getattr(b, name)).abs()
        # a pixel whose transmittance lands within float32 rounding of the 1e-4 stop may take one Gaussian more or less
        assert diff.max() < 2e-3 and diff.mean() < 1e-6, (name, diff.max().item(), diff.mean().item())
    for name, x, y in zip(FIELDS, ga, gb):
        assert x.dtype == torch.float32
        torch.testing.assert_close(x.double(), y, atol=1e-4 * y.abs().max().item(), rtol=1e-3, msg=name)


def test_float32_exp_polynomial_is_accurate_where_it_is_used():
    """The row kernels' exp(-σ) over σ ∈ [0, ln 255] (the α ≥ 1/255 range) against libm."""
    import numpy as np

    from panolam.render._cpu_numba import _exp_neg32

    sigma = np.linspace(0.0, math.log(255.0), 2001).astype(np.float32)
    approx = np.array([_exp_neg32(s) for s in sigma], dtype=np.float64)
    exact = np.exp(-sigma.astype(np.float64))
    assert np.abs(approx / exact - 1).max() < 3e-6


def _render_in_child(queue) -> None:
    g = with_grad(random_gaussians(12, seed=17))
    out = rasterize(g, tiny_cameras(), backend="cpu")
    weighted_loss(out).backward()
    queue.put((out.rgb.detach().numpy(), g.means.grad.numpy()))  # plain arrays: no shared-memory handles


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method is Linux-only")
def test_forked_child_can_render_after_parent_used_threads():
    # GNU OpenMP kills a forked child that opens a parallel region once the parent has used one;
    # DataLoader workers are forked, so the kernels must switch to their serial drivers there.
    g = with_grad(random_gaussians(12, seed=17))
    out = rasterize(g, tiny_cameras(), backend="cpu")
    weighted_loss(out).backward()
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_render_in_child, args=(queue,))
    child.start()
    rgb, grad = queue.get(timeout=120)
    child.join(timeout=30)
    assert child.exitcode == 0
    torch.testing.assert_close(torch.from_numpy(rgb), out.rgb.detach())
    torch.testing.assert_close(torch.from_numpy(grad), g.means.grad)


def test_warm_up_loads_the_cpu_kernels_on_a_thread():
    """A fresh process: after warm_up_in_background the float32 forward and backward kernels (what every
    render of the app and of refinement uses) are loaded."""
    import subprocess
    import sys

    code = (
        "from panolam.render.rasterize import warm_up_in_background\n"
        "t = warm_up_in_background('cpu')\n"
        "t.join(120)\n"
        "import panolam.render._cpu_numba as k\n"
        "assert not t.is_alive()\n"
        "assert k._bin_gaussians.signatures and k._forward32.signatures and k._backward32.signatures, 'kernels not loaded'\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().endswith("ok")

"""Test-time refinement on tiny scenes: it lowers the input-view loss, leaves what the input camera
cannot see alone, returns valid Gaussians, and steps=0 is the identity; plus its pipeline wiring."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from panolam.gaussians import Gaussians
from panolam.geometry.cameras import Cameras
from panolam.pipeline import Reconstruction, input_camera_for, refine_reconstruction
from panolam.refine import refine_head, visibility_weights
from panolam.refine.head import FACING_RAMP, OCCLUSION_RAMP, VISIBLE_WEIGHT, colour_share
from panolam.render import rasterize

SIZE = 32
# The sheets below face the camera everywhere, which the head-shaped facing cue (direction from the
# scene's centre) cannot know: tests on them switch it off; the sphere tests check it.
SHEETS = {"facing": None}
pytestmark = pytest.mark.usefixtures("single_torch_thread")


def layer(z: float, color: tuple[float, float, float], n: int = 7, half: float = 0.2) -> Gaussians:
    """An opaque n×n sheet of flat Gaussians at depth z (facing the frontal camera on +z)."""
    xs = torch.linspace(-half, half, n)
    grid = torch.stack(torch.meshgrid(xs, xs, indexing="xy"), -1).reshape(-1, 2)
    k = len(grid)
    means = torch.cat([grid, torch.full((k, 1), z)], -1)
    quats = torch.tensor([1.0, 0, 0, 0]).expand(k, 4).clone()
    scales = torch.tensor([0.05, 0.05, 0.005]).expand(k, 3).clone()
    return Gaussians(means, quats, scales, torch.full((k,), 0.99), torch.tensor(color).expand(k, 3).clone())


@pytest.fixture()
def scene():
    """Front sheet (grey) in front of a back sheet (blue, the "back of the head") and a small Gaussian
    hidden behind an opaque occluder; the camera looks from +z."""
    front, back = layer(0.1, (0.5, 0.5, 0.5), n=9, half=0.24), layer(-0.1, (0.1, 0.2, 0.8), n=5, half=0.1)
    hidden = Gaussians(torch.tensor([[0.0, 0.0, 0.05]]), torch.tensor([[1.0, 0, 0, 0]]), torch.full((1, 3), 0.02),
                       torch.tensor([0.9]), torch.tensor([[0.9, 0.9, 0.1]]))
    g = Gaussians.cat([front, back, hidden])
    n_front = len(front)
    return g, n_front, Cameras.orbit(0.0, 0.0, width=SIZE)


def target_image(g: Gaussians, n_front: int, cam: Cameras) -> torch.Tensor:
    """The scene with a reddish front sheet, rendered from ``cam``: what the "photo" shows."""
    colors = g.colors.clone()
    colors[:n_front] = torch.tensor([0.8, 0.3, 0.2])
    return rasterize(Gaussians(g.means, g.quats, g.scales, g.opacities, colors), cam, 1.0).rgb[0].permute(2, 0, 1)


def test_visibility_weights_sum_to_the_rendered_alpha(scene):
    g, n_front, cam = scene
    w = visibility_weights(g, cam)
    alpha = rasterize(g, cam, 1.0).alpha
    # Every pixel's alpha is the sum of the blending weights there, so the totals agree.
    assert float(w.sum()) == pytest.approx(float(alpha.sum()), rel=1e-4)
    assert (w[:n_front] > VISIBLE_WEIGHT).all()
    # The back sheet and the occluded Gaussian are (nearly) unseen: below the freezing threshold.
    assert float(w[n_front:].max()) < VISIBLE_WEIGHT


def test_refinement_lowers_the_input_view_loss_and_freezes_the_unseen(scene):
    g, n_front, cam = scene
    image = target_image(g, n_front, cam)
    out, stats = refine_head(g, image, None, cam, **SHEETS, steps=30, size=SIZE)
    assert stats.loss_after < 0.5 * stats.loss_before
    assert stats.steps == 30 and stats.total == len(g) and stats.updated == n_front and stats.size == (SIZE, SIZE)
    assert len(stats.losses) == 30 and stats.seconds > 0
    # The front sheet turned towards the photo's colour...
    assert float(out.colors[:n_front, 0].mean()) > 0.6
    # ...while the back sheet and the occluded Gaussian kept the prediction.
    for name in ("means", "opacities", "colors"):
        torch.testing.assert_close(getattr(out, name)[n_front:], getattr(g, name)[n_front:], atol=1e-6, rtol=0)
    torch.testing.assert_close(out.quats, g.quats)
    torch.testing.assert_close(out.scales, g.scales)


def test_renders_leave_out_only_gaussians_that_add_nothing(scene, monkeypatch):
    """Fitting renders skip Gaussians with zero weight in the input view; the step-0 loss is the full render's."""
    from panolam.refine import head as refine_module

    g, n_front, cam = scene
    far = Gaussians(torch.tensor([[3.0, 3.0, 0.0]]), torch.tensor([[1.0, 0, 0, 0]]), torch.full((1, 3), 0.02),
                    torch.tensor([0.9]), torch.tensor([[0.2, 0.9, 0.1]]))  # outside the image: weight 0
    g = Gaussians.cat([g, far])
    image = target_image(g, n_front, cam)
    drawn = []
    real = refine_module.rasterize
    monkeypatch.setattr(refine_module, "rasterize", lambda gs, *a, **k: (drawn.append(len(gs)), real(gs, *a, **k))[1])
    _, culled = refine_head(g, image, None, cam, **SHEETS, steps=1, size=SIZE)
    assert len(g) not in drawn[1:-1] and drawn[-1] == len(g)  # fitting renders culled; the final one is whole
    full = (rasterize(g, cam, 1.0).rgb[0].permute(2, 0, 1) - image).abs().mean()
    assert culled.loss_before == pytest.approx(float(full), rel=1e-4)


def sphere(n: int = 400, radius: float = 0.25) -> Gaussians:
    """An opaque head-sized ball of small Gaussians (Fibonacci lattice) centred on the origin."""
    i = torch.arange(n, dtype=torch.float32) + 0.5
    z = 1 - 2 * i / n
    phi = i * math.pi * (3 - math.sqrt(5))
    r = torch.sqrt(1 - z * z)
    means = radius * torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], -1)
    return Gaussians(means, torch.tensor([1.0, 0, 0, 0]).expand(n, 4).clone(), torch.full((n, 3), 0.03),
                     torch.full((n,), 0.95), torch.full((n, 3), 0.5))


def test_colour_share_falls_off_towards_the_rim_of_a_head():
    """Seen from +z, a Gaussian's share follows the cosine between its outward direction and the camera:
    full where it faces the camera, none where it is seen edge-on or from behind."""
    g = sphere()
    cam = Cameras.orbit(0.0, 0.0, width=64)
    share = colour_share(g, cam, occlusion=None)
    cos = (F.normalize(g.means, dim=1) * F.normalize(cam.centers[0] - g.means, dim=1)).sum(1)
    seen = visibility_weights(g, cam) > VISIBLE_WEIGHT
    assert ((share - 1).abs() < 0.05)[seen & (cos > FACING_RAMP[1] + 0.02)].all()
    assert (share[cos < FACING_RAMP[0] - 0.02] == 0).all()
    assert (share[cos < 0] == 0).all() and ((share > 0) & (share < 1)).any()


def test_gaussians_seen_through_a_translucent_front_are_frozen():
    """A middle sheet seen through a half-transparent front collects blending weight, but lies far behind
    the rendered surface: the occlusion ramp gives it no share (without the ramp it would move). An
    opaque far sheet puts the scene's centre behind both, as the back of a head does."""
    front = layer(0.1, (0.5, 0.5, 0.5), n=9, half=0.24)
    front = Gaussians(front.means, front.quats, front.scales, torch.full((len(front),), 0.5), front.colors)
    middle, far = layer(0.0, (0.1, 0.2, 0.8), n=5, half=0.1), layer(-0.6, (0.2, 0.8, 0.2), n=9, half=0.24)
    g = Gaussians.cat([front, middle, far])
    assert 0.1 - 0.0 > OCCLUSION_RAMP[1]  # the sheets are further apart than the ramp reaches
    mid = slice(len(front), len(front) + len(middle))
    cam = Cameras.orbit(0.0, 0.0, width=SIZE)
    assert (visibility_weights(g, cam)[mid] > VISIBLE_WEIGHT).all()
    assert (colour_share(g, cam, facing=None, occlusion=None)[mid] == 1).all()
    assert (colour_share(g, cam, facing=None)[mid] == 0).all()
    out, stats = refine_head(g, torch.full((3, SIZE, SIZE), 0.9), None, cam, **SHEETS, steps=5, size=SIZE)
    torch.testing.assert_close(out.colors[mid], g.colors[mid], atol=0, rtol=0)
    assert ((out.colors[:len(front)] - g.colors[:len(front)]).abs().amax(-1) > 1e-3).any()


def test_refinement_leaves_the_rim_of_a_head_as_predicted():
    """Fitting a sphere to a red photo: its camera-facing cap turns red, its rim (seen edge-on) keeps the
    prediction, and the colour change grows monotonically with how directly a Gaussian faces the camera."""
    g = sphere()
    cam = Cameras.orbit(0.0, 0.0, width=SIZE)
    image = torch.tensor([0.9, 0.1, 0.1])[:, None, None].expand(3, SIZE, SIZE).clone()
    out, _ = refine_head(g, image, None, cam, steps=10, size=SIZE, occlusion=None)
    change = (out.colors - g.colors).abs().sum(-1)
    cos = (F.normalize(g.means, dim=1) * F.normalize(cam.centers[0] - g.means, dim=1)).sum(1)
    assert float(change[cos > 0.9].min()) > 0.05
    assert float(change[cos < FACING_RAMP[0] - 0.02].max()) == 0.0
    assert float(change[(cos > 0.3) & (cos < 0.4)].mean()) < float(change[cos > 0.7].mean())


def test_refinement_sees_the_back_when_the_camera_does(scene):
    """The same scene seen from behind: now the back sheet is refined, while what it covers from there
    (the middle of the front sheet, the small Gaussian between the sheets) keeps its colour."""
    g, n_front, _ = scene
    cam = Cameras.orbit(180.0, 0.0, width=SIZE)
    out, _ = refine_head(g, torch.full((3, SIZE, SIZE), 0.7), None, cam, **SHEETS, steps=5, size=SIZE)
    middle = n_front // 2  # the front sheet's centre Gaussian, at (0, 0, 0.1)
    torch.testing.assert_close(g.means[middle], torch.tensor([0.0, 0.0, 0.1]))
    for i in (middle, len(g) - 1):
        torch.testing.assert_close(out.colors[i], g.colors[i], atol=1e-6, rtol=0)
        torch.testing.assert_close(out.means[i], g.means[i], atol=1e-6, rtol=0)
    assert ((out.colors[n_front:-1] - g.colors[n_front:-1]).abs().amax(-1) > 1e-3).all()


def test_output_is_valid_and_bounded(scene):
    g, n_front, cam = scene
    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))  # a photo larger than the fit's renders
    out, _ = refine_head(g, image, torch.ones(1, 64, 64), cam.resized(64, 64), **SHEETS, steps=10, size=SIZE, max_offset=0.004)
    assert isinstance(out, Gaussians) and len(out) == len(g)
    for t in out.fields().values():
        assert torch.isfinite(t).all()
    assert ((out.opacities > 0) & (out.opacities < 1)).all() and ((out.colors >= 0) & (out.colors <= 1)).all()
    assert float((out.means - g.means).abs().max()) <= 0.004 + 1e-7
    assert not out.colors.requires_grad and not out.means.requires_grad


def test_optional_perceptual_term_is_added(scene):
    g, n_front, cam = scene
    out, stats = refine_head(g, target_image(g, n_front, cam), None, cam, **SHEETS, steps=1, size=SIZE, lpips_weight=1.0)
    # Step 1 changes no colour yet, so its objective is the L1 plus the (positive) ST-LPIPS of two different images.
    assert stats.losses[0] > stats.loss_before + 1e-4
    assert all(torch.isfinite(t).all() for t in out.fields().values())


def test_frozen_gaussians_are_returned_bit_for_bit_in_float64(scene):
    g, n_front, cam = scene
    g64 = g.to("cpu", torch.float64)
    out, _ = refine_head(g64, target_image(g, n_front, cam), None, cam, **SHEETS, steps=3, size=SIZE)
    assert out.means.dtype == torch.float64
    assert torch.equal(out.colors[n_front:], g64.colors[n_front:]) and torch.equal(out.means[n_front:], g64.means[n_front:])


def test_steps_zero_is_the_identity(scene):
    g, n_front, cam = scene
    out, stats = refine_head(g, target_image(g, n_front, cam), None, cam, **SHEETS, steps=0)
    assert out is g and stats.steps == 0 and stats.loss_before is None and stats.summary() == "refinement: off"


def test_only_the_masked_pixels_count(scene):
    """A photo that differs from the render only outside the mask gives (almost) no loss and no change."""
    g, n_front, cam = scene
    image = rasterize(g, cam, 1.0).rgb[0].permute(2, 0, 1).clone()
    mask = torch.ones(1, SIZE, SIZE)
    mask[:, :, : SIZE // 2] = 0
    image[:, :, : SIZE // 2] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]
    out, stats = refine_head(g, image, mask, cam, **SHEETS, steps=5, size=SIZE)
    assert stats.loss_before < 1e-5
    torch.testing.assert_close(out.colors, g.colors, atol=2e-3, rtol=0)


def test_errors_name_the_problem(scene):
    g, _, cam = scene
    image = torch.rand(3, SIZE, SIZE)
    with pytest.raises(ValueError, match="one view"):
        refine_head(g, image, None, Cameras.orbit([0.0, 90.0], 0.0, width=SIZE), steps=1)
    with pytest.raises(ValueError, match="aspect ratio"):
        refine_head(g, torch.rand(3, SIZE, 2 * SIZE), None, cam, steps=1)
    with pytest.raises(ValueError, match="mask is empty"):
        refine_head(g, image, torch.zeros(1, SIZE, SIZE), cam, steps=1, size=SIZE)
    with pytest.raises(ValueError, match="non-negative"):
        refine_head(g, image, None, cam, steps=-1)
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        refine_head(g, image[None], None, cam, steps=1)
    with pytest.raises(ValueError, match="facing must be None or"):
        refine_head(g, image, None, cam, steps=1, facing=(0.5, 0.5))


def test_pipeline_refines_a_reconstruction_with_the_nominal_camera(scene):
    g, n_front, _ = scene
    cam = Cameras.orbit(0.0, 0.0, width=48)
    framed = (target_image(g, n_front, cam).permute(1, 2, 0).clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
    alpha = np.ones((48, 48), np.float32)
    rec = Reconstruction(gaussians=g, framed=framed, timings={"reconstruct_s": 0.1}, trained=False, alpha=alpha)
    torch.testing.assert_close(input_camera_for(rec).K, cam.K)
    torch.testing.assert_close(input_camera_for(rec).world_to_cam, cam.world_to_cam)
    refined, stats = refine_reconstruction(rec, 20)
    assert stats.size == (48, 48)  # a framed image smaller than the default fit size is not upsampled
    assert refined is not rec and rec.gaussians is g  # the unrefined reconstruction is kept
    assert stats.loss_after < stats.loss_before and refined.timings["refine_s"] == stats.seconds
    assert refine_reconstruction(rec, 0)[0] is rec


def test_auto_threads_leaves_cores_to_other_processes_but_not_to_its_own_batch(monkeypatch):
    from panolam.refine import head as refine_module

    monkeypatch.setattr(refine_module.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(refine_module.os, "getloadavg", lambda: (2.0, 2.0, 2.0))  # high, but mostly this process
    readings = iter([])
    monkeypatch.setattr(refine_module, "_reading", lambda: next(readings))
    # 2 s since the last reading: this process used 3.8 CPU-s of the system's 3.9, so the others ~0.05 cores.
    monkeypatch.setattr(refine_module, "_last_reading", (10.0, 100.0, 50.0))
    readings = iter([(12.0, 103.9, 53.8)])
    assert refine_module.other_processes_load() == pytest.approx(0.05)
    assert refine_module._last_reading == (12.0, 103.9, 53.8)
    readings = iter([(14.0, 107.9, 55.8)])  # another process kept one core busy
    assert refine_module.auto_threads() == 1
    monkeypatch.setattr(refine_module.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    readings = iter([(16.0, 111.9, 57.8)])  # still one busy core of four: three are left
    assert refine_module.auto_threads() == 3
    # A reading too recent (or too old) to average over: sample for LOAD_SAMPLE seconds instead.
    slept = []
    monkeypatch.setattr(refine_module.time, "sleep", slept.append)
    readings = iter([(16.1, 112.0, 57.8), (16.2, 112.0, 57.8)])
    assert refine_module.auto_threads() == 4 and slept == [refine_module.LOAD_SAMPLE]


def test_auto_threads_falls_back_to_the_load_average_without_proc_stat(monkeypatch):
    from panolam.refine import head as refine_module

    monkeypatch.setattr(refine_module, "_reading", lambda: None)
    monkeypatch.setattr(refine_module.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    monkeypatch.setattr(refine_module.os, "getloadavg", lambda: (0.4, 1.0, 1.0))
    assert refine_module.auto_threads() == 4
    monkeypatch.setattr(refine_module.os, "getloadavg", lambda: (3.6, 2.0, 1.0))
    assert refine_module.auto_threads() == 1

    def no_load():
        raise OSError("no load average here")

    monkeypatch.setattr(refine_module.os, "getloadavg", no_load)
    assert refine_module.auto_threads() == 1


def test_other_processes_load_reads_this_machine():
    from panolam.refine import head as refine_module

    load = refine_module.other_processes_load()
    if refine_module._system_busy_seconds() is None:  # no /proc (not Linux): nothing to read
        assert load is None
    else:
        assert 0.0 <= load <= (refine_module.os.cpu_count() or 1) + 0.5

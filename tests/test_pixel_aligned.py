"""Pixel-aligned sampling: projection, sampling, visibility, pose vectors, and the network wiring."""

from __future__ import annotations

import math

import pytest
import torch

from panolam.config import get_config
from panolam.gaussians.container import Gaussians
from panolam.geometry.cameras import Cameras
from panolam.geometry.template import load_template
from panolam.model.pixel_aligned import (InputCamera, camera_pose_deg, perturb_camera, pose_angles, pose_vector, project,
                                         sample_map, soft_visibility)
from panolam.render import rasterize


def _unproject(cam: InputCamera, u: float, v: float, depth: float) -> torch.Tensor:
    """World point that projects to normalised (u, v) at camera depth ``depth``."""
    K = cam.K[0]
    x = (u - K[0, 2]) / K[0, 0] * depth
    y = (v - K[1, 2]) / K[1, 1] * depth
    pc = torch.tensor([x, y, depth, 1.0])
    return (torch.linalg.inv(cam.world_to_cam[0]) @ pc)[:3]


@pytest.mark.parametrize("yaw,pitch", [(0.0, 0.0), (35.0, -10.0), (90.0, 5.0)])
def test_projection_lands_on_the_rasterised_pixel(yaw: float, pitch: float) -> None:
    size = 64
    cams = Cameras.orbit(yaw, pitch, width=size)
    point = torch.tensor([[0.07, -0.05, 0.03]])
    g = Gaussians(means=point, quats=torch.tensor([[1.0, 0, 0, 0]]), scales=torch.full((1, 3), 0.004),
                  opacities=torch.tensor([0.99]), colors=torch.zeros(1, 3))
    alpha = rasterize(g, cams, torch.ones(3), backend="torch").alpha[0, ..., 0]
    row, col = divmod(int(alpha.argmax()), size)
    uv, depth = project(point[None], InputCamera.from_cameras(cams))
    assert depth[0, 0] > 0
    assert abs(float(uv[0, 0, 0]) * size - (col + 0.5)) < 1.0
    assert abs(float(uv[0, 0, 1]) * size - (row + 0.5)) < 1.0


def test_sampled_colour_equals_the_image_colour_at_the_projection() -> None:
    torch.manual_seed(0)
    h = w = 32
    image = torch.rand(1, 3, h, w)
    cam = InputCamera.from_pose(torch.tensor([20.0]), torch.tensor([10.0]))
    pixels = [(3, 5), (16, 16), (30, 1), (0, 31)]
    pts = torch.stack([_unproject(cam, (c + 0.5) / w, (r + 0.5) / h, 2.6) for r, c in pixels])[None]
    uv, _ = project(pts, cam)
    got = sample_map(image, uv)[0]
    want = torch.stack([image[0, :, r, c] for r, c in pixels])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_points_outside_the_image_sample_zero() -> None:
    cam = InputCamera.from_pose(torch.tensor([0.0]), torch.tensor([0.0]))
    far = _unproject(cam, 1.7, 0.5, 2.7)[None, None]
    uv, _ = project(far, cam)
    assert float(sample_map(torch.ones(1, 2, 8, 8), uv).abs().max()) == 0.0


def test_visibility_hides_the_back_of_the_head() -> None:
    tpl = load_template("builtin", 1500)
    pts, normals = tpl.vertices.float()[None], tpl.vertex_normals().float()[None]
    for yaw in (0.0, 60.0):
        cam = InputCamera.from_pose(torch.tensor([yaw]), torch.tensor([0.0]))
        visible, _, _ = soft_visibility(pts, normals, cam)
        view_dir = torch.nn.functional.normalize(cam.centers, dim=-1)[0]
        along = pts[0] @ view_dir  # position along the viewing axis: > 0 faces the camera
        back = along < -0.05
        front = (along > 0.1) & ((normals[0] @ view_dir) > 0.6)
        assert back.sum() > 100 and front.sum() > 30
        assert float(visible[0, back].max()) < 0.05
        assert float(visible[0, front].median()) > 0.9


def test_z_test_hides_a_point_behind_an_occluder_facing_the_camera() -> None:
    cam = InputCamera.from_pose(torch.tensor([0.0]), torch.tensor([0.0]))
    # A small sheet of points facing the camera, and one point 0.2 behind its centre, also facing it.
    xs = torch.linspace(-0.05, 0.05, 9)
    sheet = torch.stack(torch.meshgrid(xs, xs, indexing="ij"), -1).reshape(-1, 2)
    sheet = torch.cat([sheet, torch.full((len(sheet), 1), 0.1)], dim=1)
    pts = torch.cat([sheet, torch.tensor([[0.0, 0.0, -0.1]])])[None]
    normals = torch.tensor([0.0, 0.0, 1.0]).expand_as(pts)
    visible, z_test, _ = soft_visibility(pts, normals, cam)
    assert float(z_test[0, -1]) < 0.01
    assert float(z_test[0, :-1].min()) > 0.9


def test_pose_vector_round_trip_and_camera_angles() -> None:
    yaw, pitch = torch.tensor([0.0, 45.0, -120.0, 179.0]), torch.tensor([0.0, -20.0, 30.0, 10.0])
    y2, p2 = pose_angles(pose_vector(yaw, pitch))
    torch.testing.assert_close(y2, yaw, atol=1e-4, rtol=0)
    torch.testing.assert_close(p2, pitch, atol=1e-4, rtol=0)
    cams = Cameras.orbit(yaw, pitch, width=32)
    y3, p3 = camera_pose_deg(cams.world_to_cam)
    torch.testing.assert_close(y3, yaw, atol=1e-3, rtol=0)
    torch.testing.assert_close(p3, pitch, atol=1e-3, rtol=0)
    # The nominal-pose camera equals an orbit camera with EG3D's radius and FOV.
    cam = InputCamera.from_pose(yaw, pitch)
    torch.testing.assert_close(cam.to_cameras(32).K, cams.K, atol=1e-4, rtol=0)
    torch.testing.assert_close(cam.world_to_cam, cams.world_to_cam, atol=1e-5, rtol=0)


def test_perturbed_camera_moves_by_about_sigma() -> None:
    cam = InputCamera.from_pose(torch.zeros(200), torch.zeros(200))
    noisy = perturb_camera(cam, 3.0, torch.Generator().manual_seed(0))
    yaw, pitch = camera_pose_deg(noisy.world_to_cam)
    assert 2.0 < float(yaw.std()) < 4.0 and 2.0 < float(pitch.std()) < 4.0
    torch.testing.assert_close(noisy.centers.norm(dim=-1), cam.centers.norm(dim=-1))


@pytest.fixture(scope="module")
def tiny_model():
    from panolam.model.panolam import PanoLAM

    torch.manual_seed(0)
    return PanoLAM(get_config("tiny").model).eval()


def test_network_copies_seen_colour_and_keeps_the_back(tiny_model) -> None:
    """Untrained, the colour gate already copies the input colour onto visible points, not onto hidden ones."""
    size = tiny_model.cfg.image_size
    cam = InputCamera.from_pose(torch.tensor([0.0]), torch.tensor([0.0]))
    masks = torch.ones(1, 1, size, size)
    with torch.no_grad():
        red = tiny_model(torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1).expand(1, 3, size, size), cam, masks)
        green = tiny_model(torch.tensor([0.0, 1.0, 0.0]).view(1, 3, 1, 1).expand(1, 3, size, size), cam, masks)
    means = red.dense.means[0]
    front, back = means[:, 2] > 0.12, means[:, 2] < -0.1
    assert front.sum() > 20 and back.sum() > 20
    assert float(red.dense.colors[0, front, 0].mean()) > 0.8 > float(green.dense.colors[0, front, 0].mean()) + 0.5
    change = (red.dense.colors[0] - green.dense.colors[0]).abs().amax(-1)
    assert float(change[back].mean()) < 0.2 < float(change[front].mean())
    assert red.pose.shape == (1, 4) and red.input_camera is not None


def test_network_estimates_the_camera_when_none_is_given(tiny_model) -> None:
    size = tiny_model.cfg.image_size
    with torch.no_grad():
        out = tiny_model(torch.rand(2, 3, size, size))
    yaw, pitch = out.input_pose_deg()
    torch.testing.assert_close(out.input_camera.world_to_cam, InputCamera.from_pose(yaw, pitch).world_to_cam, atol=1e-5, rtol=0)
    assert torch.isfinite(out.dense.colors).all()


def test_pose_loss_trains_the_pose_head(tiny_model) -> None:
    from panolam.train.losses import PanoLAMLoss

    cfg = get_config("tiny")
    size = cfg.model.image_size
    loss_fn = PanoLAMLoss(cfg.train)
    cams = Cameras.orbit(torch.tensor([30.0, 0.0]), torch.tensor([5.0, -5.0]), width=16)
    batch = {"images": torch.rand(1, 2, 3, 16, 16), "masks": torch.ones(1, 2, 1, 16, 16),
             "world_to_cam": cams.world_to_cam[None], "K": cams.K[None]}
    tiny_model.zero_grad()
    out = tiny_model.train()(torch.rand(1, 3, size, size), InputCamera.from_cameras(cams[0]))
    result = loss_fn(out, batch)
    tiny_model.eval()
    assert "pose" in result.terms and "pose" not in result.absent
    expected = ((out.pose - pose_vector(torch.tensor([30.0]), torch.tensor([5.0]))) ** 2).sum(-1).mean()
    assert math.isclose(float(result.terms["pose"]), float(expected), rel_tol=1e-5)
    result.total.backward()
    # The conv stem is reached only through zero-initialised projections, so its first gradient is
    # exactly zero (it exists, and turns non-zero once those projections have taken a step).
    for name in ("pose_head", "pixel_sampler", "point_pixel_proj", "dense_pixel_proj", "dense_gate"):
        grads = [p.grad for n, p in tiny_model.named_parameters() if n.startswith(name)]
        assert grads and all(g is not None for g in grads), name
        if name != "pixel_sampler":
            assert any(float(g.abs().sum()) > 0 for g in grads), name


def _mirrored_token_batch(dim: int = 16, side: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Token grids that hold the same patch (a 'face') on the left or on the right of the grid: the
    same multiset of tokens, told apart only by where the face sits. Targets: yaw +45° / -45°."""
    g = torch.Generator().manual_seed(0)
    face = torch.randn(dim, generator=g)
    tokens = 0.1 * torch.randn(2, side, side, dim, generator=g)
    tokens[1] = tokens[0].flip(1)  # mirror image of the background
    tokens[0, 1, 0] += face
    tokens[1, 1, side - 1] += face
    return tokens.reshape(2, side * side, dim), pose_vector(torch.tensor([45.0, -45.0]), torch.tensor([0.0, 0.0]))


@pytest.mark.parametrize("kind", ["grid", "mean"])
def test_only_the_grid_pose_head_tells_a_left_turn_from_a_right_turn(kind: str) -> None:
    """The grid head learns the sign of the yaw from where the face sits; the mean-pooled head sees the
    same pooled vector for both mirror images and cannot (it ends up near yaw 0 for both)."""
    from panolam.model.pixel_aligned import PoseHead

    tokens, target = _mirrored_token_batch()
    torch.manual_seed(0)
    head = PoseHead(tokens.shape[-1], kind)
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    for _ in range(150):
        loss = ((head(tokens) - target) ** 2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        yaw, _ = pose_angles(head(tokens))
    if kind == "grid":
        assert float(yaw[0]) > 30 and float(yaw[1]) < -30, yaw
    else:
        assert abs(float(yaw[0] - yaw[1])) < 5, yaw


def test_pose_head_kind_is_checked() -> None:
    from panolam.model.pixel_aligned import PoseHead

    with pytest.raises(ValueError, match="pose_head"):
        PoseHead(16, "attention")
    with pytest.raises(ValueError, match="square token grid"):
        PoseHead(16, "grid")(torch.zeros(1, 15, 16))


def test_dense_scale_floor_bounds_the_dense_scales_from_below() -> None:
    """With ``model.dense_scale_floor`` = f every dense scale is at least f x the nominal dense spacing,
    scales well above the floor barely move, and the coarse Gaussians are untouched."""
    from panolam.model.panolam import PanoLAM

    size = get_config("tiny").model.image_size
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    outs = {}
    for floor in (0.0, 3.0):  # untrained scales start near the spacing: a floor above it must bite
        torch.manual_seed(0)
        model = PanoLAM(get_config("tiny", [f"model.dense_scale_floor={floor}"]).model).eval()
        with torch.no_grad():
            outs[floor] = (model(x), model.dense_scale_floor)
    (plain, zero), (floored, f) = outs[0.0], outs[3.0]
    assert zero == 0.0 and f > 0
    s0, s1 = plain.dense.scales, floored.dense.scales
    assert float(s1.min()) >= f * (1 - 1e-5) and float(s0.min()) < f
    torch.testing.assert_close(s1, torch.sqrt(s0 ** 2 + f ** 2))
    torch.testing.assert_close(plain.coarse.scales, floored.coarse.scales)
    with pytest.raises(ValueError, match="dense_scale_floor"):
        PanoLAM(get_config("tiny", ["model.dense_scale_floor=-1"]).model)


def test_log_magnification_of_known_cameras_and_round_trip() -> None:
    """0 for the nominal camera; log(f·r0 / (f0·r)) for another radius and FOV; from_pose puts it back."""
    from panolam.geometry.cameras import EG3D_RADIUS, focal_from_diag_fov
    from panolam.model.pixel_aligned import NOMINAL_FOV_DEG, log_magnification

    nominal = InputCamera.from_pose(torch.zeros(2), torch.tensor([0.0, 20.0]))
    torch.testing.assert_close(log_magnification(nominal), torch.zeros(2), atol=1e-5, rtol=0)
    cams = Cameras.orbit(torch.tensor([30.0]), torch.tensor([-5.0]), torch.tensor([2.5]), torch.tensor([17.5]), 64)
    expected = math.log(float(focal_from_diag_fov(17.5)) * EG3D_RADIUS / (float(focal_from_diag_fov(NOMINAL_FOV_DEG)) * 2.5))
    got = log_magnification(InputCamera.from_cameras(cams))
    assert abs(float(got) - expected) < 1e-4 and abs(expected) > 0.03
    # At the nominal radius, a camera built with that log magnification appears exactly as large.
    rebuilt = InputCamera.from_pose(torch.tensor([30.0]), torch.tensor([-5.0]), log_magnification=got)
    torch.testing.assert_close(log_magnification(rebuilt), got, atol=1e-5, rtol=0)
    uv_true, _ = project(torch.tensor([[[0.1, 0.05, 0.0]]]), InputCamera.from_cameras(cams))
    uv_rebuilt, _ = project(torch.tensor([[[0.1, 0.05, 0.0]]]), rebuilt)
    uv_nominal, _ = project(torch.tensor([[[0.1, 0.05, 0.0]]]), InputCamera.from_pose(torch.tensor([30.0]), torch.tensor([-5.0])))
    assert float((uv_rebuilt - uv_true).norm()) < 0.25 * float((uv_nominal - uv_true).norm())


def test_magnification_head_starts_nominal_and_learns_from_its_loss() -> None:
    """Zero-initialised, the head leaves a network exactly as it was (the nominal camera); its loss
    reaches it, and a network without it (or without pixel-aligned sampling) is refused or switched off."""
    from panolam.model.panolam import PanoLAM
    from panolam.train.losses import magnification_loss

    torch.manual_seed(0)
    with_head = PanoLAM(get_config("tiny").model).eval()
    without = PanoLAM(get_config("tiny", ["model.magnification_head=false"]).model).eval()
    state = {k: v for k, v in with_head.state_dict().items() if not k.startswith("magnification_head.")}
    without.load_state_dict(state)
    x = torch.rand(1, 3, with_head.cfg.image_size, with_head.cfg.image_size)
    with torch.no_grad():
        a, b = with_head(x), without(x)
    assert float(a.magnification.abs().max()) == 0.0 and b.magnification is None
    torch.testing.assert_close(a.dense.means, b.dense.means)
    torch.testing.assert_close(a.input_camera.K, b.input_camera.K)
    cams = Cameras.orbit(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([2.5]), torch.tensor([18.83]), 16)
    batch = {"images": torch.rand(1, 1, 3, 16, 16), "world_to_cam": cams.world_to_cam[None], "K": cams.K[None]}
    out = with_head.train()(x, pose_only=True)
    loss = magnification_loss(out.magnification, batch)
    assert math.isclose(float(loss), math.log(2.7 / 2.5) ** 2, rel_tol=2e-2)
    loss.backward()
    assert float(with_head.magnification_head.mlp[-1].weight.grad.abs().sum()) > 0
    with_head.eval()
    assert get_config("tiny", ["model.pixel_aligned=false"]).model.magnification_head is False
    with pytest.raises(ValueError, match="magnification_head"):
        PanoLAM(get_config("tiny", ["model.pixel_aligned=false", "model.magnification_head=true"]).model)


def _flip_model():
    from panolam.model.panolam import PanoLAM

    torch.manual_seed(1)
    return PanoLAM(get_config("tiny", ["model.pose_flip_average=true"]).model).eval()


def test_mirror_pose_negates_the_yaw_only() -> None:
    from panolam.model.pixel_aligned import mirror_pose

    yaw, pitch = pose_angles(mirror_pose(pose_vector(torch.tensor([30.0, -120.0]), torch.tensor([10.0, -5.0]))))
    torch.testing.assert_close(yaw, torch.tensor([-30.0, 120.0]))
    torch.testing.assert_close(pitch, torch.tensor([10.0, -5.0]))


def test_flip_averaged_camera_mirrors_with_the_photo() -> None:
    """model.pose_flip_average: a photo and its mirror image get mirrored cameras (yaw negated, pitch and
    magnification equal), a left-right symmetric photo yaw 0, although the untrained heads alone are
    not mirror-consistent."""
    model = _flip_model()
    size = model.cfg.image_size
    torch.manual_seed(2)
    x = torch.rand(1, 3, size, size)
    with torch.no_grad():
        both = model(torch.cat([x, x.flip(-1)]), pose_only=True)
        sym = model(0.5 * (x + x.flip(-1)), pose_only=True)
        plain = model.pose_head(model.encoder(torch.cat([x, x.flip(-1)])))
    yaw, pitch = pose_angles(both.pose)
    assert abs(float(yaw[0])) > 1e-3
    torch.testing.assert_close(yaw[0], -yaw[1], atol=1e-4, rtol=0)
    torch.testing.assert_close(pitch[0], pitch[1], atol=1e-4, rtol=0)
    torch.testing.assert_close(both.magnification[0], both.magnification[1], atol=1e-5, rtol=0)
    assert abs(float(pose_angles(sym.pose)[0])) < 1e-3
    plain_yaw, _ = pose_angles(plain)
    assert abs(float(plain_yaw[0] + plain_yaw[1])) > 1e-3  # the heads alone would not mirror


def test_flip_average_only_estimates_at_inference_without_a_given_camera() -> None:
    """The mirrored encoder pass runs only when the network estimates the camera in eval mode: not when
    a camera is given, and not in training (the pose loss trains the head on the photo itself)."""
    model = _flip_model()
    size = model.cfg.image_size
    batches = []
    model.encoder.register_forward_hook(lambda module, args, out: batches.append(args[0].shape[0]))
    x = torch.rand(1, 3, size, size)
    with torch.no_grad():
        out = model(x)
        model(x, InputCamera.from_pose(torch.tensor([0.0]), torch.tensor([0.0])))
        model.train()(x, pose_only=True)
    assert batches == [2, 1, 1]
    assert out.pose.shape == (1, 4) and torch.isfinite(out.dense.colors).all()

import math

import torch

from panolam.geometry.cameras import Cameras, diag_fov_from_focal, focal_from_diag_fov, named_views


def project(cams: Cameras, pts: torch.Tensor) -> torch.Tensor:
    cam = pts @ cams.world_to_cam[:, :3, :3].transpose(1, 2) + cams.world_to_cam[:, None, :3, 3]
    uv = cam @ cams.K.transpose(1, 2)
    return torch.cat([uv[..., :2] / uv[..., 2:], cam[..., 2:]], dim=-1)


def test_eg3d_focal_matches_diagonal_fov():
    # EG3D rounds: 18.837 deg gives 4.2627, EG3D writes 4.2647 (0.05 %).
    assert abs(focal_from_diag_fov(18.837) - 4.2647) < 3e-3
    assert abs(diag_fov_from_focal(4.2647) - 18.837) < 2e-2


def test_orbit_cameras_look_at_origin_with_opencv_axes():
    cams = Cameras.orbit(torch.linspace(-180, 180, 9), torch.linspace(-60, 60, 9), 2.7, 18.837, 64, 48)
    p = project(cams, torch.zeros(len(cams), 1, 3))
    assert torch.allclose(p[..., :2], torch.tensor([32.0, 24.0]).expand_as(p[..., :2]), atol=1e-4)
    assert torch.allclose(p[..., 2], torch.full_like(p[..., 2], 2.7), atol=1e-5)
    # World up (+y) appears above the centre in every image (OpenCV: smaller v is higher).
    up = project(cams, torch.tensor([[[0.0, 0.3, 0.0]]]).expand(len(cams), 1, 3))
    assert (up[..., 1] < 24).all()


def test_named_views_positions():
    cams = named_views(("front", "left", "right", "back"), size=32)
    c = cams.centers
    assert torch.allclose(c, torch.tensor([[0, 0, 2.7], [2.7, 0, 0], [-2.7, 0, 0], [0, 0, -2.7]]), atol=1e-5)
    # The front camera sees the subject's left side (+x) on the image's right.
    left = project(cams[0], torch.tensor([[[0.2, 0.0, 0.0]]]))
    assert left[0, 0, 0] > 16


def test_eg3d_label_round_trip():
    cams = Cameras.orbit([10.0, -30.0], [5.0, 20.0], [2.6, 2.8], [18.0, 19.5], 128)
    label = cams.to_eg3d_label()
    assert label.shape == (2, 25)
    back = Cameras.from_eg3d_label(label, 128, 128)
    assert torch.allclose(back.world_to_cam, cams.world_to_cam, atol=1e-5)
    assert torch.allclose(back.K, cams.K, atol=1e-4)


def test_non_square_images_keep_square_pixels_and_the_diagonal_fov():
    cams = Cameras.orbit(0.0, 0.0, 2.7, 18.837, 160, 90)
    fx, fy = float(cams.K[0, 0, 0]), float(cams.K[0, 1, 1])
    assert fx == fy
    half_diag = math.hypot(160, 90) / 2
    assert abs(math.degrees(2 * math.atan(half_diag / fx)) - 18.837) < 1e-3
    square = Cameras.orbit(0.0, 0.0, 2.7, 18.837, 128)
    assert abs(float(square.K[0, 0, 0]) - focal_from_diag_fov(18.837) * 128) < 1e-3


def test_project_points_matches_the_reference_and_the_networks_normalised_projection():
    from panolam.model.pixel_aligned import InputCamera
    from panolam.model.pixel_aligned import project as project_normalised

    cams = Cameras.orbit(torch.tensor([0.0, 35.0, -80.0]), torch.tensor([5.0, -10.0, 20.0]), 2.7, 18.837, 64, 48)
    pts = torch.randn(50, 3, generator=torch.Generator().manual_seed(0)) * 0.3
    uv, z = cams.project_points(pts)
    assert uv.shape == (3, 50, 2) and z.shape == (3, 50)
    ref = project(cams, pts.expand(3, -1, -1))
    assert torch.allclose(uv, ref[..., :2], atol=1e-4) and torch.allclose(z, ref[..., 2], atol=1e-5)
    # The network projects with intrinsics normalised by the image size: the same point, divided by W and H.
    nuv, nz = project_normalised(pts.expand(3, -1, -1), InputCamera.from_cameras(cams))
    assert torch.allclose(nuv * torch.tensor([64.0, 48.0]), uv, atol=1e-3) and torch.allclose(nz, z, atol=1e-5)

"""The face's yaw from FaceMesh-style 3D landmarks: sign and size against the project's orbit cameras,
the yaw hint's fusion with the pose head, and its wiring through the network and the framing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skimage_data

from panolam.config import get_config
from panolam.geometry.cameras import Cameras
from panolam.model.panolam import PanoLAM
from panolam.model.pixel_aligned import InputCamera, camera_pose_deg, fuse_yaw
from panolam.preprocess import frame_photo
from panolam.preprocess.head_pose import CHIN, EYE_LEFT, EYE_RIGHT, FOREHEAD, euler_yxz, landmark_head_pose

# Anatomical points of a head at the origin facing +z (world units, y up): subject's right eye is -x.
WORLD = {EYE_RIGHT: (-0.06, 0.02, 0.12), EYE_LEFT: (0.06, 0.02, 0.12), FOREHEAD: (0.0, 0.13, 0.13), CHIN: (0.0, -0.2, 0.12)}


def seen_landmarks(yaw: float, pitch: float, size: int = 512) -> np.ndarray:
    """(468, 3) landmarks as FaceMesh reports them for the head seen by an orbit camera: pixels, y down,
    depth away from the viewer on the scale of x (weak perspective)."""
    cam = Cameras.orbit(yaw, pitch, width=size)
    pts = torch.zeros(468, 3)
    for i, p in WORLD.items():
        pts[i] = torch.tensor(p)
    cam_pts = (cam.world_to_cam[0, :3, :3] @ pts.T).T + cam.world_to_cam[0, :3, 3]
    uv = (cam.K[0] @ (cam_pts / cam_pts[:, 2:3]).T).T[:, :2]
    depth = (cam_pts[:, 2] - cam_pts[:, 2].mean()) * cam.K[0, 0, 0] / cam_pts[:, 2].mean()
    return torch.cat([uv, depth[:, None]], -1).numpy().astype(np.float64)


@pytest.mark.parametrize("yaw", [-40.0, -15.0, 0.0, 20.0, 45.0])
def test_landmark_yaw_has_the_orbit_cameras_sign_and_size(yaw: float) -> None:
    est = np.degrees(landmark_head_pose(seen_landmarks(yaw, 0.0)))
    # Weak perspective and a forehead set ahead of the chin: within a few degrees, same sign.
    assert est[0] == pytest.approx(yaw, abs=3.0)
    assert abs(est[2]) < 1.0  # no roll from a level orbit camera


def test_euler_of_known_rotation() -> None:
    yaw, pitch, roll = 0.3, -0.2, 0.1
    cy, sy, cx, sx, cz, sz = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch), math.cos(roll), math.sin(roll)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    assert np.allclose(euler_yxz(ry @ rx @ rz), [yaw, pitch, roll])


def test_landmark_pose_needs_3d_facemesh_landmarks() -> None:
    with pytest.raises(ValueError, match="468, 3"):
        landmark_head_pose(np.zeros((468, 2)))
    with pytest.raises(ValueError, match="468, 3"):
        landmark_head_pose(np.zeros((5, 3)))


def test_fuse_yaw_averages_the_short_way_round_and_skips_missing_hints() -> None:
    yaw = torch.tensor([10.0, 170.0, -30.0, 5.0, 60.0])
    hint = torch.tensor([0.0, -170.0, float("nan"), 5.0, 5.0])
    # The last hint is 55° away from the network's yaw: a failed landmark fit, ignored.
    torch.testing.assert_close(fuse_yaw(yaw, hint), torch.tensor([5.0, 180.0, -30.0, 5.0, 60.0]))
    torch.testing.assert_close(fuse_yaw(yaw, hint, weight=1.0)[:2], torch.tensor([0.0, 190.0]))
    torch.testing.assert_close(fuse_yaw(yaw, hint, max_disagreement=90.0)[4], torch.tensor(32.5))
    with pytest.raises(ValueError, match="one per image"):
        fuse_yaw(yaw, torch.zeros(3))


def test_network_projects_with_the_fused_yaw() -> None:
    cfg = get_config("tiny").model
    torch.manual_seed(0)
    model = PanoLAM(cfg).eval()
    x = torch.rand(2, 3, cfg.image_size, cfg.image_size)
    with torch.no_grad():
        plain = model(x)
        head_yaw, _ = plain.input_pose_deg()
        hint = float(head_yaw[0]) + 12.0  # within the agreement window
        hinted = model(x, yaw_hint_deg=torch.tensor([hint, float("nan")]))
    used_yaw, _ = camera_pose_deg(hinted.input_camera.world_to_cam)
    assert float(used_yaw[0]) == pytest.approx(float(head_yaw[0]) + 6.0, abs=1e-3)
    # No hint for the second image: the same camera and head as without hints.
    torch.testing.assert_close(hinted.input_camera.world_to_cam[1], plain.input_camera.world_to_cam[1])
    torch.testing.assert_close(hinted.dense.means[1], plain.dense.means[1])
    assert not torch.allclose(hinted.dense.colors[0], plain.dense.colors[0])
    # An explicit camera wins over the hint.
    cam = InputCamera.from_pose(torch.tensor([0.0, 0.0]), torch.tensor([0.0, 0.0]))
    with torch.no_grad():
        fixed = model(x, camera=cam, yaw_hint_deg=torch.tensor([30.0, 30.0]))
    torch.testing.assert_close(fixed.input_camera.world_to_cam, cam.world_to_cam)


def test_framing_reports_the_face_pose_and_it_survives_rotating_the_photo() -> None:
    photo = skimage_data.astronaut()
    upright = frame_photo(photo, size=256)
    rotated = frame_photo(np.asarray(Image.fromarray(photo).rotate(20, resample=Image.BICUBIC, expand=True,
                                                                   fillcolor=(255, 255, 255))), size=256)
    assert upright.face_pose_deg is not None and rotated.face_pose_deg is not None
    assert abs(upright.face_pose_deg[0]) < 10  # she looks into the camera
    # The framing levels the eyes, so what is left of the roll is small and yaw/pitch do not move.
    assert abs(rotated.face_pose_deg[2]) < 5
    np.testing.assert_allclose(rotated.face_pose_deg[:2], upright.face_pose_deg[:2], atol=4)
    assert upright.to_json()["face_pose_deg"] == [round(v, 2) for v in upright.face_pose_deg]
    assert frame_photo(photo, size=256, method="person").face_pose_deg is None


def test_reconstruct_records_both_yaws_and_uses_the_fused_one(monkeypatch) -> None:
    from panolam.pipeline import Reconstructor

    monkeypatch.delenv("PANOLAM_CHECKPOINT", raising=False)
    with pytest.warns(UserWarning, match="UNTRAINED"):
        rec = Reconstructor(config="tiny")
    photo = skimage_data.astronaut()
    fused = rec.reconstruct(photo, size=64).timings
    plain = rec.reconstruct(photo, size=64, landmark_yaw=False).timings
    assert abs(fused["face_yaw_deg"]) < 10 and fused["pose_head_yaw_deg"] == pytest.approx(plain["pose_head_yaw_deg"], abs=1e-4)
    assert plain["input_yaw_deg"] == pytest.approx(plain["pose_head_yaw_deg"], abs=1e-3)
    expected = fuse_yaw(torch.tensor([fused["pose_head_yaw_deg"]]), torch.tensor([fused["face_yaw_deg"]]))
    assert fused["input_yaw_deg"] == pytest.approx(float(expected[0]), abs=1e-3)
    # The (untrained, seeded) network says ~0° and the mesh ~1.3°: within the window, so the mean is used.
    assert abs(fused["input_yaw_deg"] - fused["pose_head_yaw_deg"]) > 0.2

"""Cameras in the project convention, and the one place that converts to and from it.

Convention (DESIGN §3): OpenCV camera axes (x right, y down, z forward), world y-up, head at
the origin facing +z. A camera is a world-to-camera 4x4 plus pixel intrinsics 3x3 and an image
size. EG3D describes cameras by a 25-dim label: cam2world (16, row-major) followed by intrinsics
normalised by the image size (9); its "FOV 18.837 deg" is a *diagonal* FOV, f = 1/(tan(fov/2)·√2).
Yaw/pitch: yaw 0 looks at the face (camera on +z), yaw +90° sees the subject's left side (camera
on +x), pitch > 0 puts the camera above the head.
"""

from __future__ import annotations

import dataclasses
import math

import torch

EG3D_FOCAL = 4.2647  # normalised focal of EG3D/SphereHead renders
EG3D_RADIUS = 2.7


def focal_from_diag_fov(fov_deg: float | torch.Tensor) -> float | torch.Tensor:
    """Normalised focal (in units of image size) for a diagonal FOV in degrees."""
    if isinstance(fov_deg, torch.Tensor):
        return 1.0 / (torch.tan(torch.deg2rad(fov_deg) / 2) * math.sqrt(2))
    return 1.0 / (math.tan(math.radians(fov_deg) / 2) * math.sqrt(2))


def diag_fov_from_focal(focal: float) -> float:
    """Inverse of :func:`focal_from_diag_fov`, in degrees."""
    return math.degrees(2 * math.atan(1.0 / (focal * math.sqrt(2))))


def look_at(eye: torch.Tensor, target: torch.Tensor | None = None, up: torch.Tensor | None = None) -> torch.Tensor:
    """cam2world (..., 4, 4) for cameras at ``eye`` (..., 3) looking at ``target`` (default origin), OpenCV axes."""
    eye = torch.as_tensor(eye, dtype=torch.float32)
    target = torch.zeros_like(eye) if target is None else torch.as_tensor(target, dtype=eye.dtype).expand_as(eye)
    up = torch.tensor([0.0, 1.0, 0.0], dtype=eye.dtype) if up is None else torch.as_tensor(up, dtype=eye.dtype)
    forward = torch.nn.functional.normalize(target - eye, dim=-1)
    right = torch.cross(forward, up.expand_as(forward), dim=-1)
    # A camera straight above/below the head has forward ∥ up: pick +x as "right" there.
    degenerate = right.norm(dim=-1, keepdim=True) < 1e-6
    right = torch.where(degenerate, torch.tensor([1.0, 0.0, 0.0], dtype=eye.dtype).expand_as(right), right)
    right = torch.nn.functional.normalize(right, dim=-1)
    down = torch.cross(forward, right, dim=-1)
    c2w = torch.zeros(*eye.shape[:-1], 4, 4, dtype=eye.dtype)
    c2w[..., :3, 0], c2w[..., :3, 1], c2w[..., :3, 2], c2w[..., :3, 3] = right, down, forward, eye
    c2w[..., 3, 3] = 1.0
    return c2w


def orbit_position(yaw_deg: torch.Tensor, pitch_deg: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Camera centres (..., 3) on a sphere around the origin (see module doc for the angles)."""
    yaw, pitch = torch.deg2rad(torch.as_tensor(yaw_deg, dtype=torch.float32)), torch.deg2rad(torch.as_tensor(pitch_deg, dtype=torch.float32))
    radius = torch.as_tensor(radius, dtype=torch.float32)
    return torch.stack([radius * torch.cos(pitch) * torch.sin(yaw), radius * torch.sin(pitch), radius * torch.cos(pitch) * torch.cos(yaw)], dim=-1)


@dataclasses.dataclass
class Cameras:
    """A batch of C pinhole cameras sharing one image size."""

    world_to_cam: torch.Tensor  # (C, 4, 4)
    K: torch.Tensor  # (C, 3, 3) pixel intrinsics
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.world_to_cam.ndim == 2:
            self.world_to_cam = self.world_to_cam[None]
        if self.K.ndim == 2:
            self.K = self.K[None]
        if self.world_to_cam.shape[-2:] != (4, 4) or self.K.shape[-2:] != (3, 3) or len(self.K) != len(self.world_to_cam):
            raise ValueError(f"Cameras need (C,4,4) world_to_cam and (C,3,3) K, got {tuple(self.world_to_cam.shape)} and {tuple(self.K.shape)}")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")

    def __len__(self) -> int:
        return len(self.world_to_cam)

    def __getitem__(self, idx) -> "Cameras":
        w2c, K = self.world_to_cam[idx], self.K[idx]
        return Cameras(w2c if w2c.ndim == 3 else w2c[None], K if K.ndim == 3 else K[None], self.width, self.height)

    @property
    def cam_to_world(self) -> torch.Tensor:
        return torch.linalg.inv(self.world_to_cam)

    @property
    def centers(self) -> torch.Tensor:
        return self.cam_to_world[:, :3, 3]

    def to(self, device: torch.device | str) -> "Cameras":
        return Cameras(self.world_to_cam.to(device), self.K.to(device), self.width, self.height)

    def project_points(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """World points (N, 3) -> pixel coordinates (C, N, 2) (x right, y down; pixel ``i`` covers
        [i, i+1)) and camera-space depth (C, N) in every camera. Points at or behind the camera
        (depth <= 0) get finite but meaningless coordinates: test the depth."""
        R, t = self.world_to_cam[:, :3, :3].to(points), self.world_to_cam[:, :3, 3].to(points)
        xyz = torch.einsum("cij,nj->cni", R, points) + t[:, None]
        z = xyz[..., 2]
        uvw = torch.einsum("cij,cnj->cni", self.K.to(points), xyz)
        return uvw[..., :2] / z.clamp_min(1e-6)[..., None], z

    def resized(self, width: int, height: int) -> "Cameras":
        """Same cameras rendering a different pixel grid (intrinsics scaled)."""
        scale = torch.tensor([width / self.width, height / self.height, 1.0], dtype=self.K.dtype, device=self.K.device)
        return Cameras(self.world_to_cam, self.K * scale[:, None], width, height)

    @staticmethod
    def from_cam_to_world(c2w: torch.Tensor, K: torch.Tensor, width: int, height: int) -> "Cameras":
        return Cameras(torch.linalg.inv(c2w), K, width, height)

    @staticmethod
    def from_eg3d_label(label: torch.Tensor, width: int, height: int) -> "Cameras":
        """Cameras from EG3D 25-dim labels (C, 25): cam2world row-major + normalised intrinsics."""
        label = torch.as_tensor(label, dtype=torch.float32).reshape(-1, 25)
        c2w = label[:, :16].reshape(-1, 4, 4)
        K = label[:, 16:].reshape(-1, 3, 3) * torch.tensor([width, height, 1.0])[:, None]
        return Cameras.from_cam_to_world(c2w, K, width, height)

    def to_eg3d_label(self) -> torch.Tensor:
        """Inverse of :meth:`from_eg3d_label`: (C, 25)."""
        Kn = self.K / torch.tensor([self.width, self.height, 1.0], dtype=self.K.dtype, device=self.K.device)[:, None]
        return torch.cat([self.cam_to_world.reshape(-1, 16), Kn.reshape(-1, 9)], dim=1)

    @staticmethod
    def orbit(yaw_deg, pitch_deg, radius=EG3D_RADIUS, fov_deg: float | torch.Tensor = 18.837, width: int = 512, height: int | None = None) -> "Cameras":
        """Cameras on a sphere looking at the origin; angles/radius/FOV broadcast to a batch."""
        height = width if height is None else height
        yaw, pitch, radius, fov = torch.broadcast_tensors(*(torch.as_tensor(v, dtype=torch.float32).reshape(-1) for v in (yaw_deg, pitch_deg, radius, fov_deg)))
        c2w = look_at(orbit_position(yaw, pitch, radius))
        # The FOV is diagonal: square pixels with focal (diagonal/2)/tan(fov/2), which is f·side for square images.
        f = focal_from_diag_fov(fov) * math.sqrt((width**2 + height**2) / 2)
        K = torch.zeros(len(yaw), 3, 3)
        K[:, 0, 0], K[:, 1, 1] = f, f
        K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = width / 2, height / 2, 1.0
        return Cameras.from_cam_to_world(c2w, K, width, height)


# Named evaluation / preview views (paper §4.1: front, back, left, right).
NAMED_VIEWS_YAW = {"front": 0.0, "left": 90.0, "right": -90.0, "back": 180.0}


def named_views(names=("front", "left", "right", "back"), size: int = 512, radius: float = EG3D_RADIUS, fov_deg: float = 18.837) -> Cameras:
    unknown = [n for n in names if n not in NAMED_VIEWS_YAW]
    if unknown:
        raise ValueError(f"unknown view names {unknown}; choose from {sorted(NAMED_VIEWS_YAW)}")
    return Cameras.orbit([NAMED_VIEWS_YAW[n] for n in names], 0.0, radius, fov_deg, size)

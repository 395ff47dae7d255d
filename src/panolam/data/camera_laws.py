"""The paper's camera laws for sampling training views (App. E), seeded by a ``torch.Generator``.

Front set (EG3D-style): yaw ~ U(-36°, 36°), pitch ~ U(-26°, 26°) relative to the face, radius
~ N(2.7, 0.1), FOV ~ N(18.83°, 1°), 32 views. The paper's "focal length N(18.83, 1)" is EG3D's
*diagonal* FOV in degrees, so it goes to :meth:`Cameras.orbit` as ``fov_deg``. 360 set
(SphereHead-style): 8 views evenly spaced on the equator (yaw = phase + k·45°, pitch 0) plus 24
views uniform on the sphere, with the same radius/FOV jitter on every view. Uniform on the sphere:
the camera direction's height sin(pitch) ~ U(-1, 1) and yaw ~ U(-180°, 180°) (Archimedes: equal
height bands have equal area). Evaluation uses the fixed front/back/left/right views of
:func:`panolam.geometry.cameras.named_views` at the mean radius and FOV.
"""

from __future__ import annotations

import dataclasses
import torch

from panolam.geometry.cameras import Cameras, named_views

CAMERA_SETS = ("front", "360")
FRONT_YAW_DEG = 36.0
FRONT_PITCH_DEG = 26.0
RADIUS_MEAN, RADIUS_STD = 2.7, 0.1
FOV_MEAN_DEG, FOV_STD_DEG = 18.83, 1.0
EQUATOR_VIEWS = 8


@dataclasses.dataclass
class CameraSample:
    """Per-view orbit parameters (all (C,) float32 tensors, degrees) for one subject."""

    yaw: torch.Tensor
    pitch: torch.Tensor
    radius: torch.Tensor
    fov: torch.Tensor

    def __len__(self) -> int:
        return len(self.yaw)

    def cameras(self, size: int) -> Cameras:
        return Cameras.orbit(self.yaw, self.pitch, self.radius, self.fov, size)


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen)


def _jitter(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    radius = RADIUS_MEAN + RADIUS_STD * torch.randn(n, generator=gen)
    fov = FOV_MEAN_DEG + FOV_STD_DEG * torch.randn(n, generator=gen)
    return radius, fov


def sample_front(n: int = 32, generator: torch.Generator | None = None) -> CameraSample:
    """EG3D-style near-frontal views."""
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    yaw = _uniform(n, -FRONT_YAW_DEG, FRONT_YAW_DEG, gen)
    pitch = _uniform(n, -FRONT_PITCH_DEG, FRONT_PITCH_DEG, gen)
    radius, fov = _jitter(n, gen)
    return CameraSample(yaw, pitch, radius, fov)


def sample_sphere_directions(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(yaw, pitch) in degrees of ``n`` directions uniform on the unit sphere."""
    yaw = _uniform(n, -180.0, 180.0, gen)
    pitch = torch.rad2deg(torch.asin(_uniform(n, -1.0, 1.0, gen)))
    return yaw, pitch


def sample_360(n: int = 32, generator: torch.Generator | None = None, equator_views: int = EQUATOR_VIEWS,
               equator_phase_deg: float = 0.0) -> CameraSample:
    """SphereHead-style views: ``equator_views`` evenly spaced equator views, then random sphere views."""
    if n < equator_views:
        raise ValueError(f"the 360 camera set needs at least {equator_views} views (the equator ring), got {n}")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    ring_yaw = equator_phase_deg + torch.arange(equator_views, dtype=torch.float32) * (360.0 / equator_views)
    ring_yaw = torch.remainder(ring_yaw + 180.0, 360.0) - 180.0
    rand_yaw, rand_pitch = sample_sphere_directions(n - equator_views, gen)
    radius, fov = _jitter(n, gen)
    yaw = torch.cat([ring_yaw, rand_yaw])
    pitch = torch.cat([torch.zeros(equator_views), rand_pitch])
    return CameraSample(yaw, pitch, radius, fov)


def sample_cameras(camera_set: str, n: int = 32, generator: torch.Generator | None = None) -> CameraSample:
    """Dispatch on the set name (``"front"`` or ``"360"``)."""
    if camera_set == "front":
        return sample_front(n, generator)
    if camera_set == "360":
        return sample_360(n, generator)
    raise ValueError(f"unknown camera set {camera_set!r}; choose one of {', '.join(CAMERA_SETS)}")


def eval_views(size: int = 512) -> Cameras:
    """The four evaluation views (front, left, right, back) at the mean radius and FOV."""
    return named_views(("front", "left", "right", "back"), size=size, radius=RADIUS_MEAN, fov_deg=FOV_MEAN_DEG)


def frontalness(world_to_cam: torch.Tensor) -> torch.Tensor:
    """(C,) cosine between each camera's direction from the head and the face direction +z."""
    c2w = torch.linalg.inv(world_to_cam)
    centres = torch.nn.functional.normalize(c2w[:, :3, 3], dim=-1)
    return centres[:, 2]


def equator_spacing_deg(yaw: torch.Tensor) -> torch.Tensor:
    """Gaps (degrees) between consecutive sorted yaws around the circle; used by tests and ``data info``."""
    s = torch.sort(torch.remainder(yaw, 360.0)).values
    return torch.diff(torch.cat([s, s[:1] + 360.0]))


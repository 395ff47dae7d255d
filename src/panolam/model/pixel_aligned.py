"""Pixel-aligned input features (beyond the paper): tie every 3D point to the input pixels it projects to.

The paper reaches the photo only through global cross-attention to the image tokens, which a small
network trained on a CPU cannot learn to copy from. Here each point (template vertex or dense point) is
projected into the input image with the input camera (:class:`InputCamera`: known in training, the
pose head's estimate at inference) and samples, bilinearly at its projection: the input RGB, the
person mask, a high-resolution conv-stem feature map (colour- and edge-carrying) and the image-token
map. A soft z-test against a depth buffer of the same points, times a normal·view term, says how
visible the point is from the input camera, so features (and the colour copy gate of the heads) can
be trusted on the visible side and ignored on the unseen one — no face copied onto the back.

Conventions: the project camera frame (OpenCV axes), intrinsics normalised by the image size
(``u = fx·x/z + cx`` in [0, 1] across the image), ``grid_sample`` with ``align_corners=False`` so
pixel ``i`` covers [i, i+1)/W.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from panolam.geometry.cameras import EG3D_RADIUS, Cameras, focal_from_diag_fov, look_at, orbit_position

NOMINAL_FOV_DEG = 18.837  # EG3D's diagonal FOV, which the photo framing reproduces
STEM_CHANNELS = 32
VISIBILITY_GRID = 64  # depth-buffer side for the soft z-test
VISIBILITY_MARGIN = 0.03  # world units a point may lie behind the front surface and still count as seen
VISIBILITY_SOFTNESS = 0.006
POSE_GRID = 4  # the grid pose head pools its conv features to POSE_GRID x POSE_GRID cells
FRONT_FACING_CENTRE, FRONT_FACING_SOFTNESS = 0.15, 0.05  # normal·view ramp: 0.5 at cos 0.15, 0.95 at 0.3
CAMERA_HEADS = ("pose_head.", "magnification_head.")  # parameter prefixes of the input-camera heads
# Weight of the face-landmark yaw against the pose head's, and the disagreement beyond which the hint is
# ignored. On 70 procedural views of 25 held-out subjects where FaceMesh found the face, the pose head's
# median yaw error was 4.4°, FaceMesh's 3.7° and their mean's 3.2° (weights 0.25 / 0.75: 3.5° / 3.4°); the
# two errors are uncorrelated (r = −0.11). FaceMesh fails on turned cartoon faces (it calls profiles
# near-frontal), and then the two disagree: averaging only within 20° kept the profile views at the pose
# head's error and cut three-quarter views from 6.3° to 3.9°. BENCHMARKS.md, *Input-camera estimate*.
LANDMARK_YAW_WEIGHT = 0.5
LANDMARK_YAW_MAX_DISAGREEMENT = 20.0


@dataclasses.dataclass
class InputCamera:
    """The input view's camera for a batch: world-to-camera (B, 4, 4) and normalised intrinsics (B, 3, 3)."""

    world_to_cam: torch.Tensor
    K: torch.Tensor

    @staticmethod
    def from_pose(yaw_deg: torch.Tensor, pitch_deg: torch.Tensor, radius: float = EG3D_RADIUS,
                  fov_deg: float = NOMINAL_FOV_DEG, log_magnification: torch.Tensor | None = None) -> "InputCamera":
        """Orbit cameras looking at the origin (no roll; the photo framing levels the eyes).
        ``log_magnification`` (B,) scales the focal length by its exp (see :func:`log_magnification`)."""
        yaw, pitch = yaw_deg.reshape(-1).float(), pitch_deg.reshape(-1).float()
        c2w = look_at(orbit_position(yaw.cpu(), pitch.cpu(), torch.full_like(yaw.cpu(), radius))).to(yaw.device)
        f = float(focal_from_diag_fov(fov_deg))
        K = torch.tensor([[f, 0.0, 0.5], [0.0, f, 0.5], [0.0, 0.0, 1.0]], device=yaw.device).expand(len(yaw), 3, 3).clone()
        if log_magnification is not None:
            gain = torch.exp(log_magnification.reshape(-1).float()).to(yaw.device)
            K[:, 0, 0] = K[:, 0, 0] * gain
            K[:, 1, 1] = K[:, 1, 1] * gain
        return InputCamera(torch.linalg.inv(c2w), K)

    @staticmethod
    def from_cameras(cams: Cameras) -> "InputCamera":
        scale = torch.tensor([1.0 / cams.width, 1.0 / cams.height, 1.0], dtype=cams.K.dtype, device=cams.K.device)
        return InputCamera(cams.world_to_cam.float(), (cams.K * scale[:, None]).float())

    def to_cameras(self, width: int, height: int | None = None) -> Cameras:
        height = width if height is None else height
        scale = torch.tensor([width, height, 1.0], dtype=self.K.dtype, device=self.K.device)
        return Cameras(self.world_to_cam, self.K * scale[:, None], width, height)

    def detach(self) -> "InputCamera":
        return InputCamera(self.world_to_cam.detach(), self.K.detach())

    def to(self, device: torch.device | str) -> "InputCamera":
        return InputCamera(self.world_to_cam.to(device), self.K.to(device))

    @property
    def centers(self) -> torch.Tensor:
        """(B, 3) camera centres in world space."""
        R, t = self.world_to_cam[:, :3, :3], self.world_to_cam[:, :3, 3]
        return -(R.transpose(1, 2) @ t[..., None])[..., 0]


def fuse_yaw(yaw_deg: torch.Tensor, hint_deg: torch.Tensor, weight: float = LANDMARK_YAW_WEIGHT,
             max_disagreement: float = LANDMARK_YAW_MAX_DISAGREEMENT) -> torch.Tensor:
    """The pose head's yaw (B,) moved ``weight`` of the way to an independent estimate ``hint_deg`` (B,)
    along the shorter arc. NaN hints, and hints more than ``max_disagreement`` degrees away (one of the
    two has failed; the landmarks more often, on turned faces), leave the yaw as it is."""
    if hint_deg.shape != yaw_deg.shape:
        raise ValueError(f"yaw hint must have shape {tuple(yaw_deg.shape)} (one per image), got {tuple(hint_deg.shape)}")
    delta = torch.nan_to_num(torch.remainder(hint_deg - yaw_deg + 180.0, 360.0) - 180.0, nan=float("inf"))
    return torch.where(delta.abs() <= max_disagreement, yaw_deg + weight * delta, yaw_deg)


def camera_pose_deg(world_to_cam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Yaw and pitch (degrees) of cameras looking at the origin, as :func:`orbit_position` defines them."""
    R, t = world_to_cam[..., :3, :3], world_to_cam[..., :3, 3]
    c = -(R.transpose(-1, -2) @ t[..., None])[..., 0]
    yaw = torch.rad2deg(torch.atan2(c[..., 0], c[..., 2]))
    pitch = torch.rad2deg(torch.asin((c[..., 1] / c.norm(dim=-1).clamp_min(1e-8)).clamp(-1, 1)))
    return yaw, pitch


def log_magnification(cam: InputCamera) -> torch.Tensor:
    """(B,) log of how much larger than nominal the head appears: (focal / distance to the origin) over
    the nominal camera's (EG3D radius and FOV). Framed photos are close to 0; the synthetic datasets
    jitter radius and FOV per view (about ±6 %), which shifts a head's outline by several pixels."""
    nominal = float(focal_from_diag_fov(NOMINAL_FOV_DEG)) / EG3D_RADIUS
    focal = 0.5 * (cam.K[:, 0, 0] + cam.K[:, 1, 1])
    return torch.log(focal / cam.centers.norm(dim=-1) / nominal)


def project(points: torch.Tensor, cam: InputCamera) -> tuple[torch.Tensor, torch.Tensor]:
    """World points (B, N, 3) -> normalised image coordinates (B, N, 2) in [0, 1] across the image, depth (B, N)."""
    R, t = cam.world_to_cam[:, None, :3, :3], cam.world_to_cam[:, None, :3, 3]
    pc = (R @ points[..., None])[..., 0] + t
    z = pc[..., 2]
    zs = z.clamp_min(1e-4)
    u = cam.K[:, None, 0, 0] * pc[..., 0] / zs + cam.K[:, None, 0, 2]
    v = cam.K[:, None, 1, 1] * pc[..., 1] / zs + cam.K[:, None, 1, 2]
    return torch.stack([u, v], dim=-1), z


def sample_map(maps: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of (B, C, H, W) maps at normalised coordinates (B, N, 2) -> (B, N, C); zero outside."""
    grid = (uv * 2 - 1).unsqueeze(2).to(maps.dtype)  # (B, N, 1, 2)
    out = F.grid_sample(maps, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[..., 0].transpose(1, 2)


def depth_buffer(uv: torch.Tensor, z: torch.Tensor, grid: int = VISIBILITY_GRID) -> torch.Tensor:
    """Nearest depth per cell (B, grid, grid) of points splatted at ``uv``; cells no point hit take the
    nearest depth of their 3x3 neighbourhood (fills gaps between sparse points), else +inf."""
    b, n = z.shape
    inside = (uv > 0).all(-1) & (uv < 1).all(-1) & (z > 0)
    cell = (uv.clamp(0, 1 - 1e-6) * grid).long()
    idx = cell[..., 1] * grid + cell[..., 0]
    far = torch.finfo(z.dtype).max
    zb = torch.full((b, grid * grid), far, dtype=z.dtype, device=z.device)
    zb = zb.scatter_reduce(1, idx, torch.where(inside, z, torch.full_like(z, far)), reduce="amin")
    zb = -F.max_pool2d(-zb.view(b, 1, grid, grid), 3, stride=1, padding=1)
    return zb.view(b, grid, grid)


def soft_visibility(points: torch.Tensor, normals: torch.Tensor, cam: InputCamera, grid: int = VISIBILITY_GRID,
                    projected: tuple[torch.Tensor, torch.Tensor] | None = None,
                    occluders: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """How visible each point is from the input camera, in [0, 1]: soft z-test x front-facing ramp.

    Returns ``(visible, z_test, cos)``: ``z_test`` = sigmoid((buffer depth + margin - depth) / softness)
    (0 outside the image), ``cos`` = normal · direction to the camera. No gradient flows through it:
    it gates features, it is not a quantity to optimise. ``projected`` reuses a :func:`project` of the
    same points by the caller; ``occluders`` is the projection (uv, depth) of the points whose depth
    buffer the z-test uses (default: the points themselves).
    """
    with torch.no_grad():
        uv, z = project(points.float(), cam) if projected is None else (projected[0].float(), projected[1].float())
        zb = depth_buffer(uv, z, grid) if occluders is None else depth_buffer(occluders[0].float(), occluders[1].float(), grid)
        cell = (uv.clamp(0, 1 - 1e-6) * grid).long()
        front = zb.view(len(z), -1).gather(1, cell[..., 1] * grid + cell[..., 0])
        inside = (uv > 0).all(-1) & (uv < 1).all(-1) & (z > 0)
        z_test = torch.sigmoid((front + VISIBILITY_MARGIN - z) / VISIBILITY_SOFTNESS) * inside
        to_cam = F.normalize(cam.centers[:, None, :] - points.float(), dim=-1)
        cos = (F.normalize(normals.float(), dim=-1) * to_cam).sum(-1)
        visible = z_test * torch.sigmoid((cos - FRONT_FACING_CENTRE) / FRONT_FACING_SOFTNESS)
    return visible, z_test, cos


@dataclasses.dataclass
class PixelFeatures:
    """What each point read from the input image."""

    features: torch.Tensor  # (B, N, D): rgb, mask, visibility cues, stem and token features
    rgb: torch.Tensor  # (B, N, 3) input colour at the projection
    visible: torch.Tensor  # (B, N) in [0, 1]
    uv: torch.Tensor  # (B, N, 2) the projection, normalised image coordinates (no gradient)
    silhouette: torch.Tensor | None = None  # (B, N, CUE_DIM) model.silhouette_cues of the same points, when on


class PixelAlignedSampler(nn.Module):
    """Input image (+ mask, token map, camera) -> per-point :class:`PixelFeatures`.

    The conv stem runs at the encoder's input size and halves it (224 -> 112 for the CPU preset), so
    its features are ~8x finer than the 14-pixel patch tokens; RGB and mask are read at the image's
    own resolution (512 for a framed photo).
    """

    def __init__(self, token_dim: int, stem_channels: int = STEM_CHANNELS) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(4, stem_channels, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(stem_channels, stem_channels, 3, padding=1), nn.GELU(),
            nn.Conv2d(stem_channels, stem_channels, 3, padding=1),
        )
        self.out_dim = 3 + 1 + 3 + stem_channels + token_dim

    def maps(self, images: torch.Tensor, masks: torch.Tensor, stem_size: int) -> torch.Tensor:
        """The stem's feature map from the RGB+mask image resized to ``stem_size``."""
        x = torch.cat([images, masks], dim=1)
        if x.shape[-1] != stem_size or x.shape[-2] != stem_size:
            x = F.interpolate(x, size=(stem_size, stem_size), mode="bilinear", align_corners=False, antialias=True)
        return self.stem(x * 2 - 1)

    def forward(self, images: torch.Tensor, masks: torch.Tensor, stem_maps: torch.Tensor, token_map: torch.Tensor,
                points: torch.Tensor, normals: torch.Tensor, cam: InputCamera, occluders: torch.Tensor | None = None) -> PixelFeatures:
        """``occluders`` (B, M, 3): the surface points the visibility z-test is against (default ``points``)."""
        uv, z = project(points, cam)
        occ = None
        if occluders is not None:
            with torch.no_grad():
                occ = project(occluders, cam)
        visible, z_test, cos = soft_visibility(points, normals, cam, projected=(uv.detach(), z.detach()), occluders=occ)
        rgb_mask = sample_map(torch.cat([images, masks], dim=1), uv)
        rgb, mask = rgb_mask[..., :3], rgb_mask[..., 3:]
        cues = torch.stack([visible, z_test, cos], dim=-1)
        feats = torch.cat([rgb * 2 - 1, mask, cues, sample_map(stem_maps, uv), sample_map(token_map, uv)], dim=-1)
        return PixelFeatures(features=feats, rgb=rgb, visible=visible, uv=uv.detach())


def zero_init_mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """A 2-layer MLP whose output starts at exactly zero, so adding it leaves a pretrained network unchanged."""
    mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))
    nn.init.zeros_(mlp[-1].weight)
    nn.init.zeros_(mlp[-1].bias)
    return mlp


class ColourGate(nn.Module):
    """Blend a head's colour with the sampled input colour: c = (1-g)·c_head + g·c_input.

    The gate starts as a fixed function of visibility (≈0.95 where the point is seen head-on, ≈0.05
    where it is hidden) plus a learned, zero-initialised correction from the point's features, so a
    fine-tuned network copies what it sees from the first step and learns where not to (shading,
    hair strands, the mask edge)."""

    def __init__(self, in_dim: int, hidden: int = 64, sharpness: float = 6.0) -> None:
        super().__init__()
        self.correction = zero_init_mlp(in_dim, hidden, 1)
        self.sharpness = sharpness

    def forward(self, colors: torch.Tensor, pix: PixelFeatures, context: torch.Tensor) -> torch.Tensor:
        logit = self.sharpness * (pix.visible - 0.5) + self.correction(context)[..., 0]
        g = torch.sigmoid(logit)[..., None]
        return (1 - g) * colors + g * pix.rgb.to(colors.dtype)


class PoseHead(nn.Module):
    """Image tokens (B, N, C) -> input-camera yaw and pitch as unit vectors (B, 4): (sin, cos) of each.

    ``kind="grid"`` (default) reads the tokens as their (√N × √N) patch grid through two strided
    convolutions, so it sees *where* the face sits in the head's silhouette: that is what tells a
    left-turned head from a right-turned one. ``kind="mean"`` (the first shipped head, kept so old
    checkpoints load) mean-pools the tokens first and, measured on frozen tokens, cannot learn the
    sign of the yaw: it answers ≈ frontal for every view."""

    KINDS = ("grid", "mean")

    def __init__(self, dim: int, kind: str = "grid") -> None:
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"model.pose_head must be one of {self.KINDS}, got {kind!r}")
        self.kind = kind
        if kind == "mean":
            self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, 4))
        else:
            width, self.norm, self.convs = _grid_trunk(dim)
            self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(width * POSE_GRID ** 2, 2 * width), nn.GELU(), nn.Linear(2 * width, 4))
        with torch.no_grad():  # start at the frontal view (yaw 0, pitch 0)
            self.mlp[-1].weight.mul_(0.01)
            self.mlp[-1].bias.copy_(torch.tensor([0.0, 1.0, 0.0, 1.0]))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.kind == "mean":
            raw = self.mlp(tokens.mean(dim=1)).float()
        else:
            raw = self.mlp(self.convs(_token_grid(self.norm(tokens), "grid pose head"))).float()
        return torch.cat([F.normalize(raw[:, :2], dim=-1, eps=1e-6), F.normalize(raw[:, 2:], dim=-1, eps=1e-6)], dim=-1)


class MagnificationHead(nn.Module):
    """Image tokens (B, N, C) -> (B,) :func:`log_magnification` of the input camera, read off the token
    grid like :class:`PoseHead` ("grid" kind). Its last layer starts at zero (nominal magnification),
    so adding it to a trained network changes nothing until it is trained (``train.trainable=pose_head``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        width, self.norm, self.convs = _grid_trunk(dim)
        self.mlp = zero_init_mlp(width * POSE_GRID ** 2, 2 * width, 1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.convs(_token_grid(self.norm(tokens), "magnification head")).flatten(1))[:, 0].float()


def _grid_trunk(dim: int) -> tuple[int, nn.LayerNorm, nn.Sequential]:
    """The camera heads' shared layout: a token LayerNorm and two strided convolutions pooled to a
    POSE_GRID x POSE_GRID map of ``width`` channels (returned first)."""
    width = max(32, min(128, dim))
    convs = nn.Sequential(nn.Conv2d(dim, width, 3, 2, 1), nn.GELU(), nn.Conv2d(width, width, 3, 2, 1), nn.GELU(),
                          nn.AdaptiveAvgPool2d(POSE_GRID))
    return width, nn.LayerNorm(dim), convs


def _token_grid(tokens: torch.Tensor, what: str) -> torch.Tensor:
    """(B, N, C) tokens -> their (B, C, √N, √N) patch grid; a non-square count is an error naming ``what``."""
    b, n, c = tokens.shape
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"the {what} needs a square token grid, got {n} tokens")
    return tokens.transpose(1, 2).reshape(b, c, side, side)


def pose_vector(yaw_deg: torch.Tensor, pitch_deg: torch.Tensor) -> torch.Tensor:
    """(sin yaw, cos yaw, sin pitch, cos pitch): the pose head's target."""
    y, p = torch.deg2rad(yaw_deg.float()), torch.deg2rad(pitch_deg.float())
    return torch.stack([torch.sin(y), torch.cos(y), torch.sin(p), torch.cos(p)], dim=-1)


def mirror_pose(vec: torch.Tensor) -> torch.Tensor:
    """The :func:`pose_vector` of the left-right mirrored view: yaw negated, pitch kept."""
    return torch.cat([-vec[..., :1], vec[..., 1:]], dim=-1)


def pose_angles(vec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`pose_vector`: yaw, pitch in degrees."""
    return torch.rad2deg(torch.atan2(vec[..., 0], vec[..., 1])), torch.rad2deg(torch.atan2(vec[..., 2], vec[..., 3]))


def mask_from_background(images: torch.Tensor, background: float = 1.0, tol: float = 0.02) -> torch.Tensor:
    """A hard foreground mask (B, 1, H, W) for images composited on a flat background, when no matte is given."""
    return ((images - background).abs().amax(dim=1, keepdim=True) > tol).to(images.dtype)


def perturb_camera(cam: InputCamera, sigma_deg: float, generator: torch.Generator | None = None) -> InputCamera:
    """Rotate the world about the origin by small random yaw/pitch angles (N(0, sigma) degrees): the
    training camera then carries an estimate-sized error, so the network learns to tolerate one."""
    if sigma_deg <= 0:
        return cam
    b = cam.world_to_cam.shape[0]
    a = torch.randn(b, 2, generator=generator) * math.radians(sigma_deg)
    cy, sy, cx, sx = torch.cos(a[:, 0]), torch.sin(a[:, 0]), torch.cos(a[:, 1]), torch.sin(a[:, 1])
    zeros, ones = torch.zeros(b), torch.ones(b)
    ry = torch.stack([cy, zeros, sy, zeros, ones, zeros, -sy, zeros, cy], -1).view(b, 3, 3)
    rx = torch.stack([ones, zeros, zeros, zeros, cx, -sx, zeros, sx, cx], -1).view(b, 3, 3)
    rot = torch.eye(4).repeat(b, 1, 1)
    rot[:, :3, :3] = ry @ rx
    return InputCamera(cam.world_to_cam @ rot.to(cam.world_to_cam), cam.K)

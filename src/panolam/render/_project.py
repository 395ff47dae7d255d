"""EWA projection of 3D Gaussians into C pinhole cameras, in differentiable torch ops.

Every CPU backend shares this step, so autograd handles the projection's backward (means, quats,
scales) while the compiled blending kernels only return gradients for the 2D quantities. Rules
follow gsplat 1.5 (``fully_fused_projection`` with ``opacities`` given, ``antialiased=False``):
the quaternion is normalised in the forward and the gradient flows through the normalisation;
the Jacobian of the pinhole is evaluated at the mean with gsplat's frustum clamp of x/z, y/z
(±1.3·tan half-FOV) so Gaussians far outside the image do not blow up; 0.3 px² is added to the
2D covariance (no opacity compensation); a Gaussian is culled when its camera z < near (0.01),
its 2D covariance is not positive definite, its opacity < 1/255 or its opacity-aware box
(per axis ``ceil(min(3.33, sqrt(2 ln(255 o)))·σ)``) misses the image.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from panolam.gaussians import Gaussians
from panolam.geometry.cameras import Cameras

NEAR_PLANE = 0.01
FAR_PLANE = 1e10
EPS2D = 0.3
ALPHA_THRESHOLD = 1.0 / 255.0
MAX_EXTEND = 3.33


@dataclasses.dataclass
class Projected:
    """Per-camera screen-space Gaussians; ``valid``/``radii``/``order`` carry no gradient."""

    means2d: torch.Tensor  # (C, N, 2) pixels
    conics: torch.Tensor  # (C, N, 3) inverse 2D covariance (a, b, c) = [[a, b], [b, c]]
    depths: torch.Tensor  # (C, N) camera-space z of the mean
    opacities: torch.Tensor  # (C, N)
    radii: torch.Tensor  # (C, N, 2) whole-pixel half-extent per axis (float), 0 when culled
    valid: torch.Tensor  # (C, N) bool
    order: torch.Tensor  # (C, N) int64 indices sorted front-to-back (stable), culled ones last


def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) from wxyz quaternions; normalises first (gradient flows through)."""
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(*quats.shape[:-1], 3, 3)


def _pinhole_jacobian(means_c: torch.Tensor, z: torch.Tensor, K: torch.Tensor, width: int, height: int):
    """Non-zero entries (j00, j02, j11, j12), each (C, N), of the pixel projection's Jacobian at the
    mean; x/z and y/z are clamped to ±1.3·tan half-FOV like gsplat (Jacobian only, not the mean)."""
    fx, fy = K[:, 0, 0, None], K[:, 1, 1, None]
    cx, cy = K[:, 0, 2, None], K[:, 1, 2, None]
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    u = torch.minimum(torch.maximum(means_c[..., 0] / z, -(cx / fx + 0.3 * tan_x)), (width - cx) / fx + 0.3 * tan_x)
    v = torch.minimum(torch.maximum(means_c[..., 1] / z, -(cy / fy + 0.3 * tan_y)), (height - cy) / fy + 0.3 * tan_y)
    return fx / z, -fx * u / z, fy / z, -fy * v / z


def _covariance_2d(rs: torch.Tensor, R: torch.Tensor, jac) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Entries (a, b, c) of J·W·(RS)(RS)ᵀ·Wᵀ·Jᵀ, each (C, N), written elementwise: batched 3×3 matmuls
    of many tiny matrices are slow on CPU, (C, N, 3) broadcasts are not."""
    j00, j02, j11, j12 = (j[..., None] for j in jac)
    t0 = j00 * R[:, None, 0, :] + j02 * R[:, None, 2, :]  # rows of T = J·W, (C, N, 3)
    t1 = j11 * R[:, None, 1, :] + j12 * R[:, None, 2, :]
    u0 = t0[..., 0:1] * rs[:, 0, :] + t0[..., 1:2] * rs[:, 1, :] + t0[..., 2:3] * rs[:, 2, :]  # T·(RS)
    u1 = t1[..., 0:1] * rs[:, 0, :] + t1[..., 1:2] * rs[:, 1, :] + t1[..., 2:3] * rs[:, 2, :]
    return (u0 * u0).sum(-1), (u0 * u1).sum(-1), (u1 * u1).sum(-1)


def project(gaussians: Gaussians, cameras: Cameras) -> Projected:
    """Project unbatched Gaussians into every camera (differentiable in means2d/conics/depths/opacities)."""
    means, dtype = gaussians.means, gaussians.means.dtype
    w2c = cameras.world_to_cam.to(device=means.device, dtype=dtype)
    K = cameras.K.to(device=means.device, dtype=dtype)
    R, t = w2c[:, :3, :3], w2c[:, :3, 3]
    C, N = len(cameras), len(gaussians)
    means_c = torch.einsum("cij,nj->cni", R, means) + t[:, None]
    z = means_c[..., 2]
    with torch.no_grad():
        in_depth = (z >= NEAR_PLANE) & (z <= FAR_PLANE)
    # Culled points get z = 1 so that no inf/NaN enters the graph (their gradient is zero anyway).
    z_safe = torch.where(in_depth, z, torch.ones_like(z))
    rs = quat_to_rotmat(gaussians.quats) * gaussians.scales[:, None, :]  # R·S, (N, 3, 3)
    a, b, c = _covariance_2d(rs, R, _pinhole_jacobian(means_c, z_safe, K, cameras.width, cameras.height))
    a, c = a + EPS2D, c + EPS2D
    det = a * c - b * b
    with torch.no_grad():
        ok_det = det > 0
    det_safe = torch.where(ok_det, det, torch.ones_like(det))
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], dim=-1)
    means2d = torch.stack([
        K[:, 0, 0, None] * means_c[..., 0] / z_safe + K[:, 0, 2, None],
        K[:, 1, 1, None] * means_c[..., 1] / z_safe + K[:, 1, 2, None],
    ], dim=-1)
    opacities = gaussians.opacities[None].expand(C, N)
    with torch.no_grad():
        radii, valid = _radii_and_visibility(means2d, a, c, opacities, in_depth & ok_det, cameras.width, cameras.height)
        key = torch.where(valid, z, torch.full_like(z, math.inf))
        order = torch.argsort(key, dim=1, stable=True)
    return Projected(means2d, conics, z, opacities, radii, valid, order)


def _radii_and_visibility(
    means2d: torch.Tensor, a: torch.Tensor, c: torch.Tensor, opacities: torch.Tensor, valid: torch.Tensor, width: int, height: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Opacity-aware per-axis box (gsplat 1.5) and the final visibility mask."""
    o = opacities.detach()
    valid = valid & (o >= ALPHA_THRESHOLD)
    extend = torch.clamp(torch.sqrt(2.0 * torch.log(torch.clamp(o / ALPHA_THRESHOLD, min=1.0))), max=MAX_EXTEND)
    rx = torch.ceil(extend * torch.sqrt(torch.clamp(a, min=0.0)))
    ry = torch.ceil(extend * torch.sqrt(torch.clamp(c, min=0.0)))
    mx, my = means2d[..., 0], means2d[..., 1]
    valid = valid & ((rx > 0) | (ry > 0))
    valid = valid & (mx + rx > 0) & (mx - rx < width) & (my + ry > 0) & (my - ry < height)
    valid = valid & torch.isfinite(mx) & torch.isfinite(my) & torch.isfinite(rx) & torch.isfinite(ry)
    radii = torch.stack([rx, ry], dim=-1)
    radii = torch.where(valid[..., None], radii, torch.zeros_like(radii))
    return radii, valid

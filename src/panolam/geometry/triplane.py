"""Spherical tri-plane query (SphereHead's form, DESIGN §2) and the multi-layer ray sampling of
PanoLAM eq. 6. A spherical tri-plane stores features over (θ, φ, r) of a point instead of its
Cartesian axes; SphereHead uses two of them (spheres A and B, rotated so that one sphere's poles
and seam fall where the other is well conditioned) and blends them with cosine weights that vanish
at each sphere's poles and seam. Checked against SphereHead's public ``sample_from_planes``
(lhyfst/SphereHead, ``training/volumetric_rendering/renderer.py``): rotations
``roty(π/2)ᵀ`` → (z, y, −x) and ``(roty(−π/2)·rotz(−π/2))ᵀ`` → (−z, −x, y), the plane axes and the
weights agree with DESIGN §2. Our planes are laid out (B, 6, C, H, W) (A0, A1, A2, B0, B1, B2) where
SphereHead keeps (B, 2, 3, C, H, W); the query returns the mean of the three fused planes, which
is what SphereHead's OSGDecoder takes as input.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

VIRTUAL_VIEW_NAMES = ("front", "left", "right", "back")


def rotate_sphere_a(p: torch.Tensor) -> torch.Tensor:
    """Sphere A frame: (x, y, z) -> (z, y, −x); its poles lie on the world ±x axis."""
    return torch.stack([p[..., 2], p[..., 1], -p[..., 0]], dim=-1)


def rotate_sphere_b(p: torch.Tensor) -> torch.Tensor:
    """Sphere B frame: (x, y, z) -> (−z, −x, y); its poles lie on the world ±y axis."""
    return torch.stack([-p[..., 2], -p[..., 0], p[..., 1]], dim=-1)


def spherical_coords(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalised (θ_n, φ_n, r_n) of points p (..., 3), each in [−1, 1] inside the unit cube.

    θ = atan2(√(x²+y²), z) ∈ [0, π] → θ_n = 2θ/π − 1; φ = atan2(y, x) → φ_n = φ/π;
    r_n = 2|p|/√3 − 1 (the cube's corner maps to 1).
    """
    x, y, z = p.unbind(-1)
    # atan2's gradient at (0, 0) is NaN-free in torch but the sqrt's is not: keep it off zero.
    rho = torch.sqrt(x * x + y * y + 1e-20)
    theta_n = 2.0 * torch.atan2(rho, z) / math.pi - 1.0
    phi_n = torch.atan2(y, x) / math.pi
    r_n = 2.0 * torch.sqrt((p * p).sum(-1) + 1e-20) / math.sqrt(3.0) - 1.0
    return theta_n, phi_n, r_n


def blend_weight(theta_n: torch.Tensor, phi_n: torch.Tensor) -> torch.Tensor:
    """w = ½(1+cos πθ_n)·½(1+cos πφ_n): 1 on the sphere's equator front, 0 at its poles and seam."""
    return 0.25 * (1.0 + torch.cos(math.pi * theta_n)) * (1.0 + torch.cos(math.pi * phi_n))


def _sphere_grids(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """grid_sample coordinates (B, 3, N, 2) for planes P0=(θ,φ), P1=(θ,r), P2=(φ,r), and weights (B, N)."""
    theta_n, phi_n, r_n = spherical_coords(p)
    grids = torch.stack(
        [torch.stack([theta_n, phi_n], -1), torch.stack([theta_n, r_n], -1), torch.stack([phi_n, r_n], -1)], dim=1
    )
    return grids, blend_weight(theta_n, phi_n)


def sample_spherical_planes(planes: torch.Tensor, points: torch.Tensor, box_warp: float = 1.0) -> torch.Tensor:
    """The three fused plane features (B, 3, N, C) of SphereHead's two-sphere tri-plane."""
    if planes.dim() != 5 or planes.shape[1] != 6:
        raise ValueError(f"planes must be (B, 6, C, H, W), got {tuple(planes.shape)}")
    if points.dim() != 3 or points.shape[-1] != 3 or points.shape[0] != planes.shape[0]:
        raise ValueError(f"points must be (B, N, 3) with B={planes.shape[0]}, got {tuple(points.shape)}")
    b, _, c, h, w = planes.shape
    n = points.shape[1]
    p = points.to(planes.dtype) * (2.0 / box_warp)
    grid_a, w_a = _sphere_grids(rotate_sphere_a(p))
    grid_b, w_b = _sphere_grids(rotate_sphere_b(p))
    grid = torch.cat([grid_a, grid_b], dim=1).reshape(b * 6, 1, n, 2)
    feats = F.grid_sample(
        planes.reshape(b * 6, c, h, w), grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    feats = feats.reshape(b, 2, 3, c, n).permute(0, 1, 2, 4, 3)  # (B, sphere, plane, N, C)
    # Normalise the per-point weights before they meet the (B, 3, N, C) features: the same blend, but
    # backward then keeps no (B, 3, N, C) weighted sum for a division (B·3·N·C floats per query).
    total = w_a + w_b + 1e-8
    w_a, w_b = (w_a / total)[:, None, :, None], (w_b / total)[:, None, :, None]
    return w_a * feats[:, 0] + w_b * feats[:, 1]


def query_spherical_triplane(planes: torch.Tensor, points: torch.Tensor, box_warp: float = 1.0) -> torch.Tensor:
    """Features (B, N, C) at world points (B, N, 3): mean over the three fused planes (DESIGN §2).

    ``box_warp`` is the side of the world cube the planes span (points are scaled by 2/box_warp).
    Differentiable in both ``planes`` and ``points``.
    """
    return sample_spherical_planes(planes, points, box_warp).mean(dim=1)


def virtual_camera_centers(n: int = 4, radius: float = 2.7) -> torch.Tensor:
    """Centres (n, 3) of the virtual cameras for ray aggregation, on the equator at ``radius``.

    n ≤ 4: the first n of front (+z), left (+x, the subject's left), right (−x), back (−z).
    n > 4: yaws 360°·k/n (k = 0..n−1) starting at the front and turning toward +x.
    """
    if n < 1:
        raise ValueError(f"need at least one virtual camera, got n={n}")
    if n <= 4:
        base = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
        return base[:n] * radius
    yaw = torch.arange(n, dtype=torch.float64) * (2 * math.pi / n)
    return (torch.stack([torch.sin(yaw), torch.zeros_like(yaw), torch.cos(yaw)], -1) * radius).float()


def ray_sample_points(points: torch.Tensor, centers: torch.Tensor, num_samples: int, interval: float) -> torch.Tensor:
    """Samples (B, N, K, S, 3) on the ray from each centre k through each point.

    Sample s sits at point + t_s·d, d the unit direction centre → point, t_s evenly spaced over
    [−interval/2, +interval/2] (``torch.linspace``; t = 0 when S = 1): deterministic, centred on the
    point, first sample nearest the camera. Differentiable in ``points``.
    """
    if points.dim() != 3 or points.shape[-1] != 3:
        raise ValueError(f"points must be (B, N, 3), got {tuple(points.shape)}")
    if centers.dim() != 2 or centers.shape[-1] != 3:
        raise ValueError(f"centers must be (K, 3), got {tuple(centers.shape)}")
    if num_samples < 1 or interval < 0:
        raise ValueError(f"need num_samples >= 1 and interval >= 0, got {num_samples}, {interval}")
    centers = centers.to(points)
    d = F.normalize(points[:, :, None, :] - centers[None, None], dim=-1)  # (B, N, K, 3)
    if num_samples == 1:
        t = torch.zeros(1, dtype=points.dtype, device=points.device)
    else:
        t = torch.linspace(-0.5 * interval, 0.5 * interval, num_samples, dtype=points.dtype, device=points.device)
    return points[:, :, None, None, :] + t[:, None] * d[:, :, :, None, :]


def resample_planes(planes: torch.Tensor, res: int | tuple[int, int]) -> torch.Tensor:
    """Planes (..., C, H, W) resampled to (..., C, res, res) (or (h, w) for a pair), e.g. stored teacher
    planes to the model's ``triplane_res`` for L_st.

    Downsampling uses area averaging (``F.interpolate(mode="area")``: the mean of the source cells
    each target cell covers, exact block means for integer factors); upsampling uses bilinear
    interpolation with ``align_corners=False`` — the cell-centre convention ``grid_sample`` uses in
    :func:`sample_spherical_planes`, so a plane and its resample describe the same field over
    [−1, 1]². Mixed cases (one side up, the other down) use bilinear. The same size returns the
    input unchanged. Constant planes stay constant; differentiable in ``planes``.
    """
    h, w = (res, res) if isinstance(res, int) else (int(res[0]), int(res[1]))
    if h < 1 or w < 1:
        raise ValueError(f"res must be >= 1, got {res}")
    if planes.dim() < 3:
        raise ValueError(f"planes must be (..., C, H, W), got {tuple(planes.shape)}")
    lead, (c, h0, w0) = planes.shape[:-3], planes.shape[-3:]
    if (h0, w0) == (h, w):
        return planes
    x = planes.reshape(-1, c, h0, w0)
    if h <= h0 and w <= w0:
        y = F.interpolate(x, size=(h, w), mode="area")
    else:
        y = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    return y.reshape(*lead, c, h, w)

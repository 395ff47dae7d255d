"""The frozen spherical tri-plane decoder and its volume renderer (DESIGN §2, paper §3.5 L_rgb^ST).

SphereHead's (and EG3D's) form: an ``OSGDecoder`` maps the mean of the three fused plane features
through FC(C_st→64) → softplus → FC(64→1+C_rgb) with equalised-learning-rate weights (stored
weights are scaled by lr_mul/√fan_in at run time, so a SphereHead ``decoder.net.{0,2}`` state dict
loads unchanged); channel 0 is the raw density σ, the rest are colour features
``sigmoid(·)·(1+2·0.001) − 0.001``. Rendering casts one ray per pixel, takes uniform coarse samples
in [ray_start, ray_end] (stratified when ``jitter``), then importance samples from the coarse
weights (max-then-average smoothed, +0.01, inverse-CDF), and composites all samples with midpoint
quadrature: σ' = softplus(σ_mid − 1), α = 1 − exp(−σ'δ). The first three feature channels are the
RGB image, composited over a background colour. SphereHead's super-resolution network is skipped:
supervision is compared at the render resolution. The renderer never owns the planes; it is
frozen during PanoLAM training and only trained by ``panolam teacher fit``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from panolam.geometry.cameras import Cameras
from panolam.geometry.triplane import query_spherical_triplane


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate: y = x·(w·lr_mul/√fan_in)ᵀ + b·lr_mul."""

    def __init__(self, in_features: int, out_features: int, lr_multiplier: float = 1.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)


class OSGDecoder(nn.Module):
    """Plane features (..., C_st) -> (raw σ (..., 1), colour features (..., C_rgb))."""

    def __init__(self, in_channels: int, out_channels: int | None = None, hidden: int = 64, lr_multiplier: float = 1.0) -> None:
        super().__init__()
        self.out_channels = in_channels if out_channels is None else out_channels
        if self.out_channels < 3:
            raise ValueError(f"decoder needs at least 3 colour feature channels (RGB first), got {self.out_channels}")
        self.net = nn.Sequential(EqualLinear(in_channels, hidden, lr_multiplier), nn.Softplus(),
                                 EqualLinear(hidden, 1 + self.out_channels, lr_multiplier))

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.net(features)
        rgb = torch.sigmoid(x[..., 1:]) * (1 + 2 * 0.001) - 0.001
        return x[..., :1], rgb


@dataclasses.dataclass
class TriplaneRender:
    rgb: torch.Tensor  # (B, C, H, W, 3), composited over the background
    alpha: torch.Tensor  # (B, C, H, W, 1)
    depth: torch.Tensor  # (B, C, H, W, 1), expected depth along the ray where alpha > 0


def camera_rays(cameras: Cameras) -> tuple[torch.Tensor, torch.Tensor]:
    """World ray origins and unit directions (C, H·W, 3) through pixel centres (OpenCV convention)."""
    h, w = cameras.height, cameras.width
    dev, dt = cameras.K.device, cameras.K.dtype
    v, u = torch.meshgrid(torch.arange(h, device=dev, dtype=dt) + 0.5, torch.arange(w, device=dev, dtype=dt) + 0.5, indexing="ij")
    pix = torch.stack([u, v, torch.ones_like(u)], -1).reshape(-1, 3)  # (HW, 3)
    dirs_cam = pix @ torch.linalg.inv(cameras.K).transpose(1, 2)  # (C, HW, 3)
    c2w = cameras.cam_to_world
    dirs = F.normalize(dirs_cam @ c2w[:, :3, :3].transpose(1, 2), dim=-1)
    origins = c2w[:, None, :3, 3].expand_as(dirs)
    return origins, dirs


def composite(rgb: torch.Tensor, sigma: torch.Tensor, depths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Midpoint quadrature along sorted samples. rgb (..., S, F), sigma/depths (..., S, 1).

    Returns composited features (..., F), alpha (..., 1), expected depth (..., 1) and the
    per-interval weights (..., S−1, 1)."""
    deltas = depths[..., 1:, :] - depths[..., :-1, :]
    rgb_mid = 0.5 * (rgb[..., 1:, :] + rgb[..., :-1, :])
    sigma_mid = 0.5 * (sigma[..., 1:, :] + sigma[..., :-1, :])
    depth_mid = 0.5 * (depths[..., 1:, :] + depths[..., :-1, :])
    alpha = 1 - torch.exp(-F.softplus(sigma_mid - 1) * deltas)
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[..., :1, :]), 1 - alpha + 1e-10], dim=-2), dim=-2)[..., :-1, :]
    weights = alpha * trans
    total = weights.sum(-2)
    depth = (weights * depth_mid).sum(-2) / total.clamp_min(1e-8)
    return (weights * rgb_mid).sum(-2), total, depth, weights


def sample_pdf(bins: torch.Tensor, weights: torch.Tensor, n: int, deterministic: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """Inverse-CDF samples (..., n) from the piecewise-constant pdf ``weights`` (..., K) over ``bins`` (..., K+1)."""
    pdf = weights / weights.sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[..., :1]), torch.cumsum(pdf, -1)], -1)
    if deterministic:
        u = torch.linspace(0, 1, n, device=bins.device, dtype=bins.dtype).expand(*cdf.shape[:-1], n).contiguous()
    else:
        u = torch.rand(*cdf.shape[:-1], n, device=bins.device, dtype=bins.dtype, generator=generator)
    idx = torch.searchsorted(cdf.detach(), u, right=True)
    lo, hi = (idx - 1).clamp(0, cdf.shape[-1] - 1), idx.clamp(0, cdf.shape[-1] - 1)
    cdf_lo, cdf_hi = cdf.gather(-1, lo), cdf.gather(-1, hi)
    bin_lo, bin_hi = bins.gather(-1, lo), bins.gather(-1, hi)
    span = torch.where(cdf_hi - cdf_lo < 1e-5, torch.ones_like(cdf_hi), cdf_hi - cdf_lo)
    return bin_lo + (u - cdf_lo) / span * (bin_hi - bin_lo)


class TriplaneRenderer(nn.Module):
    """Volume-render spherical tri-planes (B, 6, C, H, W) with an :class:`OSGDecoder`."""

    def __init__(self, channels: int, box_warp: float = 1.0, ray_start: float = 2.25, ray_end: float = 3.3,
                 samples_coarse: int = 48, samples_fine: int = 48, background: float = 1.0, hidden: int = 64,
                 chunk: int = 65536) -> None:
        super().__init__()
        if not 0 < ray_start < ray_end:
            raise ValueError(f"need 0 < ray_start < ray_end, got {ray_start}, {ray_end}")
        if samples_coarse < 2:
            raise ValueError(f"need at least 2 coarse samples per ray, got {samples_coarse}")
        self.decoder = OSGDecoder(channels, channels, hidden)
        self.box_warp, self.ray_start, self.ray_end = box_warp, ray_start, ray_end
        self.samples_coarse, self.samples_fine = samples_coarse, samples_fine
        self.background, self.chunk = background, chunk

    def _decode(self, planes: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """σ (B, N, 1) and features (B, N, C_rgb) at points (B, N, 3), in chunks to bound memory."""
        outs = [self.decoder(query_spherical_triplane(planes, points[:, i:i + self.chunk], self.box_warp))
                for i in range(0, points.shape[1], self.chunk)]
        return torch.cat([o[0] for o in outs], 1), torch.cat([o[1] for o in outs], 1)

    def _march(self, planes: torch.Tensor, origins: torch.Tensor, dirs: torch.Tensor, depths: torch.Tensor):
        b, r, s = depths.shape[:3]
        pts = (origins[:, :, None] + depths * dirs[:, :, None]).reshape(b, r * s, 3)
        sigma, rgb = self._decode(planes, pts)
        return rgb.reshape(b, r, s, -1), sigma.reshape(b, r, s, 1)

    def render_rays(self, planes: torch.Tensor, origins: torch.Tensor, dirs: torch.Tensor,
                    jitter: bool = False, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Features (B, R, C_rgb), alpha (B, R, 1), depth (B, R, 1) for rays (B, R, 3)."""
        b, r = origins.shape[:2]
        t = torch.linspace(self.ray_start, self.ray_end, self.samples_coarse, device=origins.device, dtype=origins.dtype)
        depths = t.expand(b, r, -1).clone()
        if jitter:
            step = (self.ray_end - self.ray_start) / (self.samples_coarse - 1)
            depths = depths + torch.rand(depths.shape, device=depths.device, dtype=depths.dtype, generator=generator) * step
        depths = depths[..., None]
        rgb, sigma = self._march(planes, origins, dirs, depths)
        if self.samples_fine > 0:
            with torch.no_grad():
                _, _, _, w = composite(rgb, sigma, depths)
                w = w[..., 0].reshape(b * r, 1, -1)
                # Smooth the coarse weights (max then average over neighbours) so thin peaks still attract samples.
                w = F.avg_pool1d(F.max_pool1d(w, 2, 1, padding=1), 2, 1).reshape(b, r, -1) + 0.01
                mids = 0.5 * (depths[..., 1:, 0] + depths[..., :-1, 0])
                fine = sample_pdf(mids, w[..., 1:-1], self.samples_fine, deterministic=not jitter, generator=generator)[..., None]
            rgb_f, sigma_f = self._march(planes, origins, dirs, fine)
            depths, order = torch.sort(torch.cat([depths, fine], -2), dim=-2)
            rgb = torch.cat([rgb, rgb_f], -2).gather(-2, order.expand(-1, -1, -1, rgb.shape[-1]))
            sigma = torch.cat([sigma, sigma_f], -2).gather(-2, order)
        feats, alpha, depth, _ = composite(rgb, sigma, depths)
        return feats, alpha, depth

    def render(self, planes: torch.Tensor, cameras: Cameras | Sequence[Cameras], size: int | None = None,
               jitter: bool = False, generator: torch.Generator | None = None, batch: dict | None = None) -> TriplaneRender:
        """Render each batch item from its cameras (one :class:`Cameras` for all items, or one per item).
        ``batch`` is ignored (the L_rgb^ST decoder protocol, ``train.gan_teacher.StDecoder``)."""
        if planes.dim() != 5 or planes.shape[1] != 6:
            raise ValueError(f"planes must be (B, 6, C, H, W), got {tuple(planes.shape)}")
        b = planes.shape[0]
        cams = [cameras] * b if isinstance(cameras, Cameras) else list(cameras)
        if len(cams) != b or len({len(c) for c in cams}) != 1:
            raise ValueError(f"need one Cameras (same count each) per batch item: {b} planes, {len(cams)} camera sets")
        if size is not None:
            cams = [c.resized(size, size) for c in cams]
        w, h = cams[0].width, cams[0].height
        rays = [camera_rays(c.to(planes.device)) for c in cams]
        origins = torch.stack([o for o, _ in rays]).to(planes.dtype)  # (B, C, HW, 3)
        dirs = torch.stack([d for _, d in rays]).to(planes.dtype)
        nc = origins.shape[1]
        feats, alpha, depth = self.render_rays(planes, origins.reshape(b, -1, 3), dirs.reshape(b, -1, 3), jitter, generator)
        rgb = feats[..., :3] + self.background * (1 - alpha)
        return TriplaneRender(rgb.reshape(b, nc, h, w, 3), alpha.reshape(b, nc, h, w, 1), depth.reshape(b, nc, h, w, 1))


def renderer_from_state(state: dict[str, torch.Tensor], **kwargs) -> TriplaneRenderer:
    """A renderer whose decoder loads ``state`` (keys ``decoder.net.{0,2}.{weight,bias}`` or ``net.…``)."""
    state = {k.removeprefix("decoder."): v for k, v in state.items() if "net." in k}
    if "net.0.weight" not in state or "net.2.weight" not in state:
        raise ValueError("tri-plane decoder state needs net.0.weight and net.2.weight (SphereHead OSGDecoder layout)")
    hidden, channels = state["net.0.weight"].shape
    out = state["net.2.weight"].shape[0] - 1
    if out != channels:
        raise ValueError(f"decoder maps {channels} plane channels to {out} colour features; this renderer needs them equal")
    renderer = TriplaneRenderer(channels, hidden=hidden, **kwargs)
    renderer.decoder.load_state_dict(state)
    return renderer

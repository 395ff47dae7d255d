"""EG3D's tri-plane generator, inference only (Chan et al., "Efficient Geometry-aware 3D GANs").

Our own implementation of the published architecture, with the official module names so that an
official state dict (from :mod:`panolam.data.gan.pickle_io`) loads unchanged:

* ``backbone`` — a StyleGAN2 generator at 256² with 3·32 output channels: three axis-aligned
  feature planes. Its mapping network sees the camera label scaled by ``c_scale`` (zeros when
  ``c_gen_conditioning_zero``).
* ``decoder`` — the OSG decoder: mean of the three plane features → FC(32→64) → softplus →
  FC(64→1+32); channel 0 is raw density, the rest ``sigmoid·(1+2·0.001)−0.001``.
* the renderer — one ray per pixel of the neural rendering resolution (OpenCV camera, EG3D's
  25-value label: cam2world + normalised intrinsics), ``depth_resolution`` stratified samples in
  [ray_start, ray_end] (jittered), ``depth_resolution_importance`` samples drawn from the coarse
  weights (max-pool then average-pool smoothed, +0.01, +1e-5, inverse CDF with random u), midpoint
  quadrature with ``softplus(σ−1)``; colours scaled to [−1, 1], depth clamped to the sample range.
  The random draws happen in the official order, so with the same seed the jitter is identical.
* ``superresolution`` — EG3D's SR modules (two synthesis blocks driven by the last w), selected by
  the class name in ``rendering_kwargs['superresolution_module']``.

EG3D's planes are sampled at (x, y), (x, z) and (z, x) — the third plane repeats an axis; that is
what the released checkpoints were trained with, so it is kept. Runs in fp32 everywhere.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from panolam.data.gan.stylegan2 import FullyConnectedLayer, StyleGAN2Backbone, SynthesisBlock
from panolam.data.gan.ops import setup_filter


class OSGDecoder(nn.Module):
    """Plane features (B, P, M, C) -> density (B, M, 1) and features (B, M, C_out)."""

    def __init__(self, n_features: int, options: dict) -> None:
        super().__init__()
        self.hidden_dim = 64
        lr = options.get("decoder_lr_mul", 1)
        self.net = nn.Sequential(FullyConnectedLayer(n_features, self.hidden_dim, lr_multiplier=lr), nn.Softplus(),
                                 FullyConnectedLayer(self.hidden_dim, 1 + options["decoder_output_dim"], lr_multiplier=lr))

    def forward(self, sampled_features: torch.Tensor, ray_directions: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        x = sampled_features.mean(1)
        n, m, c = x.shape
        x = self.net(x.reshape(n * m, c)).reshape(n, m, -1)
        return {"rgb": torch.sigmoid(x[..., 1:]) * (1 + 2 * 0.001) - 0.001, "sigma": x[..., 0:1]}


def sample_from_planes(planes: torch.Tensor, coordinates: torch.Tensor, box_warp: float) -> torch.Tensor:
    """Features (N, 3, M, C) of axis-aligned planes (N, 3, C, H, W) at points (N, M, 3)."""
    n, p, c, h, w = planes.shape
    m = coordinates.shape[1]
    x = (2 / box_warp) * coordinates
    uv = torch.stack([x[..., [0, 1]], x[..., [0, 2]], x[..., [2, 0]]], dim=1).reshape(n * p, 1, m, 2)
    out = F.grid_sample(planes.reshape(n * p, c, h, w), uv.float(), mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.permute(0, 3, 2, 1).reshape(n, p, m, c)


def sample_rays(cam2world: torch.Tensor, intrinsics: torch.Tensor, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Origins and unit directions (N, R², 3) through pixel centres, row-major from the top-left."""
    n, dev = cam2world.shape[0], cam2world.device
    fx, fy, cx, cy, sk = (intrinsics[:, 0, 0], intrinsics[:, 1, 1], intrinsics[:, 0, 2], intrinsics[:, 1, 2], intrinsics[:, 0, 1])
    ar = torch.arange(resolution, dtype=torch.float32, device=dev)
    uv = torch.stack(torch.meshgrid(ar, ar, indexing="ij")) * (1.0 / resolution) + (0.5 / resolution)
    uv = uv.flip(0).reshape(2, -1).transpose(1, 0).unsqueeze(0).repeat(n, 1, 1)
    x_cam, y_cam = uv[:, :, 0], uv[:, :, 1]
    z_cam = torch.ones_like(x_cam)
    fx, fy, cx, cy, sk = (t.unsqueeze(-1) for t in (fx, fy, cx, cy, sk))
    x_lift = (x_cam - cx + cy * sk / fy - sk * y_cam / fy) / fx * z_cam
    y_lift = (y_cam - cy) / fy * z_cam
    pts = torch.stack((x_lift, y_lift, z_cam, torch.ones_like(z_cam)), dim=-1)
    world = torch.bmm(cam2world, pts.permute(0, 2, 1)).permute(0, 2, 1)[:, :, :3]
    origin = cam2world[:, :3, 3]
    dirs = F.normalize(world - origin[:, None, :], dim=2)
    return origin.unsqueeze(1).repeat(1, dirs.shape[1], 1), dirs


def ray_march(colors: torch.Tensor, densities: torch.Tensor, depths: torch.Tensor, options: dict,
              signed: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Composite (N, M, S, ·) samples: colour (scaled to [−1, 1] when ``signed``, as EG3D does; PanoHead
    and SphereHead scale later), depth, per-interval weights (N, M, S−1, 1)."""
    if options.get("clamp_mode", "softplus") != "softplus":
        raise ValueError("EG3D's ray marcher supports only clamp_mode 'softplus'")
    deltas = depths[:, :, 1:] - depths[:, :, :-1]
    colors_mid = (colors[:, :, :-1] + colors[:, :, 1:]) / 2
    densities_mid = F.softplus((densities[:, :, :-1] + densities[:, :, 1:]) / 2 - 1)
    depths_mid = (depths[:, :, :-1] + depths[:, :, 1:]) / 2
    alpha = 1 - torch.exp(-densities_mid * deltas)
    shifted = torch.cat([torch.ones_like(alpha[:, :, :1]), 1 - alpha + 1e-10], -2)
    weights = alpha * torch.cumprod(shifted, -2)[:, :, :-1]
    rgb = torch.sum(weights * colors_mid, -2)
    total = weights.sum(2)
    depth = torch.nan_to_num(torch.sum(weights * depths_mid, -2) / total, float("inf"))
    depth = torch.clamp(depth, torch.min(depths), torch.max(depths))
    if options.get("white_back", False):
        rgb = rgb + 1 - total
    return (rgb * 2 - 1 if signed else rgb), depth, weights


def sample_pdf(bins: torch.Tensor, weights: torch.Tensor, n_importance: int, generator: torch.Generator | None = None,
               eps: float = 1e-5) -> torch.Tensor:
    """Inverse-CDF samples (R, n) from piecewise-constant ``weights`` (R, K) over ``bins`` (R, K+1)."""
    n_rays, n_bins = weights.shape
    weights = weights + eps
    pdf = weights / torch.sum(weights, -1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, -1)], -1)
    u = torch.rand(n_rays, n_importance, device=bins.device, generator=generator).contiguous()
    inds = torch.searchsorted(cdf, u, right=True)
    both = torch.stack([torch.clamp_min(inds - 1, 0), torch.clamp_max(inds, n_bins)], -1).view(n_rays, 2 * n_importance)
    cdf_g = torch.gather(cdf, 1, both).view(n_rays, n_importance, 2)
    bins_g = torch.gather(bins, 1, both).view(n_rays, n_importance, 2)
    denom = cdf_g[..., 1] - cdf_g[..., 0]
    denom = torch.where(denom < eps, torch.ones_like(denom), denom)
    return bins_g[..., 0] + (u - cdf_g[..., 0]) / denom * (bins_g[..., 1] - bins_g[..., 0])


def ray_limits_box(origins: torch.Tensor, dirs: torch.Tensor, side: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry/exit depths (N, M, 1) of rays through the axis-aligned cube of side ``side`` (exit < entry: missed)."""
    o, d = origins.reshape(-1, 3), dirs.reshape(-1, 3)
    lo, hi = -side / 2, side / 2
    inv = 1.0 / d
    t0, t1 = (lo - o) * inv, (hi - o) * inv
    tmin = torch.minimum(t0, t1).amax(-1)
    tmax = torch.maximum(t0, t1).amin(-1)
    miss = tmax < tmin
    tmin, tmax = torch.where(miss, torch.full_like(tmin, -1.0), tmin), torch.where(miss, torch.full_like(tmax, -2.0), tmax)
    return tmin.reshape(*origins.shape[:-1], 1), tmax.reshape(*origins.shape[:-1], 1)


def crop_mask(xyz: torch.Tensor, thresh: float, box_warp: float) -> torch.Tensor:
    """PanoHead's ``triplane_crop``: True for points outside the vertical prism |x|, |z| ≤ box_warp/2 − thresh."""
    lim = box_warp / 2 - thresh
    return ~(xyz[..., [0, 2]].abs() <= lim).all(dim=-1, keepdim=True)


class ImportanceRenderer(nn.Module):
    """Coarse stratified + importance samples along each ray through tri-planes decoded by ``decoder``.

    ``triplane_crop`` > 0 sets the density of samples outside :func:`crop_mask` to −1000 (PanoHead and
    SphereHead render with 0.1); ``signed`` scales composited colours to [−1, 1] (EG3D).
    """

    def __init__(self, triplane_crop: float = 0.0, signed: bool = True) -> None:
        super().__init__()
        self.triplane_crop, self.signed = triplane_crop, signed

    def sample_planes(self, planes: torch.Tensor, coords: torch.Tensor, options: dict) -> torch.Tensor:
        return sample_from_planes(planes, coords, options["box_warp"])

    def run_model(self, planes: torch.Tensor, decoder: nn.Module, coords: torch.Tensor, dirs: torch.Tensor, options: dict) -> dict:
        out = decoder(self.sample_planes(planes, coords, options), dirs)
        if self.triplane_crop:
            out["sigma"] = torch.where(crop_mask(coords, self.triplane_crop, options["box_warp"]), torch.full_like(out["sigma"], -1e3), out["sigma"])
        return out

    def forward(self, planes: torch.Tensor, decoder: nn.Module, origins: torch.Tensor, dirs: torch.Tensor, options: dict,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n, m, _ = origins.shape
        d_res = options["depth_resolution"]
        if options.get("disparity_space_sampling", False):
            raise ValueError("disparity-space sampling is not implemented (no face generator uses it)")
        if options["ray_start"] == options["ray_end"] == "auto":
            start, end = ray_limits_box(origins, dirs, options["box_warp"])
            valid = end > start
            if torch.any(valid).item():
                start[~valid] = start[valid].min()
                end[~valid] = start[valid].max()
            t = torch.linspace(0, 1, d_res, device=origins.device, dtype=start.dtype)
            depths = (start[None] + t.reshape(-1, 1, 1, 1) * (end - start)[None]).permute(1, 2, 0, 3)
            delta = (end - start) / (d_res - 1)
            depths = depths + torch.rand(depths.shape, device=depths.device, generator=generator) * delta[..., None]
        else:
            rs, re = float(options["ray_start"]), float(options["ray_end"])
            depths = torch.linspace(rs, re, d_res, device=origins.device).reshape(1, 1, d_res, 1).repeat(n, m, 1, 1)
            depths = depths + torch.rand(depths.shape, device=depths.device, generator=generator) * ((re - rs) / (d_res - 1))
        colors, densities = self._eval(planes, decoder, origins, dirs, depths, options)
        n_imp = options.get("depth_resolution_importance", 0)
        if n_imp > 0:
            _, _, weights = ray_march(colors, densities, depths, options, self.signed)
            fine = self._importance(depths, weights, n_imp, generator)
            colors_f, densities_f = self._eval(planes, decoder, origins, dirs, fine, options)
            depths = torch.cat([depths, fine], dim=-2)
            colors = torch.cat([colors, colors_f], dim=-2)
            densities = torch.cat([densities, densities_f], dim=-2)
            _, idx = torch.sort(depths, dim=-2)
            depths = torch.gather(depths, -2, idx)
            colors = torch.gather(colors, -2, idx.expand(-1, -1, -1, colors.shape[-1]))
            densities = torch.gather(densities, -2, idx.expand(-1, -1, -1, 1))
        rgb, depth, weights = ray_march(colors, densities, depths, options, self.signed)
        return rgb, depth, weights.sum(2)

    def _eval(self, planes, decoder, origins, dirs, depths, options):
        n, m, s, _ = depths.shape
        coords = (origins.unsqueeze(-2) + depths * dirs.unsqueeze(-2)).reshape(n, -1, 3)
        sdirs = dirs.unsqueeze(-2).expand(-1, -1, s, -1).reshape(n, -1, 3)
        out = self.run_model(planes, decoder, coords, sdirs, options)
        return out["rgb"].reshape(n, m, s, -1), out["sigma"].reshape(n, m, s, 1)

    @staticmethod
    def _importance(depths: torch.Tensor, weights: torch.Tensor, n_imp: int, generator: torch.Generator | None) -> torch.Tensor:
        with torch.no_grad():
            n, m, s, _ = depths.shape
            z = depths.reshape(n * m, s)
            w = weights.reshape(n * m, -1).unsqueeze(1).float()
            w = F.avg_pool1d(F.max_pool1d(w, 2, 1, padding=1), 2, 1).squeeze(1) + 0.01
            mids = 0.5 * (z[:, :-1] + z[:, 1:])
            return sample_pdf(mids, w[:, 1:-1], n_imp, generator).detach().reshape(n, m, n_imp, 1)


# EG3D's super-resolution modules: (input resolution, resize only when smaller?, antialias?, blocks
# as (in, out, resolution, upsample?), has a resample_filter buffer). Widths and w_dim 512 are fixed.
SR_SPECS: dict[str, tuple[int, bool, bool, tuple[tuple[int, int, int, int], ...], bool]] = {
    "SuperresolutionHybrid8X": (128, False, True, ((32, 128, 256, 2), (128, 64, 512, 2)), True),
    "SuperresolutionHybrid8XDC": (128, False, True, ((32, 256, 256, 2), (256, 128, 512, 2)), False),
    "SuperresolutionHybrid4X": (128, True, True, ((32, 128, 128, 1), (128, 64, 256, 2)), True),
    "SuperresolutionHybrid2X": (64, False, True, ((32, 128, 64, 1), (128, 64, 128, 2)), True),
    "SuperresolutionHybridDeepfp32": (128, True, False, ((32, 128, 128, 1), (128, 64, 256, 2)), True),
}


class Superresolution(nn.Module):
    """Upsample the raw render with two synthesis blocks, both driven by the last w (repeated)."""

    def __init__(self, kind: str, channels: int, img_resolution: int, sr_num_fp16_res: int, sr_antialias: bool = True,
                 **block_kwargs: Any) -> None:
        super().__init__()
        if kind not in SR_SPECS:
            raise ValueError(f"unknown super-resolution module {kind!r}; known: {', '.join(SR_SPECS)}")
        in_res, only_smaller, antialias, blocks, has_filter = SR_SPECS[kind]
        if blocks[-1][2] != img_resolution:
            raise ValueError(f"{kind} makes {blocks[-1][2]}² images, config asks for {img_resolution}²")
        if blocks[0][0] != channels:
            raise ValueError(f"{kind} takes {blocks[0][0]} feature channels, got {channels}")
        self.kind, self.input_resolution, self.only_smaller = kind, in_res, only_smaller
        self.sr_antialias = sr_antialias and antialias
        for k in ("num_fp16_res", "conv_clamp", "channel_base", "channel_max"):
            block_kwargs.pop(k, None)
        clamp = 256 if sr_num_fp16_res > 0 else None  # the official modules clamp exactly when they run in fp16
        for i, (cin, cout, res, up) in enumerate(blocks):
            setattr(self, f"block{i}", SynthesisBlock(cin, cout, w_dim=512, resolution=res, img_channels=3, is_last=i == len(blocks) - 1,
                                                      conv_clamp=clamp, up=up, **block_kwargs))
        if has_filter:
            self.register_buffer("resample_filter", setup_filter([1, 3, 3, 1]))

    def forward(self, rgb: torch.Tensor, x: torch.Tensor, ws: torch.Tensor, noise_mode: str = "none",
                generator: torch.Generator | None = None, **_: Any) -> torch.Tensor:
        ws = ws[:, -1:, :].repeat(1, 3, 1)
        size = x.shape[-1]
        if (size < self.input_resolution) if self.only_smaller else (size != self.input_resolution):
            kw = dict(size=(self.input_resolution, self.input_resolution), mode="bilinear", align_corners=False)
            if self.sr_antialias:
                kw["antialias"] = True
            x, rgb = F.interpolate(x, **kw), F.interpolate(rgb, **kw)
        x, rgb = self.block0(x, rgb, ws, noise_mode=noise_mode, generator=generator)
        x, rgb = self.block1(x, rgb, ws, noise_mode=noise_mode, generator=generator)
        return rgb


@dataclasses.dataclass
class GanRender:
    image: torch.Tensor  # (N, 3, S, S) super-resolved, in [−1, 1]
    image_raw: torch.Tensor  # (N, 3, R, R) the volume render's first three feature channels
    image_depth: torch.Tensor  # (N, 1, R, R)
    image_mask: torch.Tensor  # (N, 1, R, R) accumulated opacity
    features: torch.Tensor  # (N, 32, R, R)


class CameraConditionedGenerator(nn.Module):
    """What the EG3D family shares around its own ``planes``/``synthesis``: a StyleGAN2 ``backbone`` whose
    mapping is conditioned on the camera label (scaled by ``rendering_kwargs["c_scale"]``, or zeroed),
    and ``forward`` = mapping then synthesis."""

    backbone: nn.Module
    rendering_kwargs: dict

    @property
    def num_ws(self) -> int:
        return self.backbone.num_ws

    def mapping(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1.0, truncation_cutoff: int | None = None) -> torch.Tensor:
        if self.rendering_kwargs.get("c_gen_conditioning_zero", False):
            c = torch.zeros_like(c)
        return self.backbone.mapping(z, c * self.rendering_kwargs.get("c_scale", 0), truncation_psi=truncation_psi,
                                     truncation_cutoff=truncation_cutoff)

    def forward(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1.0, truncation_cutoff: int | None = None,
                neural_rendering_resolution: int | None = None, noise_mode: str = "const", generator: torch.Generator | None = None) -> GanRender:
        ws = self.mapping(z, c, truncation_psi, truncation_cutoff)
        return self.synthesis(ws, c, neural_rendering_resolution, noise_mode, generator)


class TriPlaneGenerator(CameraConditionedGenerator):
    """EG3D: z, camera label -> tri-planes -> volume render -> super-resolution."""

    plane_layout = (3, 32)  # planes × channels of the backbone output

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, img_resolution: int, img_channels: int, sr_num_fp16_res: int = 0,
                 mapping_kwargs: dict | None = None, rendering_kwargs: dict | None = None, sr_kwargs: dict | None = None,
                 **synthesis_kwargs: Any) -> None:
        super().__init__()
        rendering_kwargs = dict(rendering_kwargs or {})
        self.z_dim, self.c_dim, self.w_dim, self.img_resolution, self.img_channels = z_dim, c_dim, w_dim, img_resolution, img_channels
        self.renderer = self._make_renderer()
        self.backbone = StyleGAN2Backbone(z_dim, c_dim, w_dim, img_resolution=self._plane_resolution(), img_channels=self.plane_channels(),
                                          mapping_kwargs=mapping_kwargs, **synthesis_kwargs)
        kind = str(rendering_kwargs.get("superresolution_module", "")).rsplit(".", 1)[-1]
        self.superresolution = Superresolution(kind, channels=32, img_resolution=img_resolution, sr_num_fp16_res=sr_num_fp16_res,
                                               sr_antialias=rendering_kwargs.get("sr_antialias", True), **dict(sr_kwargs or {}))
        self.decoder = OSGDecoder(32, {"decoder_lr_mul": rendering_kwargs.get("decoder_lr_mul", 1), "decoder_output_dim": 32})
        self.neural_rendering_resolution = 64
        self.rendering_kwargs = rendering_kwargs

    def _make_renderer(self) -> ImportanceRenderer:
        return ImportanceRenderer()

    def _plane_resolution(self) -> int:
        return 256

    def plane_channels(self) -> int:
        return self.plane_layout[0] * self.plane_layout[1]

    def planes(self, ws: torch.Tensor, noise_mode: str = "const", generator: torch.Generator | None = None) -> torch.Tensor:
        """Backbone output shaped (N, planes, 32, H, W)."""
        p = self.backbone.synthesis(ws, noise_mode=noise_mode, generator=generator)
        return p.view(len(p), *self.plane_layout, p.shape[-2], p.shape[-1])

    def render_planes(self, planes: torch.Tensor, ws: torch.Tensor, c: torch.Tensor, neural_rendering_resolution: int | None = None,
                      generator: torch.Generator | None = None, sr_noise_mode: str | None = None) -> GanRender:
        """Volume-render ``planes`` from the cameras in the labels ``c`` (N, 25) and super-resolve."""
        res = neural_rendering_resolution or self.neural_rendering_resolution
        origins, dirs = sample_rays(c[:, :16].view(-1, 4, 4), c[:, 16:25].view(-1, 3, 3), res)
        n = origins.shape[0]
        feats, depth, mask = self.renderer(planes, self.decoder, origins, dirs, self.rendering_kwargs, generator=generator)
        feature_image = feats.permute(0, 2, 1).reshape(n, feats.shape[-1], res, res).contiguous()
        depth_image = depth.permute(0, 2, 1).reshape(n, 1, res, res)
        mask_image = mask.permute(0, 2, 1).reshape(n, 1, res, res)
        rgb = feature_image[:, :3]
        mode = sr_noise_mode or self.rendering_kwargs.get("superresolution_noise_mode", "none")
        sr = self.superresolution(rgb, feature_image, ws, noise_mode=mode, generator=generator)
        return GanRender(sr, rgb, depth_image, mask_image, feature_image)

    def synthesis(self, ws: torch.Tensor, c: torch.Tensor, neural_rendering_resolution: int | None = None, noise_mode: str = "const",
                  generator: torch.Generator | None = None) -> GanRender:
        return self.render_planes(self.planes(ws, noise_mode, generator), ws, c, neural_rendering_resolution, generator)


def eg3d_ffhq_kwargs(img_resolution: int = 512) -> dict:
    """Constructor kwargs of EG3D's FFHQ generator (the settings of the official ``--cfg=ffhq`` training
    config, which the released FFHQ checkpoints use); for a checkpoint without recorded kwargs."""
    sr = {512: "SuperresolutionHybrid8XDC", 256: "SuperresolutionHybrid4X", 128: "SuperresolutionHybrid2X"}
    if img_resolution not in sr:
        raise ValueError(f"EG3D has super-resolution modules for 128, 256 and 512, not {img_resolution}")
    rendering = {
        "image_resolution": img_resolution, "disparity_space_sampling": False, "clamp_mode": "softplus",
        "superresolution_module": f"training.superresolution.{sr[img_resolution]}", "c_gen_conditioning_zero": False,
        "c_scale": 1.0, "superresolution_noise_mode": "none", "decoder_lr_mul": 1.0, "sr_antialias": True,
        "depth_resolution": 48, "depth_resolution_importance": 48, "ray_start": 2.25, "ray_end": 3.3, "box_warp": 1,
        "avg_camera_radius": 2.7, "avg_camera_pivot": [0, 0, 0.2],
    }
    return {"z_dim": 512, "c_dim": 25, "w_dim": 512, "img_resolution": img_resolution, "img_channels": 3, "sr_num_fp16_res": 4,
            "mapping_kwargs": {"num_layers": 2}, "rendering_kwargs": rendering, "channel_base": 32768, "channel_max": 512,
            "num_fp16_res": 0, "conv_clamp": None, "fused_modconv_default": "inference_only",
            "sr_kwargs": {"channel_base": 32768, "channel_max": 512, "fused_modconv_default": "inference_only"}}

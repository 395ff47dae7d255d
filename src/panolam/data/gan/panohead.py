"""PanoHead and SphereHead generators, inference only: EG3D's pipeline with 360° changes.

Our own implementation of the published architectures (An et al., "PanoHead: Geometry-Aware 3D
Full-Head Synthesis in 360°"; Li et al., "SphereHead: Stable 3D Full-head Synthesis with Spherical
Tri-plane Representation"), with the official module names so official state dicts load unchanged.
What differs from :mod:`panolam.data.gan.eg3d`:

* **PanoHead** — a *tri-grid*: each of the three planes has ``triplane_depth`` (D) feature slices,
  sampled trilinearly at (x, y, z), (x, z, y) and (y, z, x); planes of ``triplane_size``. The
  decoder's colour activation is configurable (``sigmoid`` as EG3D, ``lrelu``, ``none``); with
  sigmoid the composited features are scaled to [−1, 1] after marching. A separate background
  StyleGAN2 synthesis network (half the channel base, at the SR input resolution, fed the first
  ws) fills ``(1 − opacity)``; an optional ToRGB layer makes the raw image from the features. The
  renderer crops density outside |x|, |z| ≤ 0.4 (``triplane_crop`` 0.1). A pose-offset mapping
  network ``t_mapping`` exists in the checkpoints but is unused when sampling (as in the official
  sampling scripts), so it is built only to hold its weights.
* **SphereHead** — the backbone emits 512 channels; two 1×1 convolution heads (``ConvA``,
  ``ConvB``) make the two spheres' three planes each, sampled in spherical coordinates (θ, φ, r)
  of two rotated frames and blended with cosine weights (see :mod:`panolam.geometry.triplane`,
  whose layout (B, 6, C, H, W) the stored teacher planes use). Optional parsing head ``toparsing``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from panolam.data.gan.eg3d import CameraConditionedGenerator, GanRender, ImportanceRenderer, Superresolution, sample_rays
from panolam.data.gan.stylegan2 import Conv2dLayer, FullyConnectedLayer, MappingNetwork, StyleGAN2Backbone, SynthesisNetwork, ToRGBLayer


class OSGDecoder(nn.Module):
    """EG3D's decoder with PanoHead's choice of colour activation."""

    def __init__(self, n_features: int, options: dict) -> None:
        super().__init__()
        self.hidden_dim = 64
        self.activation = options.get("decoder_activation", "sigmoid")
        if self.activation not in ("sigmoid", "lrelu", "none"):
            raise ValueError(f"decoder_activation must be sigmoid, lrelu or none, got {self.activation!r}")
        lr = options.get("decoder_lr_mul", 1)
        self.net = nn.Sequential(FullyConnectedLayer(n_features, self.hidden_dim, lr_multiplier=lr), nn.Softplus(),
                                 FullyConnectedLayer(self.hidden_dim, 1 + options["decoder_output_dim"], lr_multiplier=lr))

    def forward(self, sampled_features: torch.Tensor, ray_directions: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        x = sampled_features.mean(1)
        n, m, c = x.shape
        x = self.net(x.reshape(n * m, c)).reshape(n, m, -1)
        rgb = x[..., 1:]
        if self.activation == "sigmoid":
            rgb = torch.sigmoid(rgb) * (1 + 2 * 0.001) - 0.001
        elif self.activation == "lrelu":
            rgb = F.leaky_relu(rgb, 0.2) * math.sqrt(2)
        return {"rgb": rgb, "sigma": x[..., 0:1]}


def sample_from_trigrid(planes: torch.Tensor, coordinates: torch.Tensor, box_warp: float, depth: int) -> torch.Tensor:
    """Features (N, 3, M, C) of a tri-grid (N, 3, C·D, H, W) at points (N, M, 3)."""
    n, p, cd, h, w = planes.shape
    m = coordinates.shape[1]
    x = (2 / box_warp) * coordinates
    grid = torch.stack([x, x[..., [0, 2, 1]], x[..., [1, 2, 0]]], dim=1).reshape(n * p, 1, 1, m, 3)
    out = F.grid_sample(planes.reshape(n * p, cd // depth, depth, h, w), grid.float(), mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.permute(0, 4, 3, 2, 1).reshape(n, p, m, cd // depth)


def _rot(axis: str, a: float) -> torch.Tensor:
    c, s = math.cos(a), math.sin(a)
    m = {"y": [[c, 0, s], [0, 1, 0], [-s, 0, c]], "z": [[c, -s, 0], [s, c, 0], [0, 0, 1]]}[axis]
    return torch.tensor(m, dtype=torch.float64)


# Sphere frames as SphereHead builds them (float64, transposed, then float32): A = roty(π/2)ᵀ, B = (roty(−π/2)·rotz(−π/2))ᵀ.
_ROT_A = _rot("y", math.pi / 2).T.float()
_ROT_B = (_rot("y", -math.pi / 2) @ _rot("z", -math.pi / 2)).T.float()


def _sample_ball(planes: torch.Tensor, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n, p, c, h, w = planes.shape
    m = coords.shape[1]
    radius = 2.0 * ((coords ** 2).sum(-1).sqrt() / math.sqrt(3)) - 1.0
    theta = 2.0 * (torch.atan2((coords[:, :, :2] ** 2).sum(-1).sqrt(), coords[:, :, 2]) / math.pi) - 1.0
    phi = torch.atan2(coords[:, :, 1], coords[:, :, 0]) / math.pi
    wgt = ((1.0 + torch.cos(torch.pi * theta)) / 2.0 * ((1.0 + torch.cos(torch.pi * phi)) / 2.0)).view(n, 1, m, 1).expand(-1, p, -1, c)
    grid = torch.stack([torch.stack([theta, phi], -1), torch.stack([theta, radius], -1), torch.stack([phi, radius], -1)], 1)
    out = F.grid_sample(planes.reshape(n * p, c, h, w), grid.reshape(n * p, 1, m, 2).float(), mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.permute(0, 3, 2, 1).reshape(n, p, m, c), wgt


def sample_from_spheres(planes: torch.Tensor, coordinates: torch.Tensor, box_warp: float) -> torch.Tensor:
    """Fused features (N, 3, M, C) of SphereHead's two spheres (N, 2, 3, C, H, W) at points (N, M, 3)."""
    x = (2 / box_warp) * coordinates
    fa, wa = _sample_ball(planes[:, 0], x @ _ROT_A.to(x.device))
    fb, wb = _sample_ball(planes[:, 1], x @ _ROT_B.to(x.device))
    return (fa * wa + fb * wb) / (wa + wb + 1.0e-8)


class TriGridRenderer(ImportanceRenderer):
    def sample_planes(self, planes: torch.Tensor, coords: torch.Tensor, options: dict) -> torch.Tensor:
        return sample_from_trigrid(planes, coords, options["box_warp"], options.get("triplane_depth", 1))


class SphereRenderer(ImportanceRenderer):
    def sample_planes(self, planes: torch.Tensor, coords: torch.Tensor, options: dict) -> torch.Tensor:
        return sample_from_spheres(planes, coords, options["box_warp"])


class PanoHeadGenerator(CameraConditionedGenerator):
    """PanoHead: z, camera label -> tri-grid -> volume render (+ background) -> super-resolution."""

    spherical = False

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, img_resolution: int, img_channels: int, sr_num_fp16_res: int = 0,
                 mapping_kwargs: dict | None = None, rendering_kwargs: dict | None = None, sr_kwargs: dict | None = None,
                 parsing_flag: bool = False, **synthesis_kwargs: Any) -> None:
        super().__init__()
        rk = dict(rendering_kwargs or {})
        mapping_kwargs = dict(mapping_kwargs or {})
        self.z_dim, self.c_dim, self.w_dim, self.img_resolution, self.img_channels = z_dim, c_dim, w_dim, img_resolution, img_channels
        self.depth = int(rk.get("triplane_depth", 1))
        self.renderer = (SphereRenderer if self.spherical else TriGridRenderer)(triplane_crop=0.1, signed=False)
        out_ch = 512 if self.spherical else 32 * 3 * self.depth
        self.backbone = StyleGAN2Backbone(z_dim, c_dim, w_dim, img_resolution=rk["triplane_size"], img_channels=out_ch,
                                          mapping_kwargs=mapping_kwargs, **synthesis_kwargs)
        if self.spherical:
            for name in ("ConvA", "ConvB"):
                setattr(self, name, nn.Sequential(Conv2dLayer(512, 256, kernel_size=1, bias=False),
                                                  Conv2dLayer(256, 32 * self.depth, kernel_size=1, bias=False)))
        kind = str(rk.get("superresolution_module", "")).rsplit(".", 1)[-1]
        self.superresolution = Superresolution(kind, channels=32, img_resolution=img_resolution, sr_num_fp16_res=sr_num_fp16_res,
                                               sr_antialias=rk.get("sr_antialias", True), **dict(sr_kwargs or {}))
        self.decoder = OSGDecoder(32, {"decoder_lr_mul": rk.get("decoder_lr_mul", 1), "decoder_output_dim": 32,
                                       "decoder_activation": rk.get("decoder_activation", "sigmoid")})
        self.torgb = ToRGBLayer(32, 3, w_dim) if rk.get("use_torgb_raw", False) else None
        self.bcg_synthesis = None
        if rk.get("use_background", False):
            bk = dict(synthesis_kwargs)
            bk["channel_base"] = bk.get("channel_base", 32768) // 2
            self.bcg_synthesis = SynthesisNetwork(w_dim, img_resolution=self.superresolution.input_resolution, img_channels=32, **bk)
        # Pose-offset mapping of PanoHead's training; unused when sampling, built to hold its weights.
        self.t_mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=3, num_ws=1, last_activation="linear", lr_multiplier=1.0, **mapping_kwargs)
        self.parsing_flag = parsing_flag
        if parsing_flag:
            self.toparsing = ToRGBLayer(32, 20, w_dim)
        self.neural_rendering_resolution = 64
        self.rendering_kwargs = rk

    def planes(self, ws: torch.Tensor, noise_mode: str = "const", generator: torch.Generator | None = None) -> torch.Tensor:
        """PanoHead: (N, 3, 32·D, H, W); SphereHead: (N, 2, 3, 32, H, W) (sphere, plane, channel)."""
        p = self.backbone.synthesis(ws, noise_mode=noise_mode, generator=generator)
        if self.spherical:
            shape = (len(p), 1, self.depth, 32, p.shape[-2], p.shape[-1])
            return torch.cat([self.ConvA(p).view(shape), self.ConvB(p).view(shape)], 1)
        return p.view(len(p), 3, 32 * self.depth, p.shape[-2], p.shape[-1])

    def render_planes(self, planes: torch.Tensor, ws: torch.Tensor, c: torch.Tensor, neural_rendering_resolution: int | None = None,
                      generator: torch.Generator | None = None, sr_noise_mode: str | None = None, noise_mode: str = "const",
                      with_background: bool = True) -> GanRender:
        res = neural_rendering_resolution or self.neural_rendering_resolution
        rk = self.rendering_kwargs
        origins, dirs = sample_rays(c[:, :16].view(-1, 4, 4), c[:, 16:25].view(-1, 3, 3), res)
        n = origins.shape[0]
        feats, depth, weights = self.renderer(planes, self.decoder, origins, dirs, rk, generator=generator)
        feature_image = feats.permute(0, 2, 1).reshape(n, feats.shape[-1], res, res).contiguous()
        depth_image = depth.permute(0, 2, 1).reshape(n, 1, res, res)
        weights = weights.permute(0, 2, 1).reshape(n, 1, res, res)
        if self.decoder.activation == "sigmoid":
            feature_image = feature_image * 2 - 1
        if self.bcg_synthesis is not None and with_background:
            nb = self.bcg_synthesis.num_ws
            ws_bcg = ws[:, :nb]
            if ws_bcg.size(1) < nb:
                ws_bcg = torch.cat([ws_bcg, ws_bcg[:, -1:].repeat(1, nb - ws_bcg.size(1), 1)], 1)
            bcg = self.bcg_synthesis(ws_bcg, noise_mode=noise_mode, generator=generator)
            bcg = F.interpolate(bcg, size=feature_image.shape[2:], mode="bilinear", align_corners=False, antialias=rk.get("sr_antialias", True))
            feature_image = feature_image + (1 - weights) * bcg
        rgb = self.torgb(feature_image, ws[:, -1]).float() if self.torgb is not None else feature_image[:, :3]
        mode = sr_noise_mode or rk.get("superresolution_noise_mode", "none")
        sr = self.superresolution(rgb, feature_image, ws, noise_mode=mode, generator=generator)
        return GanRender(sr, rgb, depth_image, weights * (1 + 2 * 0.001) - 0.001, feature_image)

    def synthesis(self, ws: torch.Tensor, c: torch.Tensor, neural_rendering_resolution: int | None = None, noise_mode: str = "const",
                  generator: torch.Generator | None = None) -> GanRender:
        return self.render_planes(self.planes(ws, noise_mode, generator), ws, c, neural_rendering_resolution, generator, noise_mode=noise_mode)


class SphereHeadGenerator(PanoHeadGenerator):
    """SphereHead: PanoHead with two spherical tri-planes made by 1×1 heads from a 512-channel backbone."""

    spherical = True


def full_size_kwargs() -> dict:
    """Constructor kwargs of a 512² PanoHead/SphereHead generator with PanoHead's documented training
    settings (tri-grid depth 3 on 256² planes, ToRGB raw image, no decoder activation, background
    network); for a checkpoint without recorded kwargs."""
    from panolam.data.gan.eg3d import eg3d_ffhq_kwargs

    kw = eg3d_ffhq_kwargs(512)
    kw["rendering_kwargs"].update(triplane_size=256, triplane_depth=3, decoder_activation="none", use_torgb_raw=True, use_background=True)
    return kw

"""Spherical tri-plane branch (paper §3.3, eqs. 5–6; DESIGN §2).

Learnable query tokens, one per tri-plane cell (6·H_T·W_T of width C_t, plus a fixed sinusoidal
embedding of plane index and cell position so cells start distinguishable), pass L_AT transformer
blocks that cross-attend to F_I; an MLP maps them to C_st channels -> planes (B, 6, C_st, H_T, W_T)
in SphereHead's dual-spherical layout (sphere A planes 0..2, sphere B planes 3..5). With
``triplane_upsample=u > 1`` (CPU preset only) each token covers u×u cells: 6·(H_T/u)² tokens, and the
MLP emits u²·C_st values per token that are unfolded into its cells.

Multi-layer ray aggregation: for each dense point, rays from ``ray_cameras`` virtual cameras
(front, left, right, back at radius ``ray_camera_radius``) through the point are sampled
``ray_samples`` times in an interval of length ``ray_interval`` centred on the point; the tri-plane
features of all cameras × samples are concatenated and an MLP gives F_T (width C_t). With
``ray_aggregation=False`` (ablation "w/o ST ray agg.") only the point itself is queried.

Memory: at paper size the 24,576 query tokens make self-attention the heaviest part of the network.
SDPA's fused kernels keep it at O(N·C) memory; the aggregation query holds B·M_D·K·S·C_st floats
(1·10,000·4·32·32 ≈ 164 MB at paper size) plus the same again for its gradient while training.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from panolam.config.model import ModelConfig
from panolam.model.blocks import BlockStack


def _sincos(pos: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer sinusoidal embedding of positions (N,) -> (N, dim) (dim even)."""
    freqs = torch.exp(-math.log(10000.0) * torch.arange(dim // 2, dtype=torch.float32) / max(dim // 2, 1))
    angles = pos.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


def triplane_position_embedding(res: int, dim: int) -> torch.Tensor:
    """(6·res·res, dim): a third of the channels for the plane index, a third each for row and column."""
    d = (dim // 6) * 2  # even share per coordinate
    plane, row, col = torch.meshgrid(torch.arange(6), torch.arange(res), torch.arange(res), indexing="ij")
    emb = torch.cat([_sincos(plane.flatten() * res / 6.0, d), _sincos(row.flatten(), d), _sincos(col.flatten(), d)], dim=-1)
    return torch.nn.functional.pad(emb, (0, dim - emb.shape[-1]))


class TriplaneBranch(nn.Module):
    """Image tokens -> spherical tri-planes; planes + points -> aggregated tri-plane features F_T."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.triplane_layout != "spherehead":
            raise ValueError(f"model.triplane_layout={cfg.triplane_layout!r} is not supported; use 'spherehead'")
        up = cfg.triplane_upsample
        if up < 1 or cfg.triplane_res % up:
            raise ValueError(f"model.triplane_upsample={up} must be >= 1 and divide triplane_res={cfg.triplane_res}")
        self.res, self.channels, self.box_warp, self.up = cfg.triplane_res, cfg.triplane_channels, cfg.box_warp, up
        self.ray_aggregation = cfg.ray_aggregation
        self.num_samples, self.interval = cfg.ray_samples, cfg.ray_interval
        side = cfg.triplane_res // up
        self.queries = nn.Parameter(torch.randn(6 * side * side, cfg.c_t) * 0.02)
        self.register_buffer("pos_embed", triplane_position_embedding(side, cfg.c_t), persistent=False)
        self.blocks = BlockStack(cfg.triplane_blocks, cfg.c_t, cfg.heads, cfg.mlp_ratio)
        self.to_planes = nn.Sequential(
            nn.Linear(cfg.c_t, cfg.c_t), nn.GELU(), nn.Linear(cfg.c_t, cfg.triplane_channels * up * up)
        )
        if cfg.ray_aggregation:
            from panolam.geometry.triplane import virtual_camera_centers

            self.register_buffer(
                "ray_centers", virtual_camera_centers(cfg.ray_cameras, cfg.ray_camera_radius).float(), persistent=False
            )
            in_dim = cfg.ray_cameras * cfg.ray_samples * cfg.triplane_channels
        else:
            in_dim = cfg.triplane_channels
        self.aggregate_mlp = nn.Sequential(nn.Linear(in_dim, cfg.c_t), nn.GELU(), nn.Linear(cfg.c_t, cfg.c_t))

    def planes(self, image_tokens: torch.Tensor) -> torch.Tensor:
        """F_I (B, N_I, C_t) -> planes (B, 6, C_st, H_T, W_T)."""
        b = image_tokens.shape[0]
        x = (self.queries + self.pos_embed).unsqueeze(0).expand(b, -1, -1)
        x = self.to_planes(self.blocks(x, image_tokens))  # (B, 6·h·w, u·u·C_st), h = w = H_T / u
        side, u = self.res // self.up, self.up
        x = x.view(b, 6, side, side, u, u, self.channels)  # token row, token col, cell row, cell col
        return x.permute(0, 1, 6, 2, 4, 3, 5).reshape(b, 6, self.channels, self.res, self.res)

    def aggregate(self, planes: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Planes and points (B, N, 3) -> F_T (B, N, C_t) (eq. 6, or the single-point ablation)."""
        from panolam.geometry.triplane import query_spherical_triplane, ray_sample_points

        b, n, _ = points.shape
        if not self.ray_aggregation:
            return self.aggregate_mlp(query_spherical_triplane(planes, points, self.box_warp))
        samples = ray_sample_points(points, self.ray_centers.to(points.dtype), self.num_samples, self.interval)
        feats = query_spherical_triplane(planes, samples.reshape(b, -1, 3), self.box_warp)  # (B, N·K·S, C)
        return self.aggregate_mlp(feats.reshape(b, n, -1))

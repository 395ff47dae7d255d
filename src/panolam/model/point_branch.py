"""Point branch (paper §3.2, eqs. 2–3): template points -> NeRF positional encoding γ -> MLP to C_t
(F_P0) -> L_A transformer blocks that cross-attend to the image tokens F_I -> point features F_P,
and the coarse Gaussian head whose offsets (|O| ≤ ε_OC) move the template vertices: p = V + O.
The same token path also serves the "w/o coarse-to-fine" ablation, run over dense template points.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from panolam.config.model import ModelConfig
from panolam.model.blocks import BlockStack
from panolam.model.heads import GaussianHead, GaussianParams


def positional_encoding(x: torch.Tensor, freqs: int) -> torch.Tensor:
    """NeRF γ(x) = (x, sin(2^k π x), cos(2^k π x)) for k < freqs: (..., 3) -> (..., 3 + 6·freqs)."""
    if freqs == 0:
        return x
    scales = (2.0 ** torch.arange(freqs, device=x.device, dtype=x.dtype)) * math.pi
    angles = (x.unsqueeze(-1) * scales).flatten(-2)  # (..., 3·freqs), grouped per coordinate
    return torch.cat([x, torch.sin(angles), torch.cos(angles)], dim=-1)


def pe_dim(freqs: int) -> int:
    return 3 + 6 * freqs


class PointBranch(nn.Module):
    """Points (B, N, 3) and image tokens (B, N_I, C_t) -> point features (B, N, C_t) [+ coarse head]."""

    def __init__(self, cfg: ModelConfig, init_scale: float, with_head: bool = True) -> None:
        super().__init__()
        self.pe_freqs = cfg.pe_freqs
        self.embed = nn.Sequential(nn.Linear(pe_dim(cfg.pe_freqs), cfg.c_t), nn.GELU(), nn.Linear(cfg.c_t, cfg.c_t))
        self.blocks = BlockStack(cfg.point_blocks, cfg.c_t, cfg.heads, cfg.mlp_ratio)
        self.head = (
            GaussianHead(cfg.c_t, cfg.c_t, cfg.offset_coarse, cfg.scale_max, init_scale, cfg.head_layers)
            if with_head else None
        )

    def features(self, points: torch.Tensor, image_tokens: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        """F_P = A_L(... A_1(MLP(γ(points)) [+ extra], F_I) ..., F_I); ``extra`` (B, N, C_t) carries the
        pixel-aligned features of each point when the network has them."""
        x = self.embed(positional_encoding(points, self.pe_freqs))
        if extra is not None:
            x = x + extra
        return self.blocks(x, image_tokens)

    def forward(self, points: torch.Tensor, image_tokens: torch.Tensor,
                extra: torch.Tensor | None = None) -> tuple[torch.Tensor, GaussianParams]:
        if self.head is None:
            raise RuntimeError("this PointBranch was built without a coarse head (coarse_to_fine=False)")
        feats = self.features(points, image_tokens, extra)
        return feats, self.head(feats)

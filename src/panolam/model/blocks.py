"""The one transformer block both branches use (paper eqs. 2 and 5, DESIGN §2): a pre-norm decoder
layer — self-attention over the query tokens (points or tri-plane cells), cross-attention from them
to the image tokens F_I, then an MLP — each with a residual connection. Attention runs through
``torch.nn.functional.scaled_dot_product_attention``, which picks a fused kernel (flash / memory-
efficient on CUDA, a blocked kernel on CPU) so the N×N score matrix is never materialised; that is
what makes self-attention over the paper's 6×64×64 = 24,576 tri-plane tokens feasible (per block
it then costs O(N·C) activation memory instead of 16 heads × 24,576² × 4 B ≈ 39 GB of scores).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head attention of ``x`` to ``context`` (self-attention when ``context`` is ``x``)."""

    def __init__(self, dim: int, heads: int, context_dim: int | None = None) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"token width {dim} must be divisible by the number of heads {heads}")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(context_dim or dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        b, n, c = t.shape
        return t.view(b, n, self.heads, c // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        q = self._split(self.q(x))
        k, v = (self._split(t) for t in self.kv(context).chunk(2, dim=-1))
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(x.shape))


class TransformerBlock(nn.Module):
    """Pre-norm decoder layer: x += SelfAttn(LN x); x += CrossAttn(LN x, LN context); x += MLP(LN x)."""

    def __init__(self, dim: int, heads: int, context_dim: int | None = None, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        context_dim = context_dim or dim
        self.norm_self = nn.LayerNorm(dim)
        self.self_attn = Attention(dim, heads)
        self.norm_cross = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(context_dim)
        self.cross_attn = Attention(dim, heads, context_dim)
        self.norm_mlp = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        h = self.norm_self(x)
        x = x + self.self_attn(h, h)
        x = x + self.cross_attn(self.norm_cross(x), self.norm_context(context))
        return x + self.mlp(self.norm_mlp(x))


class BlockStack(nn.Module):
    """``depth`` TransformerBlocks attending to the same context, then a final LayerNorm."""

    def __init__(self, depth: int, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads, dim, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, context)
        return self.norm(x)

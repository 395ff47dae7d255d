"""A minimal DINOv2-layout ViT: same state-dict keys and same fp32 numerics as transformers'
``Dinov2Model`` (sdpa attention, no SwiGLU, no registers), without importing transformers.

Used for ``model.encoder="vit"`` when a checkpoint is about to overwrite every weight (loading a
saved model): importing transformers and building its Dinov2Model costs ~4 s of a cold
``panolam reconstruct`` on a 2-core CPU. Parameters are allocated uninitialised (``torch.empty``):
whoever builds this module must load a state dict into it.
"""
from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


@dataclasses.dataclass(frozen=True)
class ViTConfig:
    """The Dinov2Config fields the encoder reads (defaults as transformers' Dinov2Config)."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    patch_size: int
    image_size: int
    mlp_ratio: int = 4
    layer_norm_eps: float = 1e-6
    num_register_tokens: int = 0


class ViTOutput(NamedTuple):
    last_hidden_state: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None


def _empty(*shape: int) -> nn.Parameter:
    return nn.Parameter(torch.empty(*shape))


class _Linear(nn.Module):
    """``nn.Linear``'s parameters and forward, left uninitialised (no meta device: that imports sympy)."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.weight, self.bias = _empty(n_out, n_in), _empty(n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class _LayerNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight, self.bias, self.eps = _empty(dim), _empty(dim), eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class _Conv(nn.Module):
    """``nn.Conv2d(3, dim, p, stride=p)``: patchify."""

    def __init__(self, dim: int, patch: int) -> None:
        super().__init__()
        self.weight, self.bias, self.stride = _empty(dim, 3, patch, patch), _empty(dim), patch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, stride=self.stride)


class _PatchEmbeddings(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.patch_size = (cfg.patch_size, cfg.patch_size)
        self.projection = _Conv(cfg.hidden_size, cfg.patch_size)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.projection(pixels).flatten(2).transpose(1, 2)


class _Embeddings(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        grid = cfg.image_size // cfg.patch_size
        self.cls_token = _empty(1, 1, cfg.hidden_size)
        self.mask_token = _empty(1, cfg.hidden_size)
        self.patch_embeddings = _PatchEmbeddings(cfg)
        self.position_embeddings = _empty(1, grid * grid + 1, cfg.hidden_size)

    def interpolate_pos_encoding(self, embeddings: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """The position table, bicubically resampled (in fp32) when the patch grid differs, as Dinov2 does."""
        num_patches = embeddings.shape[1] - 1
        num_positions = self.position_embeddings.shape[1] - 1
        if num_patches == num_positions and height == width:
            return self.position_embeddings
        cls_pos, patch_pos = self.position_embeddings[:, :1], self.position_embeddings[:, 1:]
        dim = embeddings.shape[-1]
        side = int(math.sqrt(num_positions))
        ph, pw = self.patch_embeddings.patch_size
        patch_pos = patch_pos.reshape(1, side, side, dim).permute(0, 3, 1, 2)
        dtype = patch_pos.dtype
        patch_pos = F.interpolate(patch_pos.to(torch.float32), size=(height // ph, width // pw), mode="bicubic",
                                  align_corners=False).to(dtype=dtype)
        return torch.cat((cls_pos, patch_pos.permute(0, 2, 3, 1).view(1, -1, dim)), dim=1)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        _, _, height, width = pixels.shape
        tokens = self.patch_embeddings(pixels)
        tokens = torch.cat((self.cls_token.expand(tokens.shape[0], -1, -1), tokens), dim=1)
        return tokens + self.interpolate_pos_encoding(tokens, height, width)


class _Attention(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.heads = cfg.num_attention_heads
        self.head_dim = d // self.heads
        self.scaling = self.head_dim ** -0.5
        self.q_proj = _Linear(d, d)
        self.k_proj = _Linear(d, d)
        self.v_proj = _Linear(d, d)
        self.o_proj = _Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (*x.shape[:-1], -1, self.head_dim)
        q, k, v = (p(x).view(shape).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, scale=self.scaling, is_causal=False)
        return self.o_proj(out.transpose(1, 2).contiguous().reshape(*x.shape[:-1], -1).contiguous())


class _LayerScale(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.lambda1 = _empty(cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.lambda1


class _MLP(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        hidden = int(cfg.hidden_size * cfg.mlp_ratio)
        self.fc1 = _Linear(cfg.hidden_size, hidden)
        self.fc2 = _Linear(hidden, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _Layer(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.norm1 = _LayerNorm(cfg.hidden_size, cfg.layer_norm_eps)
        self.attention = _Attention(cfg)
        self.layer_scale1 = _LayerScale(cfg)
        self.norm2 = _LayerNorm(cfg.hidden_size, cfg.layer_norm_eps)
        self.mlp = _MLP(cfg)
        self.layer_scale2 = _LayerScale(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer_scale1(self.attention(self.norm1(x))) + x
        return self.layer_scale2(self.mlp(self.norm2(x))) + x


class _Encoder(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer(cfg) for _ in range(cfg.num_hidden_layers))


class MiniViT(nn.Module):
    """``Dinov2Model``'s forward for the encoder: ``model(pixel_values=..., output_hidden_states=True)``
    returns ``hidden_states`` = (embedding output, output of block 1, ..., block N) and the
    final-LayerNorm'd ``last_hidden_state``. Weights start uninitialised: load a state dict."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embeddings = _Embeddings(cfg)
        self.encoder = _Encoder(cfg)
        self.layernorm = _LayerNorm(cfg.hidden_size, cfg.layer_norm_eps)

    def forward(self, pixel_values: torch.Tensor, output_hidden_states: bool = False) -> ViTOutput:
        x = self.embeddings(pixel_values)
        states = [x]
        for layer in self.encoder.layer:
            x = layer(x)
            states.append(x)
        return ViTOutput(self.layernorm(x), tuple(states) if output_hidden_states else None)

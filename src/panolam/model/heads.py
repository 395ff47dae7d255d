"""The Gaussian decoder head D (paper eqs. 3 and 4), one class for the coarse and the dense stage.

A 3-layer MLP maps each point feature to 14 raw numbers which are activated in one place:
colour (3, sigmoid -> [0, 1]), opacity (1, sigmoid -> (0, 1)), scale (3, ``scale_min + (scale_max -
scale_min)·sigmoid`` -> bounded, linear units), rotation (4, normalised quaternion wxyz) and position
offset (3, ``eps·tanh`` -> |O| ≤ eps, with eps = ε_OC for the coarse and ε_OD for the dense stage).
The last layer starts with small weights and biases chosen so that an untrained network already
renders a head-shaped blob: grey colour, opacity ``init_opacity``, scale ``init_scale`` (about the
mean template edge length), identity rotation and near-zero offsets.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

SCALE_MIN = 1e-4  # lower bound on every Gaussian standard deviation (world units)
_SPLIT = (3, 1, 3, 4, 3)  # colour, opacity, scale, quaternion, offset


@dataclasses.dataclass
class GaussianParams:
    """Activated per-point attributes of one stage; offsets are added to the point positions."""

    colors: torch.Tensor  # (..., N, 3) in [0, 1]
    opacities: torch.Tensor  # (..., N) in (0, 1)
    scales: torch.Tensor  # (..., N, 3) in [SCALE_MIN, scale_max]
    quats: torch.Tensor  # (..., N, 4) unit, wxyz
    offsets: torch.Tensor  # (..., N, 3), |offset| <= eps per component


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


class GaussianHead(nn.Module):
    """Point features (..., N, in_dim) -> :class:`GaussianParams`."""

    def __init__(self, in_dim: int, hidden: int, offset_max: float, scale_max: float, init_scale: float,
                 layers: int = 3, init_opacity: float = 0.7) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"head_layers must be >= 1, got {layers}")
        if scale_max <= SCALE_MIN:
            raise ValueError(f"scale_max={scale_max} must exceed the minimum Gaussian scale {SCALE_MIN}")
        self.offset_max = offset_max
        self.scale_max = scale_max
        dims = [in_dim] + [hidden] * (layers - 1)
        trunk: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            trunk += [nn.Linear(a, b), nn.GELU()]
        self.trunk = nn.Sequential(*trunk)
        self.out = nn.Linear(dims[-1], sum(_SPLIT))
        self._init_output(init_scale, init_opacity)

    def _init_output(self, init_scale: float, init_opacity: float) -> None:
        nn.init.normal_(self.out.weight, std=1e-3)
        ratio = min(max((init_scale - SCALE_MIN) / (self.scale_max - SCALE_MIN), 0.01), 0.99)
        bias = torch.zeros(sum(_SPLIT))
        bias[3] = _logit(init_opacity)
        bias[4:7] = _logit(ratio)
        bias[7] = 1.0  # quaternion w: identity rotation
        with torch.no_grad():
            self.out.bias.copy_(bias)

    def forward(self, features: torch.Tensor) -> GaussianParams:
        raw = self.out(self.trunk(features))
        color, opacity, scale, quat, offset = raw.split(_SPLIT, dim=-1)
        return GaussianParams(
            colors=torch.sigmoid(color),
            opacities=torch.sigmoid(opacity.squeeze(-1)),
            scales=SCALE_MIN + (self.scale_max - SCALE_MIN) * torch.sigmoid(scale),
            quats=torch.nn.functional.normalize(quat, dim=-1, eps=1e-8),
            offsets=self.offset_max * torch.tanh(offset),
        )

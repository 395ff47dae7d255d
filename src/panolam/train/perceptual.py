"""LPIPS-style perceptual distance that runs offline, without torchvision.

Standard LPIPS needs torchvision's ImageNet AlexNet/VGG trunks, which no package ships. The
``stlpips-pytorch==0.0.2`` wheel (BSD-2) ships *complete* shift-tolerant LPIPS (ST-LPIPS,
Ghildyal & Liu, ECCV 2022) weights — trunk and linear calibration — for AlexNet and VGG16. Its
Python modules import torchvision/IPython/torchsummary at top level, so we never import it: we
locate its installed weight files and load them into our own re-implementation of the two trunks
(both in :mod:`panolam.model.cnn_trunk`, shared with the ``"vgg"`` image encoder), where every
strided layer of the shift-tolerant variants becomes a stride-1 layer plus an anti-aliasing
blur-pool. A local file in the ``lpips`` package's layout (a full
``LPIPS.state_dict()``: vanilla AlexNet/VGG trunk ``net.sliceK.*`` + ``linK.model.1.weight``)
drops in through ``Perceptual(weights=path)``; the trunk kind is detected from its keys.
Reported numbers computed with the default are ST-LPIPS, not LPIPS.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# The trunks and the weight-file lookup live in the model package (the "vgg" image encoder uses them
# too); the names are re-exported here for callers of this module.
from panolam.model.cnn_trunk import (  # noqa: F401 - re-exported
    STLPIPS_FILES,
    STLPIPS_PACKAGE,
    BlurPool,
    Trunk,
    detect_lpips_kind,
    read_lpips_state,
    stlpips_weight_path,
    trunk_for,
)

MIN_SIDE = 32  # the shift-tolerant trunks reflect-pad by 2 after four halvings: smaller inputs are upsampled


class Perceptual(nn.Module):
    """Frozen LPIPS distance: ``Perceptual()(a, b)`` with images (B,3,H,W) in [0,1] returns (B,).

    ``weights=None`` loads the shipped ST-LPIPS weights for ``net`` ("alex" for the evaluation
    metric, "vgg" for the training loss); a path loads a local LPIPS state dict (kind detected).
    """

    def __init__(self, weights: str | Path | None = None, net: str = "alex") -> None:
        super().__init__()
        path = stlpips_weight_path(net) if weights is None else Path(weights)
        state = read_lpips_state(path)
        self.kind, self.shift_tolerant = detect_lpips_kind(state, str(path))
        self.source = str(path)
        self.net = trunk_for(self.kind, self.shift_tolerant)
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in self.net.channels)
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self._load(state, str(path))
        self.requires_grad_(False)
        self.eval()

    def _load(self, state: dict[str, torch.Tensor], source: str) -> None:
        mapped = {}
        for k, v in state.items():
            if k.startswith("lins."):
                continue  # the lpips package stores the linear layers twice (linK.* and lins.K.*)
            if k.startswith("lin"):
                idx = k[3:].split(".", 1)[0]
                mapped[f"lins.{idx}.weight"] = v
            elif k.startswith("scaling_layer."):
                mapped[k.removeprefix("scaling_layer.")] = v.reshape(1, 3, 1, 1)
            else:
                mapped[k] = v
        missing, unexpected = self.load_state_dict(mapped, strict=False)
        # Scaling constants are optional in a file (they are the same everywhere); everything else must be present.
        missing = [k for k in missing if k not in ("shift", "scale")]
        if missing or unexpected:
            raise ValueError(f"{source}: LPIPS weights do not fit the {self.kind} trunk: missing {missing}, unexpected {unexpected}")

    def train(self, mode: bool = True) -> "Perceptual":
        # Always frozen: dropout/batch-norm free, but keep eval() so a parent's .train() cannot change it.
        return super().train(False)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (2 * x - 1 - self.shift) / self.scale
        return self.net(x)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        side = min(x.shape[-2:])
        if side < MIN_SIDE:
            size = [max(MIN_SIDE, round(s * MIN_SIDE / side)) for s in x.shape[-2:]]
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x

    def target_features(self, b: torch.Tensor) -> list[torch.Tensor]:
        """Unit-normalised features of reference images (B,3,H,W), without gradient: compute them once and
        pass them as ``forward(a, target=...)`` for every image compared with the same references."""
        if b.ndim != 4 or b.shape[1] != 3:
            raise ValueError(f"Perceptual expects (B,3,H,W) images, got {tuple(b.shape)}")
        with torch.no_grad(), torch.autocast(b.device.type, enabled=False):
            return [_unit(f) for f in self.features(self._prepare(b))]

    def forward(self, a: torch.Tensor, b: torch.Tensor | None = None, target: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Distance of ``a`` to ``b``, or to references given by their :meth:`target_features`. A ``b`` that
        needs no gradient goes through the trunk without one (as :meth:`target_features`), so training
        keeps only ``a``'s activations for backward."""
        if (b is None) == (target is None):
            raise ValueError("Perceptual needs exactly one of b (images) or target (their target_features)")
        if b is not None and (a.shape != b.shape or a.ndim != 4 or a.shape[1] != 3):
            raise ValueError(f"Perceptual expects two (B,3,H,W) images of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
        if a.ndim != 4 or a.shape[1] != 3:
            raise ValueError(f"Perceptual expects (B,3,H,W) images, got {tuple(a.shape)}")
        a = self._prepare(a)
        with torch.autocast(a.device.type, enabled=False):
            if target is None and (b.requires_grad and torch.is_grad_enabled()):
                both = self.features(torch.cat([a, self._prepare(b)]))  # gradients to both inputs
                fa_all, fb_all = [f[: a.shape[0]] for f in both], [_unit(f[a.shape[0]:]) for f in both]
            else:
                fa_all = self.features(a)
                fb_all = self.target_features(b) if target is None else target
            if fb_all[0].shape != (a.shape[0], *fa_all[0].shape[1:]):
                raise ValueError(f"target features {tuple(fb_all[0].shape)} do not match images {tuple(a.shape)}")
            total = a.new_zeros(a.shape[0])
            for lin, f, fb in zip(self.lins, fa_all, fb_all):
                # lin((fa - fb)²) averaged over space = lin's weights · the spatial mean of (fa - fb)²: the
                # same sum regrouped, so backward keeps fa - fb only, not also its square.
                sq = (_unit(f) - fb).square().mean(dim=(2, 3))
                total = total + sq @ lin.weight.reshape(-1)
        return total


def _unit(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Channel-wise unit normalisation; the tiny term under the root keeps the gradient finite for all-zero features."""
    return f / (torch.sqrt((f * f).sum(dim=1, keepdim=True) + eps * eps) + eps)

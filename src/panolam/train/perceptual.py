"""LPIPS-style perceptual distance that runs offline, without torchvision.

Standard LPIPS needs torchvision's ImageNet AlexNet/VGG trunks, which no package ships. The
``stlpips-pytorch==0.0.2`` wheel (BSD-2) ships *complete* shift-tolerant LPIPS (ST-LPIPS,
Ghildyal & Liu, ECCV 2022) weights — trunk and linear calibration — for AlexNet and VGG16. Its
Python modules import torchvision/IPython/torchsummary at top level, so we never import it: we
locate its installed weight files with :func:`importlib.util.find_spec` and load them into our
own re-implementation of the two trunks. The shift-tolerant variants replace every strided
layer by a stride-1 layer followed by an anti-aliasing blur-pool (binomial [1,2,1]² filter,
reflect padding of 2, stride 2). A local file in the ``lpips`` package's layout (a full
``LPIPS.state_dict()``: vanilla AlexNet/VGG trunk ``net.sliceK.*`` + ``linK.model.1.weight``)
drops in through ``Perceptual(weights=path)``; the trunk kind is detected from its keys.
Reported numbers computed with the default are ST-LPIPS, not LPIPS.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

STLPIPS_PACKAGE = "stlpips_pytorch"
STLPIPS_FILES = {"alex": "weights/vST0.0/alex_shift_tolerant.pth", "vgg": "weights/vST0.0/vgg_shift_tolerant.pth"}
MIN_SIDE = 32  # the shift-tolerant trunks reflect-pad by 2 after four halvings: smaller inputs are upsampled

# Layer specs: ("conv", cin, cout, kernel, stride, pad) | ("relu",) | ("max", kernel, stride) | ("blur", channels).
# Indices in these lists are the module names inside the original Sequential, so state-dict keys match.
_ALEX_VANILLA = [("conv", 3, 64, 11, 4, 2), ("relu",), ("max", 3, 2), ("conv", 64, 192, 5, 1, 2), ("relu",), ("max", 3, 2),
                 ("conv", 192, 384, 3, 1, 1), ("relu",), ("conv", 384, 256, 3, 1, 1), ("relu",), ("conv", 256, 256, 3, 1, 1), ("relu",)]
_ALEX_VANILLA_CUTS = (2, 5, 8, 10, 12)
_ALEX_ST = [("conv", 3, 64, 11, 1, 2), ("blur", 64), ("relu",), ("max", 3, 1), ("blur", 64), ("conv", 64, 192, 5, 1, 2), ("relu",),
            ("max", 3, 1), ("blur", 192), ("conv", 192, 384, 3, 1, 1), ("relu",), ("conv", 384, 256, 3, 1, 1), ("relu",),
            ("conv", 256, 256, 3, 1, 1), ("relu",)]
_ALEX_ST_CUTS = (3, 7, 11, 13, 15)
_VGG_WIDTHS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


def _vgg_spec(shift_tolerant: bool) -> tuple[list[tuple], tuple[int, ...]]:
    """VGG16 conv trunk up to relu5_3; each "M" is max-pool 2/2, or max-pool 2/1 + blur-pool when shift tolerant."""
    spec: list[tuple] = []
    cuts: list[int] = []
    cin = 3
    for w in _VGG_WIDTHS:
        if w == "M":
            cuts.append(len(spec))
            spec += [("max", 2, 1), ("blur", cin)] if shift_tolerant else [("max", 2, 2)]
        else:
            spec += [("conv", cin, w, 3, 1, 1), ("relu",)]
            cin = w
    return spec, (*cuts, len(spec))


class BlurPool(nn.Module):
    """Anti-aliased downsampling: reflect-pad 2, depthwise [1,2,1]⊗[1,2,1]/16 filter, stride 2."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        a = torch.tensor([1.0, 2.0, 1.0])
        filt = (a[:, None] * a[None, :]) / 16.0
        self.register_buffer("filt", filt[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), self.filt, stride=2, groups=x.shape[1])


def _layer(spec: tuple) -> nn.Module:
    kind = spec[0]
    if kind == "conv":
        _, cin, cout, k, s, p = spec
        return nn.Conv2d(cin, cout, k, stride=s, padding=p)
    if kind == "relu":
        return nn.ReLU()
    if kind == "max":
        return nn.MaxPool2d(spec[1], stride=spec[2])
    return BlurPool(spec[1])


class Trunk(nn.Module):
    """Five feature slices ``slice1..slice5`` whose outputs feed the LPIPS linear layers."""

    def __init__(self, spec: list[tuple], cuts: tuple[int, ...]) -> None:
        super().__init__()
        start = 0
        for k, end in enumerate(cuts, 1):
            seq = nn.Sequential()
            for i in range(start, end):
                seq.add_module(str(i), _layer(spec[i]))
            self.add_module(f"slice{k}", seq)
            start = end
        self.channels = [next(s[2] for s in reversed(spec[:c]) if s[0] == "conv") for c in cuts]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for k in range(1, 6):
            x = getattr(self, f"slice{k}")(x)
            feats.append(x)
        return feats


def _trunk_for(kind: str, shift_tolerant: bool) -> Trunk:
    if kind == "alex":
        return Trunk(*( (_ALEX_ST, _ALEX_ST_CUTS) if shift_tolerant else (_ALEX_VANILLA, _ALEX_VANILLA_CUTS)))
    return Trunk(*_vgg_spec(shift_tolerant))


def stlpips_weight_path(net: str) -> Path:
    """Installed location of the ST-LPIPS weight file for ``net`` ("alex"/"vgg"), found without importing the package."""
    if net not in STLPIPS_FILES:
        raise ValueError(f"perceptual net must be 'alex' or 'vgg', got {net!r}")
    spec = importlib.util.find_spec(STLPIPS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"ST-LPIPS weights need the package 'stlpips-pytorch==0.0.2' (pip install --no-deps stlpips-pytorch==0.0.2), "
            "or pass a local LPIPS .pth file")
    for root in spec.submodule_search_locations:
        path = Path(root) / STLPIPS_FILES[net]
        if path.is_file():
            return path
    raise FileNotFoundError(f"stlpips-pytorch is installed but {STLPIPS_FILES[net]} is missing under {list(spec.submodule_search_locations)}")


def _detect(state: dict[str, torch.Tensor], source: str) -> tuple[str, bool]:
    """(trunk kind, shift tolerant) from the keys of an LPIPS state dict."""
    convs = [k for k in state if k.startswith("net.slice") and k.endswith(".weight")]
    if not convs or not any(k.startswith("lin0.") for k in state):
        raise ValueError(f"{source}: not an LPIPS state dict (need net.slice*.weight trunk keys and lin0..lin4 layers); "
                         "the lpips package's lin-only files need the torchvision trunk, which this project cannot load")
    kind = "alex" if len(convs) == 5 else "vgg" if len(convs) == 13 else None
    if kind is None:
        raise ValueError(f"{source}: {len(convs)} trunk conv layers; expected 5 (AlexNet) or 13 (VGG16)")
    return kind, any(k.endswith(".filt") for k in state)


class Perceptual(nn.Module):
    """Frozen LPIPS distance: ``Perceptual()(a, b)`` with images (B,3,H,W) in [0,1] returns (B,).

    ``weights=None`` loads the shipped ST-LPIPS weights for ``net`` ("alex" for the evaluation
    metric, "vgg" for the training loss); a path loads a local LPIPS state dict (kind detected).
    """

    def __init__(self, weights: str | Path | None = None, net: str = "alex") -> None:
        super().__init__()
        path = stlpips_weight_path(net) if weights is None else Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"LPIPS weight file not found: {path}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
        state = {k.removeprefix("module."): v for k, v in state.items()}
        self.kind, self.shift_tolerant = _detect(state, str(path))
        self.source = str(path)
        self.net = _trunk_for(self.kind, self.shift_tolerant)
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

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.shape != b.shape or a.ndim != 4 or a.shape[1] != 3:
            raise ValueError(f"Perceptual expects two (B,3,H,W) images of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
        a, b = a.float(), b.float()
        side = min(a.shape[-2:])
        if side < MIN_SIDE:
            size = [max(MIN_SIDE, round(s * MIN_SIDE / side)) for s in a.shape[-2:]]
            a = F.interpolate(a, size=size, mode="bilinear", align_corners=False)
            b = F.interpolate(b, size=size, mode="bilinear", align_corners=False)
        with torch.autocast(a.device.type, enabled=False):
            both = self.features(torch.cat([a, b]))
            total = a.new_zeros(a.shape[0])
            for lin, f in zip(self.lins, both):
                fa, fb = _unit(f[: a.shape[0]]), _unit(f[a.shape[0]:])
                total = total + lin((fa - fb) ** 2).mean(dim=(1, 2, 3))
        return total


def _unit(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Channel-wise unit normalisation; the tiny term under the root keeps the gradient finite for all-zero features."""
    return f / (torch.sqrt((f * f).sum(dim=1, keepdim=True) + eps * eps) + eps)

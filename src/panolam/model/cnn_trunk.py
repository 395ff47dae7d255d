"""Pretrained AlexNet / VGG16 convolutional trunks rebuilt without torchvision, and their weight files.

The only pretrained image weights available offline are the shift-tolerant LPIPS (ST-LPIPS, Ghildyal &
Liu, ECCV 2022) trunks inside the PyPI wheel ``stlpips-pytorch==0.0.2`` (BSD-2). Its Python modules
import torchvision/IPython/torchsummary at top level, so it is never imported: :func:`stlpips_weight_path`
finds its installed weight files with :func:`importlib.util.find_spec`, and :class:`Trunk` re-implements
the two architectures with the same module names, so the files' ``net.sliceK.*`` keys load directly.
The shift-tolerant variants replace every strided layer by a stride-1 layer followed by an anti-aliasing
:class:`BlurPool` (binomial [1,2,1]² filter, reflect padding of 2, stride 2). A file in the ``lpips``
package's layout (a full ``LPIPS.state_dict()``, vanilla or shift tolerant) works too; the trunk kind is
detected from its keys. Training memory: the max-pools recompute their argmax in backward instead of keeping an
int64 index map, and the blur-pools (linear in their input) keep no activation at all; the gradients are those of
the stock ops. Both the perceptual loss (``panolam.train.perceptual``) and the ``"vgg"`` image
encoder (``panolam.model.encoder``) build on this module, which keeps the model package free of
training imports.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from panolam.errors import PanoLAMError

STLPIPS_PACKAGE = "stlpips_pytorch"
STLPIPS_FILES = {"alex": "weights/vST0.0/alex_shift_tolerant.pth", "vgg": "weights/vST0.0/vgg_shift_tolerant.pth"}
TRUNK_PREFIX = "net."  # where an LPIPS state dict keeps its trunk

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


BLUR_PAD = (2, 2, 2, 2)


def _blur(x: torch.Tensor, filt: torch.Tensor) -> torch.Tensor:
    return F.conv2d(F.pad(x, BLUR_PAD, mode="reflect"), filt, stride=2, groups=x.shape[1])


class _BlurFunction(torch.autograd.Function):
    """:func:`_blur` with a fixed filter, differentiated w.r.t. the input only. The blur is linear in
    its input, so its backward needs no activation: autograd's own graph would keep the padded
    input (for the conv) and the unpadded one (for the pad's shape), two full feature maps per
    blur, alive until backward. Gradient: the conv's input-gradient, then the reflect pad's
    backward (the same ATen kernels autograd calls)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, filt: torch.Tensor) -> torch.Tensor:
        ctx.shape, ctx.padded = x.shape, (*x.shape[:2], x.shape[2] + 4, x.shape[3] + 4)
        ctx.save_for_backward(filt)
        return _blur(x, filt)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (filt,) = ctx.saved_tensors
        g_pad = torch.nn.grad.conv2d_input(ctx.padded, filt, grad, stride=2, groups=ctx.shape[1])
        like = g_pad.new_empty(ctx.shape)  # the pad's backward reads only the input's shape
        return torch.ops.aten.reflection_pad2d_backward(g_pad, like, list(BLUR_PAD)), None


class BlurPool(nn.Module):
    """Anti-aliased downsampling: reflect-pad 2, depthwise [1,2,1]⊗[1,2,1]/16 filter, stride 2."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        a = torch.tensor([1.0, 2.0, 1.0])
        filt = (a[:, None] * a[None, :]) / 16.0
        self.register_buffer("filt", filt[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad and not self.filt.requires_grad:
            return _BlurFunction.apply(x, self.filt)
        return _blur(x, self.filt)


class _MaxPoolFunction(torch.autograd.Function):
    """``F.max_pool2d`` that keeps only its input for backward (usually already kept by the ReLU before it)
    and recomputes the argmax there, instead of holding an int64 index per output element (twice the
    bytes of the float output) until backward. Same kernels, so the gradient is bit-identical."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.kernel, ctx.stride = kernel, stride
        return F.max_pool2d(x, kernel, stride)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        k, s = ctx.kernel, ctx.stride
        with torch.no_grad():
            _, idx = F.max_pool2d(x, k, s, return_indices=True)
        g = torch.ops.aten.max_pool2d_with_indices_backward(grad, x, [k, k], [s, s], [0, 0], [1, 1], False, idx)
        return g, None, None


class MaxPool(nn.MaxPool2d):
    """``nn.MaxPool2d(kernel, stride)`` whose training graph holds no index tensor (see :class:`_MaxPoolFunction`)."""

    def __init__(self, kernel: int, stride: int) -> None:
        super().__init__(kernel, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return _MaxPoolFunction.apply(x, self.kernel_size, self.stride)
        return super().forward(x)


def _layer(spec: tuple) -> nn.Module:
    kind = spec[0]
    if kind == "conv":
        _, cin, cout, k, s, p = spec
        return nn.Conv2d(cin, cout, k, stride=s, padding=p)
    if kind == "relu":
        return nn.ReLU()
    if kind == "max":
        return MaxPool(spec[1], stride=spec[2])
    return BlurPool(spec[1])


class Trunk(nn.Module):
    """Five feature slices ``slice1..slice5``; ``forward`` returns each slice's output.

    For VGG16 the slices end at relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (64, 128, 256, 512, 512
    channels, at 1, 1/2, 1/4, 1/8, 1/16 of the input side); for AlexNet at relu1..relu5.
    ``num_slices`` < 5 builds only the first slices (the rest would never be read).
    """

    def __init__(self, spec: list[tuple], cuts: tuple[int, ...], num_slices: int = 5) -> None:
        super().__init__()
        if not 1 <= num_slices <= len(cuts):
            raise ValueError(f"num_slices must be in 1..{len(cuts)}, got {num_slices}")
        cuts = cuts[:num_slices]
        start = 0
        for k, end in enumerate(cuts, 1):
            seq = nn.Sequential()
            for i in range(start, end):
                seq.add_module(str(i), _layer(spec[i]))
            self.add_module(f"slice{k}", seq)
            start = end
        self.num_slices = num_slices
        self.channels = [next(s[2] for s in reversed(spec[:c]) if s[0] == "conv") for c in cuts]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for k in range(1, self.num_slices + 1):
            x = getattr(self, f"slice{k}")(x)
            feats.append(x)
        return feats


def trunk_for(kind: str, shift_tolerant: bool, num_slices: int = 5) -> Trunk:
    """An uninitialised-weights trunk of ``kind`` ("alex"/"vgg"), shift tolerant or vanilla."""
    if kind == "alex":
        spec, cuts = (_ALEX_ST, _ALEX_ST_CUTS) if shift_tolerant else (_ALEX_VANILLA, _ALEX_VANILLA_CUTS)
        return Trunk(spec, cuts, num_slices)
    if kind == "vgg":
        return Trunk(*_vgg_spec(shift_tolerant), num_slices)
    raise ValueError(f"trunk kind must be 'alex' or 'vgg', got {kind!r}")


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


def read_lpips_state(path: Path) -> dict[str, torch.Tensor]:
    """The state dict stored at ``path`` (an LPIPS ``.pth``), with any DataParallel ``module.`` prefix removed."""
    if not path.is_file():
        raise FileNotFoundError(f"LPIPS weight file not found: {path}")
    import pickle

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError) as exc:
        # weights_only refuses pickles that would construct arbitrary objects (and never runs them).
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise PanoLAMError(f"{path}: not a plain LPIPS state dict of tensors (pickled objects are refused for safety, "
                           f"and damaged files cannot be read): {first}") from exc
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    return {k.removeprefix("module."): v for k, v in state.items()}


def detect_lpips_kind(state: dict[str, torch.Tensor], source: str) -> tuple[str, bool]:
    """(trunk kind, shift tolerant) from the keys of an LPIPS state dict."""
    convs = [k for k in state if k.startswith("net.slice") and k.endswith(".weight")]
    if not convs or not any(k.startswith("lin0.") for k in state):
        raise ValueError(f"{source}: not an LPIPS state dict (need net.slice*.weight trunk keys and lin0..lin4 layers); "
                         "the lpips package's lin-only files need the torchvision trunk, which this project cannot load")
    kind = "alex" if len(convs) == 5 else "vgg" if len(convs) == 13 else None
    if kind is None:
        raise ValueError(f"{source}: {len(convs)} trunk conv layers; expected 5 (AlexNet) or 13 (VGG16)")
    return kind, any(k.endswith(".filt") for k in state)


def load_pretrained_trunk(kind: str, weights: str | Path | None = None, num_slices: int = 5) -> Trunk:
    """A ``kind`` trunk ("alex"/"vgg") with pretrained weights, frozen and in eval mode.

    ``weights=None`` reads the ST-LPIPS file shipped in ``stlpips-pytorch``; a path reads a local LPIPS
    state dict, which must hold a trunk of the same kind. Raises FileNotFoundError / ValueError naming the file.
    """
    path = stlpips_weight_path(kind) if weights is None else Path(weights).expanduser()
    state = read_lpips_state(path)
    found, shift_tolerant = detect_lpips_kind(state, str(path))
    if found != kind:
        raise ValueError(f"{path}: holds an LPIPS {found} trunk, expected {kind}")
    trunk = trunk_for(kind, shift_tolerant, num_slices)
    wanted = {k.removeprefix(TRUNK_PREFIX): v for k, v in state.items()
              if k.startswith(TRUNK_PREFIX) and int(k.split(".")[1].removeprefix("slice")) <= num_slices}
    missing, unexpected = trunk.load_state_dict(wanted, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not fit the {kind} trunk: missing {missing}, unexpected {unexpected}")
    trunk.requires_grad_(False)
    return trunk.eval()

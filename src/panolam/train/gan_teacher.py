"""The frozen decoder of L_rgb^ST (paper eq. 7): our fitted tri-plane decoder or SphereHead's own.

Both kinds follow one protocol, :class:`StDecoder`: ``render(planes (B, 6, C, H, W), cameras (one
Cameras per item), size, batch) -> TriplaneRender`` with ``rgb`` composited over the data
background. :class:`~panolam.model.triplane_decoder.TriplaneRenderer` (``panolam teacher fit``)
ignores ``batch``; :class:`SphereHeadDecoder` needs the subject's ``gan_ws`` extra from it.

:class:`SphereHeadDecoder` renders the *predicted* planes with the SphereHead generator loaded from
its checkpoint by the same safe loader ``panolam data gan`` uses (``pickle_io.load_gan_checkpoint`` +
``plugin.build_network``), frozen (``eval``, no gradients to its weights; gradients flow to the
planes). It renders exactly as the dataset images were made (``GanGenerator.render``): SphereHead's
own renderer (spherical tri-planes, ``triplane_crop`` 0.1, its ray interval and sample counts from
the checkpoint's ``rendering_kwargs``), background network and ToRGB with the subject's stored
(truncated) ``ws``, optionally the super-resolution module (``train.st_superres``); colours are
premultiplied by the accumulated opacity (sharpened by the dataset's ``alpha_threshold``) and put
over ``data.background``. The planes are read as SphereHead's (N, 2 spheres, 3 planes, 32, H, W):
the student needs ``model.triplane_channels = 32``; any plane resolution works (the decoder samples
at normalised coordinates), so no resampling is needed here. Without SR the raw render is made at
``size``; with SR at the dataset's neural rendering resolution and the SR image resized to ``size``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Protocol, Sequence

import torch
from torch import nn

from panolam.data.gan.plugin import image_and_alpha, resize_square
from panolam.geometry.cameras import Cameras
from panolam.model.triplane_decoder import TriplaneRender

KINDS = ("auto", "panolam", "spherehead")


class StDecoder(Protocol):
    """What the loss needs of the frozen decoder of L_rgb^ST."""

    def render(self, planes: torch.Tensor, cameras: Sequence[Cameras], size: int | None = None,
               batch: dict[str, Any] | None = None) -> TriplaneRender: ...

    # Optional: ``accepts(batch) -> bool``; a batch it refuses (e.g. procedural data without gan_ws)
    # reports L_rgb^ST as absent instead of failing.


class SphereHeadDecoder(nn.Module):
    """SphereHead's decoder, renderer (and optionally SR) as a frozen :class:`StDecoder`."""

    def __init__(self, net: nn.Module, background: float = 1.0, superres: bool = False, alpha_threshold: float = 0.0,
                 neural_rendering_resolution: int | None = None) -> None:
        super().__init__()
        if not getattr(net, "spherical", False):
            raise ValueError(f"the L_rgb^ST SphereHead decoder needs a SphereHead generator, got {type(net).__name__}")
        self.net = net.eval().requires_grad_(False)
        self.background, self.superres, self.alpha_threshold = float(background), bool(superres), float(alpha_threshold)
        rk = net.rendering_kwargs
        self.nrr = int(neural_rendering_resolution or rk.get("neural_rendering_resolution", 0) or 128)

    def train(self, mode: bool = True) -> "SphereHeadDecoder":
        return super().train(False)  # always in eval mode: frozen

    def accepts(self, batch: dict[str, Any]) -> bool:
        """Whether the batch holds what this decoder needs (the subjects' ``gan_ws``); others skip L_rgb^ST."""
        return isinstance(batch.get("gan_ws"), torch.Tensor)

    def render(self, planes: torch.Tensor, cameras: Sequence[Cameras] | Cameras, size: int | None = None,
               batch: dict[str, Any] | None = None) -> TriplaneRender:
        """RGB (B, V, S, S, 3) over the background and alpha (B, V, S, S, 1); depth is the GAN's expected depth."""
        if planes.dim() != 5 or planes.shape[1] != 6 or planes.shape[2] != 32:
            raise ValueError(f"SphereHead decodes (B, 6, 32, H, W) planes (model.triplane_channels=32), got {tuple(planes.shape)}")
        ws = None if batch is None else batch.get("gan_ws")
        if not isinstance(ws, torch.Tensor):
            raise ValueError("the SphereHead decoder needs each subject's gan_ws extra in the batch (a `panolam data gan` dataset)")
        b = planes.shape[0]
        cams = [cameras] * b if isinstance(cameras, Cameras) else list(cameras)
        if len(cams) != b:
            raise ValueError(f"need one Cameras per batch item: {b} planes, {len(cams)} camera sets")
        size = int(size or cams[0].width)
        ws = ws.to(planes.device, planes.dtype)
        grouped = planes.reshape(b, 2, 3, 32, *planes.shape[-2:])
        rgbs, alphas, depths = [], [], []
        for i in range(b):
            labels = cams[i].to(planes.device).to_eg3d_label().to(planes.dtype)
            n = labels.shape[0]
            out = self.net.render_planes(grouped[i:i + 1].expand(n, *grouped.shape[1:]), ws[i:i + 1].expand(n, -1, -1), labels,
                                         self.nrr if self.superres else size)
            img = out.image if self.superres else out.image_raw
            rgb, alpha = image_and_alpha(img, out.image_mask, size, self.alpha_threshold)
            rgbs.append((rgb * alpha + self.background * (1 - alpha)).permute(0, 2, 3, 1))
            alphas.append(alpha.permute(0, 2, 3, 1))
            depths.append(resize_square(out.image_depth.float(), size).permute(0, 2, 3, 1))
        return TriplaneRender(torch.stack(rgbs), torch.stack(alphas), torch.stack(depths))


def _manifest_gan(roots: Sequence[str | Path]) -> dict | None:
    """The ``generator_config`` of the first dataset made by SphereHead (None when none is)."""
    from panolam.data.manifest import load_manifest

    for root in roots:
        header = load_manifest(root).header
        if header.get("generator") == "spherehead":
            return dict(header.get("generator_config") or {})
    return None


def resolve_kind(kind: str, checkpoint: str | None, roots: Sequence[str | Path]) -> str:
    """``auto`` -> ``spherehead`` when a dataset records a SphereHead generator and a checkpoint is
    given, else ``panolam``; explicit kinds are returned as they are."""
    if kind not in KINDS:
        raise ValueError(f"train.st_decoder_kind must be one of {KINDS}, got {kind!r}")
    if kind != "auto":
        return kind
    return "spherehead" if checkpoint and _manifest_gan(roots) is not None else "panolam"


def spherehead_decoder(checkpoint: str, roots: Sequence[str | Path] = (), background: float = 1.0, superres: bool = False,
                       network: nn.Module | None = None) -> SphereHeadDecoder:
    """Load the SphereHead generator (safe loader) and wrap it; the dataset's ``generator_config``
    (if any) gives the alpha threshold and neural rendering resolution the images were made with.
    A checkpoint whose SHA-256 differs from the one the dataset records is warned about."""
    from panolam.data.gan.plugin import _file_id, build_network

    gc = _manifest_gan(roots) or {}
    if network is None:
        from panolam.data.gan.pickle_io import load_gan_checkpoint

        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"train.st_decoder_checkpoint: no SphereHead checkpoint at {path}")
        network, _ = build_network("spherehead", load_gan_checkpoint(path))
        recorded = (gc.get("checkpoint") or {}).get("sha256")
        if recorded and recorded != _file_id(path)["sha256"]:
            warnings.warn(f"{path} is not the checkpoint the SphereHead dataset was made with (SHA-256 differs)", stacklevel=2)
    return SphereHeadDecoder(network, background=background, superres=superres,
                             alpha_threshold=float(gc.get("alpha_threshold", 0.0) or 0.0),
                             neural_rendering_resolution=gc.get("neural_rendering_resolution"))


__all__ = ["KINDS", "StDecoder", "SphereHeadDecoder", "resolve_kind", "spherehead_decoder"]

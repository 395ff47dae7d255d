"""3D-GAN generators as data plug-ins (``panolam data gan``; DESIGN §4's Generator interface).

:class:`GanGenerator` wraps a generator network built from a user's checkpoint (official ``.pkl``
read by :mod:`~panolam.data.gan.pickle_io`, or a converted ``.safetensors``). A subject is one
latent: ``z ~ N(0, I)`` drawn from the subject's seed, mapped with the frontal conditioning camera
(as the official sampling scripts do) and truncated toward ``w_avg`` by ψ; its planes are computed
once (constant noise) and rendered from each requested camera (the labels of
:meth:`~panolam.geometry.cameras.Cameras.to_eg3d_label` are EG3D's: our orbit cameras equal
EG3D's ``LookAtPoseSampler`` poses, checked against the official code). The dataset image is the
super-resolved image resized to the dataset size; the alpha is the volume renderer's accumulated
opacity, upsampled to the same size and optionally sharpened to a matte (``alpha_threshold``:
alpha → clamp((alpha − t)/(1 − 2t)) so that the thin haze of density around the head, which the
GAN paints as background, is dropped). Colours are returned premultiplied by that alpha, so the
dataset writer composites them over its background colour. The planes are stored as the
subject's ``teacher_planes`` extra (fp16) when ``store_planes`` (default: SphereHead only, the
paper's teacher); its truncated ``ws`` are
always stored as ``gan_ws`` (with the checkpoint they give the planes again).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from panolam.data.generators import Subject
from panolam.data.synth import derive_seed
from panolam.geometry.cameras import EG3D_FOCAL, EG3D_RADIUS, Cameras

FAMILIES = ("eg3d", "panohead", "spherehead")


def network_class(family: str):
    from panolam.data.gan.eg3d import TriPlaneGenerator
    from panolam.data.gan.panohead import PanoHeadGenerator, SphereHeadGenerator

    classes = {"eg3d": TriPlaneGenerator, "panohead": PanoHeadGenerator, "spherehead": SphereHeadGenerator}
    if family not in classes:
        raise ValueError(f"unknown GAN family {family!r}; implemented: {', '.join(FAMILIES)}")
    return classes[family]


def default_kwargs(family: str) -> dict:
    """Kwargs for a bare state dict without recorded ones: the released 512² configurations."""
    from panolam.data.gan.eg3d import eg3d_ffhq_kwargs
    from panolam.data.gan.panohead import full_size_kwargs

    return eg3d_ffhq_kwargs(512) if family == "eg3d" else full_size_kwargs()


def build_network(family: str, checkpoint, init_kwargs: dict | None = None):
    """Our network for ``family`` with the checkpoint's kwargs and weights (every tensor must fit)."""
    cls = network_class(family)
    kwargs = dict(init_kwargs or checkpoint.init_kwargs or {}) or default_kwargs(family)
    try:
        net = cls(**kwargs)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"checkpoint kwargs do not describe a {family} generator: {type(e).__name__}: {e}") from None
    state = {k: v.float() for k, v in checkpoint.state_dict.items()}
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"checkpoint does not fit the {family} architecture: missing {sorted(missing)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]} (of {len(missing)}, {len(unexpected)}); is --generator right?")
    return net.eval().requires_grad_(False), kwargs


def frontal_label(n: int = 1, radius: float = EG3D_RADIUS, pivot: tuple[float, float, float] = (0.0, 0.0, 0.2)) -> torch.Tensor:
    """EG3D's conditioning camera: on +z at ``radius`` from ``pivot``, looking at it, focal 4.2647."""
    from panolam.geometry.cameras import look_at

    eye = torch.tensor(pivot) + torch.tensor([0.0, 0.0, radius])
    c2w = look_at(eye[None], torch.tensor(pivot)[None])
    K = torch.tensor([[EG3D_FOCAL, 0, 0.5], [0, EG3D_FOCAL, 0.5], [0, 0, 1.0]])
    return torch.cat([c2w.reshape(1, 16), K.reshape(1, 9)], 1).repeat(n, 1)


class GanGenerator:
    """A :class:`~panolam.data.generators.Generator` backed by a 3D GAN checkpoint."""

    def __init__(self, checkpoint: str, family: str = "eg3d", truncation: float = 0.7, truncation_cutoff: int | None = None,
                 device: str | None = None, neural_rendering_resolution: int | None = None, alpha_threshold: float = 0.0,
                 store_planes: bool | None = None, batch: int = 4, network: Any = None) -> None:
        from panolam.data.gan.pickle_io import load_gan_checkpoint

        if not 0 <= alpha_threshold < 0.5:
            raise ValueError(f"alpha_threshold must lie in [0, 0.5), got {alpha_threshold}")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if network is None:
            ckpt = load_gan_checkpoint(checkpoint)
            network, kwargs = build_network(family, ckpt)
        else:
            kwargs = {}
        self.net = network.to(self.device)
        self.id = family
        self.truncation, self.truncation_cutoff = float(truncation), truncation_cutoff
        rk = self.net.rendering_kwargs
        self.nrr = int(neural_rendering_resolution or rk.get("neural_rendering_resolution", 0) or 128)
        # The paper's L_st teacher is SphereHead: by default only its planes are stored (~12 MB a subject).
        store_planes = family == "spherehead" if store_planes is None else bool(store_planes)
        self.alpha_threshold, self.store_planes, self.batch = alpha_threshold, store_planes, max(1, int(batch))
        # Conditioning camera as the official sampling scripts place it: EG3D looks at its
        # avg_camera_pivot, PanoHead and SphereHead at the origin; both at avg_camera_radius.
        pivot = rk.get("avg_camera_pivot", (0.0, 0.0, 0.2)) if family == "eg3d" else (0.0, 0.0, 0.0)
        self.pivot = tuple(float(v) for v in pivot)
        self.radius = float(rk.get("avg_camera_radius", EG3D_RADIUS))
        # What the manifest records (a resume with other settings is refused).
        self.config = {"family": family, "checkpoint": _file_id(checkpoint), "truncation": self.truncation,
                       "truncation_cutoff": truncation_cutoff, "neural_rendering_resolution": self.nrr,
                       "alpha_threshold": alpha_threshold, "store_planes": store_planes,
                       "img_resolution": self.net.img_resolution, "network_kwargs": kwargs}

    @torch.no_grad()
    def subject(self, seed: int) -> Subject:
        g = torch.Generator().manual_seed(derive_seed(seed, "gan-z"))
        z = torch.randn(1, self.net.z_dim, generator=g).to(self.device)
        c = frontal_label(1, self.radius, self.pivot).to(self.device)
        ws = self.net.mapping(z, c, self.truncation, self.truncation_cutoff)
        planes = self.net.planes(ws, noise_mode="const")
        # Stored flat over planes: EG3D (3, 32, H, W), PanoHead (3, 32·D, H, W), SphereHead (6, 32, H, W)
        # = spheres A then B — the layout of panolam.geometry.triplane.
        flat = planes[0].reshape(-1, *planes.shape[-3:])
        # ws (num_ws × 512 fp32, ~28 KB) always: with the checkpoint they regenerate the planes, so a
        # dataset too large to hold every subject's planes can still give the teacher its planes later.
        extras = {"gan_ws": ws[0].float().cpu().numpy()}
        if self.store_planes:
            extras["teacher_planes"] = flat.half().cpu().numpy()
        attrs = {"truncation": self.truncation, "z_seed": derive_seed(seed, "gan-z")}
        return Subject(seed, attrs, {"ws": ws, "planes": planes}, extras)

    @torch.no_grad()
    def render(self, subject: Subject, cameras: Cameras) -> tuple[torch.Tensor, torch.Tensor]:
        """Premultiplied RGB (C, H, W, 3) and alpha (C, H, W, 1) in [0, 1]."""
        if cameras.width != cameras.height:
            raise ValueError(f"GAN renders are square; got {cameras.width}x{cameras.height}")
        size = cameras.width
        labels = cameras.to_eg3d_label().to(self.device)
        ws, planes = subject.payload["ws"], subject.payload["planes"]
        gen = torch.Generator(device=self.device).manual_seed(derive_seed(subject.seed, "gan-render"))
        rgbs, alphas = [], []
        for i in range(0, len(labels), self.batch):
            c = labels[i:i + self.batch]
            n = len(c)
            out = self.net.render_planes(planes.expand(n, *planes.shape[1:]), ws.expand(n, -1, -1), c, self.nrr, generator=gen)
            rgb, alpha = image_and_alpha(out.image, out.image_mask, size, self.alpha_threshold)
            rgbs.append((rgb * alpha).permute(0, 2, 3, 1).cpu())
            alphas.append(alpha.permute(0, 2, 3, 1).cpu())
        return torch.cat(rgbs), torch.cat(alphas)


def _file_id(path: Any) -> dict | None:
    """Name and SHA-256 of the checkpoint file (a resume from a moved copy of it is still the same data)."""
    import hashlib
    from pathlib import Path

    if path is None:
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return {"name": Path(path).name, "sha256": h.hexdigest()}


def resize_square(x: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, S, S) maps bilinearly resized to ``size`` (antialiased when shrinking)."""
    if x.shape[-1] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=x.shape[-1] > size)


def image_and_alpha(image: torch.Tensor, mask: torch.Tensor, size: int, alpha_threshold: float = 0.0
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """A GAN render's image in [-1, 1] and accumulated opacity as RGB and alpha in [0, 1] at ``size``
    (N, C, size, size), the alpha sharpened to a matte when ``alpha_threshold`` > 0: how the dataset
    images are made, and how the L_rgb^ST teacher (train.gan_teacher) renders to match them."""
    rgb = resize_square((image.float() + 1) / 2, size).clamp(0, 1)
    alpha = resize_square(mask.float(), size).clamp(0, 1)
    if alpha_threshold > 0:
        alpha = ((alpha - alpha_threshold) / (1 - 2 * alpha_threshold)).clamp(0, 1)
    return rgb, alpha


__all__ = ["GanGenerator", "build_network", "network_class", "frontal_label", "FAMILIES"]

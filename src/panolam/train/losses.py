"""The training objective, paper eq. 7-8 (DESIGN §5).

L = λ3·L_rgb^G + λ4·L_rgb^ST + λ5·L_mask + λ6·L_st, with L_rgb = λ1·L1 + λ2·LPIPS on every one of
the N_v views (the input view included). L_rgb^G and L_mask are summed over the coarse and the
dense Gaussian renders (the paper supervises both); L_mask is L1 between rendered alpha and the
mask; L_st is L1 between predicted and teacher tri-planes (stored planes of another resolution are
resampled to the model's, geometry.triplane.resample_planes); L_rgb^ST compares the frozen tri-plane
decoder's volume render of the *predicted* planes with the targets (rendered at
``train.st_render_size`` and upsampled when that is smaller, to keep volume rendering
affordable). A pixel-aligned network (``model.pixel_aligned``) adds λ_pose·L_pose, the squared error
of its pose head's (sin, cos) yaw/pitch vector against the input view's camera (plus the squared
error of the log magnification, with ``model.magnification_head``). A term whose inputs are missing (no teacher planes in the batch, no frozen decoder
configured, no coarse stage) is skipped and reported in ``LossResult.absent`` instead of being
faked. Gaussians and the losses are evaluated in float32 even under autocast: the rasteriser and
LPIPS normalisation are not bf16-safe. Targets are resized (antialiased) to ``render_size``.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from panolam.config.train import TrainConfig
from panolam.gaussians.container import Gaussians
from panolam.geometry.cameras import Cameras
from panolam.geometry.triplane import resample_planes
from panolam.model.pixel_aligned import camera_pose_deg, pose_vector
from panolam.model.triplane_decoder import TriplaneRenderer
from panolam.render import rasterize
from panolam.train.perceptual import Perceptual

if TYPE_CHECKING:
    from panolam.model.pixel_aligned import InputCamera
    from panolam.train.gan_teacher import StDecoder


@dataclasses.dataclass
class LossResult:
    total: torch.Tensor  # scalar, differentiable
    terms: dict[str, torch.Tensor]  # detached scalars for logging
    absent: tuple[str, ...]  # terms skipped for lack of inputs
    renders: dict[str, torch.Tensor]  # detached (B, N_v, H, W, 3) renders, for sample images


def pose_loss(pose: torch.Tensor, world_to_cam: torch.Tensor) -> torch.Tensor:
    """Squared error of the pose head's (sin, cos) yaw/pitch vector (B, 4) against the input cameras (B, 4, 4)."""
    target = pose_vector(*camera_pose_deg(world_to_cam.float()))
    return ((pose.float() - target) ** 2).sum(-1).mean()


def batch_input_camera(batch: dict) -> "InputCamera":
    """The stored camera of each batch item's input view (view 0), as the network's InputCamera."""
    from panolam.model.pixel_aligned import InputCamera

    h, w = batch["images"].shape[-2:]
    return InputCamera.from_cameras(Cameras(batch["world_to_cam"][:, 0].float(), batch["K"][:, 0].float(), w, h))


def magnification_loss(log_mag: torch.Tensor, batch: dict) -> torch.Tensor:
    """Squared error of the magnification head's estimate (B,) against the input cameras' :func:`log_magnification`
    (a 10 % error costs 0.01, about what a 5° yaw error costs :func:`pose_loss`)."""
    from panolam.model.pixel_aligned import log_magnification

    target = log_magnification(batch_input_camera(batch)).to(log_mag.device)
    return (log_mag.float() - target).pow(2).mean()


def camera_losses(output, batch: dict) -> dict[str, torch.Tensor]:
    """The input-camera terms of a network's output: ``pose`` (with a pose head) and ``magnification``
    (with that head); none for a plain network (not "absent": it has nothing to estimate)."""
    terms = {}
    if getattr(output, "pose", None) is not None:
        terms["pose"] = pose_loss(output.pose, batch["world_to_cam"][:, 0].to(output.pose.device))
    if getattr(output, "magnification", None) is not None:
        terms["magnification"] = magnification_loss(output.magnification, batch)
    return terms


def pose_only_loss(output, batch: dict) -> LossResult:
    """The whole loss of ``train.trainable=pose_head`` runs: the pose term (and the magnification term, when
    the network has that head) alone, nothing rendered."""
    terms = camera_losses(output, batch)
    loss = sum(terms.values())
    return LossResult(loss, {**{k: v.detach() for k, v in terms.items()}, "total": loss.detach()}, (), {})


def batch_cameras(batch: dict, size: int) -> list[Cameras]:
    """One :class:`Cameras` per batch item at ``size``×``size`` from the batch's stored intrinsics."""
    h, w = batch["images"].shape[-2:]
    return [Cameras(batch["world_to_cam"][i].float(), batch["K"][i].float(), w, h).resized(size, size)
            for i in range(batch["images"].shape[0])]


def resize_targets(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, N, C, H, W) -> (B, N, C, size, size), antialiased."""
    b, n = x.shape[:2]
    flat = x.flatten(0, 1).float()
    if flat.shape[-2:] != (size, size):
        flat = F.interpolate(flat, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return flat.reshape(b, n, *flat.shape[1:])


def upsample_renders(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, N, h, w, C) -> (B, N, size, size, C), bilinear."""
    b, n = x.shape[:2]
    flat = F.interpolate(x.flatten(0, 1).permute(0, 3, 1, 2), size=(size, size), mode="bilinear", align_corners=False)
    return flat.permute(0, 2, 3, 1).reshape(b, n, size, size, x.shape[-1])


def render_gaussians(gaussians: Gaussians, cameras: list[Cameras], background: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched Gaussians (B, M) rendered per item: rgb (B, N_v, H, W, 3), alpha (B, N_v, H, W, 1)."""
    rgbs, alphas = [], []
    for i, cams in enumerate(cameras):
        out = rasterize(gaussians[i].map(lambda t: t.float()), cams.to(gaussians.device), background)
        rgbs.append(out.rgb)
        alphas.append(out.alpha)
    return torch.stack(rgbs), torch.stack(alphas)


class PanoLAMLoss(nn.Module):
    """``loss(output, batch) -> LossResult``; holds the frozen perceptual net and optional frozen tri-plane renderer."""

    def __init__(self, cfg: TrainConfig, st_renderer: TriplaneRenderer | StDecoder | None = None, background: float = 1.0,
                 perceptual: Perceptual | None = None) -> None:
        super().__init__()
        self.cfg, self.background = cfg, background
        self.perceptual = perceptual if perceptual is not None else (
            Perceptual(cfg.lpips_weights, net=cfg.lpips_net) if cfg.lambda_lpips > 0 else None)
        self.st_renderer = st_renderer
        if st_renderer is not None:
            st_renderer.requires_grad_(False)

    def rgb_loss(self, pred: torch.Tensor, target: torch.Tensor,
                 target_features: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """λ1·L1 + λ2·LPIPS of (B, N, H, W, 3) renders vs (B, N, 3, H, W) targets; also returns both parts.
        ``target_features`` (:meth:`target_features` of the same targets) saves recomputing them."""
        p = pred.flatten(0, 1).permute(0, 3, 1, 2)
        t = target.flatten(0, 1)
        l1 = (p - t).abs().mean()
        if self.perceptual is None:
            lp = p.new_zeros(())
        elif target_features is not None:
            lp = self.perceptual(p, target=target_features).mean()
        else:
            lp = self.perceptual(p, t).mean()
        return self.cfg.lambda_l1 * l1 + self.cfg.lambda_lpips * lp, l1, lp

    def target_features(self, target: torch.Tensor) -> list[torch.Tensor] | None:
        """The perceptual net's features of (B, N, 3, H, W) targets (no gradient), shared by every render compared with them."""
        return None if self.perceptual is None else self.perceptual.target_features(target.flatten(0, 1))

    def forward(self, output, batch: dict) -> LossResult:
        cfg, size = self.cfg, self.cfg.render_size
        device = output.dense.device
        with torch.autocast(device.type, enabled=False):
            cams = batch_cameras(batch, size)
            target = resize_targets(batch["images"].to(device), size)
            mask = resize_targets(batch["masks"].to(device), size)
            terms: dict[str, torch.Tensor] = {}
            absent: list[str] = []
            renders: dict[str, torch.Tensor] = {}
            rgb_g = mask_l = target.new_zeros(())
            # The targets' LPIPS features are the same for every render (dense, coarse, tri-plane): computed once.
            target_feats = self.target_features(target)
            stages = [("dense", output.dense)] + ([("coarse", output.coarse)] if output.coarse is not None else [])
            if output.coarse is None:
                absent.append("coarse")
            for name, gauss in stages:
                rgb, alpha = render_gaussians(gauss, cams, self.background)
                renders[name] = rgb.detach()
                lr, l1, lp = self.rgb_loss(rgb, target, target_feats)
                lm = (alpha.permute(0, 1, 4, 2, 3) - mask).abs().mean()
                rgb_g, mask_l = rgb_g + lr, mask_l + lm
                terms.update({f"{name}_l1": l1.detach(), f"{name}_lpips": lp.detach(), f"{name}_mask": lm.detach()})
            total = cfg.lambda_rgb_gauss * rgb_g + cfg.lambda_mask * mask_l
            terms["rgb_gauss"], terms["mask"] = rgb_g.detach(), mask_l.detach()

            planes = output.planes.float()
            teacher = batch.get("teacher_planes")
            if isinstance(teacher, torch.Tensor) and cfg.lambda_st > 0:
                if teacher.shape[:-2] == planes.shape[:-2] and teacher.shape[-2:] != planes.shape[-2:]:
                    teacher = resample_planes(teacher.to(device).float(), tuple(planes.shape[-2:]))
                if teacher.shape != planes.shape:
                    raise ValueError(f"teacher_planes {tuple(teacher.shape)} do not match predicted planes {tuple(planes.shape)}; "
                                     "refit the teacher with this model config")
                st = (planes - teacher.to(device).float()).abs().mean()
                total = total + cfg.lambda_st * st
                terms["st"] = st.detach()
            else:
                absent.append("st")

            accepts = getattr(self.st_renderer, "accepts", None)
            if self.st_renderer is not None and cfg.lambda_rgb_st > 0 and (accepts is None or accepts(batch)):
                st_size = cfg.st_render_size or size
                st_out = self.st_renderer.render(planes, [c.to(device) for c in cams], size=st_size, batch=batch)
                st_rgb = st_out.rgb if st_size == size else upsample_renders(st_out.rgb, size)
                renders["triplane"] = st_rgb.detach()
                lr, l1, lp = self.rgb_loss(st_rgb, target, target_feats)
                total = total + cfg.lambda_rgb_st * lr
                terms.update({"rgb_st": lr.detach(), "triplane_l1": l1.detach(), "triplane_lpips": lp.detach()})
            else:
                absent.append("rgb_st")
            if cfg.lambda_pose > 0:
                for name, value in camera_losses(output, batch).items():
                    total = total + cfg.lambda_pose * value
                    terms[name] = value.detach()
            terms["total"] = total.detach()
        return LossResult(total, terms, tuple(absent), renders)

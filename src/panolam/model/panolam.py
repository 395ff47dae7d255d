"""The PanoLAM network (paper §3, DESIGN §2): one unposed image -> coarse and dense 3D Gaussians and
the predicted spherical tri-planes, in one forward pass.

Data flow: image encoder -> F_I; point branch over the M_C template vertices -> point features
F_P and coarse Gaussians at p = V + O (|O| ≤ ε_OC); network-free densification with the sparse
barycentric matrix W (M_D × M_C): P_D = W·p, F_D = W·F_P; tri-plane branch -> planes, queried along
virtual-camera rays through every P_D -> F_T; dense head on concat(F_D, F_T) -> dense Gaussians at
P_D + O_D (|O_D| ≤ ε_OD).

The template and W are derived at construction from ``cfg.template`` (never saved: a FLAME-derived
file is never written), held as non-persistent buffers. Ablation switches:
``ray_aggregation=False`` queries the tri-planes at the point only; ``coarse_to_fine=False``
("w/o C2F") drops the coarse stage: the point branch runs directly over the M_D densified template
points (their own γ encodings), and the dense head — with the coarse bound ε_OC, since these points
must now make the whole deformation — decodes Gaussians at W·V + O; ``coarse`` is then ``None``.
``pixel_aligned=True`` (beyond the paper, :mod:`panolam.model.pixel_aligned`) adds a pose head
that estimates the input camera, projects the template and dense points into the input image with
that camera (or the one the caller passes: the true one in training) and feeds what they sample
there into the point tokens and the dense head, with a visibility-driven colour copy gate;
``magnification_head=True`` also estimates how large the head appears (the camera's focal length
over its distance), which the nominal camera otherwise assumes. ``inference_dense_points`` (beyond the
paper) makes the eval-mode forward output a finer subdivision than the M_D points it trains on
(:meth:`PanoLAM.set_inference_points`). The network never renders and never reads datasets.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from panolam.config.model import ModelConfig
from panolam.gaussians.container import Gaussians
from panolam.geometry.densify import build_densified_mesh, densify, finer_layout
from panolam.geometry.template import load_template
from panolam.model.encoder import ImageEncoder
from panolam.model.heads import GaussianHead, GaussianParams
from panolam.model.pixel_aligned import (ColourGate, InputCamera, MagnificationHead, PixelAlignedSampler, PixelFeatures, PoseHead,
                                         fuse_yaw, mask_from_background, mirror_pose, pose_angles, zero_init_mlp)
from panolam.model.point_branch import PointBranch
from panolam.model.silhouette import CUE_DIM, silhouette_cues, silhouette_profile
from panolam.model.triplane_branch import TriplaneBranch


@dataclasses.dataclass
class PanoLAMOutput:
    """Network output for a batch of B images."""

    coarse: Gaussians | None  # (B, M_C) Gaussians; None when coarse_to_fine=False
    dense: Gaussians | None  # (B, M_D) Gaussians: the reconstructed head (None only for pose_only=True)
    planes: torch.Tensor | None  # (B, 6, C_st, H_T, W_T) predicted spherical tri-planes (None only for pose_only=True)
    pose: torch.Tensor | None = None  # (B, 4) estimated input view (sin, cos of yaw and pitch); pixel_aligned only
    magnification: torch.Tensor | None = None  # (B,) estimated log magnification of the input view; model.magnification_head only
    input_camera: InputCamera | None = None  # the camera the points were projected with; pixel_aligned only

    def input_pose_deg(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Estimated input-camera yaw and pitch in degrees, or None without a pose head."""
        return None if self.pose is None else pose_angles(self.pose)


def _gaussians(positions: torch.Tensor, params: GaussianParams) -> Gaussians:
    return Gaussians(means=positions + params.offsets, quats=params.quats, scales=params.scales,
                     opacities=params.opacities, colors=params.colors)


def _densify(W: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """W·x in float32 with autocast off: sparse matmul has no reduced-precision kernels, and its
    backward fails on autocast's bf16 gradients, so mixed-precision training would break here."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        return densify(W, x.float())


def mean_edge_length(vertices: torch.Tensor, faces: torch.Tensor) -> float:
    v = vertices[faces]
    edges = torch.stack([v[:, 1] - v[:, 0], v[:, 2] - v[:, 1], v[:, 0] - v[:, 2]], dim=1)
    return float(edges.norm(dim=-1).mean())


class PanoLAM(nn.Module):
    """``PanoLAM(cfg.model)(images (B, 3, H, W) in [0, 1]) -> PanoLAMOutput``.

    ``load_encoder_weights=False`` skips reading ``cfg.encoder_weights`` and its random-init warning
    (used by ``load_model`` when the checkpoint itself holds the backbone weights).
    """

    def __init__(self, cfg: ModelConfig, load_encoder_weights: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        template = load_template(cfg.template, cfg.template_vertices)
        verts = template.vertices.float()
        if cfg.dense_points < 0:
            raise ValueError(f"model.dense_points must be >= 0 (0 = stop by model.area_threshold), got {cfg.dense_points}")
        # dense_points > 0: exactly that many points; 0: the paper's rule, split until every face < area_threshold.
        target = cfg.dense_points if cfg.dense_points > 0 else None
        W, dense_faces = build_densified_mesh(verts, template.faces, cfg.area_threshold, target)
        W = W.float().coalesce()
        self.register_buffer("template_vertices", verts, persistent=False)
        self.register_buffer("template_normals", template.vertex_normals().float(), persistent=False)
        self.register_buffer("template_faces", template.faces.long(), persistent=False)
        self._register_layout("", W, dense_faces)
        self.num_coarse, self.num_dense = verts.shape[0], W.shape[0]
        edge = mean_edge_length(verts, template.faces)
        dense_scale = edge * (self.num_coarse / self.num_dense) ** 0.5  # spacing shrinks as sqrt of the count
        if cfg.dense_scale_floor < 0:
            raise ValueError(f"model.dense_scale_floor must be >= 0, got {cfg.dense_scale_floor}")
        self.dense_scale_floor = cfg.dense_scale_floor * dense_scale

        self.encoder = ImageEncoder(cfg, load_encoder_weights)
        self.point_branch = PointBranch(cfg, init_scale=edge, with_head=cfg.coarse_to_fine)
        self.triplane_branch = TriplaneBranch(cfg)
        dense_offset = cfg.offset_dense if cfg.coarse_to_fine else cfg.offset_coarse
        self.dense_head = GaussianHead(2 * cfg.c_t, cfg.c_t, dense_offset, cfg.scale_max, dense_scale, cfg.head_layers)
        if cfg.pixel_aligned:
            self.pose_head = PoseHead(cfg.c_t, cfg.pose_head)
            if cfg.magnification_head:
                self.magnification_head = MagnificationHead(cfg.c_t)
            self.pixel_sampler = PixelAlignedSampler(cfg.c_t)
            d = self.pixel_sampler.out_dim
            # Zero-initialised: a pixel-aligned network fine-tuned from a plain one starts as that network.
            self.point_pixel_proj = zero_init_mlp(d, cfg.c_t, cfg.c_t)
            self.dense_pixel_proj = zero_init_mlp(d, cfg.c_t, 2 * cfg.c_t)
            self.coarse_gate = ColourGate(d + cfg.c_t)
            self.dense_gate = ColourGate(d + 2 * cfg.c_t)
            if cfg.silhouette_cues:  # zero-initialised too: switching the cues on leaves a trained network unchanged
                self.point_silhouette_proj = zero_init_mlp(CUE_DIM, cfg.c_t, cfg.c_t)
                self.dense_silhouette_proj = zero_init_mlp(CUE_DIM, cfg.c_t, 2 * cfg.c_t)
        elif cfg.silhouette_cues:
            raise ValueError("model.silhouette_cues needs model.pixel_aligned=true (the cues are read with the input camera)")
        elif cfg.magnification_head:
            raise ValueError("model.magnification_head needs model.pixel_aligned=true (it sets the input camera)")
        self.set_inference_points(cfg.inference_dense_points)

    def set_inference_points(self, count: int) -> None:
        """Dense points the network outputs in eval mode; 0 = the training count M_D. Training always uses
        the M_D layout. A different count re-subdivides the template (largest faces first, as for M_D):
        every dense input is interpolated over the surface, so the trained head applies unchanged."""
        if count < 0:
            raise ValueError(f"the number of inference dense points must be >= 0 (0 = model.dense_points), got {count}")
        if count in (0, self.num_dense):
            W, faces, transfer = self.densify_matrix, self.dense_faces, None
        else:
            # transfer: the M_D points' tri-plane features interpolated onto the finer points (see forward).
            W, faces, transfer = finer_layout(self.template_vertices, self.template_faces, self.cfg.area_threshold,
                                              self.cfg.dense_points, count, (self.densify_matrix, self.dense_faces))
            device = self.template_vertices.device
            W, faces, transfer = W.to(device), faces.to(device), transfer.to(device)
        self.register_buffer("inference_transfer", transfer, persistent=False)
        self._register_layout("inference_", W, faces)
        self.num_inference_dense = W.shape[0]

    def _register_layout(self, prefix: str, W: torch.Tensor, faces: torch.Tensor) -> None:
        """Buffers of one dense-point layout, named ``prefix`` + densify_matrix / dense_faces (triangles over
        the points, dense Gaussian i on point i: the mesh export) / dense_normals (pixel-aligned sampling) /
        dense_template (the points themselves, without coarse-to-fine)."""
        self.register_buffer(prefix + "densify_matrix", W, persistent=False)
        self.register_buffer(prefix + "dense_faces", faces, persistent=False)
        if self.cfg.pixel_aligned:
            normals = torch.nn.functional.normalize(densify(W, self.template_normals), dim=-1)
            self.register_buffer(prefix + "dense_normals", normals, persistent=False)
        if not self.cfg.coarse_to_fine:
            self.register_buffer(prefix + "dense_template", densify(W, self.template_vertices), persistent=False)

    @property
    def output_faces(self) -> torch.Tensor:
        """Triangles over the dense Gaussians the network outputs in its current mode (the mesh export)."""
        return self.dense_faces if self.training else self.inference_dense_faces

    @property
    def _finer_at_inference(self) -> bool:
        """Whether this forward outputs another layout than M_D. Its visibility z-test is then still against
        the M_D points, so a point both layouts hold sees exactly what it saw in training."""
        return not self.training and self.num_inference_dense != self.num_dense

    def _dense_layout(self, name: str) -> torch.Tensor:
        """``name`` in densify_matrix / dense_normals / dense_template for the current mode's dense points."""
        return getattr(self, name if self.training else "inference_" + name)

    def forward(self, images: torch.Tensor, camera: InputCamera | None = None, masks: torch.Tensor | None = None,
                pose_only: bool = False, yaw_hint_deg: torch.Tensor | None = None) -> PanoLAMOutput:
        """``images`` (B, 3, H, W) in [0, 1] on the training background. With ``pixel_aligned``:
        ``camera`` is the input view's camera (default: the pose head's estimate at the nominal radius
        and FOV), ``masks`` (B, 1, H, W) the person matte (default: pixels that differ from white).
        ``yaw_hint_deg`` (B,) is an independent yaw estimate (face landmarks; NaN where there is none)
        averaged into the estimated camera's yaw (:func:`~panolam.model.pixel_aligned.fuse_yaw`).
        ``pose_only`` runs the encoder (without gradients) and the pose head only: the output has
        ``pose`` and nothing else (``train.trainable=pose_head``)."""
        if pose_only:
            if not self.cfg.pixel_aligned:
                raise ValueError("pose_only needs a pose head, which only a model.pixel_aligned network has")
            with torch.no_grad():
                tokens, mirrored = self._encode(images, self._flip_average(None))
            pose, magnification = self._camera_estimate(tokens, mirrored)
            return PanoLAMOutput(coarse=None, dense=None, planes=None, pose=pose, magnification=magnification)
        tokens, mirrored = self._encode(images, self._flip_average(camera))
        b = tokens.shape[0]
        planes = self.triplane_branch.planes(tokens)
        pix = self._pixel_inputs(images, tokens, camera, masks, yaw_hint_deg, mirrored) if self.cfg.pixel_aligned else None
        if self.cfg.coarse_to_fine:
            verts = self.template_vertices.unsqueeze(0).expand(b, -1, -1)
            extra = coarse_pix = None
            if pix is not None:
                coarse_pix = self._sample(pix, verts, self.template_normals)
                extra = self.point_pixel_proj(coarse_pix.features) + self._silhouette(coarse_pix, "point")
            feats, coarse_params = self.point_branch(verts, tokens, extra)
            if coarse_pix is not None:
                coarse_params.colors = self.coarse_gate(coarse_params.colors, coarse_pix,
                                                        torch.cat([coarse_pix.features, feats], dim=-1))
            coarse = _gaussians(verts, coarse_params)
            W = self._dense_layout("densify_matrix")
            dense_points = _densify(W, coarse.means)
            dense_feats = _densify(W, feats)
            # A finer inference layout (model.inference_dense_points) still tests visibility against the M_D
            # points and reads the tri-planes there: the planes are coarser than the points, so their
            # features are interpolated onto the finer points at half the cost of querying each one.
            trained_points = _densify(self.densify_matrix, coarse.means) if self._finer_at_inference else None
        else:
            coarse = None
            dense_points = self._dense_layout("dense_template").unsqueeze(0).expand(b, -1, -1)
            trained_points = self.dense_template.unsqueeze(0).expand(b, -1, -1) if self._finer_at_inference else None
            extra = dense_pix = None
            if pix is not None:  # the points are the dense template: what they sample also feeds the dense head
                dense_pix = self._sample(pix, dense_points, self._dense_layout("dense_normals"), trained_points)
                extra = self.point_pixel_proj(dense_pix.features) + self._silhouette(dense_pix, "point")
            dense_feats = self.point_branch.features(dense_points, tokens, extra)
        if trained_points is None:
            triplane_feats = self.triplane_branch.aggregate(planes, dense_points)
        else:
            triplane_feats = _densify(self.inference_transfer, self.triplane_branch.aggregate(planes, trained_points))
        hidden = torch.cat([dense_feats, triplane_feats], dim=-1)
        if pix is not None:
            if self.cfg.coarse_to_fine:
                dense_pix = self._sample(pix, dense_points, self._dense_layout("dense_normals"), trained_points)
            hidden = hidden + self.dense_pixel_proj(dense_pix.features) + self._silhouette(dense_pix, "dense")
        dense_params = self.dense_head(hidden)
        if self.dense_scale_floor > 0:
            dense_params.scales = torch.sqrt(dense_params.scales.square() + self.dense_scale_floor ** 2)
        if pix is not None:
            dense_params.colors = self.dense_gate(dense_params.colors, dense_pix, torch.cat([dense_pix.features, hidden], dim=-1))
        dense = _gaussians(dense_points, dense_params)
        if pix is None:
            return PanoLAMOutput(coarse=coarse, dense=dense, planes=planes)
        return PanoLAMOutput(coarse=coarse, dense=dense, planes=planes, pose=pix["pose"], input_camera=pix["camera"],
                             magnification=pix["magnification"])

    def _flip_average(self, camera: InputCamera | None) -> bool:
        """Whether the camera is estimated from the photo and its mirror image (model.pose_flip_average)."""
        return self.cfg.pixel_aligned and self.cfg.pose_flip_average and camera is None and not self.training

    def _encode(self, images: torch.Tensor, with_mirror: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The image tokens, and with ``with_mirror`` those of the left-right mirrored images (one batch)."""
        if not with_mirror:
            return self.encoder(images), None
        tokens, mirrored = self.encoder(torch.cat([images, images.flip(-1)])).chunk(2)
        return tokens, mirrored

    def _camera_estimate(self, tokens: torch.Tensor, mirrored: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Pose vector (B, 4) and log magnification (B,) or None; with the mirrored images' tokens, the mean
        of the two estimates (the mirror's yaw negated): a yaw error that does not turn with the photo cancels."""
        pose, magnification = self.pose_head(tokens), self._magnification(tokens)
        if mirrored is not None:
            pose = 0.5 * (pose + mirror_pose(self.pose_head(mirrored)))
            if magnification is not None:
                magnification = 0.5 * (magnification + self._magnification(mirrored))
        return pose, magnification

    def _pixel_inputs(self, images: torch.Tensor, tokens: torch.Tensor, camera: InputCamera | None,
                      masks: torch.Tensor | None, yaw_hint_deg: torch.Tensor | None = None,
                      mirrored: torch.Tensor | None = None) -> dict:
        """Everything the points sample from, computed once per image: camera, pose, stem and token maps."""
        pose, magnification = self._camera_estimate(tokens, mirrored)
        if camera is None:
            yaw, pitch = pose_angles(pose.detach())
            if yaw_hint_deg is not None:
                yaw = fuse_yaw(yaw, yaw_hint_deg.to(yaw))
            camera = InputCamera.from_pose(yaw, pitch, log_magnification=None if magnification is None else magnification.detach())
        camera = camera.to(images.device)
        images = images.float()
        masks = mask_from_background(images) if masks is None else masks.to(images.device, images.dtype)
        if masks.shape[-2:] != images.shape[-2:]:
            masks = torch.nn.functional.interpolate(masks, size=images.shape[-2:], mode="bilinear", align_corners=False)
        token_map = self.encoder.token_map(tokens)
        stem = self.pixel_sampler.maps(images, masks, self.cfg.image_size)
        # Points read colour from the image at about one pixel per point spacing, whatever the input size:
        # a 512² photo point-sampled by ~3K visible points aliases into speckle.
        side = self.cfg.image_size // 2
        if images.shape[-1] > side or images.shape[-2] > side:
            images, masks = (torch.nn.functional.interpolate(x, size=(side, side), mode="bilinear", align_corners=False,
                                                             antialias=True) for x in (images, masks))
        profile = silhouette_profile(images, masks, camera) if self.cfg.silhouette_cues else None
        return {"pose": pose, "magnification": magnification, "camera": camera, "images": images, "masks": masks, "stem": stem, "tokens": token_map,
                "silhouette": profile}

    def _magnification(self, tokens: torch.Tensor) -> torch.Tensor | None:
        """The magnification head's estimate (B,), or None without one (the nominal camera is used)."""
        return self.magnification_head(tokens) if self.cfg.magnification_head else None

    def _sample(self, pix: dict, points: torch.Tensor, normals: torch.Tensor, occluders: torch.Tensor | None = None) -> PixelFeatures:
        normals = normals.unsqueeze(0).expand(points.shape[0], -1, -1) if normals.ndim == 2 else normals
        feats = self.pixel_sampler(pix["images"], pix["masks"], pix["stem"], pix["tokens"], points, normals, pix["camera"],
                                   occluders=occluders)
        if pix["silhouette"] is not None:  # from the sampler's own projection: each point set is projected once
            feats.silhouette = silhouette_cues(pix["silhouette"], feats.uv)
        return feats

    def _silhouette(self, pix: PixelFeatures, stage: str) -> torch.Tensor | float:
        """The ``stage`` ("point" or "dense") projection of the points' silhouette cues
        (:mod:`panolam.model.silhouette`), or 0 without them."""
        if pix.silhouette is None:
            return 0.0
        proj = self.point_silhouette_proj if stage == "point" else self.dense_silhouette_proj
        return proj(pix.silhouette.to(pix.features.dtype))

    @property
    def encoder_is_frozen_pretrained(self) -> bool:
        """Whether the backbone is frozen and was read from ``cfg.encoder_weights`` (checkpoints may skip it)."""
        return self.encoder.frozen and self.encoder.pretrained

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def param_summary(self) -> dict[str, dict[str, int]]:
        """Per top-level submodule: ``{"total": n, "trainable": n}``."""
        summary = {}
        for name, module in self.named_children():
            params = list(module.parameters())
            summary[name] = {
                "total": sum(p.numel() for p in params),
                "trainable": sum(p.numel() for p in params if p.requires_grad),
            }
        return summary

"""Network sizes and switches (paper §3, §4.1; DESIGN §2)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class ModelConfig:
    # Image encoder. "dinov2" = transformers Dinov2Model (weights from encoder_weights, a local
    # directory or file); "vit" = the same architecture built from the fields below, random init;
    # "vgg" = the pretrained shift-tolerant VGG16 trunk shipped in stlpips-pytorch (encoder_weights
    # unset, or a local copy of that file), ALWAYS frozen (encoder_frozen is ignored), its
    # relu3_3/relu4_3/relu5_3 maps pooled to the (image_size // patch_size)^2 token grid and fused;
    # the vit_* fields and encoder_layers are unused. Train the CPU preset with it by:
    #   --set model.encoder=vgg --set model.image_size=224
    encoder: str = "dinov2"
    encoder_weights: str | None = None
    encoder_frozen: bool = True
    image_size: int = 518  # multiple of the patch size
    patch_size: int = 14
    vit_dim: int = 1024
    vit_depth: int = 24
    vit_heads: int = 16
    encoder_layers: tuple[int, ...] = (5, 12, 18, 24)  # 1-based blocks whose patch tokens are fused
    # Image side the "dinov2" position-embedding table was trained at (official DINOv2: 518 = 37x37
    # patches); other input sizes interpolate it. Loaded weights must match. "vit" uses image_size.
    encoder_table_size: int = 518
    # Transformer width, heads, depth.
    c_t: int = 512
    heads: int = 16
    point_blocks: int = 8  # L_A
    triplane_blocks: int = 8  # L_AT
    mlp_ratio: float = 4.0
    head_layers: int = 3  # decoder heads are 3-layer MLPs
    pe_freqs: int = 10  # NeRF positional-encoding frequencies
    # Template and densification.
    template: str = "builtin"  # "builtin" or a path to a user-owned FLAME file
    template_vertices: int = 5023  # target M_C for the built-in template
    # M_D. > 0: exactly this many dense points (largest faces split first; area_threshold unused).
    # 0: the paper's stopping rule, split every face until each one's area is below area_threshold.
    dense_points: int = 10000
    # lambda_area, a triangle AREA in squared world units of the GAN frame the template lives in (the
    # built-in/FLAME template is scaled to crown y=0.265, chin y=-0.245: a head about 0.51 tall, total
    # surface about 0.69). Used only with dense_points=0. From the 5023-vertex template 1e-4 gives 7954
    # points and 3.5e-5 gives 21476; the paper's 2e-6 gives 364070 (not its M_D = 10K), so the paper's
    # lambda_area must be in other units (FLAME metres at another scale?); that is unverified.
    area_threshold: float = 2e-6
    # Gaussian heads.
    offset_coarse: float = 0.15  # eps_OC
    offset_dense: float = 0.056  # eps_OD
    scale_max: float = 0.05
    # Spherical tri-plane branch.
    triplane_res: int = 64  # H_T = W_T
    triplane_channels: int = 32  # C_st
    # Plane cells per query token along each side. 1 = the paper (one token per cell); 2 = a token
    # per 2x2 cells, unfolded by the output MLP (LRM-style), 16x cheaper self-attention (CPU preset).
    triplane_upsample: int = 1
    triplane_layout: str = "spherehead"  # dual spherical tri-planes (DESIGN §2)
    box_warp: float = 1.0
    ray_aggregation: bool = True  # False = single-point query (ablation "w/o ST ray agg.")
    ray_cameras: int = 4  # front, left, right, back
    ray_camera_radius: float = 2.7  # distance of the virtual ray cameras from the origin (GAN camera radius)
    ray_samples: int = 32  # K_m per camera
    ray_interval: float = 0.06  # length of the sampled interval centred on each point
    coarse_to_fine: bool = True  # False = predict dense Gaussians directly (ablation)
    # Beyond the paper: a pose head estimates the input camera; points sample the input image where they
    # project (RGB, mask, a conv-stem map, the token map) with a soft visibility test; see model/pixel_aligned.
    pixel_aligned: bool = False
    pose_head: str = "grid"  # "grid" (conv over the token grid) or "mean" (mean-pooled tokens; the first shipped head)
    # Beyond the paper (pixel_aligned only): each point also reads the input silhouette along its own direction
    # from the projected head centre (radial gap to the mask edge, the colour inside that edge, the crown
    # colour); see model/silhouette.py.
    silhouette_cues: bool = False
    # Beyond the paper (pixel_aligned only): a second head on the token grid estimates the input view's
    # log magnification (focal length / camera distance against the nominal camera's). Without it the
    # estimated camera assumes the nominal one, and a head that appears 6 % larger samples the photo
    # several pixels off at its outline (measured: the true magnification is worth ~1.4 dB).
    magnification_head: bool = False
    # Beyond the paper (pixel_aligned only; inference): the camera is also estimated from the mirrored
    # photo, whose yaw is the negative, and the two estimates are averaged: the part of the pose head's
    # error that does not turn with the photo (a lean to one side) cancels, for one more encoder pass
    # (BENCHMARKS, 2026-12-07 (8)).
    pose_flip_average: bool = False
    # Beyond the paper: smallest dense-Gaussian scale as a fraction of the nominal dense point spacing,
    # applied smoothly (sqrt(s² + floor²)). 0 = none (the paper). Trained at a low render resolution,
    # Gaussians shrink below a pixel where that costs nothing and leave see-through gaps at higher ones.
    dense_scale_floor: float = 0.0
    # Beyond the paper: dense points the network outputs at inference (eval mode); 0 = dense_points. The
    # dense head reads features interpolated over the template surface, so it can be queried on a finer
    # subdivision than it was trained on (the scale floor keeps its trained absolute size). More points
    # close the see-through gaps of the trained layer at 512² and sharpen the visible side; the unseen side
    # gets more texture that PSNR counts against it (BENCHMARKS, *Release of 2026-12-07 (4)*).
    inference_dense_points: int = 0


PRESETS: dict[str, ModelConfig] = {
    "paper": ModelConfig(),
    "default": ModelConfig(
        encoder="vit", encoder_frozen=False, image_size=224, vit_dim=192, vit_depth=8, vit_heads=3,
        encoder_layers=(2, 4, 6, 8), c_t=192, heads=6, point_blocks=3, triplane_blocks=2,
        template_vertices=2500, dense_points=6000, area_threshold=1e-4, triplane_res=32,
        triplane_channels=16, triplane_upsample=2, ray_samples=8, pixel_aligned=True, dense_scale_floor=0.5,
        silhouette_cues=True, magnification_head=True, inference_dense_points=12000, pose_flip_average=True,
    ),
    "tiny": ModelConfig(
        encoder="vit", encoder_frozen=False, image_size=56, vit_dim=32, vit_depth=4, vit_heads=2,
        encoder_layers=(1, 2, 3, 4), c_t=32, heads=2, point_blocks=1, triplane_blocks=1, head_layers=3,
        pe_freqs=4, template_vertices=400, dense_points=1000, area_threshold=1e-3, triplane_res=8,
        triplane_channels=8, ray_samples=4, pixel_aligned=True, silhouette_cues=True, magnification_head=True,
    ),
}

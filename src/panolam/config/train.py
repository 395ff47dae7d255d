"""Optimisation, losses and logging settings (paper §3.5, §4.1; DESIGN §5)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class TrainConfig:
    out_dir: str = "runs/default"
    steps: int = 20000
    batch_size: int = 1
    lr: float = 4e-4
    weight_decay: float = 0.05
    warmup_steps: int = 500
    grad_clip: float = 1.0
    render_size: int = 128  # supervision render resolution
    lambda_l1: float = 1.0  # lambda_1
    lambda_lpips: float = 1.0  # lambda_2
    lambda_rgb_gauss: float = 1.0  # lambda_3
    lambda_rgb_st: float = 0.1  # lambda_4
    lambda_mask: float = 1.0  # lambda_5
    lambda_st: float = 1e-4  # lambda_6
    # Pixel-aligned models only (model.pixel_aligned): weight of the pose head's loss (squared error of
    # the (sin, cos) yaw/pitch vector against the input view's camera), and the std (degrees) of the
    # random rotation added to the true input camera the points are projected with in training.
    lambda_pose: float = 1.0
    # "all", or "pose_head": only the pose head learns, on the frozen encoder's tokens with the pose loss
    # alone (nothing is rendered, so a step costs an encoder forward): puts a new or better pose head on a
    # trained network. Use a large train.batch_size and data.views_per_step=1 for it. "heads": everything
    # but the image encoder and the pose head learns (the tokens do not change, so a pose head trained on
    # them, before or after, stays valid).
    trainable: str = "all"
    input_camera_noise_deg: float = 2.0
    # Which camera the points are projected with in training: "true" (the input view's, jittered by
    # input_camera_noise_deg) or "estimated" (the network's own pose and magnification estimate, as at
    # inference, so the heads learn the estimate's real errors; meant for train.trainable=heads, where
    # the camera heads are frozen).
    input_camera: str = "true"
    lpips_weights: str | None = None  # local standard-LPIPS file; None = shipped ST-LPIPS
    lpips_net: str = "vgg"  # trunk of the shipped ST-LPIPS used as the loss ("vgg" or "alex"; eval always uses "alex")
    st_decoder: str | None = None  # frozen tri-plane decoder (.safetensors from `panolam teacher fit`); None = no L_rgb^ST
    # Which frozen decoder renders the predicted planes for L_rgb^ST (train/gan_teacher.py): "panolam" =
    # st_decoder above; "spherehead" = the SphereHead generator in st_decoder_checkpoint (official .pkl or
    # converted .safetensors, read by the safe loader of `panolam data gan`; needs model.triplane_channels=32
    # and a SphereHead dataset's gan_ws); "auto" = spherehead when a training dataset was made by SphereHead
    # and st_decoder_checkpoint is set, else panolam. st_superres: also run SphereHead's super-resolution.
    st_decoder_kind: str = "auto"
    st_decoder_checkpoint: str | None = None
    st_superres: bool = False
    # Side of the tri-plane volume render for L_rgb^ST (0 = render_size); a smaller render is
    # upsampled to render_size before the loss. Volume rendering costs ~48 MLP samples per pixel,
    # so on a CPU a quarter of the pixels keeps L_rgb^ST from dominating the step.
    st_render_size: int = 0
    st_samples_coarse: int = 24  # volume-rendering samples per ray for L_rgb^ST
    st_samples_fine: int = 24
    st_ray_start: float = 2.25  # ray interval for cameras at radius 2.7 (EG3D/SphereHead)
    st_ray_end: float = 3.3
    teacher_steps: int = 2000  # `panolam teacher fit`: optimisation steps per subject batch
    teacher_lr: float = 5e-2  # Adam step of the planes (the shared decoder uses a tenth); cosine-decayed to a tenth
    # Start from these network weights (a model dir, a step_XXXXXXXX dir, a run dir, or "shipped" for the
    # default model) instead of a random init: fine-tuning. Optimiser, schedule and data start fresh;
    # --resume of the run's own checkpoint takes precedence.
    init_weights: str | None = None
    checkpoint_every: int = 500
    log_every: int = 20
    sample_every: int = 500
    seed: int = 0
    mixed_precision: str = "auto"  # "auto" = bf16 where the GPU has it, else fp32


PRESETS: dict[str, TrainConfig] = {
    "paper": TrainConfig(out_dir="runs/paper", steps=200000, batch_size=8, render_size=512),
    "default": TrainConfig(),
    "tiny": TrainConfig(out_dir="runs/tiny", steps=4, warmup_steps=1, render_size=32, checkpoint_every=2, log_every=1, sample_every=2,
                        lpips_net="alex", st_samples_coarse=6, st_samples_fine=6, teacher_steps=20, teacher_lr=0.1),
}

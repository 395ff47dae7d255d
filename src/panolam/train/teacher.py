"""``panolam teacher fit``: per-subject spherical tri-planes and one shared decoder, fitted to the data.

With no SphereHead checkpoint to distil from, the teacher of L_st and the frozen decoder of L_rgb^ST
(paper §3.5, DESIGN §2) are fitted here by inverse volume rendering of the multi-view dataset. Each
subject gets dual-spherical tri-planes (6, C_st, H_T, W_T) of exactly the shape the network predicts
(``model.triplane_channels``, ``model.triplane_res``), rendered with the same
:class:`~panolam.model.triplane_decoder.TriplaneRenderer` settings training uses (``train.st_*``).
Every step draws random rays from all stored views of a batch of subjects (cheap on CPU) and
minimises L1 on colour plus L1 between the rendered alpha and the mask. Phase 1 fits the first
batch's planes and the decoder jointly, then writes the decoder (``OUT/decoder.safetensors``, keys
in SphereHead's ``decoder.net.{0,2}`` layout, plus ``decoder.json``), atomically; phase 2 fits the
remaining subjects' planes against the frozen decoder, so every plane set agrees with the decoder
training will load through ``train.st_decoder``. Planes go to the dataset's sidecar extras
(``extras/teacher_planes/<subject>.npy``, float16). The run is idempotent and resumable: with a
decoder present, subjects whose planes exist (with the right shape) are skipped; without one (or
with ``force``) everything is refitted, because old planes only make sense with their decoder.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from panolam.config import PanoLAMConfig
from panolam.data.dataset import load_subject
from panolam.data.extras import read_extra, write_extra
from panolam.data.labels import rejected
from panolam.data.manifest import load_manifest
from panolam.atomic import atomic_write_bytes
from panolam.geometry.cameras import Cameras
from panolam.model.triplane_decoder import TriplaneRenderer, camera_rays, renderer_from_state

PLANES_EXTRA = "teacher_planes"
DECODER_NAME = "decoder.safetensors"
DECODER_META = "decoder.json"
TEACHER_DIR = "teacher"


@dataclasses.dataclass
class TeacherResult:
    decoder_path: Path
    fitted: list[str]  # subjects whose planes were (re)written by this run
    skipped: list[str]  # subjects whose existing planes were kept
    decoder_losses: list[float]  # per-step loss of the joint (planes + decoder) phase; empty if the decoder was reused
    plane_losses: list[float]  # per-step loss of the planes-only phase


@dataclasses.dataclass
class RayBank:
    """Every pixel ray of a batch of subjects: (S, N, 3) origins/dirs, (S, N, 3) colours, (S, N, 1) masks."""

    origins: torch.Tensor
    dirs: torch.Tensor
    rgb: torch.Tensor
    mask: torch.Tensor

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        s, total = self.rgb.shape[:2]
        idx = torch.randint(total, (s, n), generator=generator).to(self.rgb.device)
        pick = lambda t: t.gather(1, idx[..., None].expand(-1, -1, t.shape[-1]))  # noqa: E731
        return pick(self.origins), pick(self.dirs), pick(self.rgb), pick(self.mask)


def plane_shape(cfg: PanoLAMConfig) -> tuple[int, int, int, int]:
    """(6, C_st, H_T, W_T) of the network's predicted planes."""
    m = cfg.model
    return (6, m.triplane_channels, m.triplane_res, m.triplane_res)


def decoder_path(data_root: str | Path, out_dir: str | Path | None = None) -> Path:
    return (Path(out_dir) if out_dir is not None else Path(data_root) / TEACHER_DIR) / DECODER_NAME


def build_renderer(cfg: PanoLAMConfig) -> TriplaneRenderer:
    """A fresh renderer with the sampling settings ``panolam train`` uses for L_rgb^ST."""
    t = cfg.train
    return TriplaneRenderer(cfg.model.triplane_channels, box_warp=cfg.model.box_warp, ray_start=t.st_ray_start, ray_end=t.st_ray_end,
                            samples_coarse=t.st_samples_coarse, samples_fine=t.st_samples_fine, background=cfg.data.background)


def subject_rays(root: str | Path, subject: str, size: int, background: float) -> tuple[torch.Tensor, ...]:
    """All views of one subject at ``size``: origins, dirs, rgb (V·size², 3) and mask (V·size², 1)."""
    s = load_subject(root, subject, background=[background] * 3)
    h, w = s["images"].shape[-2:]
    cams = Cameras(s["world_to_cam"].float(), s["K"].float(), w, h).resized(size, size)
    origins, dirs = camera_rays(cams)
    imgs = F.interpolate(torch.cat([s["images"], s["masks"]], 1).float(), size=(size, size), mode="bilinear",
                         align_corners=False, antialias=True)
    pix = imgs.permute(0, 2, 3, 1).reshape(-1, 4)
    return origins.reshape(-1, 3), dirs.reshape(-1, 3), pix[:, :3], pix[:, 3:]


def ray_bank(root: str | Path, subjects: Sequence[str], size: int, background: float, device: torch.device) -> RayBank:
    parts = [subject_rays(root, s, size, background) for s in subjects]
    return RayBank(*(torch.stack([p[i] for p in parts]).to(device) for i in range(4)))


def fit_batch(renderer: TriplaneRenderer, planes: torch.Tensor, bank: RayBank, steps: int, lr: float, rays: int,
              train_decoder: bool, generator: torch.Generator, bar=None) -> list[float]:
    """Optimise ``planes`` (S, 6, C, H, W) (and the decoder when ``train_decoder``) in place; per-step losses."""
    planes.requires_grad_(True)
    groups = [{"params": [planes], "lr": lr}]
    if train_decoder:
        # The decoder is shared by every subject: a smaller step keeps it from chasing one batch's planes.
        groups.append({"params": list(renderer.decoder.parameters()), "lr": 0.1 * lr})
    renderer.decoder.requires_grad_(train_decoder)
    opt = torch.optim.Adam(groups)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps), eta_min=0.1 * lr)
    losses = []
    for _ in range(steps):
        o, d, rgb_t, mask_t = bank.sample(rays, generator)
        feats, alpha, _ = renderer.render_rays(planes, o, d, jitter=True, generator=_device_generator(generator, planes.device))
        rgb = feats[..., :3] + renderer.background * (1 - alpha)
        loss = (rgb - rgb_t).abs().mean() + (alpha - mask_t).abs().mean()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"teacher fit: non-finite loss {loss.item()} after {len(losses)} steps")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
    planes.requires_grad_(False)
    renderer.decoder.requires_grad_(False)
    return losses


def _device_generator(gen: torch.Generator, device: torch.device) -> torch.Generator | None:
    # Jitter draws on the planes' device; a CPU generator cannot feed CUDA sampling, so CUDA uses the global RNG.
    return gen if device.type == "cpu" else None


def save_decoder(path: Path, renderer: TriplaneRenderer, meta: dict[str, Any]) -> None:
    """``decoder.safetensors`` (SphereHead key layout) and ``decoder.json`` beside it, each written atomically."""
    from safetensors.torch import save

    tensors = {f"decoder.{k}": v.detach().cpu().contiguous() for k, v in renderer.decoder.state_dict().items()}
    atomic_write_bytes(path, save(tensors, metadata={"format": "panolam-teacher-decoder"}))
    atomic_write_bytes(path.with_name(DECODER_META), json.dumps(meta, indent=2, sort_keys=True).encode())


def load_decoder(path: Path, cfg: PanoLAMConfig) -> TriplaneRenderer:
    """The saved decoder in a renderer with this config's sampling settings; checks it fits the config."""
    from safetensors.torch import load_file

    t = cfg.train
    renderer = renderer_from_state(load_file(str(path)), box_warp=cfg.model.box_warp, ray_start=t.st_ray_start, ray_end=t.st_ray_end,
                                   samples_coarse=t.st_samples_coarse, samples_fine=t.st_samples_fine, background=cfg.data.background)
    meta_path = path.with_name(DECODER_META)
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    want = list(plane_shape(cfg))
    if meta.get("plane_shape", want) != want:
        raise ValueError(f"{path} was fitted for planes {meta['plane_shape']}, this config predicts {want}; "
                         "refit with `panolam teacher fit --force` (or use the matching --config)")
    return renderer


def _subjects(root: Path, split: str) -> list[str]:
    manifest = load_manifest(root)
    splits = ("train", "test") if split == "all" else (split,)
    skip = rejected(root)
    return sorted(s for sp in splits for s in manifest.subjects(sp) if s not in skip)


def _has_planes(root: Path, subject: str, shape: tuple[int, ...]) -> bool:
    arr = read_extra(root, PLANES_EXTRA, subject)
    return arr is not None and tuple(arr.shape) == shape


def fit_teacher(cfg: PanoLAMConfig, data_root: str | Path, out_dir: str | Path | None = None, split: str = "train",
                steps: int | None = None, rays: int = 1024, subjects_per_batch: int = 8, size: int | None = None,
                force: bool = False, device: str | torch.device = "cpu", progress: bool = True,
                plane_steps: int | None = None, plane_rays: int | None = None,
                plane_subjects_per_batch: int | None = None) -> TeacherResult:
    """Fit (or complete) the teacher of the dataset at ``data_root``; see the module doc.

    ``steps``/``rays``/``subjects_per_batch`` set the joint (decoder + planes) phase; the ``plane_*``
    values set the planes-only phase and default to the same. The planes-only phase dominates the
    cost on a large dataset, and with a frozen decoder it needs far fewer rays per subject, so a
    cheap setting there (e.g. 64 subjects x 128 rays x 200 steps) keeps a CPU fit to minutes.
    """
    from tqdm.auto import tqdm

    root = Path(data_root)
    if split not in ("train", "test", "all"):
        raise ValueError(f"split {split!r} must be train, test or all")
    steps = cfg.train.teacher_steps if steps is None else steps
    plane_steps = steps if plane_steps is None else plane_steps
    plane_rays = rays if plane_rays is None else plane_rays
    plane_batch = subjects_per_batch if plane_subjects_per_batch is None else plane_subjects_per_batch
    if min(steps, rays, subjects_per_batch, plane_steps, plane_rays, plane_batch) < 1:
        raise ValueError(f"need steps, rays and subjects per batch >= 1 in both phases, got {steps}, {rays}, {subjects_per_batch} "
                         f"(joint) and {plane_steps}, {plane_rays}, {plane_batch} (planes only)")
    size = size or cfg.train.render_size
    device = torch.device(device)
    shape = plane_shape(cfg)
    subjects = _subjects(root, split)
    if not subjects:
        raise ValueError(f"{root}: split {split!r} has no subjects to fit")
    dec_path = decoder_path(root, out_dir)
    gen = torch.Generator().manual_seed(cfg.train.seed)
    torch.manual_seed(cfg.train.seed)

    reuse = dec_path.is_file() and not force
    renderer = (load_decoder(dec_path, cfg) if reuse else build_renderer(cfg)).to(device)
    todo = [s for s in subjects if not (reuse and _has_planes(root, s, shape))]
    skipped = [s for s in subjects if s not in todo]
    # The first batch fits the decoder too (unless one is reused); the rest fit planes against it.
    first = 0 if reuse else min(subjects_per_batch, len(todo))
    batches = ([todo[:first]] if first else []) + [todo[i:i + plane_batch] for i in range(first, len(todo), plane_batch)]
    total = sum(steps if (k == 0 and first) else plane_steps for k in range(len(batches)))
    bar = tqdm(total=total, desc="teacher", unit="step", disable=not progress, dynamic_ncols=True)
    decoder_losses: list[float] = []
    plane_losses: list[float] = []
    try:
        for k, batch in enumerate(batches):
            bank = ray_bank(root, batch, size, cfg.data.background, device)
            planes = (0.1 * torch.randn((len(batch), *shape), generator=gen)).to(device)
            joint = k == 0 and not reuse
            losses = fit_batch(renderer, planes, bank, steps if joint else plane_steps, cfg.train.teacher_lr,
                               rays if joint else plane_rays, joint, gen, bar)
            if joint:
                decoder_losses = losses
                save_decoder(dec_path, renderer, {
                    "plane_shape": list(shape), "hidden": renderer.decoder.net[0].weight.shape[0], "box_warp": cfg.model.box_warp,
                    "ray_start": cfg.train.st_ray_start, "ray_end": cfg.train.st_ray_end, "render_size": size, "steps": steps,
                    "rays_per_step": rays, "fitted_on": batch, "final_loss": losses[-1], "data_root": str(root),
                    "use_with": f"--set train.st_decoder={dec_path}",
                })
            else:
                plane_losses.extend(losses)
            for sub, p in zip(batch, planes):
                write_extra(root, PLANES_EXTRA, sub, p.detach().cpu().numpy().astype(np.float16))
    finally:
        bar.close()
    return TeacherResult(dec_path, todo, skipped, decoder_losses, plane_losses)

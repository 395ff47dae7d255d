"""Photo -> Gaussian head, the way users run it: preprocessing, one forward pass, files and previews.

Used by ``panolam reconstruct`` and the web app. The model comes from, in order: an explicit
checkpoint, ``$PANOLAM_CHECKPOINT``, the default model shipped in ``panolam/assets/default_model``
(only for the ``default`` config without overrides); with none of them the network is randomly
initialised and every entry point says so.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from panolam.atomic import atomic_write_bytes
from panolam.gaussians import Gaussians
from panolam.gaussians.ply import save_ply, save_splat
from panolam.geometry.cameras import Cameras
from panolam.runtime import resolve_device

if TYPE_CHECKING:
    from panolam.refine import RefineStats

DEFAULT_CHECKPOINT = Path(__file__).parent / "assets" / "default_model"
UNTRAINED_WARNING = (
    "no trained weights found (no --checkpoint, no $PANOLAM_CHECKPOINT, nothing at "
    f"{DEFAULT_CHECKPOINT}): using an UNTRAINED, randomly initialised network — the head will be a blob"
)


@dataclasses.dataclass
class Reconstruction:
    gaussians: Gaussians  # unbatched, on CPU
    framed: np.ndarray  # (H, W, 3) uint8: what the network saw
    timings: dict[str, float]
    trained: bool
    alpha: np.ndarray | None = None  # (H, W) float32 person matte of ``framed``, when preprocessing made one
    input_camera: Cameras | None = None  # the input view's camera at the framed size (pixel-aligned networks)
    faces: np.ndarray | None = None  # (F, 3) triangles over the Gaussians (dense template mesh) for head.glb


def find_checkpoint(checkpoint: str | os.PathLike | None, use_default: bool = True) -> Path | None:
    """The checkpoint to use, or None for an untrained model; an explicit path that is missing is an error.

    ``use_default=False`` skips the shipped model (it was trained with the ``default`` preset, so a
    request for another architecture gets an untrained network of that architecture instead).
    """
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.exists():
            raise FileNotFoundError(f"checkpoint {path} does not exist (train one with `panolam train`, or omit --checkpoint for the shipped model)")
        return resolve_checkpoint(path)
    env = os.environ.get("PANOLAM_CHECKPOINT")
    if env:
        return find_checkpoint(env)
    return DEFAULT_CHECKPOINT if use_default and (DEFAULT_CHECKPOINT / "panolam.json").exists() else None


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """Accept a model directory, a training checkpoint ``step_XXXXXXXX/`` or a run directory (its latest checkpoint)."""
    from panolam.model.checkpoint import META_NAME
    from panolam.train.loop import latest_checkpoint

    p = Path(path)
    if (p / META_NAME).is_file() or p.is_file():
        return p
    if (p / "model" / META_NAME).is_file():
        return p / "model"
    if p.is_dir() and (latest := latest_checkpoint(p)) is not None:
        return latest / "model"
    raise FileNotFoundError(f"--checkpoint {p}: no PanoLAM checkpoint there (expected {META_NAME}, model/{META_NAME} "
                            "or checkpoints/latest of a training run)")


class Reconstructor:
    """Holds one network on one device and turns photos into heads."""

    def __init__(self, checkpoint: str | os.PathLike | None = None, config: str = "default", overrides: Sequence[str] = (),
                 device: str | torch.device = "auto", points: int | None = None):
        """``points``: dense Gaussians per head (default: the model's ``inference_dense_points``)."""
        from panolam.model.checkpoint import load_model
        from panolam.model.panolam import PanoLAM

        self.device = resolve_device(device)
        path = find_checkpoint(checkpoint, use_default=config == "default" and not overrides)
        if path is not None:
            self.model, cfg = load_model(path, device=self.device)
            self.model_cfg = cfg.model if hasattr(cfg, "model") else cfg
            self.trained = True
        else:
            from panolam.config import get_config

            warnings.warn(UNTRAINED_WARNING, stacklevel=2)
            self.model_cfg = get_config(config, overrides).model
            torch.manual_seed(0)
            self.model = PanoLAM(self.model_cfg).to(self.device)
            self.trained = False
        if points is not None:
            self.model.set_inference_points(points)
        self.model.eval()
        self.checkpoint = path

    def image_tensor(self, framed: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 -> (1, 3, H, W) float in [0, 1] on the model's device."""
        return torch.from_numpy(np.ascontiguousarray(framed[..., :3])).permute(2, 0, 1)[None].float().div(255).to(self.device)

    @torch.inference_mode()
    def reconstruct(self, photo: np.ndarray | str | os.PathLike, preprocess: bool = True, size: int = 512,
                    force: bool = False, landmark_yaw: bool = True) -> Reconstruction:
        """``landmark_yaw``: average the face mesh's yaw (when preprocessing found one) into the pose
        head's estimate of the input camera (pixel-aligned networks)."""
        from panolam.model.pixel_aligned import camera_pose_deg
        from panolam.preprocess import frame_photo, load_photo

        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        rgb = load_photo(photo) if not isinstance(photo, np.ndarray) else photo
        alpha, face_yaw = None, None
        if preprocess:
            result = frame_photo(rgb, size=size, require_face=not force)  # force: no face is fine
            framed, alpha = result.image, result.alpha
            if result.face_pose_deg is not None:
                face_yaw = timings["face_yaw_deg"] = result.face_pose_deg[0]
        else:
            framed, alpha = _square_resize(rgb, size)
        timings["preprocess_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        masks = None if alpha is None else torch.from_numpy(np.ascontiguousarray(alpha, dtype=np.float32))[None, None].to(self.device)
        hint = torch.tensor([face_yaw], device=self.device) if landmark_yaw and face_yaw is not None else None  # read by pixel-aligned networks
        out = self.model(self.image_tensor(framed), masks=masks, yaw_hint_deg=hint)  # the matte is read by pixel-aligned networks only
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        timings["reconstruct_s"] = time.perf_counter() - t0
        head = out.dense[0].detach().to("cpu", torch.float32)
        camera = None if out.input_camera is None else out.input_camera.to("cpu").to_cameras(framed.shape[1], framed.shape[0])
        pose = out.input_pose_deg()
        if pose is not None:  # the view estimate, kept with the timings for the user and benchmarks
            timings["pose_head_yaw_deg"] = float(pose[0][0])
            yaw, pitch = camera_pose_deg(out.input_camera.world_to_cam)  # what the points were projected with
            timings["input_yaw_deg"], timings["input_pitch_deg"] = float(yaw[0]), float(pitch[0])
        if out.magnification is not None:  # how much larger than the nominal framing the head appears, in percent
            timings["input_magnification_pct"] = 100 * float(torch.expm1(out.magnification[0]))
        return Reconstruction(gaussians=head, framed=framed, timings=timings, trained=self.trained, alpha=alpha,
                              input_camera=camera, faces=self.model.output_faces.cpu().numpy())


def input_camera_for(rec: Reconstruction) -> "Cameras":
    """The camera of ``rec``'s input photo at the framed size: the pose head's estimate when the network
    has one, else the nominal frontal camera the framing was made for (training renders: yaw 0,
    radius 2.7, diagonal FOV 18.837°)."""
    if rec.input_camera is not None:
        return rec.input_camera
    h, w = rec.framed.shape[:2]
    return Cameras.orbit(0.0, 0.0, width=w, height=h)


def refine_reconstruction(rec: Reconstruction, steps: int, **options) -> tuple[Reconstruction, "RefineStats"]:
    """``rec`` with its head refined against the framed input (``steps`` Adam steps of
    :func:`panolam.refine.refine_head`, options passed on) and ``refine_s`` in its timings; steps=0 returns ``rec``.

    The person alpha is the mask (the whole image when the photo was not preprocessed)."""
    from panolam.refine import refine_head

    image = torch.from_numpy(np.ascontiguousarray(rec.framed[..., :3])).permute(2, 0, 1).float().div(255)
    mask = torch.from_numpy(rec.alpha)[None] if rec.alpha is not None else None
    head, stats = refine_head(rec.gaussians, image, mask, input_camera_for(rec), steps, **options)
    if steps == 0:
        return rec, stats
    return dataclasses.replace(rec, gaussians=head, timings={**rec.timings, "refine_s": stats.seconds}), stats


def _square_resize(img: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """An already-framed photo as the network input: RGBA composited on white (the training background),
    centre-cropped to a square (never stretched), resized to ``size``; also its alpha, if it had one."""
    from PIL import Image

    alpha = None
    if img.ndim == 3 and img.shape[2] == 4:
        alpha = img[..., 3].astype(np.float32) / 255
        a = alpha[..., None]
        img = (img[..., :3].astype(np.float32) * a + 255 * (1 - a) + 0.5).astype(np.uint8)
    h, w = img.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = np.ascontiguousarray(img[top : top + side, left : left + side])
    rgb = np.asarray(Image.fromarray(square).convert("RGB").resize((size, size), Image.BICUBIC))
    if alpha is not None:
        crop = np.ascontiguousarray(alpha[top : top + side, left : left + side])
        alpha = np.asarray(Image.fromarray(crop, mode="F").resize((size, size), Image.BILINEAR), dtype=np.float32).clip(0, 1)
    return rgb, alpha


def render_views(g: Gaussians, names: Sequence[str] = ("front", "left", "right", "back"), size: int = 512, input_image: np.ndarray | None = None) -> np.ndarray:
    """Contact sheet (H, W·n, 3) uint8 of the named views, preceded by the input when given."""
    from panolam.render.preview import contact_sheet

    extra = [("input", input_image)] if input_image is not None else []
    return contact_sheet(g, names, size=size, extra=extra)


def write_head(rec: Reconstruction, out_dir: str | os.PathLike, mesh: bool = True) -> dict[str, Path]:
    """The files users wait for, written first: head.ply, head.splat, head.glb (when the reconstruction
    carries its mesh faces and ``mesh``) and input.png. Returns their paths; adds ``write_head_s``."""
    from panolam.render.preview import save_png

    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"ply": out / "head.ply", "splat": out / "head.splat"}
    save_ply(rec.gaussians, paths["ply"])
    save_splat(rec.gaussians, paths["splat"])
    if mesh and rec.faces is not None:
        from panolam.gaussians.glb import save_glb

        g = rec.gaussians
        paths["glb"] = save_glb(out / "head.glb", g.means.numpy(), rec.faces, g.colors.numpy())
    paths["input"] = save_png(rec.framed, out / "input.png")
    rec.timings["write_head_s"] = time.perf_counter() - t0
    return paths


def write_previews(rec: Reconstruction, out_dir: str | os.PathLike, turntable_frames: int | None = None, size: int | None = None,
                   fps: int | None = None, gif: bool = False, mp4: bool = True) -> dict[str, Path]:
    """views.png (input + front/left/right/back) and the turntable (MP4; GIF when ``gif``), all views
    rendered in one batched rasteriser call. Defaults: :data:`panolam.render.preview.TURNTABLE_FRAMES`
    frames at ``PREVIEW_SIZE``² and ``TURNTABLE_FPS``. Adds ``render_previews_s`` (rendering) and
    ``encode_previews_s`` (PNG/video encoding) to the timings."""
    from panolam.render import preview

    frames = preview.TURNTABLE_FRAMES if turntable_frames is None else turntable_frames
    size = size or preview.PREVIEW_SIZE
    fps = fps or preview.TURNTABLE_FPS
    out = Path(out_dir)
    names = ("front", "left", "right", "back")
    t0 = time.perf_counter()
    views, turn = preview.orbit_previews(rec.gaussians, names, frames, size)
    rec.timings["render_previews_s"] = time.perf_counter() - t0
    if frames > 0:
        rec.timings["render_per_frame_s"] = rec.timings["render_previews_s"] / len(turn)
    t0 = time.perf_counter()
    paths = {"views": preview.save_png(preview.compose_sheet(views, names, extra=[("input", rec.framed)]), out / "views.png")}
    if frames > 0 and mp4:
        paths["mp4"] = preview.save_video(turn, out / "turntable.mp4", fps)
    if frames > 0 and gif:
        paths["gif"] = preview.save_video(turn, out / "turntable.gif", fps)
    rec.timings["encode_previews_s"] = time.perf_counter() - t0
    return paths


def write_timings(rec: Reconstruction, out_dir: str | os.PathLike) -> Path:
    """timings.json: the stage times so far, whether the weights are trained, the Gaussian count."""
    path = Path(out_dir) / "timings.json"
    atomic_write_bytes(path, json.dumps({**rec.timings, "trained": rec.trained, "gaussians": len(rec.gaussians)}, indent=2).encode())
    return path


def write_outputs(rec: Reconstruction, out_dir: str | os.PathLike, previews: bool = True, turntable_frames: int | None = None,
                  size: int | None = None, fps: int | None = None, gif: bool = False, mesh: bool = True) -> dict[str, Path]:
    """Everything for one head, in the order users need it: :func:`write_head`, then (``previews``)
    :func:`write_previews`, then timings.json. Returns the paths by kind (ply, splat, glb, input,
    views, mp4, gif, timings)."""
    paths = write_head(rec, out_dir, mesh=mesh)
    if previews:
        paths.update(write_previews(rec, out_dir, turntable_frames, size, fps, gif=gif))
    paths["timings"] = write_timings(rec, out_dir)
    return paths

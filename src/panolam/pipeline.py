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
from typing import Sequence

import numpy as np
import torch

from panolam.gaussians import Gaussians
from panolam.gaussians.ply import atomic_write_bytes, save_ply, save_splat
from panolam.runtime import resolve_device

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

    def __init__(self, checkpoint: str | os.PathLike | None = None, config: str = "default", overrides: Sequence[str] = (), device: str | torch.device = "auto"):
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
        self.model.eval()
        self.checkpoint = path

    def image_tensor(self, framed: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 -> (1, 3, H, W) float in [0, 1] on the model's device."""
        return torch.from_numpy(np.ascontiguousarray(framed[..., :3])).permute(2, 0, 1)[None].float().div(255).to(self.device)

    @torch.inference_mode()
    def reconstruct(self, photo: np.ndarray | str | os.PathLike, preprocess: bool = True, size: int = 512,
                    force: bool = False) -> Reconstruction:
        from panolam.preprocess import frame_photo, load_photo

        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        rgb = load_photo(photo) if not isinstance(photo, np.ndarray) else photo
        if preprocess:
            framed = frame_photo(rgb, size=size, require_face=not force).image  # force: no face is fine
        else:
            framed = _square_resize(rgb, size)
        timings["preprocess_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = self.model(self.image_tensor(framed))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        timings["reconstruct_s"] = time.perf_counter() - t0
        head = out.dense[0].detach().to("cpu", torch.float32)
        return Reconstruction(gaussians=head, framed=framed, timings=timings, trained=self.trained)


def _square_resize(img: np.ndarray, size: int) -> np.ndarray:
    """An already-framed photo as the network input: RGBA composited on white (the training background),
    centre-cropped to a square (never stretched), resized to ``size``."""
    from PIL import Image

    if img.ndim == 3 and img.shape[2] == 4:
        alpha = img[..., 3:4].astype(np.float32) / 255
        img = (img[..., :3].astype(np.float32) * alpha + 255 * (1 - alpha) + 0.5).astype(np.uint8)
    h, w = img.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = np.ascontiguousarray(img[top : top + side, left : left + side])
    return np.asarray(Image.fromarray(square).convert("RGB").resize((size, size), Image.BICUBIC))


def render_views(g: Gaussians, names: Sequence[str] = ("front", "left", "right", "back"), size: int = 512, input_image: np.ndarray | None = None) -> np.ndarray:
    """Contact sheet (H, W·n, 3) uint8 of the named views, preceded by the input when given."""
    from panolam.render.preview import contact_sheet

    extra = [("input", input_image)] if input_image is not None else []
    return contact_sheet(g, names, size=size, extra=extra)


def write_outputs(rec: Reconstruction, out_dir: str | os.PathLike, turntable_frames: int = 120, size: int = 512, fps: int = 30) -> dict[str, Path]:
    """Write head.ply, head.splat, input.png, views.png, turntable.gif/.mp4 and timings.json; returns the paths."""
    from panolam.render.preview import save_png, save_video, turntable

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"ply": out / "head.ply", "splat": out / "head.splat", "input": out / "input.png", "views": out / "views.png"}
    save_ply(rec.gaussians, paths["ply"])
    save_splat(rec.gaussians, paths["splat"])
    save_png(rec.framed, paths["input"])
    t0 = time.perf_counter()
    save_png(render_views(rec.gaussians, size=size, input_image=rec.framed), paths["views"])
    rec.timings["render_views_s"] = time.perf_counter() - t0
    if turntable_frames > 0:
        t0 = time.perf_counter()
        frames = turntable(rec.gaussians, turntable_frames, size)
        rec.timings["render_turntable_s"] = time.perf_counter() - t0
        rec.timings["render_per_frame_s"] = rec.timings["render_turntable_s"] / turntable_frames
        paths["gif"] = save_video(frames, out / "turntable.gif", fps)
        paths["mp4"] = save_video(frames, out / "turntable.mp4", fps)
    paths["timings"] = out / "timings.json"
    atomic_write_bytes(paths["timings"], json.dumps({**rec.timings, "trained": rec.trained, "gaussians": len(rec.gaussians)}, indent=2).encode())
    return paths

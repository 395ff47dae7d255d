"""Pictures of a head for people: labelled contact sheets and 360° turntables (GIF / MP4).

Built on :func:`panolam.render.rasterize`; cameras come from :mod:`panolam.geometry.cameras`
(EG3D radius and FOV by default, so previews match the training framing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from panolam.gaussians import Gaussians
from panolam.geometry.cameras import EG3D_RADIUS, Cameras, named_views


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(…, H, W, 3) float in [0, 1] -> uint8 numpy."""
    return (images.detach().clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()


@torch.no_grad()
def render_cameras(g: Gaussians, cams: Cameras, background: Sequence[float] = (1.0, 1.0, 1.0), chunk: int = 8) -> np.ndarray:
    """Render every camera (in chunks of ``chunk`` cameras to bound memory) -> (C, H, W, 3) uint8.

    One rasteriser call per chunk; on CPU its tiles of all cameras in the chunk are shared out over
    the Numba threads, so larger chunks keep every core busy (a chunk costs ≈ C·H·W·40 bytes)."""
    from panolam.render.rasterize import rasterize

    g = g.detach()
    out = []
    for i in range(0, len(cams), chunk):
        sub = cams[i : i + chunk].to(g.device)
        out.append(to_uint8(rasterize(g, sub, background=torch.tensor(background, dtype=torch.float32, device=g.device)).rgb))
    return np.concatenate(out, axis=0)


def label_image(img: np.ndarray, text: str) -> np.ndarray:
    """Write a small caption in the top-left corner (PIL's built-in font: no font files needed)."""
    from PIL import Image, ImageDraw

    pil = Image.fromarray(img)
    draw = ImageDraw.Draw(pil)
    draw.rectangle([0, 0, 8 + 7 * len(text), 16], fill=(0, 0, 0))
    draw.text((4, 2), text, fill=(255, 255, 255))
    return np.asarray(pil)


def contact_sheet(
    g: Gaussians,
    names: Sequence[str] = ("front", "left", "right", "back"),
    size: int = 512,
    background: Sequence[float] = (1.0, 1.0, 1.0),
    extra: Iterable[tuple[str, np.ndarray]] = (),
) -> np.ndarray:
    """One row of labelled renders from the named views, optionally preceded by extra images (e.g. the input)."""
    views = render_cameras(g, named_views(tuple(names), size=size), background)
    return compose_sheet(views, names, extra)


def compose_sheet(views: np.ndarray, names: Sequence[str], extra: Iterable[tuple[str, np.ndarray]] = ()) -> np.ndarray:
    """Rendered views (n, S, S, 3) side by side with their captions, after the extra images fitted to S×S."""
    size = views.shape[1]
    tiles = [label_image(_fit(img, size), caption) for caption, img in extra]
    tiles += [label_image(v, n) for v, n in zip(views, names)]
    return np.concatenate(tiles, axis=1)


def _fit(img: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    return np.asarray(Image.fromarray(img[..., :3]).resize((size, size), Image.BILINEAR))


def turntable_cameras(frames: int = 120, size: int = 512, pitch_deg: float = 0.0, radius: float = EG3D_RADIUS, fov_deg: float = 18.837) -> Cameras:
    """``frames`` cameras orbiting once around the head, starting at the front."""
    yaw = torch.arange(frames, dtype=torch.float32) * (360.0 / frames)
    return Cameras.orbit(yaw, pitch_deg, radius, fov_deg, size)


def turntable(g: Gaussians, frames: int = 120, size: int = 512, pitch_deg: float = 0.0, background: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """(frames, H, W, 3) uint8 renders of a full orbit."""
    return render_cameras(g, turntable_cameras(frames, size, pitch_deg), background)


# Defaults of the previews written next to every head: 24 frames at 256² (the four named views are
# frames 0/6/12/18) in one batched rasteriser call. BENCHMARKS' rasteriser table gives 0.02–0.03 s
# per 256² frame at 5–10K Gaussians on two idle cores, so ≈ 0.5–1 s; 12 fps makes a 2-second loop.
PREVIEW_SIZE, TURNTABLE_FRAMES, TURNTABLE_FPS = 256, 24, 12
# Encoder settings of the files written next to every head: zlib level 3 writes views.png (1280×256)
# and input.png (512²) in 71 ms against 199 ms at PIL's default 6, for 7 % larger files.
PNG_COMPRESS_LEVEL = 3
X264_PRESET = "veryfast"
BATCH_PIXELS = 64 * 256 * 256  # pixels per rasteriser call: ≈ 60 bytes each of float64/int64 buffers, ≈ 250 MB


def orbit_previews(g: Gaussians, names: Sequence[str] = ("front", "left", "right", "back"), frames: int = TURNTABLE_FRAMES,
                   size: int = PREVIEW_SIZE, background: Sequence[float] = (1.0, 1.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """The named views (len(names), H, W, 3) and a ``frames``-frame turntable (frames, H, W, 3), uint8,
    rendered in one batched call; a named view whose yaw is also a turntable frame is rendered once."""
    from panolam.geometry.cameras import NAMED_VIEWS_YAW

    unknown = [n for n in names if n not in NAMED_VIEWS_YAW]
    if unknown:
        raise ValueError(f"unknown view names {unknown}; choose from {sorted(NAMED_VIEWS_YAW)}")
    turn = [i * 360.0 / frames for i in range(frames)]
    yaws = list(turn)
    index = {round(y % 360.0, 6): i for i, y in enumerate(yaws)}
    view_ids = []
    for n in names:
        key = round(NAMED_VIEWS_YAW[n] % 360.0, 6)
        if key not in index:
            index[key] = len(yaws)
            yaws.append(NAMED_VIEWS_YAW[n])
        view_ids.append(index[key])
    if not yaws:
        empty = np.zeros((0, size, size, 3), np.uint8)
        return empty, empty
    cams = Cameras.orbit(torch.tensor(yaws, dtype=torch.float32), 0.0, EG3D_RADIUS, 18.837, size)
    images = render_cameras(g, cams, background, chunk=max(1, BATCH_PIXELS // (size * size)))
    return images[view_ids], images[:frames]


def save_video(frames: np.ndarray, path: str | Path, fps: int = 30) -> Path:
    """Write frames as GIF or MP4 (by suffix); written to a temporary name first, then renamed."""
    import imageio.v3 as iio

    from panolam.atomic import atomic_path

    path = Path(path)
    if path.suffix.lower() not in (".gif", ".mp4"):
        raise ValueError(f"unsupported video format {path.suffix!r}: use .gif or .mp4")
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".gif":
            iio.imwrite(tmp, frames, extension=".gif", duration=1000 / fps, loop=0)
        else:
            # yuv420p needs even sides. x264's "veryfast" preset: 24 frames at 256² encode in 77 ms
            # against 138 ms with its default ("medium"), and the file is no larger (27 vs 29 kB).
            h, w = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2
            import imageio.v2 as iio2

            iio2.mimwrite(tmp, frames[:, :h, :w], format="FFMPEG", fps=fps, codec="libx264", pixelformat="yuv420p", macro_block_size=1,
                          output_params=["-preset", X264_PRESET])
    return path


def save_png(img: np.ndarray, path: str | Path) -> Path:
    """Atomic PNG write."""
    import io

    from PIL import Image

    from panolam.atomic import atomic_write_bytes

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)

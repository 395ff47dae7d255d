"""Reading user photos into plain uint8 arrays and writing PNGs atomically.

Photos arrive from phones, scanners and image editors: EXIF-rotated JPEGs, grayscale, 16-bit,
palette and transparent PNGs. :func:`load_photo` turns all of them into an upright (H, W, 3) RGB
or (H, W, 4) RGBA ``uint8`` array, and turns everything it cannot use into a
:class:`PreprocessError` that names the file and says what is wrong.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from panolam.errors import PanoLAMError
from panolam.atomic import atomic_write_bytes

MIN_SIDE = 64  # smaller photos hold too few pixels on the face to find landmarks or be worth reconstructing


class PreprocessError(PanoLAMError):
    """A photo that cannot be turned into a framed head (unreadable, too small, no person …)."""


def load_photo(path: str | os.PathLike) -> np.ndarray:
    """Read an image file upright (EXIF orientation applied) as (H, W, 3) RGB or (H, W, 4) RGBA uint8.

    Transparency is kept only when the file has some; 16-bit and float images are rescaled to 8 bits.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise PreprocessError(f"{path}: no such file")
    try:
        with Image.open(path) as im:
            im.seek(0)  # first frame of animated GIF/WebP/TIFF
            im = ImageOps.exif_transpose(im)
            arr = _to_uint8(im)
    except UnidentifiedImageError as e:
        raise PreprocessError(f"{path}: not an image file Pillow can read") from e
    except Image.DecompressionBombError as e:
        raise PreprocessError(f"{path}: image is too large to open safely ({e})") from e
    except (OSError, SyntaxError) as e:
        raise PreprocessError(f"{path}: cannot decode the image ({e})") from e
    return check_photo(arr, str(path))


def check_photo(arr: np.ndarray, name: str = "photo") -> np.ndarray:
    """Validate an in-memory photo (H, W, 3|4) uint8 and drop an all-opaque alpha channel."""
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise PreprocessError(f"{name}: expected an (H, W, 3) or (H, W, 4) image, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = _scale_to_uint8(arr)
    h, w = arr.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise PreprocessError(f"{name}: image is {w}x{h} pixels; need at least {MIN_SIDE} pixels on each side")
    if arr.shape[-1] == 4 and arr[..., 3].max() == 0:
        raise PreprocessError(f"{name}: the image is fully transparent (nothing to reconstruct); use a photo with the person visible")
    if arr.shape[-1] == 4 and arr[..., 3].min() == 255:
        arr = arr[..., :3]
    return np.ascontiguousarray(arr)


def _to_uint8(im) -> np.ndarray:
    """Any Pillow mode -> (H, W, 3|4) uint8."""
    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode in ("P", "L", "RGB") and "transparency" in im.info)
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit / 32-bit grayscale: Pillow cannot convert these to 8-bit without clipping, so scale ourselves.
        gray = _scale_to_uint8(np.asarray(im))
        return np.repeat(gray[..., None], 3, axis=-1)
    return np.asarray(im.convert("RGBA" if has_alpha else "RGB"))


def _scale_to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        scale = 1.0 if np.nanmax(arr) <= 1.0 else 1.0 / 255.0
        return (np.clip(np.nan_to_num(arr) * scale, 0, 1) * 255 + 0.5).astype(np.uint8)
    top = 65535 if arr.max() > 255 else 255
    return (arr.astype(np.float64) * (255.0 / top) + 0.5).astype(np.uint8)


def png_bytes(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG")
    return buf.getvalue()


def save_png(arr: np.ndarray, path: str | os.PathLike) -> Path:
    """Write an (H, W[, 3|4]) uint8 array as PNG, atomically."""
    atomic_write_bytes(path, png_bytes(arr))
    return Path(path)

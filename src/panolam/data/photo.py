"""Photographic effects that make a clean render look like a camera photo (DESIGN §4).

Applied on the fly by the loader to the input view only (``sample["input_image"]``), so targets
stay clean: random colour jitter (brightness, contrast, saturation, gamma, white balance), a
Gaussian blur, sensor noise and JPEG re-encoding, each drawn from a ``numpy`` generator so the
result is reproducible per seed.
"""

from __future__ import annotations

import io

import numpy as np
import torch


def _blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (3, H, W)."""
    if sigma < 0.3:
        return img
    r = max(1, int(round(2.5 * sigma)))
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    pad = torch.nn.functional.pad(img[None], (r, r, r, r), mode="replicate")
    out = torch.nn.functional.conv2d(pad, k.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
    out = torch.nn.functional.conv2d(out, k.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)
    return out[0]


def _jpeg(img: torch.Tensor, quality: int) -> torch.Tensor:
    from PIL import Image

    arr = (img.clamp(0, 1).permute(1, 2, 0) * 255 + 0.5).to(torch.uint8).numpy()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    back = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    return torch.from_numpy(back.copy()).permute(2, 0, 1).float() / 255


def photo_effects(img: torch.Tensor, rng: np.random.Generator, strength: float = 1.0) -> torch.Tensor:
    """(3, H, W) float in [0, 1] -> a degraded copy in [0, 1]; ``strength`` 0 returns the input."""
    if strength <= 0:
        return img.clone()
    out = img.float()
    gain = 1 + strength * rng.uniform(-0.2, 0.2)
    wb = torch.tensor(1 + strength * rng.uniform(-0.06, 0.06, size=3), dtype=torch.float32)[:, None, None]
    out = out * gain * wb
    mean = out.mean()
    out = (out - mean) * (1 + strength * rng.uniform(-0.2, 0.2)) + mean
    grey = out.mean(0, keepdim=True)
    out = (grey + (out - grey) * (1 + strength * rng.uniform(-0.3, 0.2))).clamp(0, 1)
    out = out ** float(np.exp(strength * rng.uniform(-0.2, 0.2)))
    out = _blur(out, strength * rng.uniform(0.0, 1.2))
    out = out + torch.from_numpy(rng.normal(0, strength * rng.uniform(0.0, 0.03), size=out.shape).astype(np.float32))
    return _jpeg(out.clamp(0, 1), int(round(95 - strength * rng.uniform(0, 60))))

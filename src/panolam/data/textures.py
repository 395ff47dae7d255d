"""Texture sources for the procedural heads: patches of natural photographs plus procedural patterns.

Photographs come from scikit-image's bundled sample images (inside the wheel, no download);
licences are listed in :data:`PHOTO_LICENCES` and ``data/ASSETS.md``. A :class:`TextureMap` is a
random crop/scale/rotation of one photo, sampled at 3D points through a cylindrical projection
around the head's vertical axis, so every subject gets appearance no network can memorise.
Procedural patterns (band-limited value noise, stripes, checks) are mixed in.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

# Images bundled in scikit-image 0.26's wheel and their licences (see each function's docstring).
PHOTO_LICENCES = {
    "astronaut": "public domain (NASA)",
    "coffee": "CC0 (Rachel Michetti)",
    "chelsea": "CC0 (Stefan van der Walt)",
    "rocket": "public domain (SpaceX)",
    "hubble_deep_field": "public domain (NASA)",
    "retina": "CC0 (Wikimedia Commons)",
    "brick": "CC0 (cc0textures.com)",
    "grass": "CC0 (DeviantArt, linolafett)",
    "gravel": "CC0 (cc0textures.com)",
    "camera": "CC0 (Lav Varshney)",
}
# Fur, grass and gravel read as hair/fabric; the rest add colour variety.
HAIR_PHOTOS = ("chelsea", "grass", "gravel", "coffee", "brick", "astronaut")
CLOTH_PHOTOS = tuple(PHOTO_LICENCES)
SKIN_PHOTOS = ("coffee", "chelsea", "gravel", "brick", "retina", "camera", "astronaut", "rocket")


@functools.lru_cache(maxsize=None)
def photo(name: str) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1], longest side at most 320 px (cached)."""
    import skimage.data

    if name not in PHOTO_LICENCES:
        raise ValueError(f"unknown texture photo {name!r}; bundled: {', '.join(PHOTO_LICENCES)}")
    img = np.asarray(getattr(skimage.data, name)())
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    img = img[..., :3].astype(np.float32) / 255.0
    step = max(1, int(np.ceil(max(img.shape[:2]) / 320)))
    return np.ascontiguousarray(img[::step, ::step])


@dataclasses.dataclass
class TextureMap:
    """A random view into a photo, addressed by cylindrical coordinates of 3D points."""

    image: np.ndarray
    scale: float  # pixels per world unit
    offset: tuple[float, float]
    angle: float

    @staticmethod
    def random(rng: np.random.Generator, names: tuple[str, ...]) -> "TextureMap":
        img = photo(str(rng.choice(names)))
        if rng.random() < 0.5:
            img = img[:, ::-1]
        return TextureMap(img, float(rng.uniform(150, 700)), (float(rng.uniform(0, 1e4)), float(rng.uniform(0, 1e4))), float(rng.uniform(0, np.pi)))

    def sample(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) world points -> (N, 3) colours (nearest pixel, mirrored tiling)."""
        theta = np.arctan2(points[:, 0], points[:, 2])
        u, v = theta * 0.2, -points[:, 1]  # arc length on a ~0.2-radius cylinder, and height
        c, s = np.cos(self.angle), np.sin(self.angle)
        px = (c * u - s * v) * self.scale + self.offset[0]
        py = (s * u + c * v) * self.scale + self.offset[1]
        h, w = self.image.shape[:2]
        return self.image[_mirror(py, h), _mirror(px, w)]


def _mirror(x: np.ndarray, n: int) -> np.ndarray:
    i = np.floor(x).astype(np.int64) % (2 * n)
    return np.where(i < n, i, 2 * n - 1 - i)


def value_noise(points: np.ndarray, rng: np.random.Generator, freq: float, octaves: int = 3) -> np.ndarray:
    """(N,) smooth noise in about [-1, 1] from random 3D sinusoids (band-limited, seeded)."""
    out = np.zeros(len(points))
    amp, total = 1.0, 0.0
    for o in range(octaves):
        k = rng.normal(size=(4, 3)) * freq * (2**o)
        phase = rng.uniform(0, 2 * np.pi, size=4)
        out += amp * np.sin(points @ k.T + phase).mean(axis=1)
        total += amp
        amp *= 0.5
    return out / total * 2.0


def pattern(points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N,) procedural pattern in [0, 1]: stripes, checks or blotches, randomly oriented."""
    kind = rng.integers(3)
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    freq = rng.uniform(20, 80)
    if kind == 0:
        return (np.sin(points @ axis * freq) > 0).astype(np.float64)
    if kind == 1:
        other = np.cross(axis, rng.normal(size=3))
        other /= np.linalg.norm(other)
        return ((np.floor(points @ axis * freq / 3) + np.floor(points @ other * freq / 3)) % 2).astype(np.float64)
    return (value_noise(points, rng, freq / 3) > 0).astype(np.float64)

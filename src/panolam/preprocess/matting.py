"""Cleaning the selfie segmenter's soft person mask into an alpha matte.

The segmenter runs at 256x256 and leaves stray blobs (other people, objects at the frame edge),
holes (a hand in front of the chin, dark glasses) and blocky edges. We keep the one connected
region that holds the head, fill its holes, then snap the edges to the photo with a guided filter
(the image is the guide), which follows hair and jaw lines far better than the upsampled mask.
"""

from __future__ import annotations

import numpy as np

GUIDED_RADIUS_FRAC = 1 / 96  # filter radius as a fraction of the image side (≈5 px at 512)
GUIDED_EPS = 1e-3  # edge sensitivity on [0, 1] colours: lower follows weaker edges
SNAP = 0.02  # alpha below SNAP -> 0, above 1 - SNAP -> 1, so the background is exactly the chosen colour


def keep_region(hard: np.ndarray, seed: tuple[float, float] | None = None) -> np.ndarray:
    """The connected component of ``hard`` (bool) that contains ``seed`` (x, y), else the largest one, holes filled."""
    import cv2

    n, labels, stats, _ = cv2.connectedComponentsWithStats(hard.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros_like(hard, dtype=bool)
    label = 0
    if seed is not None:
        x, y = int(round(seed[0])), int(round(seed[1]))
        if 0 <= y < hard.shape[0] and 0 <= x < hard.shape[1]:
            label = labels[y, x]
    if label == 0:
        label = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    region = labels == label
    return fill_holes(region)


def fill_holes(region: np.ndarray) -> np.ndarray:
    """Fill background pockets not connected to the image border."""
    import cv2

    h, w = region.shape
    padded = np.zeros((h + 2, w + 2), np.uint8)
    padded[1:-1, 1:-1] = region
    flood = padded.copy()
    cv2.floodFill(flood, np.zeros((h + 4, w + 4), np.uint8), (0, 0), 1)
    holes = flood[1:-1, 1:-1] == 0
    return region | holes


def refine_alpha(mask: np.ndarray, guide: np.ndarray, seed: tuple[float, float] | None = None) -> np.ndarray:
    """Soft mask (H, W) in [0, 1] + the RGB image it belongs to -> refined alpha (H, W) float32."""
    import cv2

    mask = np.clip(mask.astype(np.float32), 0, 1)
    region = keep_region(mask > 0.5, seed)
    if not region.any():
        return np.zeros_like(mask)
    # Keep the soft fringe next to the kept region (dilated support), drop far-away blobs, fill holes.
    radius = max(2, int(round(mask.shape[0] * GUIDED_RADIUS_FRAC)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    support = cv2.dilate(region.astype(np.uint8), kernel) > 0
    soft = np.where(region, 1.0, mask * support).astype(np.float32)
    guide_f = np.ascontiguousarray(guide[..., :3]).astype(np.float32) / 255.0
    alpha = cv2.ximgproc.guidedFilter(guide_f, soft, radius, GUIDED_EPS)
    alpha = np.clip(alpha, 0, 1)
    alpha[alpha < SNAP] = 0
    alpha[alpha > 1 - SNAP] = 1
    alpha[~support] = 0
    return alpha.astype(np.float32)

"""Image metrics for the evaluation table (paper §4.1, DESIGN §5, §9).

PSNR and SSIM work on (B,3,H,W) tensors in [0,1]; SSIM uses the standard Gaussian window
(11 taps, σ = 1.5, K1 = 0.01, K2 = 0.03, population covariances) and averages only pixels whose
window lies fully inside the image, which is exactly what ``skimage.metrics.structural_similarity(
gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1)`` reports. LPIPS is
the shipped shift-tolerant AlexNet (ST-LPIPS, see :mod:`panolam.train.perceptual`). APD estimates
head pose from the 3D mediapipe FaceMesh landmarks (an anatomical eye/forehead/chin frame) and reports the mean absolute Euler-angle difference in radians. CSIM needs dlib's face
recognition model (``dlib-bin`` + ``face_recognition_models``, an optional extra); without it
:func:`csim` raises :class:`MissingOptionalModel` naming what to install.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from panolam.preprocess.head_pose import landmark_head_pose


class MissingOptionalModel(RuntimeError):
    """An optional metric model (dlib face recognition, mediapipe) is not installed."""


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape or pred.ndim != 4:
        raise ValueError(f"metrics expect two (B,C,H,W) images of the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")


def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, (B,); identical images give +inf."""
    _check_pair(pred, target)
    mse = (pred.float() - target.float()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(data_range**2 / mse)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0, win: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity per image, (B,), over interior pixels (valid Gaussian filtering, computed in float64)."""
    _check_pair(pred, target)
    if min(pred.shape[-2:]) < win:
        raise ValueError(f"SSIM needs images of at least {win}x{win} pixels, got {tuple(pred.shape[-2:])}")
    x, y = pred.double(), target.double()
    c = x.shape[1]
    g = gaussian_window(win, sigma).to(x.device)
    kx = g.view(1, 1, 1, win).repeat(c, 1, 1, 1)
    ky = g.view(1, 1, win, 1).repeat(c, 1, 1, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, kx, groups=c), ky, groups=c)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1).to(pred.dtype if pred.is_floating_point() else torch.float32)


@functools.lru_cache(maxsize=2)
def _perceptual(device: str, weights: str | None):
    from panolam.train.perceptual import Perceptual

    return Perceptual(weights, net="alex").to(device)


def lpips(pred: torch.Tensor, target: torch.Tensor, weights: str | None = None) -> torch.Tensor:
    """ST-LPIPS (AlexNet) per image, (B,) — or standard LPIPS when ``weights`` is a local LPIPS file."""
    _check_pair(pred, target)
    with torch.no_grad():
        return _perceptual(str(pred.device), weights)(pred, target)


# --- head pose (APD) ---------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _face_mesh():
    try:
        from panolam.preprocess.detect import import_mediapipe

        mp = import_mediapipe()
    except ImportError as e:  # pragma: no cover - mediapipe is a core dependency
        raise MissingOptionalModel("APD needs mediapipe==0.10.21 (pip install mediapipe==0.10.21)") from e
    return mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=False)


def face_landmarks(image: torch.Tensor | np.ndarray) -> np.ndarray | None:
    """(468, 3) FaceMesh landmarks in pixels (x right, y down, z away from the viewer) or None if no face."""
    arr = image.detach().cpu().permute(1, 2, 0).numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8)
    h, w = arr.shape[:2]
    result = _face_mesh().process(np.ascontiguousarray(arr))
    if not result.multi_face_landmarks:
        return None
    return np.array([[p.x * w, p.y * h, p.z * w] for p in result.multi_face_landmarks[0].landmark], dtype=np.float64)


def head_pose(image: torch.Tensor | np.ndarray) -> np.ndarray | None:
    """(yaw, pitch, roll) in radians of the face in one (3,H,W) [0,1] or (H,W,3) uint8 image; None if no
    face (the anatomical frame of :func:`panolam.preprocess.head_pose.landmark_head_pose`)."""
    lm = face_landmarks(image)
    return None if lm is None else landmark_head_pose(lm)


def apd(pred: torch.Tensor, target: torch.Tensor) -> float | None:
    """Average pose distance between two image batches (B,3,H,W): mean |Δ Euler| (radians) over
    pairs where a face is found in both; None when no pair has a face (e.g. back views)."""
    _check_pair(pred, target)
    diffs = []
    for p, t in zip(pred, target):
        pp, pt = head_pose(p), head_pose(t)
        if pp is not None and pt is not None:
            d = np.abs(pp - pt)
            diffs.append(np.minimum(d, 2 * math.pi - d).mean())
    return float(np.mean(diffs)) if diffs else None


# --- identity (CSIM) -----------------------------------------------------------------------------

DLIB_INSTALL = "pip install dlib-bin==20.0.1.post1 face_recognition_models==0.3.0"


def _dlib_models():
    import importlib.util

    if importlib.util.find_spec("dlib") is None or importlib.util.find_spec("face_recognition_models") is None:
        raise MissingOptionalModel(
            f"CSIM needs the optional face-recognition extra: {DLIB_INSTALL} (or pip install 'panolam[csim]'; "
            "dlib ResNet embedding; reported as dlib-CSIM, not comparable to ArcFace CSIM)")
    return _dlib_embedder()


@functools.lru_cache(maxsize=1)
def _dlib_embedder():
    import importlib.util
    from pathlib import Path

    import dlib

    # The package's __init__ imports pkg_resources, which current setuptools no longer ships: locate its
    # model files without executing it.
    models = Path(importlib.util.find_spec("face_recognition_models").submodule_search_locations[0]) / "models"
    return (dlib.get_frontal_face_detector(), dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat")),
            dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat")))


def face_embedding(image: torch.Tensor) -> np.ndarray | None:
    """128-d dlib face descriptor of a (3,H,W) [0,1] image, or None if no face is detected."""
    detector, shape_predictor, encoder = _dlib_models()
    arr = (image.detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    boxes = detector(arr, 1)
    if not boxes:
        return None
    return np.asarray(encoder.compute_face_descriptor(arr, shape_predictor(arr, boxes[0])))


def csim(pred: torch.Tensor, target: torch.Tensor) -> float | None:
    """Mean cosine similarity of dlib face embeddings over pairs with a face in both; None if none.

    Raises :class:`MissingOptionalModel` when the optional dlib models are not installed."""
    _check_pair(pred, target)
    sims = []
    for p, t in zip(pred, target):
        ep, et = face_embedding(p), face_embedding(t)
        if ep is not None and et is not None:
            sims.append(float(ep @ et / (np.linalg.norm(ep) * np.linalg.norm(et) + 1e-12)))
    return float(np.mean(sims)) if sims else None

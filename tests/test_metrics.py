"""Evaluation metrics: SSIM parity with scikit-image, PSNR closed form, LPIPS sanity, head pose / APD on
a real photograph shipped with scikit-image, and the CSIM plug-in error."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch
from skimage import data as skdata
from skimage.metrics import structural_similarity
from skimage.transform import rotate

from panolam.eval import metrics


def _pair(seed: int = 0, size: int = 40):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(2, 3, size, size + 7, generator=g)
    b = (a + 0.1 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    return a, b


def test_ssim_matches_skimage():
    a, b = _pair()
    got = metrics.ssim(a, b)
    for i in range(2):
        ref = structural_similarity(a[i].permute(1, 2, 0).numpy().astype(np.float64), b[i].permute(1, 2, 0).numpy().astype(np.float64),
                                    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=2)
        assert abs(got[i].item() - ref) < 1e-3, (got[i].item(), ref)
    assert torch.allclose(metrics.ssim(a, a), torch.ones(2), atol=1e-6)


def test_psnr_closed_form_and_errors():
    a = torch.zeros(1, 3, 8, 8)
    b = torch.full_like(a, 0.1)
    assert metrics.psnr(a, b).item() == pytest.approx(20.0, abs=1e-4)  # mse = 0.01 -> 20 dB
    with pytest.raises(ValueError, match="same shape"):
        metrics.psnr(a, b[:, :2])
    with pytest.raises(ValueError, match="at least 11x11"):
        metrics.ssim(a, b)


def test_lpips_metric_orders_images():
    a, b = _pair(size=48)
    c = (a + 0.4 * torch.randn_like(a)).clamp(0, 1)
    same, near, far = metrics.lpips(a, a), metrics.lpips(a, b), metrics.lpips(a, c)
    assert torch.allclose(same, torch.zeros(2), atol=1e-7)
    assert (near > 0).all() and (far > near).all()


def _astronaut_face() -> torch.Tensor:
    img = skdata.astronaut()[20:220, 110:310]  # Eileen Collins' head, frontal
    return torch.from_numpy(img).permute(2, 0, 1).float() / 255


def test_head_pose_and_apd_on_a_photo():
    face = _astronaut_face()
    pose = metrics.head_pose(face)
    assert pose is not None
    mirrored = metrics.head_pose(face.flip(-1))
    # A mirror image negates yaw and roll and keeps pitch.
    assert abs(pose[0] + mirrored[0]) < 0.05 and abs(pose[2] + mirrored[2]) < 0.05 and abs(pose[1] - mirrored[1]) < 0.05
    # Turning the photo 20 degrees counter-clockwise changes roll by about -20 degrees and little else.
    tilted = torch.from_numpy(rotate(face.permute(1, 2, 0).numpy(), 20, mode="edge")).permute(2, 0, 1).float()
    delta = metrics.head_pose(tilted) - pose
    assert abs(delta[2] + math.radians(20)) < 0.1 and abs(delta[0]) < 0.1
    assert metrics.apd(face[None], tilted[None]) == pytest.approx(np.abs(delta).mean(), abs=1e-9)
    assert metrics.apd(face[None], face[None]) == pytest.approx(0.0, abs=1e-9)
    blank = torch.ones(1, 3, 64, 64)
    assert metrics.apd(blank, blank) is None


def test_csim_without_optional_models_names_the_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("dlib", "face_recognition_models") else real(name, *a))
    a, b = _pair(size=32)
    with pytest.raises(metrics.MissingOptionalModel, match="face_recognition_models==0.3.0"):
        metrics.csim(a, b)


@pytest.mark.skipif(importlib.util.find_spec("dlib") is None or importlib.util.find_spec("face_recognition_models") is None,
                    reason="optional dlib face-recognition extra not installed (pip install 'panolam[csim]')")
def test_dlib_embedding_tells_two_people_apart():
    from pathlib import Path

    from PIL import Image

    hopper = np.asarray(Image.open(Path(__file__).parents[1] / "benchmarks" / "photos" / "grace_hopper.jpg").convert("RGB"))
    astro = skdata.astronaut()

    def t(img):
        return torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255

    ea, eh = metrics.face_embedding(t(astro)), metrics.face_embedding(t(hopper))
    assert ea is not None and eh is not None and ea.shape == (128,)
    # The same face shifted by a crop stays the same person; two people are beyond dlib's 0.6 rule.
    shifted = metrics.face_embedding(t(astro[16:, 12:]))
    assert np.linalg.norm(ea - shifted) < 0.3 < 0.6 < np.linalg.norm(ea - eh)
    assert metrics.face_embedding(torch.full((3, 64, 64), 0.5)) is None

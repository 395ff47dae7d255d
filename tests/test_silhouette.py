"""Silhouette cues: edge distance and colour per direction on a known mask, the per-point cues, and the
network wiring (zero-initialised, so switching them on leaves a trained network's output unchanged)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from panolam.config import get_config
from panolam.model.panolam import PanoLAM
from panolam.model.pixel_aligned import InputCamera
from panolam.model.silhouette import (CUE_DIM, DIRECTIONS, GAP_SCALE, MAX_RADIUS, RAY_STEPS, silhouette_cues,
                                      silhouette_profile)

SIZE = 128
STEP = MAX_RADIUS / (RAY_STEPS - 1)


def _disk_image(centre: torch.Tensor, radius: float, inner: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A disk mask of ``radius`` (normalised units) around ``centre``: red inside ``inner``, green ring on
    the upper half (v < centre), blue ring on the lower half, white outside."""
    ij = (torch.arange(SIZE, dtype=torch.float32) + 0.5) / SIZE
    v, u = torch.meshgrid(ij, ij, indexing="ij")
    d = ((u - centre[0]) ** 2 + (v - centre[1]) ** 2).sqrt()
    mask = (d < radius).float()
    image = torch.ones(3, SIZE, SIZE)
    ring = (d >= inner) & (d < radius)
    upper = v < centre[1]
    image[:, d < inner] = torch.tensor([1.0, 0.0, 0.0])[:, None]
    image[:, ring & upper] = torch.tensor([0.0, 1.0, 0.0])[:, None]
    image[:, ring & ~upper] = torch.tensor([0.0, 0.0, 1.0])[:, None]
    return image[None], mask[None, None]


def _frontal() -> InputCamera:
    return InputCamera.from_pose(torch.tensor([0.0]), torch.tensor([0.0]))


def test_edge_distance_and_edge_colour_of_a_disk() -> None:
    cam = _frontal()
    centre = silhouette_profile(torch.ones(1, 3, 8, 8), torch.ones(1, 1, 8, 8), cam).centre[0]
    image, mask = _disk_image(centre, radius=0.3, inner=0.18)
    p = silhouette_profile(image, mask, cam)
    assert p.radius.shape == (1, DIRECTIONS) and p.colour.shape == (1, DIRECTIONS, 3)
    # The edge is found to within one ray step plus one pixel, in every direction.
    assert float((p.radius - 0.3).abs().max()) < STEP + 1.0 / SIZE
    # Colour just inside the edge: green ring above the centre (v < centre: directions pi..2pi), blue below.
    k = torch.arange(DIRECTIONS)
    theta = k * (2 * math.pi / DIRECTIONS)
    above, below = torch.sin(theta) < -0.3, torch.sin(theta) > 0.3
    torch.testing.assert_close(p.colour[0, above], torch.tensor([0.0, 1.0, 0.0]).expand(int(above.sum()), 3), atol=0.02, rtol=0)
    torch.testing.assert_close(p.colour[0, below], torch.tensor([0.0, 0.0, 1.0]).expand(int(below.sum()), 3), atol=0.02, rtol=0)
    torch.testing.assert_close(p.crown[0], torch.tensor([0.0, 1.0, 0.0]), atol=0.02, rtol=0)


def test_cues_say_how_far_the_edge_is_along_each_points_direction() -> None:
    cam = _frontal()
    centre = silhouette_profile(torch.ones(1, 3, 8, 8), torch.ones(1, 1, 8, 8), cam).centre[0]
    image, mask = _disk_image(centre, radius=0.3, inner=0.18)
    p = silhouette_profile(image, mask, cam)
    uv = torch.stack([centre, centre + torch.tensor([0.3, 0.0]), centre + torch.tensor([0.0, -0.4]),
                      centre + torch.tensor([-0.1, 0.0])])[None]
    cues = silhouette_cues(p, uv)[0]
    assert cues.shape == (4, CUE_DIM)
    gap, ratio = cues[:, 0] / GAP_SCALE, cues[:, 1]
    tol = STEP + 1.0 / SIZE
    assert abs(float(gap[0]) - 0.3) < tol and float(ratio[0]) == pytest.approx(0.0, abs=1e-6)  # at the centre
    assert abs(float(gap[1])) < tol and float(ratio[1]) == pytest.approx(1.0, abs=0.05)  # on the edge
    assert float(gap[2]) == pytest.approx(-0.1, abs=tol) and float(ratio[2]) > 1.2  # outside, above
    assert float(gap[3]) == pytest.approx(0.2, abs=tol)  # inside, to the left
    torch.testing.assert_close(cues[2, 2:5], torch.tensor([-1.0, 1.0, -1.0]), atol=0.05, rtol=0)  # green edge above
    torch.testing.assert_close(cues[:, 5:], torch.tensor([-1.0, 1.0, -1.0]).expand(4, 3), atol=0.05, rtol=0)  # crown


def test_a_ray_that_starts_outside_the_person_has_zero_edge_distance() -> None:
    p = silhouette_profile(torch.ones(1, 3, 16, 16), torch.zeros(1, 1, 16, 16), _frontal())
    assert float(p.radius.abs().max()) == 0.0
    assert torch.isfinite(p.colour).all()


def _tiny(**changes):
    return dataclasses.replace(get_config("tiny").model, **changes)


def test_switching_the_cues_on_leaves_a_trained_network_unchanged_and_they_learn() -> None:
    torch.manual_seed(0)
    plain = PanoLAM(_tiny(silhouette_cues=False)).eval()
    cued = PanoLAM(_tiny(silhouette_cues=True))
    missing = cued.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith(("point_silhouette_proj.", "dense_silhouette_proj.")) for k in missing), missing
    cued.eval()
    images = torch.rand(2, 3, 56, 56)
    with torch.no_grad():
        a, b = plain(images), cued(images)
    torch.testing.assert_close(b.dense.means, a.dense.means, atol=0, rtol=0)
    torch.testing.assert_close(b.dense.colors, a.dense.colors, atol=0, rtol=0)
    # The zero-initialised output layers get gradients, so training can make use of the cues.
    cued.train()
    out = cued(images)
    (out.dense.means.square().sum() + out.coarse.means.square().sum()).backward()
    assert float(cued.dense_silhouette_proj[-1].weight.grad.abs().sum()) > 0
    assert float(cued.point_silhouette_proj[-1].weight.grad.abs().sum()) > 0


def test_the_cues_need_the_pixel_aligned_network() -> None:
    with pytest.raises(ValueError, match="silhouette_cues needs model.pixel_aligned"):
        PanoLAM(_tiny(pixel_aligned=False, silhouette_cues=True))


def test_switching_pixel_aligned_off_takes_the_cues_along_unless_asked_for() -> None:
    """The ``default``/``tiny`` presets have the cues on; the "w/o pixel-aligned" ablation
    (``model.pixel_aligned=false``) must still build, and an explicit request for both is refused."""
    assert get_config("tiny").model.silhouette_cues and get_config("default").model.silhouette_cues
    assert not get_config("paper").model.silhouette_cues  # the paper stays the paper
    plain = get_config("tiny", ["model.pixel_aligned=false"]).model
    assert not plain.silhouette_cues
    PanoLAM(plain)
    both = get_config("tiny", ["model.pixel_aligned=false", "model.silhouette_cues=true"]).model
    with pytest.raises(ValueError, match="silhouette_cues needs model.pixel_aligned"):
        PanoLAM(both)

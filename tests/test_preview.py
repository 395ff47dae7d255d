"""The batched previews (views + turntable in one rasteriser call) match rendering each set on its own."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from panolam.gaussians import Gaussians
from panolam.geometry.cameras import named_views
from panolam.render.preview import orbit_previews, render_cameras, turntable


def _head(n: int = 150) -> Gaussians:
    g = torch.Generator().manual_seed(3)
    q = torch.randn(n, 4, generator=g)
    return Gaussians(torch.randn(n, 3, generator=g) * 0.12, q / q.norm(dim=-1, keepdim=True), torch.rand(n, 3, generator=g) * 0.02 + 0.01,
                     torch.rand(n, generator=g) * 0.8 + 0.1, torch.rand(n, 3, generator=g))


@pytest.mark.parametrize("frames", [8, 6, 0])  # 8: all four named views are turntable frames; 6: left/right are not
def test_orbit_previews_match_separate_renders(frames):
    g = _head()
    names = ("front", "left", "right", "back")
    views, turn = orbit_previews(g, names, frames, size=24)
    assert views.shape == (4, 24, 24, 3) and turn.shape == (frames, 24, 24, 3)
    assert np.abs(views.astype(int) - render_cameras(g, named_views(names, size=24)).astype(int)).max() <= 1
    if frames:
        assert np.abs(turn.astype(int) - turntable(g, frames, 24).astype(int)).max() <= 1


def test_orbit_previews_rejects_unknown_views():
    with pytest.raises(ValueError, match="unknown view"):
        orbit_previews(_head(), ("top",), 4, size=16)

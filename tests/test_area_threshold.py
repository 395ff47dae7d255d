"""model.area_threshold as the paper's densification stopping rule (model.dense_points = 0)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from panolam.config import get_config
from panolam.geometry.densify import build_densified_mesh
from panolam.model.panolam import PanoLAM


def _cfg(**changes):
    return dataclasses.replace(get_config("tiny").model, **{"pixel_aligned": False, "silhouette_cues": False, "magnification_head": False, **changes})


def _face_areas(points: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    v = points[faces].double()
    return 0.5 * torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]).norm(dim=-1)


def test_threshold_rule_smaller_threshold_gives_more_points_and_bounds_every_face():
    counts = []
    for thr in (2e-3, 5e-4):
        torch.manual_seed(0)
        m = PanoLAM(_cfg(dense_points=0, area_threshold=thr))
        dense = torch.sparse.mm(m.densify_matrix, m.template_vertices)
        assert float(_face_areas(dense, m.dense_faces).max()) <= thr
        assert m.num_dense == m.densify_matrix.shape[0]
        counts.append(m.num_dense)
    assert counts[1] > counts[0] > m.num_coarse


def test_dense_points_keeps_the_exact_count_and_ignores_the_threshold():
    torch.manual_seed(0)
    a = PanoLAM(_cfg(dense_points=1000, area_threshold=1e-3))
    torch.manual_seed(0)
    b = PanoLAM(_cfg(dense_points=1000, area_threshold=5e-4))
    assert a.num_dense == b.num_dense == 1000
    assert torch.equal(a.densify_matrix.to_dense(), b.densify_matrix.to_dense())
    # Exactly what build_densified_mesh gave before the rule was wired in (target mode).
    W, faces = build_densified_mesh(a.template_vertices, _template_faces(a), 1e-3, 1000)
    assert torch.equal(W.to_dense(), a.densify_matrix.to_dense()) and torch.equal(faces, a.dense_faces)


def _template_faces(m: PanoLAM) -> torch.Tensor:
    from panolam.geometry.template import load_template

    return load_template(m.cfg.template, m.cfg.template_vertices).faces


def test_negative_dense_points_rejected():
    with pytest.raises(ValueError, match="dense_points"):
        PanoLAM(_cfg(dense_points=-1))

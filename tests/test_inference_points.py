"""model.inference_dense_points / PanoLAM.set_inference_points: the trained network queried on a finer
subdivision of the template at inference, while training keeps the M_D layout."""

from __future__ import annotations

import pytest
import torch

from panolam.config import get_config
from panolam.geometry.densify import densify
from panolam.model.panolam import PanoLAM


def _model(**fields) -> PanoLAM:
    overrides = [f"model.{k}={v}" for k, v in {"dense_scale_floor": 0.5, **fields}.items()]
    torch.manual_seed(0)
    return PanoLAM(get_config("tiny", overrides).model)


@pytest.fixture(scope="module")
def model() -> PanoLAM:
    return _model(inference_dense_points=2500)


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.rand(1, 3, 56, 56, generator=torch.Generator().manual_seed(1))


def test_eval_mode_outputs_the_inference_count_and_training_keeps_m_d(model, image):
    model.train()
    with torch.no_grad():
        trained = model(image).dense
    assert trained.means.shape == (1, 1000, 3) and model.output_faces is model.dense_faces
    model.eval()
    with torch.no_grad():
        out = model(image).dense
    assert out.means.shape == (1, 2500, 3) and model.num_inference_dense == 2500
    faces = model.output_faces
    assert faces is model.inference_dense_faces and int(faces.max()) == 2499 and faces.shape[0] > trained.means.shape[1]
    assert torch.isfinite(out.means).all() and ((out.opacities > 0) & (out.opacities < 1)).all()


def test_points_shared_with_the_training_layout_get_the_trained_gaussians(model, image):
    """Every dense input is interpolated over the surface, so a point both layouts hold gets the same Gaussian."""
    model.eval()
    with torch.no_grad():
        fine = model(image).dense[0]
        fine_points = densify(model.inference_densify_matrix, model.template_vertices)
        model.set_inference_points(0)
        base = model(image).dense[0]
        base_points = densify(model.densify_matrix, model.template_vertices)
        model.set_inference_points(2500)
    assert len(base) == model.num_dense
    dist, idx = torch.cdist(base_points, fine_points).min(dim=1)
    shared = dist < 1e-6
    assert shared.float().mean() > 0.5  # the finer layout keeps most of the coarser one's points
    for name in ("means", "colors", "scales", "opacities", "quats"):
        a, b = getattr(base, name)[shared], getattr(fine, name)[idx[shared]]
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)


def test_scale_floor_keeps_its_trained_absolute_size(model, image):
    """More points do not shrink the floor: it is a fraction of the training spacing, not of the finer one."""
    floor = model.dense_scale_floor
    assert floor > 0
    model.eval()
    with torch.no_grad():
        scales = model(image).dense.scales
    assert float(scales.min()) >= floor * (1 - 1e-5)
    assert _model(inference_dense_points=2500).dense_scale_floor == _model().dense_scale_floor


def test_direct_dense_model_also_takes_an_inference_count(image):
    m = _model(inference_dense_points=1500, coarse_to_fine="false").eval()
    with torch.no_grad():
        out = m(image)
    assert out.coarse is None and out.dense.means.shape == (1, 1500, 3)
    template = densify(m.inference_densify_matrix, m.template_vertices)
    assert (out.dense.means[0] - template).norm(dim=-1).max() <= m.cfg.offset_coarse * 3 ** 0.5 + 1e-5


def test_negative_count_is_refused():
    with pytest.raises(ValueError, match="inference dense points"):
        _model(inference_dense_points=-1)


def test_checkpoint_without_the_field_keeps_the_training_count(tmp_path):
    """A model saved before the field existed reads it as 0: its heads have the count it was trained with."""
    import json

    from panolam.model.checkpoint import load_model, save_model

    m = _model()
    save_model(tmp_path / "ck", m, get_config("tiny", ["model.dense_scale_floor=0.5"]))
    meta_path = tmp_path / "ck" / "panolam.json"
    meta = json.loads(meta_path.read_text())
    section = meta["config"]["model"] if "model" in meta["config"] else meta["config"]
    section.pop("inference_dense_points")
    meta_path.write_text(json.dumps(meta))
    loaded, cfg = load_model(tmp_path / "ck")
    model_cfg = cfg.model if hasattr(cfg, "model") else cfg
    assert model_cfg.inference_dense_points == 0 and loaded.num_inference_dense == loaded.num_dense == 1000

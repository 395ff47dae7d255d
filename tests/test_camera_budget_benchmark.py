"""benchmarks/camera_budget.py: each camera variant is the camera it names, and its scores match `panolam eval`."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from _benchmarks import load_benchmark
from _train_fixtures import BlobHeads, make_tiny_dataset
from panolam.config import get_config
from panolam.data.camera_laws import eval_views
from panolam.eval.evaluate import PSNR_CAP, evaluate, model_reconstructor
from panolam.model.checkpoint import save_model
from panolam.model.panolam import PanoLAM
from panolam.model.pixel_aligned import camera_pose_deg, log_magnification


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("budget")
    data = make_tiny_dataset(root / "data", n_train=1, n_test=2, views=8, size=32)
    cfg = get_config("tiny")
    torch.manual_seed(0)
    model = PanoLAM(cfg.model)
    with torch.no_grad():  # a magnification head that answers something other than "nominal"
        model.magnification_head.mlp[-1].bias.fill_(0.05)
    return data, str(save_model(root / "model", model, cfg))


def test_rows_match_the_eval_with_the_estimated_and_the_true_camera(tiny, capsys):
    data, ckpt = tiny
    bench = load_benchmark("camera_budget")
    result = bench.measure(data, ckpt, limit=2, size=32, generator=BlobHeads())
    rows = {r["variant"]: r for r in result["rows"]}
    assert list(rows) == [v for v, _ in bench.VARIANTS] + ["scaled_truth"] and result["subjects"] == 2
    # The magnification head says +5 % whatever the photo: the error is that against each input's jittered camera.
    assert result["median_abs_error"]["magnification_pct"] > 0
    for camera, key in (("estimated", "estimated"), ("true", "true")):
        report = evaluate(model_reconstructor(ckpt, device="cpu"), data, limit=2, size=32, generator=BlobHeads(),
                          input_camera=camera, warmup=False)
        assert rows[key]["psnr"] == pytest.approx(report.mean()["psnr"], abs=1e-4)
    for r in rows.values():
        assert np.isfinite(r["psnr"]) and set(r["per_view"]) == {"front", "left", "right", "back"}
    print(bench.table(result))
    out = capsys.readouterr().out
    assert "| camera the photo is sampled with | PSNR↑ | front | left | right | back |" in out and out.count("\n| ") == 8  # header, rule, six rows
    # From the command line the dataset's own generator must re-render it; the test blobs are not registered.
    with pytest.raises(SystemExit, match="no generator that re-renders it"):
        bench.main(["--data", data, "--checkpoint", ckpt, "--limit", "1", "--size", "32"])


def test_variant_cameras_take_each_part_from_where_they_say():
    bench = load_benchmark("camera_budget")
    est = {"yaw": torch.tensor([10.0]), "pitch": torch.tensor([-5.0]), "mag": torch.tensor([0.04])}
    true = {"yaw": torch.tensor([-20.0]), "pitch": torch.tensor([8.0]), "mag": torch.tensor([-0.02])}
    expect = {"estimated": (10.0, -5.0, 0.04), "true_angles": (-20.0, 8.0, 0.04), "true_magnification": (10.0, -5.0, -0.02),
              "half_magnification_error": (10.0, -5.0, 0.01), "true": (-20.0, 8.0, -0.02)}
    for name, (yaw, pitch, mag) in expect.items():
        cam = bench.variant_camera(name, est, true)
        y, p = camera_pose_deg(cam.world_to_cam)
        assert float(y) == pytest.approx(yaw, abs=1e-3) and float(p) == pytest.approx(pitch, abs=1e-3)
        assert float(log_magnification(cam)) == pytest.approx(mag, abs=1e-5)
    with pytest.raises(ValueError, match="unknown camera variant"):
        bench.variant_camera("sideways", est, true)


def test_scaled_truth_is_exact_at_scale_one_and_worse_otherwise():
    bench = load_benchmark("camera_budget")
    gen = BlobHeads()
    subject = gen.subject(3)
    cams, bg = eval_views(32), torch.ones(3)
    assert np.all(bench.scaled_truth_psnr(gen, subject, 1.0, cams, bg) == PSNR_CAP)
    off = bench.scaled_truth_psnr(gen, subject, 1.05, cams, bg)
    assert np.all(off < 60) and np.all(np.isfinite(off))
    assert bench.scaled_truth_psnr(gen, dataclasses.replace(subject, payload="tri-planes"), 1.05, cams, bg) is None

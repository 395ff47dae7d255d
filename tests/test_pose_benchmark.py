"""benchmarks/pose.py: the input-camera estimate is scored per view bin against the stored cameras."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _benchmarks import load_benchmark
from _train_fixtures import make_tiny_dataset
from panolam.config import get_config
from panolam.model.checkpoint import save_model
from panolam.model.panolam import PanoLAM


def test_pose_table_bins_every_view_within_the_angle(tmp_path, capsys):
    data = make_tiny_dataset(tmp_path / "data", n_train=1, n_test=2, views=8, size=32)
    cfg = get_config("tiny")
    torch.manual_seed(0)
    ckpt = save_model(tmp_path / "model", PanoLAM(cfg.model), cfg)
    bench = load_benchmark("pose")
    result = bench.measure(data, str(ckpt), limit=2, max_angle=90.0)
    assert result["subjects"] == 2 and result["rows"]
    for row in result["rows"]:
        assert row["views"] > 0
        assert 0 <= row["yaw_median"] <= 180 and 0 <= row["pitch_median"] <= 180 and 0 <= row["within_10"] <= 1
        # The untrained magnification head answers "nominal", so its error is the nominal camera's (> 0: jittered views).
        assert row["mag_median"] == pytest.approx(row["mag_nominal_median"], abs=1e-6) and row["mag_median"] > 0
        assert 0 <= row["mesh_views"] <= row["views"]  # FaceMesh finds no face in 32² noise heads: "–" columns
    assert bench.main(["--data", data, "--checkpoint", str(ckpt), "--limit", "2"]) == 0
    out = capsys.readouterr().out
    assert "| true view | views |" in out and "magnification error median |" in out and out.count("\n| ") >= 2
    assert "| true view | views with a face mesh | pose head | face mesh | average (used) |" in out


def test_wrap_keeps_yaw_errors_short_way_round():
    bench = load_benchmark("pose")
    np.testing.assert_allclose(bench.wrap_deg(np.array([350.0, -350.0, 10.0, 180.0])), [-10.0, 10.0, 10.0, -180.0])


def test_a_network_without_pose_head_is_refused(tmp_path):
    data = make_tiny_dataset(tmp_path / "data", n_train=1, n_test=1, views=8, size=32)
    cfg = get_config("tiny", ["model.pixel_aligned=false"])
    ckpt = save_model(tmp_path / "model", PanoLAM(cfg.model), cfg)
    with pytest.raises(SystemExit, match="no pose head"):
        load_benchmark("pose").measure(data, str(ckpt), limit=1, max_angle=90.0)

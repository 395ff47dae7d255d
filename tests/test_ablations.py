"""benchmarks/ablations.py end to end on a tiny dataset: equal-budget runs, the 1/20 subset,
evaluation of every row plus the template baseline, and a rerun that redoes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _benchmarks import load_benchmark
from _train_fixtures import make_tiny_dataset


@pytest.mark.slow
def test_two_variants_train_evaluate_and_rerun_is_a_no_op(tmp_path):
    bench = load_benchmark("ablations")
    data = Path(make_tiny_dataset(tmp_path / "data", n_train=4, n_test=1))
    out = tmp_path / "abl"
    argv = ["--data", str(data), "--out", str(out), "--config", "tiny", "--steps", "2", "--variants", "full,data_1_20",
            "--jobs", "2", "--eval-size", "32", "--set", "data.views_per_step=2"]
    assert bench.main(argv) == 0
    for name in ("full", "data_1_20"):
        assert (out / name / "checkpoints" / "latest").read_text() == "step_00000002"
    meta = json.loads((out / "data_1_20" / "ablation.json").read_text())
    assert "data.train_subjects=1" in meta["overrides"] and "data.views_per_step=2" in meta["overrides"]
    text = (out / "ablations.md").read_text()
    for label in ("Full model", "1/20 of the training subjects", "Template + mean colour"):
        assert f"| {label} |" in text
    assert "Full model beats every other row on PSNR and SSIM:" in text
    assert "| colour r↑ |" in text and "| n/a |" in text  # one test subject: no correlation
    # A rerun trains and evaluates nothing again.
    walls = {n: json.loads((out / n / "ablation.json").read_text())["train_wall_s"] for n in ("full", "data_1_20")}
    stamp = (out / "full" / "eval" / "metrics.json").stat().st_mtime_ns
    assert bench.main(argv) == 0
    assert {n: json.loads((out / n / "ablation.json").read_text())["train_wall_s"] for n in ("full", "data_1_20")} == walls
    assert (out / "full" / "eval" / "metrics.json").stat().st_mtime_ns == stamp


def test_unknown_variant_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        load_benchmark("ablations").main(["--data", str(tmp_path), "--steps", "1", "--variants", "full,bogus"])
    assert "unknown variants ['bogus']" in capsys.readouterr().err

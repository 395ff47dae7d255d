"""benchmarks/table4.py: the synthetic training batch, the tables' structure and a tiny end-to-end run (no timings asserted)."""

from __future__ import annotations

import pytest

from _benchmarks import load_benchmark


def test_synthetic_batch_fits_the_real_loss():
    import torch

    from panolam.config import get_config
    from panolam.model.panolam import PanoLAM
    from panolam.train.losses import PanoLAMLoss

    bench = load_benchmark("table4")
    cfg = get_config("tiny")
    batch = bench.synthetic_batch(cfg, "cpu")
    assert batch["images"].shape == (1, cfg.data.views_per_step, 3, cfg.data.image_size, cfg.data.image_size)
    model = PanoLAM(cfg.model)
    out = model(torch.rand(1, 3, cfg.model.image_size, cfg.model.image_size))
    result = PanoLAMLoss(cfg.train, background=cfg.data.background)(out, batch)
    assert "st" in result.terms and "dense_lpips" in result.terms and result.absent == ("rgb_st",)  # teacher planes fit


def test_tables_show_stopped_and_unmeasured_rows(tmp_path):
    bench = load_benchmark("table4")
    rows = [{"points": 30000, "c2f": True, "forward_s": 0.5, "fwd_bwd_s": 2.0, "peak_mb": 2048},
            {"points": 30000, "c2f": False, "stopped": "> 900 s"}]
    t4 = bench.table4_markdown(rows, "CPU, 2 cores", "n")
    assert "| 30,000 | C2F | 0.500 | 2.00 | 2.00 GB | CPU, 2 cores | 0.082 s / 7.22 GB |" in t4
    assert "| 30,000 | D (direct dense) | stopped: > 900 s | - | - | CPU, 2 cores | 0.49 s / 17.1 GB |" in t4
    t3 = bench.table3_markdown([{"preset": "default", "trained": True, "points": 6000, "forward_s": 0.3, "render_s": 0.05},
                                {"preset": "paper", "not_measured": "no GPU lent"}], "CPU", "n")
    assert "| default | shipped | 6,000 | 0.300 | 50.0 | CPU |" in t3 and "| paper | - | - | not measured: no GPU lent |" in t3
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n")
    bench.write_sections(t4, t3, path)
    bench.write_sections(t4, t3, path)
    text = path.read_text()
    assert text.count(bench.T4_START) == text.count(bench.T3_END) == 1 and text.count("| 30,000 | C2F |") == 1


@pytest.mark.slow
def test_tiny_end_to_end_run():
    bench = load_benchmark("table4")
    t4, t3 = bench.main(["--preset", "tiny", "--points", "1000", "--table3-presets", "tiny", "paper", "--repeats", "1",
                         "--device", "cpu", "--set", "data.views_per_step=2"])
    assert "| 1,000 | C2F |" in t4 and "| 1,000 | D (direct dense) |" in t4 and "stopped" not in t4
    assert "| tiny | random | 1,000 |" in t3 and "| paper | - | - | not measured" in t3


def test_a_configuration_over_its_cpu_limit_is_reported_as_stopped():
    bench = load_benchmark("table4")
    spec = {"preset": "tiny", "points": 1000, "c2f": True, "device": "cpu", "repeats": 1, "overrides": []}
    row = bench.run_child("t4", spec, timeout_s=600, mem_limit_mb=8192, cpu_limit_s=1)  # importing torch alone takes longer
    assert row == {**spec, "stopped": "> 1 CPU-s"}

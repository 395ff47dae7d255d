"""benchmarks/reconstruct.py: one tiny forward timed in fp32 and under bf16 autocast (no timings asserted)."""

from __future__ import annotations

import pytest

from _benchmarks import load_benchmark


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_measure_reports_the_precision_it_ran(precision):
    bench = load_benchmark("reconstruct")
    r = bench.measure("tiny", "cpu", 1, [], precision)
    assert r["precision"] == precision and r["preset"] == "tiny"
    assert r["forward_s"] > 0 and r["train_step_s"] > 0 and r["params"] > 0
    r["machine"] = "CPU"
    row = bench.table([r], "note").splitlines()[2]
    assert row.startswith(f"| tiny | CPU | {precision} |")


def test_unknown_precision_is_refused():
    bench = load_benchmark("reconstruct")
    with pytest.raises(ValueError, match="precision must be one of"):
        bench.measure("tiny", "cpu", 1, [], "fp8")

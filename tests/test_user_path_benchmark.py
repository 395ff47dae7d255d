"""benchmarks/user_path.py: its photos, its table and one tiny end-to-end run (structure only, no timings asserted)."""

from __future__ import annotations

import pytest
from PIL import Image

from _benchmarks import load_benchmark


def test_photos_are_distinct_variants_of_the_sample(tmp_path):
    paths = load_benchmark("user_path").make_photos(tmp_path, 10)
    assert [p.name for p in paths] == [f"photo{i:02d}.png" for i in range(10)]
    sizes = {Image.open(p).size for p in paths}
    assert len(sizes) >= 7  # crops and rescales, not ten copies


def test_table_marks_targets_and_writes_its_section(tmp_path):
    bench = load_benchmark("user_path")
    stages = {key: 0.5 for _, key in bench.STAGES}
    rows = {"cold, 1 photo": {**stages, "wall_s": 12.0, "cpu_s": 9.0, "runs": 3},
            "warm, 1 photo": {**stages, "wall_s": 3.0, "cpu_s": 4.0, "runs": 3},
            "warm, 3 photos": {"wall_s": 9.0, "cpu_s": 8.0, "runs": 1}}
    text = bench.markdown(rows, "note here")
    lines = text.splitlines()
    assert lines[0].count("|") == lines[1].count("|") == lines[2].count("|") == 6 + len(bench.STAGES)
    assert "| cold, 1 photo | 3 | 12.00 | 9.00 | ≤ 10 s: not met |" in text
    assert "| warm, 1 photo | 3 | 3.00 | 4.00 | ≤ 5 s: met |" in text
    assert "| warm, 3 photos | 1 | 9.00 | 8.00 | - | - |" in text and text.endswith("note here\n")
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\nkeep\n")
    bench.write_section(text, path)
    bench.write_section(text, path)
    out = path.read_text()
    assert out.startswith("# Benchmarks\n\nkeep\n") and out.count(bench.START) == 1 and out.count("| cold, 1 photo |") == 1


@pytest.mark.slow
def test_tiny_end_to_end_run_reports_every_scenario_and_stage():
    bench = load_benchmark("user_path")
    rows = bench.main(["--config", "tiny", "--repeats", "1", "--photos", "2", "--cli-args", "--size 64 --preview-size 32 --frames 2"])
    assert list(rows) == ["cold, 1 photo", "cold, 2 photos in one call", "warm, 1 photo", "warm, 1 photo, --no-previews", "warm, 2 photos"]
    cold = rows["cold, 1 photo"]
    assert all(cold[key] > 0 for _, key in bench.STAGES)  # every stage ran and was timed
    assert rows["warm, 1 photo, --no-previews"]["render_previews_s"] == 0 and rows["warm, 1 photo"]["import_s"] == 0

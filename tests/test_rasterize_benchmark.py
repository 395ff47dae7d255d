"""The rasteriser benchmark script: its scene and the BENCHMARKS.md section it rewrites."""

from __future__ import annotations

import torch

from _benchmarks import load_benchmark


def test_head_scene_is_head_sized():
    scene = load_benchmark("rasterizer").head_scene(500)
    r = scene.means.norm(dim=-1)
    assert len(scene) == 500 and r.min() >= 0.3 - 1e-6 and r.max() <= 0.45 + 1e-6
    assert scene.scales.min() >= 0.005 - 1e-7 and scene.scales.max() <= 0.02 + 1e-7
    assert torch.all((scene.opacities > 0) & (scene.opacities < 1))


def test_write_section_replaces_only_its_markers(tmp_path):
    bench = load_benchmark("rasterizer")
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\nintro\n\n## Other\nkeep me\n")
    bench.write_section(path, "| a |\n| 1 |")
    first = path.read_text()
    assert first.startswith("# Benchmarks\n\nintro\n\n## Other\nkeep me\n")
    assert first.count(bench.START) == 1 and "| 1 |" in first
    path.write_text(first + "\ntrailing text\n")
    bench.write_section(path, "| a |\n| 2 |")
    second = path.read_text()
    assert "| 1 |" not in second and "| 2 |" in second
    assert "keep me" in second and second.endswith("\ntrailing text\n") and second.count(bench.END) == 1


def test_markdown_table_has_ratios():
    row = {"n": 10000, "size": 512, "cpu_fwd": 0.1, "cpu_fb": 0.5, "cpu_mb": 30.0, "exact_fwd": 0.25, "exact_fb": 1.5, "exact_mb": 40.0,
           "torch_fwd": 1.0, "torch_fb": 3.0, "torch_mb": 300.0}
    table = load_benchmark("rasterizer").markdown([row], runs=3)
    assert "| 10,000 | 512² | 0.100 | 0.500 | 30 | 0.250 | 1.500 | 1.000 | 3.000 | 300 | 2.5× / 3.0× | 10.0× / 6.0× |" in table
    assert "load average" in table

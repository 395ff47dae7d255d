"""Benchmark the CPU rasteriser (Numba kernels) against the pure-PyTorch backend and against its own
exact float64 kernels.

Scenes: N Gaussians spread over a head-sized shell (radius 0.3–0.45 around the origin, the
project's world frame), scales 0.005–0.02 (log-uniform), opacities 0.05–0.99, seen by one EG3D
camera (radius 2.7, FOV 18.837°, via ``Cameras.orbit``) at 256² and 512². Times are the median of
a few runs after a warm-up run (which also triggers/loads the Numba JIT cache); "fwd" runs under
``torch.no_grad``, "fwd+bwd" backpropagates a loss on rgb, alpha and depth. Float32 scenes (every
render of the app, refinement and training) run the vectorised row kernels; the "exact fp64" columns
render the same scene in float64, which runs the exact per-pixel kernels. Peak extra memory is
the peak of the process RSS (psutil, sampled every 2 ms by a thread) minus the RSS before the
call, so it sees Numba and torch allocations alike; the script re-executes itself with glibc's
``MALLOC_MMAP_THRESHOLD_`` fixed at 128 KiB so large freed buffers leave the RSS and every run's
peak is visible (otherwise glibc reuses the warm-up's pages and the delta reads ~0). Prints a Markdown table; ``--write`` replaces
the section between ``<!-- rasterizer:start -->`` and ``<!-- rasterizer:end -->`` in
BENCHMARKS.md (markers appended if absent).

    python benchmarks/rasterizer.py [--sizes 256 512] [--counts 5000 10000 30000] [--runs 3] [--write]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

import psutil
import torch

from panolam.gaussians import Gaussians
from panolam.eval.report import write_marked_section
from panolam.geometry.cameras import Cameras
from panolam.render import rasterize

START, END = "<!-- rasterizer:start -->", "<!-- rasterizer:end -->"


def head_scene(n: int, seed: int = 0) -> Gaussians:
    gen = torch.Generator().manual_seed(seed)
    direction = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen), dim=-1)
    radius = 0.3 + 0.15 * torch.rand(n, 1, generator=gen)
    log_s = torch.empty(n, 3).uniform_(math.log(0.005), math.log(0.02), generator=gen)
    return Gaussians(
        means=direction * radius,
        quats=torch.randn(n, 4, generator=gen),
        scales=log_s.exp(),
        opacities=0.05 + 0.94 * torch.rand(n, generator=gen),
        colors=torch.rand(n, 3, generator=gen),
    )


class PeakRSS:
    """Context manager measuring peak RSS growth (bytes) of this process while it is open."""

    def __init__(self, interval: float = 0.002):
        self.interval, self.proc, self.peak, self._stop = interval, psutil.Process(), 0, threading.Event()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> "PeakRSS":
        self.base = self.peak = self.proc.memory_info().rss
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def extra_mb(self) -> float:
        return (self.peak - self.base) / 2**20


def run_once(scene: Gaussians, cams: Cameras, backend: str, backward: bool) -> tuple[float, float]:
    """(seconds, peak extra MB) of one render (+ backward)."""
    g = scene.map(lambda t: t.detach().clone().requires_grad_(backward))
    with PeakRSS() as mem:
        start = time.perf_counter()
        with torch.set_grad_enabled(backward):
            out = rasterize(g, cams, background=1.0, backend=backend)
            if backward:
                (out.rgb.sum() + out.alpha.sum() + (out.depth * out.alpha).sum()).backward()
        elapsed = time.perf_counter() - start
    return elapsed, mem.extra_mb


def measure(scene: Gaussians, cams: Cameras, backend: str, backward: bool, runs: int) -> tuple[float, float]:
    run_once(scene, cams, backend, backward)  # warm-up (JIT cache load, allocator)
    results = [run_once(scene, cams, backend, backward) for _ in range(runs)]
    return statistics.median(r[0] for r in results), max(r[1] for r in results)


def benchmark(counts, sizes, runs: int, torch_runs: int) -> list[dict]:
    rows = []
    for size in sizes:
        cams = Cameras.orbit([25.0], [5.0], 2.7, 18.837, size)
        for n in counts:
            scene = head_scene(n)
            row = {"n": n, "size": size}
            for name, backend, reps, g in (("cpu", "cpu", runs, scene), ("exact", "cpu", runs, scene.to("cpu", torch.float64)),
                                           ("torch", "torch", torch_runs, scene)):
                row[f"{name}_fwd"], _ = measure(g, cams, backend, False, reps)
                row[f"{name}_fb"], row[f"{name}_mb"] = measure(g, cams, backend, True, reps)
            rows.append(row)
            print(f"done N={n} size={size}: {row}", flush=True)
    return rows


def markdown(rows: list[dict], runs: int) -> str:
    lines = [
        f"CPU rasteriser (`backend=\"cpu\"`, Numba; float32 scene: vectorised row kernels) vs the same backend on the "
        f"scene in float64 (exact per-pixel kernels) and vs pure PyTorch (`backend=\"torch\"`); "
        f"{psutil.cpu_count()}-core CPU ({platform.processor() or platform.machine()}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads; median of {runs} runs after a warm-up; 1 camera, background 1.0; "
        f"1-min load average {os.getloadavg()[0]:.1f} when the table was printed. "
        "Peak = peak process RSS growth during fwd+bwd (psutil sampling). A load average above ~1 means other "
        "jobs shared the machine and the timings are inflated.",
        "",
        "| N | image | cpu fwd (s) | cpu fwd+bwd (s) | cpu peak (MB) | exact fp64 fwd (s) | exact fp64 fwd+bwd (s) "
        "| torch fwd (s) | torch fwd+bwd (s) | torch peak (MB) | vs fp64 fwd / fwd+bwd | vs torch fwd / fwd+bwd |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']:,} | {r['size']}² | {r['cpu_fwd']:.3f} | {r['cpu_fb']:.3f} | {r['cpu_mb']:.0f} | "
            f"{r['exact_fwd']:.3f} | {r['exact_fb']:.3f} | "
            f"{r['torch_fwd']:.3f} | {r['torch_fb']:.3f} | {r['torch_mb']:.0f} | "
            f"{r['exact_fwd'] / r['cpu_fwd']:.1f}× / {r['exact_fb'] / r['cpu_fb']:.1f}× | "
            f"{r['torch_fwd'] / r['cpu_fwd']:.1f}× / {r['torch_fb'] / r['cpu_fb']:.1f}× |"
        )
    return "\n".join(lines)


def write_section(path: Path, body: str) -> None:
    """Replace (or append) the marked rasteriser section, leaving the rest of the file untouched."""
    write_marked_section(path, START, END, f"## Rasteriser\n\n{body}\n")


def main() -> None:
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:  # see module doc: make freed memory visible to RSS
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"})
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[5000, 10000, 30000])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--runs", type=int, default=3, help="timed runs per cell for the Numba backend")
    parser.add_argument("--torch-runs", type=int, default=1, help="timed runs per cell for the (slow) torch backend")
    parser.add_argument("--write", action="store_true", help="update the rasteriser section of BENCHMARKS.md")
    args = parser.parse_args()
    table = markdown(benchmark(args.counts, args.sizes, args.runs, args.torch_runs), args.runs)
    print(table)
    if args.write:
        write_section(Path(__file__).resolve().parent.parent / "BENCHMARKS.md", table)


if __name__ == "__main__":
    main()

"""Benchmark one PanoLAM forward pass (the "reconstruction time" of paper Table 3): parameter count,
build time, median forward time and peak memory for each preset, each in its own subprocess so the
peak-RSS figure belongs to that preset alone. Prints a Markdown table; ``--write`` puts it into
BENCHMARKS.md between the ``<!-- reconstruct:start -->`` / ``<!-- reconstruct:end -->`` markers
(appended if the markers are absent). Times are of the network only (random weights; no
preprocessing, rendering or export). Default presets: ``default``, plus ``paper`` when CUDA exists.

``--precision bf16`` runs the forward (and the fwd+bwd step) under bf16 autocast, as training does on a
GPU; issue 15's GPU target (``paper`` ≤ 0.05 s on an H100-class device) is stated for bf16.

    python benchmarks/reconstruct.py [--presets default paper] [--device cpu|cuda] [--precision fp32|bf16] [--repeats 5] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- reconstruct:start -->", "<!-- reconstruct:end -->"


PRECISIONS = ("fp32", "bf16")


def measure(preset: str, device: str, repeats: int, overrides: list[str], precision: str = "fp32") -> dict:
    """Build ``preset`` and time ``repeats`` forwards of one image after one warm-up forward."""
    import contextlib
    import resource

    import torch

    from panolam.config import get_config
    from panolam.model.panolam import PanoLAM

    cfg = get_config(preset, overrides).model
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # random-init DINOv2 warning: expected here
        model = PanoLAM(cfg).to(device).eval()
    build_s = time.perf_counter() - t0
    images = torch.rand(1, 3, cfg.image_size, cfg.image_size, device=device)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")

    def autocast():
        if precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    from torch.utils.flop_counter import FlopCounterMode

    flops = FlopCounterMode(display=False)
    with torch.inference_mode(), flops:
        model(images)
    times, cpu_times = [], []
    with torch.inference_mode(), autocast():
        model(images)
        sync()
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            model(images)
            sync()
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
    train_times = []
    model.train()
    for _ in range(max(1, repeats // 2)):
        t0 = time.perf_counter()
        with autocast():
            out = model(images)
            loss = out.dense.colors.float().mean() + out.dense.means.float().mean() + out.planes.float().mean()
            if out.coarse is not None:
                loss = loss + out.coarse.means.float().mean()
        loss.backward()
        model.zero_grad(set_to_none=True)
        sync()
        train_times.append(time.perf_counter() - t0)
    times.sort()
    cpu_times.sort()
    train_times.sort()
    result = {
        "preset": preset, "overrides": overrides, "device": device, "precision": precision, "params": model.num_parameters(),
        "weights_mb": model.num_parameters() * 4 / 2**20, "build_s": build_s, "forward_s": times[len(times) // 2],
        "forward_cpu_s": cpu_times[len(cpu_times) // 2],
        "train_step_s": train_times[len(train_times) // 2],
        "gflops": flops.get_total_flops() / 1e9, "threads": torch.get_num_threads(),
        "dense_points": model.num_dense, "inference_points": model.num_inference_dense, "image_size": cfg.image_size,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if device.startswith("cuda"):
        result["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def machine(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return f"{torch.cuda.get_device_name(0)} (CUDA)"
    return f"CPU, {os.cpu_count()} cores ({platform.machine()})"


def run_child(preset: str, device: str, repeats: int, overrides: list[str], precision: str = "fp32") -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = Path(f.name)
    cmd = [sys.executable, __file__, "--_child", preset, "--device", device, "--repeats", str(repeats), "--_out", str(out),
           "--precision", precision]
    cmd += [a for o in overrides for a in ("--set", o)]
    subprocess.run(cmd, check=True)
    result = json.loads(out.read_text())
    out.unlink()
    return result


def table(rows: list[dict], note: str) -> str:
    lines = [
        "| preset | device | precision | params | weights (MB fp32) | M_D | image | GFLOP | forward (median) | CPU time / threads | fwd+bwd | build | peak RSS | peak CUDA |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        name = r["preset"] + (f" ({', '.join(r['overrides'])})" if r["overrides"] else "")
        cuda = f"{r['peak_cuda_mb']:.0f} MB" if "peak_cuda_mb" in r else "-"
        lines.append(
            f"| {name} | {r['machine']} | {r.get('precision', 'fp32')} | {r['params'] / 1e6:.2f} M | {r['weights_mb']:.0f} | {_points(r)} | "
            f"{r['image_size']} | {r['gflops']:.1f} | {r['forward_s'] * 1000:.0f} ms | {r['forward_cpu_s']:.2f} s / {r['threads']} | {r['train_step_s']:.2f} s | {r['build_s']:.1f} s | {r['peak_rss_mb']:.0f} MB | {cuda} |"
        )
    return "\n".join(lines) + f"\n\n{note}\n"


def _points(r: dict) -> str:
    """M_D, and the eval-mode output count when model.inference_dense_points differs (the forward timed)."""
    out = r.get("inference_points", r["dense_points"])
    return str(r["dense_points"]) if out == r["dense_points"] else f"{r['dense_points']} (outputs {out})"


def write_section(text: str, path: Path = ROOT / "BENCHMARKS.md") -> None:
    from panolam.eval.report import write_marked_section

    write_marked_section(path, START, END, f"## Reconstruction (network forward)\n\n{text}")


def _load_note() -> str:
    try:
        return f"Load average when it finished: {os.getloadavg()[0]:.1f}."
    except OSError:
        return ""


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", nargs="+", default=None, help="presets to time (default: default [+ paper on CUDA])")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--precision", choices=PRECISIONS, default="fp32", help="fp32, or bf16 autocast (the GPU target's setting)")
    ap.add_argument("--set", action="append", default=[], metavar="section.field=value", help="config override")
    ap.add_argument("--note", default="", help="free text saved under the table (e.g. 'machine shared with other jobs')")
    ap.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    ap.add_argument("--_child", help=argparse.SUPPRESS)
    ap.add_argument("--_out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args._child:
        result = measure(args._child, device, args.repeats, args.set, args.precision)
        result["machine"] = machine(device)
        Path(args._out).write_text(json.dumps(result))
        return
    presets = args.presets or (["default", "paper"] if device.startswith("cuda") else ["default"])
    rows = [run_child(p, device, args.repeats, args.set, args.precision) for p in presets]
    note = (
        f"One image, batch 1, random weights, {args.precision}{' autocast' if args.precision != 'fp32' else ''}, torch {torch.__version__}; median of {args.repeats} forwards "
        "after one warm-up; each preset in its own process. 'CPU time' is the process CPU time of one forward "
        "summed over threads: on a shared machine, wall time is about CPU time / threads when the cores are free. "
        "GFLOP: torch's FlopCounterMode for one forward (matmul = 2·M·N·K; machine-independent). "
        f"fwd+bwd: one training-mode forward and backward of a dummy loss. {_load_note()} {args.note}"
    ).strip()
    text = table(rows, note)
    print(text)
    if args.write:
        write_section(text)


if __name__ == "__main__":
    main()

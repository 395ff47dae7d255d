"""Paper Tables 3 and 4 on this machine: coarse-to-fine (C2F) vs direct dense prediction (D), and
reconstruction / render time per preset.

Table 4 compares, for M_D dense Gaussians (default 10K, 30K, 100K), the network with
``model.coarse_to_fine=True`` (the point branch runs over the M_C template vertices, dense points
come from the densification matrix) against ``False`` (the point branch — its self-attention
included — runs over all M_D points): forward time (inference, batch 1), forward + backward of
the REAL training objective (:class:`panolam.train.losses.PanoLAMLoss` of the preset: L1 + ST-LPIPS
+ mask on rasterised renders of the dense — and, for C2F, coarse — Gaussians in N_v views, and the
tri-plane L_st term against random teacher planes; L_rgb^ST is absent as in training without a
teacher decoder), and the process's peak memory (peak RSS on CPU, peak allocated on CUDA). Each
configuration runs in its own process with a CPU-time limit (load-independent on a shared
machine), a wall-time safety limit and a memory limit; one that exceeds a limit is reported as
stopped (the paper's D-100K ran out of 80 GB).

Table 3: per preset, the network forward for one photo (the shipped weights for ``default``) and
one 512² render of its head. ``paper`` rows are measured only with CUDA. ``--write`` replaces the
``table4`` and ``table3`` sections of BENCHMARKS.md.

    python benchmarks/table4.py [--points 10000 30000 100000] [--preset default] [--repeats 3] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
T4_START, T4_END = "<!-- table4:start -->", "<!-- table4:end -->"
T3_START, T3_END = "<!-- table3:start -->", "<!-- table3:end -->"
STOPPED_MEMORY = 3  # child exit code: the memory limit was reached
PAPER_T4 = {(30000, True): "0.082 s / 7.22 GB", (30000, False): "0.49 s / 17.1 GB", (100000, False): "out of memory (80 GB)"}
PAPER_T3 = {"paper": "0.11 s / 3.6 ms (A100)"}


def _watch_memory(limit_mb: float) -> None:
    """Exit the process with STOPPED_MEMORY once its RSS exceeds ``limit_mb`` (protects a shared machine)."""
    import psutil

    proc = psutil.Process()

    def watch() -> None:
        while True:
            if proc.memory_info().rss / 2**20 > limit_mb:
                os._exit(STOPPED_MEMORY)
            time.sleep(0.02)

    threading.Thread(target=watch, daemon=True).start()


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _peak_mb(device: str) -> float:
    import resource

    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic_batch(cfg, device: str):
    """One training batch of the preset's shape: N_v views of random targets/masks from orbit cameras, random teacher planes."""
    import torch

    from panolam.geometry.cameras import Cameras

    n_v, size = cfg.data.views_per_step, cfg.data.image_size
    g = torch.Generator().manual_seed(0)
    cams = Cameras.orbit(torch.linspace(-180, 180, n_v + 1)[:-1], 0.0, width=size)
    m = cfg.model
    planes = torch.randn(1, 6, m.triplane_channels, m.triplane_res * m.triplane_upsample, m.triplane_res * m.triplane_upsample, generator=g)
    return {"images": torch.rand(1, n_v, 3, size, size, generator=g), "masks": (torch.rand(1, n_v, 1, size, size, generator=g) > 0.5).float(),
            "world_to_cam": cams.world_to_cam[None], "K": cams.K[None], "teacher_planes": planes}


def measure_t4(preset: str, points: int, c2f: bool, device: str, repeats: int, overrides: list[str]) -> dict:
    """Build the network with M_D = ``points`` and the C2F switch, then time forward and the real loss's forward+backward."""
    import warnings

    import torch

    from panolam.config import get_config
    from panolam.model.panolam import PanoLAM
    from panolam.train.losses import PanoLAMLoss

    # inference_dense_points=0: the eval-mode forward outputs the M_D points being compared (the paper's table).
    cfg = get_config(preset, [f"model.dense_points={points}", f"model.coarse_to_fine={str(c2f).lower()}",
                              "model.inference_dense_points=0", *overrides])
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # random-init encoder warning: expected here
        model = PanoLAM(cfg.model).to(device)
    build_s = time.perf_counter() - t0
    loss_fn = PanoLAMLoss(cfg.train, background=cfg.data.background).to(device)
    batch = synthetic_batch(cfg, device)
    images = torch.rand(1, 3, cfg.model.image_size, cfg.model.image_size, device=device)
    model.eval()
    fwd = []
    with torch.inference_mode():
        for i in range(repeats + 1):  # the first is a warm-up
            t0 = time.perf_counter()
            model(images)
            _sync(device)
            if i:
                fwd.append(time.perf_counter() - t0)
    model.train()
    fb, absent = [], ()
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        result = loss_fn(model(images), batch)
        result.total.backward()
        model.zero_grad(set_to_none=True)
        _sync(device)
        absent = result.absent
        if i or repeats == 0:
            fb.append(time.perf_counter() - t0)
    return {"points": model.num_dense, "coarse": model.num_coarse, "c2f": c2f, "build_s": build_s, "forward_s": statistics.median(fwd),
            "fwd_bwd_s": statistics.median(fb), "peak_mb": _peak_mb(device), "absent": list(absent), "views": cfg.data.views_per_step,
            "render_size": cfg.train.render_size, "threads": torch.get_num_threads()}


def measure_t3(preset: str, device: str, repeats: int, size: int = 512) -> dict:
    """Network forward for the sample photo (shipped weights where the preset has them) and one ``size``² render of its head."""
    import warnings

    import torch
    from skimage import data

    from panolam.geometry.cameras import named_views
    from panolam.pipeline import Reconstructor, _square_resize
    from panolam.render import rasterize

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        rec = Reconstructor(None, preset, device=device)
    images = rec.image_tensor(_square_resize(data.astronaut(), rec.model_cfg.image_size)[0])
    fwd, rend = [], []
    with torch.inference_mode():
        for i in range(repeats + 1):
            t0 = time.perf_counter()
            head = rec.model(images).dense[0]
            _sync(device)
            if i:
                fwd.append(time.perf_counter() - t0)
        cams = named_views(("front",), size=size).to(device)
        for i in range(repeats + 1):
            t0 = time.perf_counter()
            rasterize(head.map(lambda t: t.float()), cams, 1.0)
            _sync(device)
            if i:
                rend.append(time.perf_counter() - t0)
    return {"preset": preset, "trained": rec.trained, "points": len(head), "forward_s": statistics.median(fwd),
            "render_s": statistics.median(rend), "size": size, "peak_mb": _peak_mb(device)}


def machine(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(0)
    return f"CPU, {os.cpu_count()} cores"


def run_child(kind: str, spec: dict, timeout_s: float, mem_limit_mb: float, cpu_limit_s: float = 0) -> dict:
    """One measurement in a fresh process; a time-out, the CPU-time or the memory limit gives ``{"stopped": reason}``."""
    import signal

    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = Path(f.name)
    cmd = [sys.executable, __file__, "--_child", kind, "--_spec", json.dumps(spec), "--_out", str(out), "--_mem", str(mem_limit_mb),
           "--_cpu", str(cpu_limit_s)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    try:
        proc = subprocess.run(cmd, env=env, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {**spec, "stopped": f"> {timeout_s:.0f} s"}
    finally:
        result = json.loads(out.read_text()) if out.exists() and out.stat().st_size else None
        out.unlink(missing_ok=True)
    if proc.returncode == STOPPED_MEMORY:
        return {**spec, "stopped": f"> {mem_limit_mb / 1024:.0f} GB"}
    if proc.returncode == -signal.SIGXCPU:
        return {**spec, "stopped": f"> {cpu_limit_s:.0f} CPU-s"}
    if proc.returncode != 0 or result is None:
        raise RuntimeError(f"{kind} child failed (exit {proc.returncode}) for {spec}")
    return result


def _gb(mb: float) -> str:
    return f"{mb / 1024:.2f} GB"


def table4_markdown(rows: list[dict], device_name: str, note: str) -> str:
    lines = [f"| M_D | method | forward (s) | fwd+bwd, real loss (s) | peak memory | device | paper (A100: fwd+bwd time / memory) |",
             "| ---: | --- | ---: | ---: | ---: | --- | --- |"]
    for r in rows:
        method = "C2F" if r["c2f"] else "D (direct dense)"
        paper = PAPER_T4.get((r["points"], r["c2f"]), "-")
        if "stopped" in r:
            lines.append(f"| {r['points']:,} | {method} | stopped: {r['stopped']} | - | - | {device_name} | {paper} |")
        else:
            lines.append(f"| {r['points']:,} | {method} | {r['forward_s']:.3f} | {r['fwd_bwd_s']:.2f} | {_gb(r['peak_mb'])} | {device_name} | {paper} |")
    return "\n".join(lines) + f"\n\n{note}\n"


def table3_markdown(rows: list[dict], device_name: str, note: str) -> str:
    lines = ["| preset | weights | M_D | reconstruction (s) | render 512² (ms) | device | paper |", "| --- | --- | ---: | ---: | ---: | --- | --- |"]
    for r in rows:
        paper = PAPER_T3.get(r["preset"], "-")
        if "not_measured" in r:
            lines.append(f"| {r['preset']} | - | - | not measured: {r['not_measured']} | - | - | {paper} |")
        elif "stopped" in r:
            lines.append(f"| {r['preset']} | - | - | stopped: {r['stopped']} | - | {device_name} | {paper} |")
        else:
            weights = "shipped" if r["trained"] else "random"
            lines.append(f"| {r['preset']} | {weights} | {r['points']:,} | {r['forward_s']:.3f} | {r['render_s'] * 1000:.1f} | {device_name} | {paper} |")
    return "\n".join(lines) + f"\n\n{note}\n"


def write_sections(t4: str, t3: str, path: Path = ROOT / "BENCHMARKS.md") -> None:
    from panolam.eval.report import write_marked_section

    write_marked_section(path, T4_START, T4_END, f"## Table 4: coarse-to-fine vs direct dense prediction\n\n{t4}")
    write_marked_section(path, T3_START, T3_END, f"## Table 3: reconstruction and render time\n\n{t3}")


def main(argv: list[str] | None = None) -> tuple[str, str] | None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="default", help="preset for Table 4 (default: default)")
    ap.add_argument("--points", type=int, nargs="+", default=[10000, 30000, 100000], help="M_D values")
    ap.add_argument("--table3-presets", nargs="*", default=["default", "paper"], help="presets for Table 3 (paper needs CUDA)")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs after one warm-up")
    ap.add_argument("--cpu-limit", type=float, default=900, help="CPU-time limit per configuration (all threads), seconds; 0 = none")
    ap.add_argument("--timeout", type=float, default=3600, help="wall-time safety limit per configuration, seconds")
    ap.add_argument("--mem-limit-gb", type=float, default=10, help="memory limit per configuration (process RSS on CPU)")
    ap.add_argument("--set", action="append", default=[], metavar="section.field=value", help="config override (Table 4)")
    ap.add_argument("--note", default="", help="free text saved under the tables")
    ap.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    ap.add_argument("--_child", choices=("t4", "t3"), help=argparse.SUPPRESS)
    ap.add_argument("--_spec", help=argparse.SUPPRESS)
    ap.add_argument("--_out", help=argparse.SUPPRESS)
    ap.add_argument("--_mem", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--_cpu", type=float, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._child:
        spec = json.loads(args._spec)
        _watch_memory(args._mem)
        if args._cpu > 0:
            import resource

            resource.setrlimit(resource.RLIMIT_CPU, (int(args._cpu), resource.RLIM_INFINITY))  # SIGXCPU ends the child
        if args._child == "t4":
            result = measure_t4(spec["preset"], spec["points"], spec["c2f"], spec["device"], spec["repeats"], spec["overrides"])
        else:
            result = measure_t3(spec["preset"], spec["device"], spec["repeats"])
        Path(args._out).write_text(json.dumps(result))
        return None
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    name = machine(device)
    load_before = os.getloadavg()[0]
    mem = args.mem_limit_gb * 1024
    t4_rows = []
    for points in args.points:
        for c2f in (True, False):
            spec = {"preset": args.preset, "points": points, "c2f": c2f, "device": device, "repeats": args.repeats, "overrides": args.set}
            t4_rows.append(run_child("t4", spec, args.timeout, mem, args.cpu_limit))
    t3_rows = []
    for preset in args.table3_presets:
        if preset == "paper" and not device.startswith("cuda"):
            t3_rows.append({"preset": preset, "not_measured": "no GPU lent (the paper preset is sized for one)"})
            continue
        t3_rows.append(run_child("t3", {"preset": preset, "device": device, "repeats": args.repeats}, args.timeout, mem, args.cpu_limit))
    done = next((r for r in t4_rows if "stopped" not in r), {})
    load = f"1-min load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after (above ~2 the machine was shared: times inflated)"
    t4_note = (f"`{args.preset}` preset{' with ' + ', '.join(args.set) if args.set else ''}, random weights, fp32, torch {torch.__version__}, "
               f"{platform.machine()}; median of {args.repeats} runs after a warm-up, each configuration in its own process "
               f"(limits: {args.cpu_limit:.0f} CPU-s, {args.timeout:.0f} s wall, {args.mem_limit_gb:g} GB). Loss: {done.get('views', '?')} views rendered at "
               f"{done.get('render_size', '?')}², absent terms: {', '.join(done.get('absent', [])) or 'none'}. Peak memory = peak "
               f"process RSS (imports, weights and activations; CUDA: peak allocated). The `paper` preset on a GPU: "
               f"{'this table' if device.startswith('cuda') else 'not measured (no GPU lent)'}. {load}. {args.note}").strip()
    t3_note = (f"Reconstruction = one network forward for the sample photo, batch 1, fp32 (median of {args.repeats} after a warm-up); render = "
               f"one 512² view of that head with the project's rasteriser ({'gsplat' if device.startswith('cuda') else 'Numba CPU'}). {load}.")
    t4, t3 = table4_markdown(t4_rows, name, t4_note), table3_markdown(t3_rows, name, t3_note)
    print(t4 + "\n" + t3)
    if args.write:
        write_sections(t4, t3)
    return t4, t3


if __name__ == "__main__":
    main()

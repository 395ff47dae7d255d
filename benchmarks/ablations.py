"""Table-5 ablations at an equal budget: train each variant, evaluate it, print one table.

Every variant trains from scratch with the same recipe (``--config``, ``--set`` overrides, steps,
batch, views, seed) and differs in one switch only:

    full        the model as specified
    no_c2f      model.coarse_to_fine=false      (dense Gaussians predicted directly)
    no_rayagg   model.ray_aggregation=false     (single-point tri-plane query)
    data_1_20   data.train_subjects=N/20        (the first 1/20 of the training subjects)
    no_pixel    model.pixel_aligned=false       (beyond the paper: no pose head / pixel-aligned sampling)

plus the trivial baseline (undeformed template with the input's mean colour). Training runs as
``panolam train`` subprocesses, ``--jobs`` at a time with the cores split between them (torch
threads = cores // jobs, no DataLoader workers), each resumable: rerunning the script continues
unfinished runs from their last checkpoint and skips finished runs and existing evaluations. The
table (Markdown) goes to OUT/ablations.md; ``--write`` also replaces the section between
``<!-- ablations:start -->`` and ``<!-- ablations:end -->`` in BENCHMARKS.md.

    python benchmarks/ablations.py --data data/synth360 --out runs/ablations --steps 1200 --jobs 2 \\
        --set train.st_decoder=data/synth360/teacher/decoder.safetensors [--variants full,no_c2f] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from panolam.eval.report import COLOUR_R_MEANING, write_marked_section

START, END = "<!-- ablations:start -->", "<!-- ablations:end -->"
VARIANTS = {
    "full": ("Full model", []),
    "no_c2f": ("w/o coarse-to-fine", ["model.coarse_to_fine=false"]),
    "no_rayagg": ("w/o ST ray aggregation", ["model.ray_aggregation=false"]),
    "data_1_20": ("1/20 of the training subjects", None),  # filled in from the dataset size
    "no_pixel": ("w/o pixel-aligned", ["model.pixel_aligned=false"]),
}
BASELINE = "template"


def train_subject_count(data: Path) -> int:
    from panolam.data.labels import rejected
    from panolam.data.manifest import load_manifest

    skip = rejected(data)
    return sum(1 for s in load_manifest(data).subjects("train") if s not in skip)


def variant_overrides(name: str, data: Path) -> list[str]:
    if name == "data_1_20":
        return [f"data.train_subjects={max(1, train_subject_count(data) // 20)}"]
    return list(VARIANTS[name][1])


def finished(run: Path, steps: int) -> bool:
    latest = run / "checkpoints" / "latest"
    return latest.is_file() and latest.read_text().strip() == f"step_{steps:08d}"


def _env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), NUMBA_NUM_THREADS=str(threads))
    return env


def run_logged(cmd: list[str], log: Path, threads: int) -> float:
    """Run ``cmd`` with its output in ``log``; wall seconds. Raises with the log's tail on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    tic = time.perf_counter()
    with open(log, "ab") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n".encode())
        fh.flush()
        code = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT, env=_env(threads))
    if code != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{' '.join(cmd[:4])}… failed (exit {code}); end of {log}:\n{tail}")
    return time.perf_counter() - tic


def train_variant(name: str, args: argparse.Namespace, threads: int) -> dict:
    run = args.out / name
    meta_path = run / "ablation.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {"train_wall_s": 0.0}
    overrides = [*args.set, f"train.steps={args.steps}", "data.num_workers=0", *variant_overrides(name, args.data)]
    if not finished(run, args.steps):
        cmd = [sys.executable, "-m", "panolam.cli", "train", "--config", args.config, "--data", str(args.data), "--out", str(run),
               "--resume", "--no-progress"] + [a for o in overrides for a in ("--set", o)]
        print(f"[{name}] training {args.steps} steps → {run} ({threads} threads)", flush=True)
        meta["train_wall_s"] += run_logged(cmd, run / "ablation.log", threads)
    meta.update(variant=name, overrides=overrides, steps=args.steps, config=args.config, threads=threads)
    run.mkdir(parents=True, exist_ok=True)
    meta_path.write_text(json.dumps(meta, indent=2))
    return meta


def eval_variant(name: str, args: argparse.Namespace, threads: int) -> dict:
    out = args.out / name / "eval"
    if not (out / "metrics.json").is_file():
        print(f"[{name}] evaluating at {args.eval_size}px", flush=True)
        if name == BASELINE:
            cmd = ["--baseline", "template"]
        else:
            cmd = ["--checkpoint", str(args.out / name), "--label", VARIANTS[name][0]]
        cmd = [sys.executable, "-m", "panolam.cli", "eval", "--data", str(args.data), "--size", str(args.eval_size), "--out", str(out),
               "--no-progress", "--device", "cpu", *cmd] + (["--limit", str(args.eval_limit)] if args.eval_limit else [])
        run_logged(cmd, args.out / name / "eval.log", threads)
    return json.loads((out / "metrics.json").read_text())


def table(rows: list[tuple[str, dict, dict | None]], args: argparse.Namespace) -> str:
    settings = rows[0][1]["settings"]
    lines = [f"Table-5 ablations, equal budget: `{args.config}` preset, {args.steps} steps each from scratch, same seed, "
             f"overrides `{' '.join(args.set) or '(none)'}`; {platform.machine()} CPU, {os.cpu_count()} cores, "
             f"{args.jobs} runs at a time. Evaluated on `{settings['data']}` split `{settings['split']}` "
             f"({rows[0][1]['mean']['subjects']} subjects), {'/'.join(settings['views'])} at {settings['size']}px.", "",
             "| Method | PSNR↑ | SSIM↑ | LPIPS↓ [ST-LPIPS AlexNet] | colour r↑ | train wall (min) |", "|---|---|---|---|---|---|"]
    for label, metrics, meta in rows:
        m = metrics["mean"]
        wall = f"{meta['train_wall_s'] / 60:.0f}" if meta and meta.get("train_wall_s") else "-"
        colour_r = f"{m['colour_r']:.2f}" if m.get("colour_r") is not None else "n/a"  # evals older than colour r lack it
        lines.append(f"| {label} | {m['psnr']:.3f} | {m['ssim']:.4f} | {m['lpips']:.4f} | {colour_r} | {wall} |")
    full = next((r for r in rows if r[0] == VARIANTS["full"][0]), None)
    if full is not None:
        losers = [label for label, metrics, _ in rows if label != full[0] and not (
            full[1]["mean"]["psnr"] > metrics["mean"]["psnr"] and full[1]["mean"]["ssim"] > metrics["mean"]["ssim"])]
        lines += ["", "Full model beats every other row on PSNR and SSIM: " + ("yes." if not losers else
                  f"**no** — not better on both than: {', '.join(losers)}.")]
    lines += ["", f"colour r: does the model read its input ({COLOUR_R_MEANING})."]
    return "\n".join(lines) + "\n"


def write_section(path: Path, body: str) -> None:
    write_marked_section(path, START, END, body)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, default=Path("runs/ablations"))
    p.add_argument("--config", default="default")
    p.add_argument("--steps", type=int, required=True, help="training steps of every variant (the equal budget)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override shared by every variant")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {', '.join(VARIANTS)}")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (cores are split between them)")
    p.add_argument("--eval-size", type=int, default=128)
    p.add_argument("--eval-limit", type=int, default=None, help="evaluate only the first N held-out subjects")
    p.add_argument("--write", action="store_true", help="update the ablations section of BENCHMARKS.md")
    args = p.parse_args(argv)
    names = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    if not (args.data / "manifest.json").is_file():
        p.error(f"--data {args.data}: no dataset there (no manifest.json)")
    jobs = max(1, min(args.jobs, len(names)))
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with ThreadPoolExecutor(jobs) as pool:
        metas = dict(zip(names, pool.map(lambda n: train_variant(n, args, threads), names)))
        evals = dict(zip(names + [BASELINE], pool.map(lambda n: eval_variant(n, args, threads), names + [BASELINE])))
    rows = [(VARIANTS[n][0], evals[n], metas[n]) for n in names] + [("Template + mean colour", evals[BASELINE], None)]
    body = table(rows, args)
    (args.out / "ablations.md").write_text(body)
    print(body)
    if args.write:
        write_section(Path(__file__).resolve().parents[1] / "BENCHMARKS.md", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())

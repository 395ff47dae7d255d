"""Procedural dataset generation speed: subjects per minute (build + render + encode), and a contact sheet.

Times :func:`panolam.data.synth.make_record` + shard encoding for a few subjects of the default
:class:`~panolam.data.procedural.ProceduralHeads` (the template build and Numba compilation are
warmed up first and excluded). Prints a Markdown table; ``--write`` replaces the section between
``<!-- synth:start -->`` and ``<!-- synth:end -->`` in BENCHMARKS.md (markers appended if
absent). ``--sheet PATH`` also saves a contact sheet (one row per subject: front, left, back,
right, above) so a person can check that heads look like heads with hair.

    python benchmarks/synth.py [--subjects 4] [--views 32] [--size 256] [--set 360] [--write] [--sheet /tmp/synth_sheet.png]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from panolam.data.format import encode_record
from panolam.data.procedural import ProceduralHeads
from panolam.data.synth import SynthSettings, make_record
from panolam.eval.report import write_marked_section
from panolam.geometry.cameras import Cameras

START, END = "<!-- synth:start -->", "<!-- synth:end -->"


def measure(n: int, settings: SynthSettings) -> dict[str, float]:
    gen = ProceduralHeads()
    make_record(gen, "train", 10_000, SynthSettings(camera_set=settings.camera_set, views=8, size=64))  # warm-up
    build = render = encode = 0.0
    points = []
    for i in range(n):
        t0 = time.perf_counter()
        sub = gen.subject(i)
        t1 = time.perf_counter()
        rec, _ = make_record(gen, "train", i, settings)
        t2 = time.perf_counter()
        encode_record(rec)
        t3 = time.perf_counter()
        build += t1 - t0
        render += (t2 - t1) - (t1 - t0)  # make_record builds the subject again
        encode += t3 - t2
        points.append(len(sub.payload))
    total = build + render + encode
    return {"subjects_per_min": 60.0 * n / total, "build_s": build / n, "render_s": render / n, "encode_s": encode / n, "gaussians": float(np.mean(points))}


def contact_sheet(path: Path, seeds: list[int], size: int = 192) -> None:
    from PIL import Image

    gen = ProceduralHeads()
    cams = Cameras.orbit([0.0, 90.0, 180.0, -90.0, 30.0], [0.0, 0.0, 0.0, 0.0, 50.0], 2.7, 18.83, size)
    rows = []
    for s in seeds:
        rgb, alpha = gen.render(gen.subject(s), cams)
        rows.append(torch.cat(list((rgb + 1 - alpha).clamp(0, 1)), dim=1))
    img = (torch.cat(rows, dim=0).numpy() * 255 + 0.5).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


def table(r: dict[str, float], n: int, settings: SynthSettings) -> str:
    machine = f"{platform.machine()} CPU, {os.cpu_count()} cores visible, load average {os.getloadavg()[0]:.1f}, torch {torch.__version__}"
    return (
        f"Procedural generator, {settings.camera_set} set, {settings.views} views at {settings.size}², {n} subjects ({machine}).\n\n"
        "| subjects/min | build s/subject | render s/subject | encode s/subject | Gaussians/subject |\n"
        "| --- | --- | --- | --- | --- |\n"
        f"| {r['subjects_per_min']:.2f} | {r['build_s']:.2f} | {r['render_s']:.2f} | {r['encode_s']:.2f} | {r['gaussians']:.0f} |\n"
    )


def write_section(path: Path, body: str) -> None:
    write_marked_section(path, START, END, body, heading_if_new="## Procedural data generation\n\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--views", type=int, default=32)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--set", dest="camera_set", choices=("360", "front"), default="360")
    parser.add_argument("--write", action="store_true", help="update the synth section of BENCHMARKS.md")
    parser.add_argument("--sheet", type=Path, default=None, help="also save a contact sheet PNG here")
    args = parser.parse_args()
    settings = SynthSettings(camera_set=args.camera_set, views=args.views, size=args.size)
    body = table(measure(args.subjects, settings), args.subjects, settings)
    print(body)
    if args.write:
        write_section(Path(__file__).resolve().parent.parent / "BENCHMARKS.md", body)
    if args.sheet is not None:
        contact_sheet(args.sheet, list(range(8)))
        print(f"contact sheet: {args.sheet}")


if __name__ == "__main__":
    main()

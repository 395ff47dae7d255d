"""3D-GAN dataset generation speed: subjects per minute for ``panolam data gan`` (sample + render + encode).

For each generator family (EG3D, PanoHead, SphereHead) times :func:`panolam.data.synth.make_record`
plus shard encoding for a few subjects, after one warm-up subject. ``--model tiny`` uses the
random-weight fixture generators of ``tests/fixtures/gan`` (CPU-sized; what CI can run);
``--model full`` builds the full 512² architectures with random weights (no checkpoint needed;
the cost of a real checkpoint, meant for a GPU). Prints a Markdown table naming the device;
``--write`` replaces the section between ``<!-- gan_data:start -->`` and ``<!-- gan_data:end -->``
in BENCHMARKS.md.

    python benchmarks/gan_data.py [--model tiny|full] [--subjects 2] [--views 32] [--size 512] [--set front] [--device cuda] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from panolam.data.format import encode_record
from panolam.data.gan.plugin import FAMILIES, GanGenerator, default_kwargs, network_class
from panolam.data.synth import SynthSettings, make_record
from panolam.eval.report import write_marked_section

START, END = "<!-- gan_data:start -->", "<!-- gan_data:end -->"
FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "gan"


def network(family: str, model: str):
    if model == "full":
        net = network_class(family)(**default_kwargs(family))
    else:
        fix = FIXTURES / f"{family}_tiny"
        net = network_class(family)(**json.loads((fix / "config.json").read_text())["init_kwargs"])
        net.load_state_dict({k: v.float() for k, v in load_file(str(fix / "weights.safetensors")).items()})
    return net.eval().requires_grad_(False)


def measure(family: str, model: str, n: int, settings: SynthSettings, device: str, nrr: int | None) -> dict[str, float]:
    gen = GanGenerator(checkpoint=None, family=family, network=network(family, model), device=device, neural_rendering_resolution=nrr)
    make_record(gen, "train", 10_000, settings)  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(n):
        rec, _ = make_record(gen, "train", i, settings)
        encode_record(rec)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return {"subjects_per_min": 60.0 * n / dt, "s_per_subject": dt / n, "nrr": gen.nrr, "sr": gen.net.img_resolution}


def machine(device: str) -> str:
    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"{platform.machine()} CPU, {os.cpu_count()} cores visible, load average {os.getloadavg()[0]:.1f}, torch {torch.__version__}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=("tiny", "full"), default="tiny")
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--subjects", type=int, default=2)
    ap.add_argument("--views", type=int, default=32)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--set", dest="camera_set", choices=("360", "front"), default="front")
    ap.add_argument("--render-resolution", type=int, default=None, help="volume-render resolution (default 128, as the released models)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--write", action="store_true", help="update the gan_data section of BENCHMARKS.md")
    a = ap.parse_args()
    settings = SynthSettings(camera_set=a.camera_set, views=a.views, size=a.size)
    rows = []
    for fam in a.families.split(","):
        r = measure(fam, a.model, a.subjects, settings, a.device, a.render_resolution)
        rows.append(f"| {fam} | {a.model} | {r['nrr']}² → SR {r['sr']}² → {a.size}² | {r['subjects_per_min']:.2f} | {r['s_per_subject']:.1f} |")
        print(rows[-1], flush=True)
    body = (f"`panolam data gan`, {a.camera_set} set, {a.views} views at {a.size}², {a.subjects} subjects each "
            f"({a.model} random-weight generators; {machine(a.device)}).\n\n"
            "| generator | model | render → SR → stored | subjects/min | s/subject |\n| --- | --- | --- | --- | --- |\n" + "\n".join(rows) + "\n")
    print(body)
    if a.write:
        write_marked_section(Path(__file__).resolve().parent.parent / "BENCHMARKS.md", START, END, body,
                             heading_if_new="## 3D-GAN data generation\n\n")


if __name__ == "__main__":
    main()

"""Evaluation outputs: ``metrics.json`` (settings, per-subject and mean metrics), ``metrics.md`` (a
Table-2 style quality table, Method | PSNR↑ | SSIM↑ | LPIPS↓ | CSIM↑ | APD↓, the input-reading
colour r, and a Table-3 style timing table) and ``grid.png`` (input | pred front/left/right/back |
GT front/left/right/back for the first subjects). :func:`markdown_tables` takes several reports, so
an ablation script can put every checkpoint (and the template baseline) in one table. All files are
written atomically.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from panolam.eval.evaluate import EvalReport
from panolam.atomic import atomic_write_bytes


# What colour r means, for every table that shows it.
COLOUR_R_MEANING = ("Pearson r over subjects between predicted and true foreground colour; "
                    "0 = the same head for every photo, 1 = tracks each subject")


def _num(x, digits: int) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, str):
        return x
    return f"{x:.{digits}f}"


def quality_row(r: EvalReport) -> str:
    m = r.mean()
    apd = _num(m["apd"], 3)
    if m["apd_missing"]:
        apd += f" ({m['apd_missing']}/{m['subjects']} no face)"
    csim = "n/a" if isinstance(m["csim"], str) else _num(m["csim"], 3)
    return f"| {r.label} | {_num(m['psnr'], 3)} | {_num(m['ssim'], 3)} | {_num(m['lpips'], 3)} | {csim} | {apd} |"


def markdown_tables(reports: Sequence[EvalReport]) -> str:
    """The quality table (one row per report) and the timing table (one column per report)."""
    if not reports:
        raise ValueError("markdown_tables needs at least one report")
    first = reports[0].settings
    lpips_name = first.get("lpips", "ST-LPIPS (AlexNet)")
    lines = [f"Evaluation on `{first['data']}` split `{first['split']}`: {reports[0].mean()['subjects']} subjects, "
             f"views {'/'.join(first['views'])} at {first['size']}px; PSNR capped at {first['psnr_cap_db']:.0f} dB.", "",
             f"| Method | PSNR↑ | SSIM↑ | LPIPS↓ [{lpips_name}] | CSIM↑ | APD↓ |", "|---|---|---|---|---|---|"]
    lines += [quality_row(r) for r in reports]
    notes = sorted({r.csim_status for r in reports if r.csim_status != "ok"})
    lines += [""] + [f"CSIM: {n} (pip install dlib-bin face_recognition_models for dlib-CSIM)." for n in notes]
    lines += ["APD: mean |Δ Euler| (radians) of the FaceMesh head pose on the front view; subjects without a detected face are excluded."]
    means = [r.mean() for r in reports]
    lines += [f"Input reading, colour r ({COLOUR_R_MEANING}): "
              + ", ".join(f"{r.label} {_num(m['colour_r'], 2)}" for r, m in zip(reports, means)) + ".",
              f"Shape, silhouette IoU over the four views (pixels that differ from the background): "
              + ", ".join(f"{r.label} {_num(m['silhouette_iou'], 3)}" for r, m in zip(reports, means)) + ".", ""]
    lines += ["| Time | " + " | ".join(r.label for r in reports) + " |", "|---" * (len(reports) + 1) + "|"]
    lines.append("| Recon.(s) | " + " | ".join(_num(m["recon_s"], 3) for m in means) + " |")
    lines.append("| Render(ms/view) | " + " | ".join(_num(m["render_ms_per_view"], 2) for m in means) + " |")
    mem_kind = "GPU max allocated" if first.get("device") == "cuda" else "peak process RSS"
    lines.append(f"| Memory(MB, {mem_kind}) | " + " | ".join(_num(m["peak_mem_mb"], 0) for m in means) + " |")
    gt = sorted({s.gt_source for r in reports for s in r.subjects})
    lines += ["", f"Ground truth: {', '.join(gt)} (generator = re-rendered at the exact eval cameras; nearest = nearest stored views)."]
    return "\n".join(lines) + "\n"


def grid_image(report: EvalReport) -> np.ndarray:
    if not report.grid_rows:
        raise ValueError("the report has no grid rows (no subjects were evaluated)")
    return np.concatenate(report.grid_rows, axis=0)


def write_report(report: EvalReport, out_dir: str | Path, extra: Sequence[EvalReport] = ()) -> dict[str, Path]:
    """Write metrics.json, metrics.md (``report`` plus any ``extra`` rows, e.g. the baseline) and grid.png."""
    from panolam.render.preview import save_png

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "metrics.json", "md": out / "metrics.md", "grid": out / "grid.png"}
    payload = report.to_dict()
    if extra:
        payload["baselines"] = [r.to_dict() for r in extra]
    atomic_write_bytes(paths["json"], json.dumps(payload, indent=2, allow_nan=False).encode())
    atomic_write_bytes(paths["md"], markdown_tables([report, *extra]).encode())
    save_png(grid_image(report), paths["grid"])
    return paths


def write_marked_section(path: str | Path, start: str, end: str, content: str, heading_if_new: str = "") -> None:
    """Replace what lies between the ``start`` and ``end`` markers in the Markdown file ``path`` with
    ``content`` (markers kept), leaving the rest untouched; without the markers, append them with
    ``content`` after ``heading_if_new``. Used by the ``benchmarks/`` scripts for BENCHMARKS.md."""
    path = Path(path)
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    block = f"{start}\n{content}{end}"
    head, found, rest = text.partition(start)
    if found and end in rest:
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + heading_if_new + block + "\n"
    atomic_write_bytes(path, text.encode())

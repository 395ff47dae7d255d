"""What the input-camera estimate costs a pixel-aligned network, part by part (issue 12).

For each held-out subject the network reconstructs the head from its input view several times, each
time sampling the photo through another camera: its own estimate, the estimate with the true yaw and
pitch, the estimate with the true magnification, the estimate with half its magnification error, and
the true camera (an oracle). Every head is scored like ``panolam eval`` (front/left/right/back PSNR
against the generator's re-rendered ground truth). A last row scores the *ground truth itself*, scaled
about the head's centre by the estimate's magnification error: what a perfect network would lose to
that error alone (the photo cannot tell a larger head from a closer camera, so some of it is
inherent). Prints a Markdown table.

    python benchmarks/camera_budget.py --data data/test360 [--checkpoint C] [--limit 30] [--size 128]
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import sys

import numpy as np
import torch
import torch.nn.functional as F

VARIANTS = (
    ("estimated", "estimated camera (what users get)"),
    ("true_angles", "true yaw and pitch, estimated magnification"),
    ("true_magnification", "estimated yaw and pitch, true magnification"),
    ("half_magnification_error", "estimated camera, magnification error halved"),
    ("true", "true camera (oracle)"),
)
SCALED_TRUTH = "ground-truth head scaled by the estimate's magnification error"


def variant_camera(name: str, est: dict[str, torch.Tensor], true: dict[str, torch.Tensor]):
    """The :class:`InputCamera` of variant ``name``: an orbit camera at the nominal distance whose yaw, pitch and log
    magnification come from the estimate (``est``) or the truth (``true``) as the variant says."""
    from panolam.model.pixel_aligned import InputCamera

    pick = {"estimated": ("est", "est", "est"), "true_angles": ("true", "true", "est"),
            "true_magnification": ("est", "est", "true"), "true": ("true", "true", "true")}
    if name == "half_magnification_error":
        return InputCamera.from_pose(est["yaw"], est["pitch"], log_magnification=0.5 * (est["mag"] + true["mag"]))
    if name not in pick:
        raise ValueError(f"unknown camera variant {name!r}; choose from {[v for v, _ in VARIANTS]}")
    src = [est if s == "est" else true for s in pick[name]]
    return InputCamera.from_pose(src[0]["yaw"], src[1]["pitch"], log_magnification=src[2]["mag"])


def scaled_truth_psnr(generator, subject, factor: float, cams, background: torch.Tensor,
                      truth: torch.Tensor | None = None) -> np.ndarray | None:
    """Per-view PSNR of the subject's own Gaussians scaled by ``factor`` about the origin against the
    unscaled subject (``truth``, rendered here unless given), both at ``cams``; None when the generator's scene is
    not Gaussians."""
    from panolam.eval.evaluate import PSNR_CAP, _generator_render
    from panolam.eval.metrics import psnr
    from panolam.gaussians import Gaussians

    g = subject.payload
    if not isinstance(g, Gaussians):
        return None
    scaled = dataclasses.replace(subject, payload=dataclasses.replace(g, means=g.means * factor, scales=g.scales * factor))
    truth = _generator_render(generator, subject, cams, background) if truth is None else truth
    return psnr(_generator_render(generator, scaled, cams, background), truth).clamp(max=PSNR_CAP).numpy()


def measure(data: str, checkpoint: str | None, limit: int, size: int = 128, generator=None) -> dict:
    """Scores of every camera variant; ``generator`` re-renders the subjects (default: the dataset's registered one)."""
    from panolam.data.dataset import load_subject
    from panolam.eval.evaluate import (EVAL_VIEWS, PSNR_CAP, _render, eval_subjects, generator_ground_truth, input_view,
                                       resolve_generator, true_input_camera)
    from panolam.eval.metrics import psnr
    from panolam.model.pixel_aligned import camera_pose_deg, log_magnification, pose_angles
    from panolam.pipeline import Reconstructor

    rec = Reconstructor(checkpoint)
    model, enc_size = rec.model, rec.model_cfg.image_size
    if not rec.model_cfg.pixel_aligned:
        raise SystemExit(f"{rec.checkpoint}: this network samples no camera (model.pixel_aligned is off)")
    scores: dict[str, list[np.ndarray]] = {name: [] for name, _ in VARIANTS}
    scores["scaled_truth"] = []
    errors = []
    for sid in eval_subjects(data, limit=limit):
        sample = load_subject(data, sid)
        gen = resolve_generator(sample["meta"], generator)
        exact = generator_ground_truth(sample, size, gen)
        if exact is None:
            raise SystemExit(f"{data}: subject {sid} has no generator that re-renders it; this benchmark needs one")
        gt, cams = exact
        background = torch.tensor(sample["meta"].get("background", [1.0, 1.0, 1.0]), dtype=torch.float32)
        first = input_view(sample["world_to_cam"])
        x = F.interpolate(sample["images"][first][None].float(), size=(enc_size, enc_size), mode="bilinear",
                          align_corners=False, antialias=True)
        mask = sample["masks"][first][None].float()
        truth_cam = true_input_camera(sample)
        with torch.inference_mode():
            out = model(x, masks=mask)
            yaw, pitch = pose_angles(out.pose)
            mag = out.magnification if out.magnification is not None else torch.zeros_like(yaw)
            est = {"yaw": yaw, "pitch": pitch, "mag": mag}
            ty, tp = camera_pose_deg(truth_cam.world_to_cam)
            true = {"yaw": ty, "pitch": tp, "mag": log_magnification(truth_cam)}
            errors.append([float((yaw - ty + 180) % 360 - 180), float(pitch - tp), float(mag - true["mag"])])
            for name, _ in VARIANTS:
                # The oracle is the stored camera itself (as `panolam eval --input-camera true`): the variants are orbit
                # cameras at the nominal distance, whose perspective differs slightly from a jittered radius's.
                cam = truth_cam if name == "true" else variant_camera(name, est, true)
                g = out.dense[0] if name == "estimated" else model(x, camera=cam, masks=mask).dense[0]
                pred, _ = _render(g, cams, background)
                scores[name].append(psnr(pred, gt).clamp(max=PSNR_CAP).numpy())
        # The estimate's head is larger than the truth by exp(true - estimated log magnification).
        scaled = scaled_truth_psnr(gen, gen.subject(int(sample["meta"]["seed"])),
                                   float(torch.exp(true["mag"] - est["mag"])), cams, background, truth=gt)
        if scaled is not None:
            scores["scaled_truth"].append(scaled)
    err = np.abs(np.asarray(errors))
    rows = [{"variant": key, "label": label, **_summary(scores[key], EVAL_VIEWS)} for key, label in VARIANTS]
    if scores["scaled_truth"]:
        rows.append({"variant": "scaled_truth", "label": SCALED_TRUTH, **_summary(scores["scaled_truth"], EVAL_VIEWS)})
    return {"checkpoint": str(rec.checkpoint), "subjects": len(errors), "size": size, "rows": rows,
            "median_abs_error": {"yaw_deg": float(np.median(err[:, 0])), "pitch_deg": float(np.median(err[:, 1])),
                                 "magnification_pct": float(np.median(100 * np.expm1(err[:, 2])))}}


def _summary(per_subject: list[np.ndarray], views: tuple[str, ...]) -> dict:
    a = np.stack(per_subject)  # (subjects, views)
    return {"psnr": float(a.mean(1).mean()), "per_view": {v: float(a[:, i].mean()) for i, v in enumerate(views)}}


def table(result: dict) -> str:
    e = result["median_abs_error"]
    views = list(result["rows"][0]["per_view"])
    lines = [f"Input-camera budget of `{result['checkpoint']}` on {result['subjects']} held-out subjects, {result['size']}² "
             f"renders ({platform.machine()} CPU). The estimate's median errors on these inputs: yaw {e['yaw_deg']:.2f}°, "
             f"pitch {e['pitch_deg']:.2f}°, magnification {e['magnification_pct']:.2f} %.", "",
             "| camera the photo is sampled with | PSNR↑ | " + " | ".join(views) + " |",
             "| --- | ---: | " + " | ".join("---:" for _ in views) + " |"]
    for r in result["rows"]:
        lines.append(f"| {r['label']} | {r['psnr']:.3f} | " + " | ".join(f"{r['per_view'][v]:.2f}" for v in views) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="dataset with a test split made by a registered generator (e.g. data/test360)")
    ap.add_argument("--checkpoint", default=None, help="model/run directory (default: the shipped model)")
    ap.add_argument("--limit", type=int, default=30, help="held-out subjects to use")
    ap.add_argument("--size", type=int, default=128, help="render/compare resolution (the eval's --size)")
    args = ap.parse_args(argv)
    print(table(measure(args.data, args.checkpoint, args.limit, args.size)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``panolam eval``: score a checkpoint (and optionally the template baseline) on held-out subjects:
PSNR/SSIM/ST-LPIPS over front/left/right/back, APD and CSIM on the front view, timings and memory,
optionally after ``reconstruct``'s test-time refinement (``--refine N``), written as metrics.json, metrics.md and grid.png (see :mod:`panolam.eval.evaluate`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from panolam.cli import UserError
from panolam.cli._common import add_device_arg, check_refine_and_points


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint on held-out subjects (Table 2/3 style report)")
    p.add_argument("--checkpoint", default=None, help="model dir, training step_XXXXXXXX dir or training run dir")
    p.add_argument("--data", required=True, help="dataset directory")
    p.add_argument("--split", default="test", choices=("train", "test"), help="subjects to evaluate (default: test)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N subjects")
    p.add_argument("--out", default=None, help="output directory (default: eval/ beside the checkpoint, or ./eval)")
    p.add_argument("--size", type=int, default=256, help="render/compare resolution (default: 256)")
    p.add_argument("--baseline", choices=("template",), default=None,
                   help="also score the trivial baseline (undeformed template, mean input colour)")
    p.add_argument("--gt", choices=("auto", "generator", "nearest"), default="auto",
                   help="ground truth: re-render with the dataset's generator at the exact eval cameras (auto falls back "
                        "to the nearest stored views when no generator reproduces the data)")
    p.add_argument("--lpips-weights", default=None, help="a local standard LPIPS .pth (default: shipped ST-LPIPS AlexNet)")
    p.add_argument("--input-camera", choices=("estimated", "true"), default="estimated",
                   help="camera the network samples the photo with: its own pose estimate (default) or the stored "
                        "true one (an oracle that shows what the pose error costs)")
    p.add_argument("--refine", type=int, default=0, metavar="N",
                   help="also run reconstruct's test-time refinement, N steps against the input view (default 0 = "
                        "feed-forward only; its time counts in Recon.)")
    p.add_argument("--points", type=int, default=None, metavar="N",
                   help="dense Gaussians per head (default: the checkpoint's model.inference_dense_points)")
    p.add_argument("--label", default=None, help="method name in the table (default: the checkpoint's directory name)")
    p.add_argument("--no-progress", action="store_true")
    add_device_arg(p)
    p.set_defaults(func=run)


def _label(checkpoint: Path) -> str:
    parts = [x for x in checkpoint.resolve().parts if x not in ("model", "checkpoints")]
    return parts[-1] if parts else "PanoLAM"


def run(args: argparse.Namespace) -> int:
    from panolam.eval.evaluate import evaluate, model_reconstructor, template_baseline
    from panolam.eval.report import write_report
    from panolam.pipeline import resolve_checkpoint

    if args.checkpoint is None and args.baseline is None:
        raise UserError("give --checkpoint (and/or --baseline template)")
    if not (Path(args.data) / "manifest.json").is_file():
        raise UserError(f"--data {args.data}: no dataset there (no manifest.json)")
    check_refine_and_points(args)
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be >= 1, got {args.limit}")
    from panolam.errors import check_output_dir

    if args.lpips_weights is not None:  # read (and refuse a pickle) before any subject is reconstructed
        from panolam.eval.metrics import _perceptual

        _perceptual("cpu", args.lpips_weights)

    out = check_output_dir(Path(args.out) if args.out else (Path(args.checkpoint) / "eval" if args.checkpoint else Path("eval")), "--out")
    common = dict(split=args.split, limit=args.limit, size=args.size, gt=args.gt, lpips_weights=args.lpips_weights,
                  progress=not args.no_progress, input_camera=args.input_camera)
    reports = []
    if args.checkpoint is not None:
        ckpt = resolve_checkpoint(args.checkpoint)
        label = args.label or _label(ckpt) + (f" + refine {args.refine}" if args.refine else "")
        report = evaluate(model_reconstructor(ckpt, args.device, args.refine, args.points), args.data, label=label, **common)
        report.settings["refine_steps"] = args.refine
        report.settings["points_option"] = args.points  # None: the checkpoint's inference_dense_points
        reports.append(report)
    if args.baseline == "template":
        from panolam.data.manifest import load_manifest

        bg = load_manifest(args.data).header.get("background", [1.0, 1.0, 1.0])
        reports.append(evaluate(template_baseline(background=bg), args.data, label="Template (mean colour)", **common))
    paths = write_report(reports[0], out, extra=reports[1:])
    for r in reports:
        m = r.mean()
        print(f"{r.label}: PSNR {m['psnr']:.3f}  SSIM {m['ssim']:.4f}  ST-LPIPS {m['lpips']:.4f}  colour r {m['colour_r']:.2f}  silhouette IoU {m['silhouette_iou']:.3f}  "
              f"recon {m['recon_s']:.3f}s  render {m['render_ms_per_view']:.2f}ms/view  ({m['subjects']} subjects)")
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0

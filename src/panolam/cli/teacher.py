"""``panolam teacher fit``: fit per-subject spherical tri-planes and the shared frozen decoder that
``panolam train`` uses for L_st and L_rgb^ST (see :mod:`panolam.train.teacher`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from panolam.cli import UserError
from panolam.cli._common import add_config_args, add_device_arg, config_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("teacher", help="fit teacher tri-planes + the frozen tri-plane decoder on a dataset")
    tsub = p.add_subparsers(dest="teacher_command", metavar="SUBCOMMAND")
    f = tsub.add_parser("fit", help="fit (or complete) the teacher of a multi-view dataset")
    f.add_argument("--data", required=True, help="dataset directory (planes go to DATA/extras/teacher_planes/)")
    f.add_argument("--out", default=None, help="where decoder.safetensors/.json go (default: DATA/teacher)")
    f.add_argument("--steps", type=int, default=None, help="optimisation steps per subject batch (default: train.teacher_steps)")
    f.add_argument("--split", choices=("train", "test", "all"), default="train", help="subjects to fit (default: train)")
    f.add_argument("--rays", type=int, default=1024, help="random rays per subject per step (default: 1024)")
    f.add_argument("--batch-subjects", type=int, default=8, help="subjects fitted together (the first batch also fits the decoder)")
    f.add_argument("--plane-steps", type=int, default=None, help="planes-only phase: steps per batch (default: --steps)")
    f.add_argument("--plane-rays", type=int, default=None, help="planes-only phase: rays per subject per step (default: --rays)")
    f.add_argument("--plane-batch-subjects", type=int, default=None, help="planes-only phase: subjects per batch (default: --batch-subjects)")
    f.add_argument("--size", type=int, default=None, help="render size of the supervision (default: train.render_size)")
    f.add_argument("--force", action="store_true", help="refit the decoder and every subject's planes")
    f.add_argument("--no-progress", action="store_true")
    add_config_args(f)
    add_device_arg(f)
    f.set_defaults(func=run_fit)
    p.set_defaults(func=lambda args: (p.print_help(), 1)[1])


def run_fit(args: argparse.Namespace) -> int:
    from panolam.runtime import resolve_device
    from panolam.train.teacher import fit_teacher

    if not (Path(args.data) / "manifest.json").is_file():
        raise UserError(f"--data {args.data}: no dataset there (no manifest.json; make one with `panolam data synth`)")
    cfg = config_from_args(args)
    result = fit_teacher(cfg, args.data, args.out, split=args.split, steps=args.steps, rays=args.rays,
                         subjects_per_batch=args.batch_subjects, size=args.size, force=args.force,
                         device=resolve_device(args.device), progress=not args.no_progress, plane_steps=args.plane_steps,
                         plane_rays=args.plane_rays, plane_subjects_per_batch=args.plane_batch_subjects)
    losses = result.decoder_losses or result.plane_losses
    tail = f", final loss {losses[-1]:.4f}" if losses else ""
    print(f"{args.data}: fitted {len(result.fitted)} subjects, kept {len(result.skipped)}{tail}")
    print(f"decoder: {result.decoder_path}")
    print(f"train with: panolam train --data {args.data} --set train.st_decoder={result.decoder_path}")
    return 0

"""``panolam train``: train PanoLAM on a multi-view dataset (single process, ``accelerate launch`` or
``torchrun``; see :mod:`panolam.train.loop` for the launch lines). Also runnable as
``python -m panolam.cli.train`` so launchers can start it as a module.
"""

from __future__ import annotations

import argparse
import sys

from panolam.cli._common import add_config_args, config_from_args


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_args(p)
    p.add_argument("--data", action="append", default=None, metavar="DIR",
                   help="dataset directory (default: the config's data.root); repeat to train on several datasets "
                        "(e.g. Front + 360), interleaved in proportion to their subject counts")
    p.add_argument("--out", default=None, help="run directory for checkpoints and logs (default: the config's train.out_dir)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/latest (exactly: weights, optimiser, data, RNG)")
    p.add_argument("--stop-after", type=int, default=None, metavar="N", help="stop (with a checkpoint) after N steps of this run")
    p.add_argument("--time-limit", type=float, default=None, metavar="MIN",
                   help="stop (with a checkpoint) after MIN minutes of training in this call (model and data set-up "
                        "not counted); --resume continues, the schedule still runs to train.steps")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the network (single process, accelerate launch or torchrun)")
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from panolam.cli import UserError
    from panolam.train.loop import train

    cfg = config_from_args(args)
    data = args.data or [cfg.data.root]
    for d in data:
        if not Path(d).is_dir():
            raise UserError(f"--data {d}: no dataset there (make one with `panolam data synth` or `panolam data gan`)")
    from panolam.errors import check_output_dir

    check_output_dir(args.out or cfg.train.out_dir, "--out")
    if args.time_limit is not None and args.time_limit <= 0:
        raise UserError(f"--time-limit must be a positive number of minutes, got {args.time_limit}")
    terms = train(cfg, data[0] if len(data) == 1 else data, args.out, resume=args.resume, stop_after=args.stop_after,
                  progress=not args.no_progress, time_limit_s=None if args.time_limit is None else 60 * args.time_limit)
    if terms:
        print("last step: " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(terms.items())))
    return 0


def main(argv: list[str] | None = None) -> int:
    from panolam.cli import main as cli_main

    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())

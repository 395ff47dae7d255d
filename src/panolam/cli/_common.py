"""Helpers shared by the command modules: config and device flags, the head-size option checks.

Nothing here imports torch: building the parser (``panolam --help``) must stay fast.
"""

from __future__ import annotations

import argparse

from panolam.config import PRESET_NAMES, PanoLAMConfig, get_config


def add_config_args(p: argparse.ArgumentParser, default: str = "default") -> None:
    p.add_argument("--config", default=default, help=f"preset ({', '.join(PRESET_NAMES)}) or a config .json (default: {default})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override a config value, e.g. --set model.dense_points=20000 (repeatable)")


def config_from_args(args: argparse.Namespace) -> PanoLAMConfig:
    return get_config(args.config, args.overrides)


def add_device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 … (default: cuda if available, else cpu)")


def check_refine_and_points(args: argparse.Namespace) -> None:
    """``--refine`` and ``--points``, which ``reconstruct`` and ``eval`` share, before anything loads."""
    from panolam.cli import UserError

    if args.refine < 0:
        raise UserError(f"--refine {args.refine}: the number of refinement steps must be >= 0")
    if args.points is not None and args.points < 1:
        raise UserError(f"--points {args.points}: the number of dense Gaussians must be >= 1")

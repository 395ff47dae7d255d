"""``panolam info``: versions, devices and the resolved config."""

from __future__ import annotations

import argparse

from panolam.cli._common import add_config_args, config_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="print versions, available devices and the resolved config")
    add_config_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from panolam import __version__

    print(f"panolam {__version__}, torch {torch.__version__}, cuda available: {torch.cuda.is_available()}")
    print(config_from_args(args).to_json())
    return 0

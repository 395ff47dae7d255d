"""The ``panolam`` command. Each module in this package adds one command (or a group) through
``register(subparsers)``; :func:`main` discovers them, so adding a command never edits this file.
Nothing in the library imports this package.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from panolam import __version__
from panolam.errors import PanoLAMError


class UserError(PanoLAMError):
    """An error caused by input the user can fix; printed without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="panolam", description="One unposed photo -> 3D Gaussian full head.")
    parser.add_argument("--version", action="version", version=f"panolam {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.register(sub)
    return parser


def numba_threads_follow_omp() -> None:
    """Give the rasteriser's Numba threads the count OMP_NUM_THREADS gives torch, unless
    NUMBA_NUM_THREADS says otherwise. Numba otherwise starts one thread per core, so two training
    runs meant to share two cores with ``OMP_NUM_THREADS=1`` each ran four busy threads and took
    ≈20 s per step instead of ≈5 s (measured). Numba reads the variable when it is first imported,
    which the commands do lazily, after this."""
    omp = os.environ.get("OMP_NUM_THREADS", "")
    if omp.isdigit() and int(omp) > 0 and "NUMBA_NUM_THREADS" not in os.environ and "numba" not in sys.modules:
        os.environ["NUMBA_NUM_THREADS"] = omp


def main(argv: list[str] | None = None) -> int:
    numba_threads_follow_omp()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except (PanoLAMError, FileNotFoundError, ValueError) as e:
        # Errors about the user's input get one clear line; set PANOLAM_DEBUG=1 for the traceback.
        if os.environ.get("PANOLAM_DEBUG"):
            raise
        text = " ".join(line.strip() for line in str(e).splitlines() if line.strip()) or type(e).__name__
        print(f"panolam {args.command}: error: {text}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""``panolam app`` (the local web demo) and ``panolam view HEAD.ply`` (any saved head in the splat viewer).

Both serve on 127.0.0.1 by default and never create public share links; pass ``--host 0.0.0.0``
to reach the page from another machine on your network.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from panolam.cli import UserError
from panolam.cli._common import add_config_args, add_device_arg
from panolam.config.render import REFINE_STEPS


def _add_server_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--share", action="store_true", help=argparse.SUPPRESS)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("app", help="start the local web demo (upload a photo, orbit the 3D head)")
    _add_server_args(p)
    p.add_argument("--checkpoint", default=None, help="trained model folder/file (default: $PANOLAM_CHECKPOINT or the shipped model)")
    add_config_args(p)
    add_device_arg(p)
    p.add_argument("--turntable-frames", type=int, default=24, help="frames in the turntable video (default 24; 0 = no video)")
    p.add_argument("--render-size", type=int, default=256, help="side of the preview/turntable renders in pixels (default 256)")
    p.add_argument("--out", default=None, help="folder for per-request outputs (default: a temporary folder)")
    p.add_argument("--refine", type=int, default=REFINE_STEPS, metavar="N",
                   help=f"initial test-time refinement steps on the page (default {REFINE_STEPS}; 0 = off)")
    p.set_defaults(func=run_app)

    v = sub.add_parser("view", help="open a saved head.ply in the browser splat viewer")
    v.add_argument("ply", help="a 3DGS .ply written by panolam (or any INRIA-layout splat file)")
    _add_server_args(v)
    v.set_defaults(func=run_view)


def _check_server_args(args: argparse.Namespace) -> None:
    if args.share:
        raise UserError("--share is not supported: the demo only serves locally (use --host 0.0.0.0 for your network)")
    if not 0 < args.port < 65536:
        raise UserError(f"--port {args.port}: must be 1..65535")


def run_app(args: argparse.Namespace) -> int:
    _check_server_args(args)
    if args.turntable_frames < 0 or args.render_size < 32:
        raise UserError("--turntable-frames must be >= 0 and --render-size >= 32")
    if args.refine < 0:
        raise UserError(f"--refine {args.refine}: the number of refinement steps must be >= 0")
    from panolam.app.demo import DemoRunner, DemoSettings, build_demo, launch
    from panolam.errors import check_output_dir

    if args.out:
        check_output_dir(args.out, "--out")

    settings = DemoSettings(checkpoint=args.checkpoint, config=args.config, overrides=tuple(args.overrides), device=args.device,
                            turntable_frames=args.turntable_frames, render_size=args.render_size,
                            out_root=Path(args.out) if args.out else None, refine_steps=args.refine)
    runner = DemoRunner(settings)
    launch(build_demo(runner), args.host, args.port, allowed_paths=[str(runner.out_root)],
           on_start=lambda url: print(f"PanoLAM demo running at {url} (Ctrl+C to stop)", flush=True))
    return 0


def run_view(args: argparse.Namespace) -> int:
    _check_server_args(args)
    from panolam.gaussians.ply import load_ply

    path = Path(args.ply).resolve()
    if path.suffix.lower() != ".ply":
        raise UserError(f"{args.ply}: expected a .ply file")
    n = len(load_ply(path))  # fails with a clear message on a missing or non-splat file
    import tempfile

    from panolam.app.demo import build_viewer, launch

    work = tempfile.mkdtemp(prefix="panolam-view-")  # private (0700): the only folder the server may serve
    launch(build_viewer(path, work), args.host, args.port, allowed_paths=[work],
           on_start=lambda url: print(f"viewing {path.name} ({n:,} Gaussians) at {url} (Ctrl+C to stop)", flush=True))
    return 0

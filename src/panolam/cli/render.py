"""``panolam render HEAD.ply``: render any saved head from named views, custom angles, or a turntable."""

from __future__ import annotations

import argparse
from pathlib import Path

from panolam.cli import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("render", help="render a saved head (.ply) to images or a turntable")
    p.add_argument("ply", help="a 3DGS .ply file (ours or any INRIA-layout splat file)")
    p.add_argument("-o", "--out", default=None, help="output directory (default: next to the .ply)")
    p.add_argument("--views", default="front,left,right,back", help="comma-separated named views for the contact sheet")
    p.add_argument("--yaw", type=float, action="append", default=[], help="extra camera yaw in degrees (repeatable)")
    p.add_argument("--pitch", type=float, default=0.0, help="pitch for --yaw cameras and the turntable (degrees)")
    p.add_argument("--turntable", action="store_true", help="also write turntable.gif and turntable.mp4")
    p.add_argument("--frames", type=int, default=120)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--background", default="1,1,1", help="RGB in [0,1], e.g. 0,0,0 for black")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import time

    from panolam.gaussians.ply import PlyFormatError, load_ply
    from panolam.geometry.cameras import NAMED_VIEWS_YAW, Cameras
    from panolam.render.preview import contact_sheet, render_cameras, save_png, save_video, turntable

    try:
        g = load_ply(args.ply)
    except PlyFormatError as e:
        raise UserError(str(e)) from e
    try:
        bg = tuple(float(v) for v in args.background.split(","))
        assert len(bg) == 3
    except (ValueError, AssertionError):
        raise UserError(f"--background {args.background!r}: give three numbers in [0,1], e.g. 1,1,1") from None
    if args.turntable and args.frames < 1:
        raise UserError(f"--frames must be >= 1 for a turntable, got {args.frames}")
    if args.size < 8:
        raise UserError(f"--size must be >= 8 pixels, got {args.size}")
    names = tuple(n.strip() for n in args.views.split(",") if n.strip())
    unknown = [n for n in names if n not in NAMED_VIEWS_YAW]
    if unknown:
        raise UserError(f"unknown view(s) {unknown}; choose from {sorted(NAMED_VIEWS_YAW)} or use --yaw")
    from panolam.errors import check_output_dir

    out = check_output_dir(Path(args.out) if args.out else Path(args.ply).parent, "-o")
    t0 = time.perf_counter()
    written = []
    if names:
        written.append(save_png(contact_sheet(g, names, size=args.size, background=bg), out / "views.png"))
    for yaw in args.yaw:
        img = render_cameras(g, Cameras.orbit(yaw, args.pitch, width=args.size), bg)[0]
        written.append(save_png(img, out / f"yaw{yaw:+.0f}_pitch{args.pitch:+.0f}.png"))
    if args.turntable:
        frames = turntable(g, args.frames, args.size, args.pitch, bg)
        written += [save_video(frames, out / "turntable.gif"), save_video(frames, out / "turntable.mp4")]
    dt = time.perf_counter() - t0
    for path in written:
        print(path)
    print(f"rendered {len(g)} Gaussians in {dt:.2f} s")
    return 0

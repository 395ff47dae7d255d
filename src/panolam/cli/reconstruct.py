"""``panolam reconstruct PHOTO... -o OUT``: photos -> head.ply, previews and a turntable per photo."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from panolam.cli._common import add_config_args, add_device_arg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reconstruct", help="reconstruct a 3D Gaussian head from one photo (or several, one head each)",
                       description="With no PHOTO, reconstructs the built-in sample portrait (scikit-image's astronaut).")
    p.add_argument("photos", nargs="*", metavar="PHOTO", help="image files (JPEG/PNG/…); none = built-in sample")
    p.add_argument("-o", "--out", default="out", help="output directory; one sub-directory per photo (default: out)")
    p.add_argument("--checkpoint", default=None, help="model directory (default: $PANOLAM_CHECKPOINT, else the shipped model)")
    add_config_args(p)
    add_device_arg(p)
    p.add_argument("--size", type=int, default=512, help="framed input and preview size in pixels (default 512)")
    p.add_argument("--frames", type=int, default=120, help="turntable frames (0 = no turntable; default 120)")
    p.add_argument("--no-preprocess", action="store_true", help="the photo is already framed like the training data")
    p.add_argument("--force", action="store_true", help="reconstruct even when no face is found (profile, back of the head)")
    p.set_defaults(func=run)


def sample_photo() -> tuple[str, "object"]:
    """The built-in default input: scikit-image's astronaut portrait (public domain, NASA), shipped in its wheel."""
    from skimage import data

    return "astronaut", data.astronaut()


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from panolam.errors import check_output_dir
    from panolam.pipeline import Reconstructor, write_outputs

    check_output_dir(args.out, "-o")  # before the model loads: a bad -o must not cost a whole batch
    inputs = [(Path(p).stem, p) for p in args.photos] or [sample_photo()]
    stems = [s for s, _ in inputs]
    if len(set(stems)) < len(stems):  # photos with the same name from different folders
        inputs = [(f"{i:03d}_{s}", p) for i, (s, p) in enumerate(inputs)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rec = Reconstructor(args.checkpoint, args.config, args.overrides, args.device)
    for w in caught:
        print(f"WARNING: {w.message}", file=sys.stderr)
    failures = 0
    bar = tqdm(inputs, desc="reconstruct", unit="photo", disable=len(inputs) < 2)
    for stem, photo in bar:
        out_dir = Path(args.out) / stem
        try:
            result = rec.reconstruct(photo, preprocess=not args.no_preprocess, size=args.size, force=args.force)
            paths = write_outputs(result, out_dir, turntable_frames=args.frames, size=args.size)
        except (ValueError, OSError) as e:  # unreadable image, no head, too small, unwritable output: report and go on
            failures += 1
            msg = f"{e.filename}: {e.strerror}" if isinstance(e, OSError) and e.filename else str(e)
            tqdm.write(f"{photo if isinstance(photo, str) else stem}: {msg}", file=sys.stderr)
            continue
        t = result.timings
        line = (f"{stem}: {len(result.gaussians)} Gaussians -> {paths['ply']}  "
                f"(preprocess {t['preprocess_s']:.2f} s, reconstruct {t['reconstruct_s']:.2f} s, "
                f"views {t['render_views_s']:.2f} s" + (f", turntable {t['render_per_frame_s'] * 1000:.0f} ms/frame" if args.frames else "") + ")")
        tqdm.write(line)
    if not rec.trained:
        print("note: weights are untrained; see README 'Default model'", file=sys.stderr)
    return 1 if failures else 0

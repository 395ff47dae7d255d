"""``panolam reconstruct PHOTO... -o OUT``: photos -> head.ply/.splat/.glb first, then previews, per photo.

The network, the Numba rasteriser and the face detector are loaded once per call, so several
photos in one call pay the start-up once. Previews are cheap by default (a 24-frame 256² turntable
as MP4, rendered in one batched rasteriser call); ``--gif`` adds a GIF, ``--no-previews`` skips
them for batch use.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from panolam.cli._common import add_config_args, add_device_arg, check_refine_and_points
from panolam.config.render import REFINE_STEPS

# Mirrors panolam.render.preview's defaults without importing torch at parser-build time.
PREVIEW_SIZE, TURNTABLE_FRAMES, TURNTABLE_FPS = 256, 24, 12


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reconstruct", help="reconstruct a 3D Gaussian head from one photo (or several, one head each)",
                       description="With no PHOTO, reconstructs the built-in sample portrait (scikit-image's astronaut). "
                                   "Writes head.ply, head.splat, head.glb and input.png first, then views.png, "
                                   "turntable.mp4 and timings.json.")
    p.add_argument("photos", nargs="*", metavar="PHOTO", help="image files (JPEG/PNG/…); none = built-in sample")
    p.add_argument("-o", "--out", default="out", help="output directory; one sub-directory per photo (default: out)")
    p.add_argument("--checkpoint", default=None, help="model directory (default: $PANOLAM_CHECKPOINT, else the shipped model)")
    add_config_args(p)
    add_device_arg(p)
    p.add_argument("--size", type=int, default=512, help="framed input size in pixels (default 512)")
    p.add_argument("--preview-size", type=int, default=PREVIEW_SIZE, help=f"views.png tile and turntable size in pixels (default {PREVIEW_SIZE})")
    p.add_argument("--frames", type=int, default=TURNTABLE_FRAMES, help=f"turntable frames (0 = no turntable; default {TURNTABLE_FRAMES})")
    p.add_argument("--fps", type=int, default=TURNTABLE_FPS, help=f"turntable frame rate (default {TURNTABLE_FPS})")
    p.add_argument("--gif", action="store_true", help="also write turntable.gif (larger and slower than the MP4)")
    p.add_argument("--no-previews", action="store_true", help="write only head.ply/.splat/.glb, input.png and timings.json (batch use)")
    p.add_argument("--no-mesh", action="store_true", help="skip the head.glb triangle mesh")
    p.add_argument("--no-preprocess", action="store_true", help="the photo is already framed like the training data")
    p.add_argument("--refine", type=int, default=REFINE_STEPS, metavar="N",
                   help=f"test-time refinement: N Adam steps fitting the visible Gaussians to the photo (default {REFINE_STEPS}, "
                        "0 = off; ~0.06 s per step on two idle CPU cores; the unseen side keeps the network's prediction)")
    p.add_argument("--points", type=int, default=None, metavar="N",
                   help="dense Gaussians per head (default: the model's, 12,000 for the shipped one, which was trained "
                        "at 6,000; fewer = smaller files, more = fewer see-through gaps in close-ups)")
    p.add_argument("--force", action="store_true", help="reconstruct even when no face is found (profile, back of the head)")
    p.set_defaults(func=run)


def sample_photo() -> tuple[str, "object"]:
    """The built-in default input: scikit-image's astronaut portrait (public domain, NASA), shipped in its wheel."""
    from skimage import data

    return "astronaut", data.astronaut()


def named_inputs(photos: list[str]) -> list[tuple[str, object]]:
    """(output sub-directory name, photo) pairs; photos with the same file name get a numbered prefix."""
    inputs = [(Path(p).stem, p) for p in photos] or [sample_photo()]
    stems = [s for s, _ in inputs]
    if len(set(stems)) < len(stems):  # photos with the same name from different folders
        inputs = [(f"{i:03d}_{s}", p) for i, (s, p) in enumerate(inputs)]
    return inputs


def load_reconstructor(args: argparse.Namespace):
    """The one Reconstructor of this call; its warnings (e.g. untrained weights) go to stderr."""
    from panolam.pipeline import Reconstructor

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rec = Reconstructor(args.checkpoint, args.config, args.overrides, args.device, points=args.points)
    for w in caught:
        print(f"WARNING: {w.message}", file=sys.stderr)
    return rec


def reconstruct_one(rec, stem: str, photo, out_dir: Path, args: argparse.Namespace, echo=print) -> dict:
    """One photo -> its files: the head first (printed as soon as it exists), then the previews. Returns the timings."""
    from panolam.pipeline import refine_reconstruction, write_head, write_previews, write_timings

    result = rec.reconstruct(photo, preprocess=not args.no_preprocess, size=args.size, force=args.force)
    result, refined = refine_reconstruction(result, args.refine)
    paths = write_head(result, out_dir, mesh=not args.no_mesh)
    t = result.timings
    view = ""
    if "input_yaw_deg" in t:
        size = f", size {t['input_magnification_pct']:+.0f}%" if "input_magnification_pct" in t else ""
        mesh = f" (network {t['pose_head_yaw_deg']:+.0f}°, face mesh {t['face_yaw_deg']:+.0f}°)" if "face_yaw_deg" in t else ""
        view = f"  [estimated view: yaw {t['input_yaw_deg']:+.0f}°{mesh}, pitch {t['input_pitch_deg']:+.0f}°{size}]"
    echo(f"{stem}: {len(result.gaussians)} Gaussians -> {paths['ply']}  "
         f"(preprocess {t['preprocess_s']:.2f} s, reconstruct {t['reconstruct_s']:.2f} s, "
         + (f"refine {t['refine_s']:.2f} s, " if "refine_s" in t else "") + f"write {t['write_head_s']:.2f} s){view}")
    if args.refine:
        echo(f"{stem}: {refined.summary()}")
    if not args.no_previews:
        write_previews(result, out_dir, args.frames, args.preview_size, args.fps, gif=args.gif)
        echo(f"{stem}: previews -> {out_dir}/views.png" + (", turntable.mp4" if args.frames else "")
             + f"  (render {t['render_previews_s']:.2f} s, encode {t['encode_previews_s']:.2f} s)")
    write_timings(result, out_dir)
    return t


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from panolam.cli import UserError
    from panolam.errors import check_output_dir

    if args.frames < 0 or args.preview_size < 8 or args.fps < 1:
        raise UserError("--frames must be >= 0, --preview-size >= 8 and --fps >= 1")
    check_refine_and_points(args)
    check_output_dir(args.out, "-o")  # before the model loads: a bad -o must not cost a whole batch
    inputs = named_inputs(args.photos)
    if args.refine or not args.no_previews:  # the two users of the CPU kernels: they load while the model loads
        from panolam.render.rasterize import warm_up_in_background

        warm_up_in_background()
    rec = load_reconstructor(args)
    failures = 0
    bar = tqdm(inputs, desc="reconstruct", unit="photo", disable=len(inputs) < 2)
    for stem, photo in bar:
        try:
            reconstruct_one(rec, stem, photo, Path(args.out) / stem, args, echo=tqdm.write)
        except (ValueError, OSError) as e:  # unreadable image, no head, too small, unwritable output: report and go on
            failures += 1
            msg = f"{e.filename}: {e.strerror}" if isinstance(e, OSError) and e.filename else str(e)
            tqdm.write(f"{photo if isinstance(photo, str) else stem}: {msg}", file=sys.stderr)
    if not rec.trained:
        print("note: weights are untrained; see README 'Default model'", file=sys.stderr)
    return 1 if failures else 0

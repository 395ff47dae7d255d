"""``panolam preprocess PHOTO -o OUT``: frame a photo like the training renders and remove its background.

Writes ``input.png`` (what the network sees: the framed head on a flat background), ``rgba.png``
(the framed photo with its alpha matte) and ``transform.json`` (photo->framed matrix and its
inverse, face box, landmarks, method).
"""

from __future__ import annotations

import argparse
import json
import warnings

from panolam.cli import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("preprocess", help="frame a photo like the training data and remove the background")
    p.add_argument("photo", help="input photo (JPEG, PNG, WebP …)")
    p.add_argument("-o", "--out", required=True, help="output folder (created if needed)")
    p.add_argument("--size", type=int, default=512, help="side of the framed square image in pixels (default 512)")
    p.add_argument("--index", type=int, default=None, help="which face to use when there are several, counting from the left from 0 (default: the largest)")
    p.add_argument("--background", default="white", help="white (default, like the training renders), black, gray, #rrggbb or r,g,b")
    p.add_argument("--method", choices=("auto", "face", "person"), default="auto",
                   help="framing from face landmarks, from the person mask (profile/back of head), or auto (default)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from panolam.atomic import atomic_write_bytes
    from panolam.preprocess import PreprocessError, frame_photo, load_photo, save_png
    from panolam.preprocess.framing import MultipleFacesWarning

    from panolam.errors import check_output_dir

    out = check_output_dir(args.out, "-o")
    try:
        photo = load_photo(args.photo)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            framed = frame_photo(photo, size=args.size, index=args.index, background=args.background, method=args.method)
    except PreprocessError as e:
        raise UserError(str(e) if str(args.photo) in str(e) else f"{args.photo}: {e}") from e
    for w in caught:
        if issubclass(w.category, MultipleFacesWarning):
            print(f"note: {w.message}")
    paths = {"input": out / "input.png", "rgba": out / "rgba.png", "transform": out / "transform.json"}
    save_png(framed.image, paths["input"])
    save_png(framed.rgba, paths["rgba"])
    atomic_write_bytes(paths["transform"], json.dumps({"photo": str(args.photo), **framed.to_json()}, indent=2).encode())
    faces = f", {framed.num_faces} face(s), used #{framed.face_index}" if framed.method == "face" else " (no face: framed from the person mask)"
    print(f"framed by {framed.method}{faces}; wrote {', '.join(str(p) for p in paths.values())}")
    return 0

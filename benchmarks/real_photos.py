"""Real photos through the whole pipeline: does the head look like the person in the photo?

For every image in FOLDER (default ``benchmarks/photos``: the astronaut and Grace Hopper, see its
README) it reconstructs the head once, then refines it with each ``--refine`` step count (0 = the
feed-forward head), renders front/left/right/back and measures on the front render:

- front PSNR against the framed input, inside the person mask (the input view is the nominal
  frontal camera the framing targets, or the model's estimated camera when it has one);
- dlib (the optional ``csim`` extra: ``pip install dlib-bin==20.0.1.post1 face_recognition_models==0.3.0``):
  is a face found in the front render, and the Euclidean distance of its 128-d embedding to the
  face in the original photo; < 0.6 is dlib's "same person" rule. Without dlib those columns are "n/a".

Prints a Markdown table, writes ``<stem>.png`` per photo (rows: refine steps; columns: input |
front | left | right | back) and ``real_photos.png`` (all photos) into ``--out``; ``--write`` puts the
table into BENCHMARKS.md between ``<!-- real_photos:start -->`` / ``<!-- real_photos:end -->``.

    python benchmarks/real_photos.py [FOLDER] [--checkpoint C] [--refine 0 20] [--out DIR] [--size 512] [--write]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT / "benchmarks" / "photos"
START, END = "<!-- real_photos:start -->", "<!-- real_photos:end -->"
EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
SAME_PERSON = 0.6  # dlib's face_recognition rule: embedding distance below this = same person
VIEWS = ("front", "left", "right", "back")
DLIB_INSTALL = "pip install dlib-bin==20.0.1.post1 face_recognition_models==0.3.0"


@dataclasses.dataclass
class Row:
    photo: str
    refine_steps: int
    refine_s: float  # wall clock
    refine_cpu_s: float  # process CPU time (all threads): steadier than wall clock on a shared machine
    psnr_front: float  # dB, inside the person mask
    face_found: bool | None  # None: dlib missing
    distance: float | None  # None: dlib missing or no face in the render or in the photo
    input_face: bool | None

    @property
    def same_person(self) -> bool | None:
        return None if self.distance is None else self.distance < SAME_PERSON


def dlib_available() -> bool:
    return importlib.util.find_spec("dlib") is not None and importlib.util.find_spec("face_recognition_models") is not None


def list_photos(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise SystemExit(f"{folder}: not a folder of photos")
    photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in EXTENSIONS)
    if not photos:
        raise SystemExit(f"{folder}: no photos ({', '.join(sorted(EXTENSIONS))})")
    return photos


def to_tensor(img: np.ndarray):
    import torch

    return torch.from_numpy(np.array(img[..., :3])).permute(2, 0, 1).float() / 255


def masked_psnr(render: np.ndarray, target: np.ndarray, mask: np.ndarray | None) -> float:
    """PSNR (dB) of two (H, W, 3) uint8 images over the pixels of ``mask`` (H, W) in [0, 1] (all when None)."""
    r, t = render.astype(np.float64) / 255, target.astype(np.float64) / 255
    m = np.ones(r.shape[:2]) if mask is None else mask.astype(np.float64)
    mse = float(((r - t) ** 2 * m[..., None]).sum() / max(3 * m.sum(), 1e-9))
    return float("inf") if mse == 0 else 10 * np.log10(1 / mse)


def measure_photo(reconstructor, path: Path, refine_steps: list[int], size: int, use_dlib: bool) -> tuple[list[Row], np.ndarray]:
    """All rows for one photo and its picture (one row of input | views per refine step count)."""
    from panolam.eval.metrics import face_embedding
    from panolam.geometry.cameras import named_views
    from panolam.pipeline import refine_reconstruction
    from panolam.preprocess import load_photo
    from panolam.render.preview import label_image, render_cameras

    photo = load_photo(path)
    base = reconstructor.reconstruct(photo, size=size)
    input_emb = face_embedding(to_tensor(photo)) if use_dlib else None
    rows, strips = [], []
    for steps in refine_steps:
        c0 = time.process_time()
        rec, stats = refine_reconstruction(base, steps)
        cpu = time.process_time() - c0 if steps else 0.0
        views = render_cameras(rec.gaussians, named_views(VIEWS, size=size))
        if use_dlib:
            emb = face_embedding(to_tensor(views[0]))
            dist = None if emb is None or input_emb is None else float(np.linalg.norm(emb - input_emb))
            found, has_input = emb is not None, input_emb is not None
        else:
            dist, found, has_input = None, None, None
        rows.append(Row(path.stem, steps, stats.seconds, cpu, masked_psnr(views[0], rec.framed, rec.alpha), found, dist, has_input))
        tiles = [label_image(np.ascontiguousarray(rec.framed[..., :3]), "input")]
        tiles += [label_image(v, name + (f" (refine {steps})" if steps else "")) for v, name in zip(views, VIEWS)]
        strips.append(np.concatenate(tiles, axis=1))
    return rows, np.concatenate(strips, axis=0)


def _yes_no(v: bool | None) -> str:
    return "n/a" if v is None else ("yes" if v else "no")


def table(rows: list[Row], note: str) -> str:
    lines = ["| photo | refine steps | refine time (wall / CPU) | front PSNR in mask (dB) | face in front render | dlib distance to photo | same person (< 0.6) |",
             "| --- | ---: | ---: | ---: | --- | ---: | --- |"]
    for r in rows:
        dist = "n/a" if r.face_found is None else ("-" if r.distance is None else f"{r.distance:.3f}")
        lines.append(f"| {r.photo} | {r.refine_steps} | {r.refine_s:.2f} s / {r.refine_cpu_s:.2f} s | {r.psnr_front:.2f} | {_yes_no(r.face_found)} | {dist} | {_yes_no(r.same_person)} |")
    return "\n".join(lines) + f"\n\n{note}\n"


def save_png(img: np.ndarray, path: Path) -> None:
    from panolam.preprocess import save_png as _save

    _save(img, path)


def main(argv: list[str] | None = None) -> list[Row]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", nargs="?", default=str(PHOTOS), help=f"folder of photos (default {PHOTOS.relative_to(ROOT)})")
    ap.add_argument("--checkpoint", default=None, help="model (default: $PANOLAM_CHECKPOINT, else the shipped model)")
    ap.add_argument("--config", default="default", help="preset for an untrained network when no checkpoint applies")
    ap.add_argument("--set", action="append", default=[], metavar="section.field=value", help="config override (untrained network)")
    ap.add_argument("--device", default="cpu", help="device for the network (default cpu; rendering/refinement run where the head is)")
    ap.add_argument("--refine", type=int, nargs="+", default=[0, 20], metavar="N",
                    help="refinement step counts to compare; 0 = the feed-forward head (default: 0 20)")
    ap.add_argument("--size", type=int, default=512, help="framed input and render size (default 512)")
    ap.add_argument("--out", default=str(ROOT / "out" / "real_photos"), help="folder for the pictures (default out/real_photos)")
    ap.add_argument("--note", default="", help="free text saved under the table")
    ap.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    ap.add_argument("--benchmarks-file", default=str(ROOT / "BENCHMARKS.md"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if any(n < 0 for n in args.refine):
        raise SystemExit("--refine: step counts must be >= 0")
    import torch

    from panolam.pipeline import Reconstructor
    from panolam.refine import DEFAULT_SIZE

    photos = list_photos(Path(args.folder))
    use_dlib = dlib_available()
    if not use_dlib:
        print(f"note: dlib face recognition not installed, face columns are n/a ({DLIB_INSTALL})", file=sys.stderr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        rec = Reconstructor(args.checkpoint, args.config, args.set, args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, pictures = [], []
    for path in photos:
        t0 = time.perf_counter()
        photo_rows, picture = measure_photo(rec, path, list(args.refine), args.size, use_dlib)
        rows += photo_rows
        save_png(picture, out / f"{path.stem}.png")
        pictures.append(picture)
        print(f"{path.name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    save_png(np.concatenate(pictures, axis=0), out / "real_photos.png")
    model = str(rec.checkpoint.relative_to(ROOT) if rec.checkpoint and rec.checkpoint.is_relative_to(ROOT) else rec.checkpoint) if rec.trained else f"untrained {args.config}"
    try:
        load = f" 1-minute load average when it finished: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (above the core count, refine times are inflated by other work)."
    except OSError:
        load = ""
    note = (f"Model: {model}; {args.size}² framing and renders; torch {torch.__version__}, {torch.get_num_threads()} threads. "
            "Front PSNR: the front render against the framed input inside its person alpha. Face columns: dlib "
            "ResNet (`face_recognition_models` 0.3.0) on the front render vs the original photo; 'no' = no face detected. "
            f"Refinement: `panolam reconstruct --refine N` (input-view L1 in the mask, fitted at {min(DEFAULT_SIZE, args.size)}²; "
            f"refine time: wall clock / process CPU time summed over threads).{load} {args.note}").strip()
    text = table(rows, note)
    print(text)
    if args.write:
        from panolam.eval.report import write_marked_section

        write_marked_section(Path(args.benchmarks_file), START, END,
                             f"## Real photos (identity)\n\n`python benchmarks/real_photos.py --write`; pictures: input | front | left | right | back.\n\n{text}")
    return rows


if __name__ == "__main__":
    main()

"""The local web demo: upload a photo, get a 3D Gaussian head in an interactive splat viewer.

Two Gradio pages. :func:`build_demo` runs the whole pipeline per request (preprocess -> one
forward pass -> head.ply, then the turntable video) and shows the framed input, the head in
``gr.Model3D`` (which draws 3DGS ``.ply`` files with its bundled gsplat.js) as soon as head.ply
exists, then the turntable MP4, a download of ``head.ply`` and the timings. :func:`build_viewer` shows any saved ``head.ply``.
Everything is served from 127.0.0.1 by default: no share links, no analytics, nothing fetched
from a CDN (Gradio's frontend and fonts are bundled in the wheel).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

# Must be set before gradio is imported: it reads the flag at import time.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import numpy as np  # noqa: E402

from panolam.config.render import REFINE_STEPS  # noqa: E402

KEEP_RUNS = 16  # per-request output folders kept on disk; older ones are deleted
VIEWER_HEIGHT = 420
# gr.Model3D draws splats with gsplat.js, which ignores camera_position/clear_color and assumes the
# INRIA/COLMAP world (y down, starting camera at -z, 5 units away). Our heads are y-up facing +z
# at EG3D scale (~0.6 units), so the viewer gets a display copy turned 180° about x and enlarged;
# the downloadable head.ply stays in the project's world frame.
VIEWER_SCALE = 2.0
MAX_REFINE_STEPS = 100
MAX_UPLOAD = "50mb"  # larger uploads are refused by the server before any decoding


@dataclass
class DemoSettings:
    """What ``panolam app`` passes to the page."""

    checkpoint: str | None = None
    config: str = "default"
    overrides: tuple[str, ...] = ()
    device: str = "auto"
    turntable_frames: int = 24  # panolam.render.preview.TURNTABLE_FRAMES: ~1-2 s on two cores
    render_size: int = 256
    size: int = 512
    out_root: Path | None = None
    refine_steps: int = REFINE_STEPS  # initial value of the page's "refinement steps" slider


def _gradio():
    import gradio as gr

    return gr


def photo_input(gr, **kwargs):
    """``gr.Image`` for the upload that keeps the file as sent (transparency included, so a fully
    transparent PNG is judged like on the command line) and turns undecodable uploads (not an image,
    empty, too many pixels) into a message in our words instead of the library's generic error.

    The component's ``preprocess`` is wrapped on the instance: subclassing a Gradio component would
    make Gradio write a ``.pyi`` stub next to this module at import time.
    """
    comp = gr.Image(type="filepath", image_mode=None, **kwargs)
    original = comp.preprocess

    def preprocess(payload):
        try:
            return original(payload)
        except gr.Error:
            raise
        except Exception as exc:  # PIL raises many types here; all mean "cannot use this upload"
            path = getattr(payload, "path", None)
            name = Path(getattr(payload, "orig_name", None) or path or "upload").name
            empty = bool(path) and Path(path).is_file() and Path(path).stat().st_size == 0
            what = "is empty" if empty else ("is too large to decode safely" if "DecompressionBomb" in type(exc).__name__
                                             else "is not an image file this app can read")
            raise gr.Error(f"{name} {what}: upload a JPEG, PNG or WebP photo of a person.") from exc

    comp.preprocess = preprocess
    return comp


def example_photos(folder: Path) -> list[str]:
    """Example inputs written at start-up from scikit-image's bundled photos (nothing ships in the repo)."""
    from skimage import data

    from panolam.preprocess import save_png

    path = folder / "astronaut.png"
    if not path.exists():
        save_png(data.astronaut(), path)
    return [str(path)]


def _timings_markdown(timings: dict[str, float], n_gaussians: int, device: str, trained: bool) -> str:
    rows = [("preprocess (face, framing, matting)", "preprocess_s"), ("reconstruct (one forward pass)", "reconstruct_s"),
            ("test-time refinement", "refine_s"),
            ("write head.ply/.splat/.glb", "write_head_s"), ("render views + turntable", "render_previews_s"),
            ("encode PNG/MP4", "encode_previews_s")]
    lines = ["| step | seconds |", "| --- | ---: |"]
    lines += [f"| {label} | {timings[key]:.2f} |" for label, key in rows if key in timings]
    lines.append(f"| **total** | **{timings.get('total_s', sum(timings.get(k, 0.0) for _, k in rows)):.2f}** |")
    model = "trained checkpoint" if trained else "**untrained weights** (no checkpoint yet: expect a blob)"
    return "\n".join(lines) + f"\n\n{n_gaussians:,} Gaussians on {device}; model: {model}."


class DemoRunner:
    """Holds one :class:`~panolam.pipeline.Reconstructor` and turns uploads into output folders."""

    def __init__(self, settings: DemoSettings, reconstructor: Any | None = None):
        self.settings = settings
        self.out_root = Path(settings.out_root or tempfile.mkdtemp(prefix="panolam-app-"))
        self.out_root.mkdir(parents=True, exist_ok=True)
        if reconstructor is None:
            from panolam.pipeline import Reconstructor
            from panolam.render.rasterize import warm_up_in_background

            warm_up_in_background()  # the first upload then finds the CPU kernels loaded
            reconstructor = Reconstructor(settings.checkpoint, settings.config, settings.overrides, settings.device)
        self.reconstructor = reconstructor

    @property
    def trained(self) -> bool:
        return bool(getattr(self.reconstructor, "trained", False))

    def _new_run_dir(self) -> Path:
        runs = sorted((p for p in self.out_root.glob("run-*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
        for old in runs[: max(0, len(runs) - KEEP_RUNS + 1)]:
            shutil.rmtree(old, ignore_errors=True)
        path = self.out_root / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        path.mkdir()
        return path

    def run_steps(self, photo_path: str | None, refine_steps: float | None = None) -> Iterator[tuple[np.ndarray, str, str | None, str, str]]:
        """Upload path (+ refinement steps, default the settings') -> (framed input, viewer copy of head.ply,
        turntable.mp4 or None, head.ply, timings Markdown), yielded twice: as soon as head.ply exists (no
        video yet), then with the turntable."""
        from panolam.errors import PanoLAMError
        from panolam.pipeline import refine_reconstruction, write_head, write_previews, write_timings
        from panolam.preprocess import load_photo

        gr = _gradio()
        if not photo_path:
            raise gr.Error("Upload a photo first (or click the example below).")
        t0 = time.perf_counter()
        try:
            photo = load_photo(photo_path)
            rec = self.reconstructor.reconstruct(photo, size=self.settings.size)
        except PanoLAMError as e:  # our own words, without the server's temporary path
            raise gr.Error(str(e).replace(str(photo_path), Path(photo_path).name)) from e
        steps = self.settings.refine_steps if refine_steps is None else int(refine_steps)
        rec, _ = refine_reconstruction(rec, max(0, steps))
        run_dir = self._new_run_dir()
        try:
            paths = write_head(rec, run_dir)
            view = str(write_viewer_copy(paths["ply"], run_dir / "view" / "head.ply"))
        except OSError as e:
            raise gr.Error(f"could not write the results under {self.out_root}: {e.strerror or e}; check free disk space "
                           "and that the folder (panolam app --out) is writable") from e
        rec.timings["head_ready_s"] = time.perf_counter() - t0
        device = str(getattr(self.reconstructor, "device", "cpu"))
        trained = getattr(rec, "trained", self.trained)
        frames = self.settings.turntable_frames
        if frames > 0:
            pending = _timings_markdown(rec.timings, len(rec.gaussians), device, trained) + "\n\n*Rendering the turntable…*"
            yield rec.framed, view, None, str(paths["ply"]), pending
        previews = write_previews(rec, run_dir, frames, self.settings.render_size)
        rec.timings["total_s"] = time.perf_counter() - t0
        write_timings(rec, run_dir)
        md = _timings_markdown(rec.timings, len(rec.gaussians), device, trained)
        yield rec.framed, view, str(previews["mp4"]) if "mp4" in previews else None, str(paths["ply"]), md

    def run(self, photo_path: str | None, refine_steps: float | None = None) -> tuple[np.ndarray, str, str | None, str, str]:
        """:meth:`run_steps` to the end: the final outputs."""
        *_, last = self.run_steps(photo_path, refine_steps)
        return last


def to_viewer_frame(g):
    """Gaussians in our y-up, face-to-+z world -> gsplat.js's y-down, face-to-−z world (×VIEWER_SCALE)."""
    import torch

    from panolam.gaussians import Gaussians

    flip = torch.tensor([1.0, -1.0, -1.0], dtype=g.means.dtype)
    w, x, y, z = g.quats.unbind(-1)
    # q' = q_x180 ⊗ q with q_x180 = (0, 1, 0, 0): the Gaussians' axes turn with the positions.
    quats = torch.stack([-x, w, -z, y], dim=-1)
    return Gaussians(g.means * flip * VIEWER_SCALE, quats, g.scales * VIEWER_SCALE, g.opacities, g.colors)


def write_viewer_copy(ply_path: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """Write the display copy of ``ply_path`` that gr.Model3D shows upright and facing the viewer."""
    from panolam.gaussians.ply import load_ply, save_ply

    save_ply(to_viewer_frame(load_ply(ply_path)), out_path)
    return Path(out_path)


def _viewer(gr, value: str | None = None, label: str = "3D head (drag to orbit, scroll to zoom)"):
    return gr.Model3D(value=value, label=label, height=VIEWER_HEIGHT, elem_id="head-viewer")


def build_demo(runner: DemoRunner):
    """The reconstruction page."""
    gr = _gradio()
    with gr.Blocks(title="PanoLAM — photo to 3D Gaussian head") as demo:
        gr.Markdown("# PanoLAM: one photo → a 3D Gaussian full head\n"
                    "Upload a portrait (any size, any orientation). The photo is framed like the training data, its "
                    "background removed, and one forward pass predicts a 3D Gaussian head you can orbit below.")
        if not runner.trained:
            gr.Markdown("> **Untrained weights.** No trained checkpoint was found (`--checkpoint`, `$PANOLAM_CHECKPOINT` "
                        "or the shipped model), so the network is randomly initialised: the page works end to end but "
                        "the head will look like a coloured blob, not the person.", elem_id="untrained-note")
        with gr.Row():
            with gr.Column(scale=1):
                photo = photo_input(gr, label="Photo", sources=["upload", "clipboard"], height=300, elem_id="photo")
                refine = gr.Slider(0, MAX_REFINE_STEPS, value=runner.settings.refine_steps, step=1, elem_id="refine",
                                   label="Refinement steps (0 = off): fit the visible side to the photo, ~0.1 s per step")
                button = gr.Button("Reconstruct", variant="primary", elem_id="run")
                gr.Examples(examples=[[p] for p in example_photos(runner.out_root / "examples")], inputs=[photo], label="Example (scikit-image astronaut)")
                framed = gr.Image(label="Network input (framed, background removed)", interactive=False, height=256, elem_id="framed")
            with gr.Column(scale=2):
                viewer = _viewer(gr)
                video = gr.Video(label="Turntable", interactive=False, autoplay=True, loop=True, height=256, elem_id="turntable")
                with gr.Row():
                    download = gr.File(label="Download head.ply (INRIA 3DGS)", interactive=False, elem_id="download")
                    timings = gr.Markdown(elem_id="timings")
        def reconstruct(photo_path, refine_steps):
            # The viewer gets head.ply as soon as it exists; the second step only adds the video and final timings.
            for i, step in enumerate(runner.run_steps(photo_path, refine_steps)):
                yield step if i == 0 else (gr.skip(), gr.skip(), step[2], gr.skip(), step[4])

        button.click(reconstruct, inputs=[photo, refine], outputs=[framed, viewer, video, download, timings], api_name="reconstruct")
    return demo


def build_viewer(ply_path: str | os.PathLike, work_dir: str | os.PathLike):
    """A minimal page showing one saved head.

    The page only ever references files under ``work_dir`` (a private copy of the PLY and its display
    copy), so the server can be told to serve that folder alone: nothing beside the user's PLY is exposed.
    """
    gr = _gradio()
    path = Path(ply_path)
    work = Path(work_dir)
    private = work / "download" / path.name
    private.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, private)
    view = write_viewer_copy(private, work / "view" / "head.ply")
    with gr.Blocks(title=f"PanoLAM viewer — {path.name}") as page:
        gr.Markdown(f"# {path.name}\nA 3D Gaussian head saved by PanoLAM. Drag to orbit, scroll to zoom.")
        _viewer(gr, value=str(view), label=path.name)
        gr.File(value=str(private), label="Download", interactive=False)
    return page


def launch(blocks, host: str = "127.0.0.1", port: int = 7860, allowed_paths: list[str] | None = None,
           on_start: Callable[[str], None] | None = None, block: bool = True):
    """Serve ``blocks`` locally (never a public share link); returns the local URL when ``block`` is False."""
    gr = _gradio()
    theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    _, url, _ = blocks.launch(server_name=host, server_port=port, share=False, inbrowser=False, prevent_thread_lock=True,
                              allowed_paths=allowed_paths, ssr_mode=False, quiet=True, theme=theme, footer_links=[],
                              max_file_size=MAX_UPLOAD)
    if on_start is not None:
        on_start(url)
    if block:
        blocks.block_thread()
    return url

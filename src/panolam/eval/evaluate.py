"""Held-out evaluation (paper §4.1, Tables 2-3): reconstruct each test subject from its input view and
compare renders with the ground truth at the front/left/right/back views.

Per subject: the input is the stored view closest to frontal (what ``MultiViewDataset(fixed_views=
True)`` feeds the network), without photographic effects. The ground truth comes, when possible,
from the generator that made the dataset: its subject is rebuilt from the stored seed and rendered
at exactly the four evaluation cameras (:func:`panolam.data.camera_laws.eval_views`: mean radius
2.7, mean EG3D FOV); the generator is first checked to reproduce the stored input view, so a
differently configured generator is never trusted. Otherwise (``gt="nearest"``, or no matching
generator) each evaluation direction uses the stored view nearest in direction, and the prediction
is rendered with that view's own camera (its jittered radius and intrinsics), so the pair is
exact; the angular gap is reported. Metrics: PSNR (capped at :data:`PSNR_CAP` dB, so identical
images give a finite, JSON-safe 100), SSIM, ST-LPIPS (shift-tolerant AlexNet; not the standard
LPIPS of the paper's table unless a standard LPIPS file is given) averaged over the four views; APD
on the front view where FaceMesh finds a face in both images (else NaN, counted); CSIM on the front
view via the optional dlib plug-in ("n/a" when it is missing). Not a paper metric but the first
question about a small model: does it read its input at all? ``colour_r`` (:func:`colour_correlation`)
correlates predicted and true foreground colour across subjects. Timings: reconstruction (the
``reconstruct_fn`` call, synchronised on CUDA), render time per view, peak memory
(``torch.cuda.max_memory_allocated`` per reconstruction on GPU; the process's peak RSS on CPU).
"""

from __future__ import annotations

import dataclasses
import math
import os
import resource
import time
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from panolam.data.camera_laws import eval_views, frontalness
from panolam.data.dataset import load_subject
from panolam.data.labels import rejected
from panolam.data.manifest import load_manifest
from panolam.eval import metrics
from panolam.gaussians import Gaussians
from panolam.geometry.cameras import Cameras
from panolam.render import rasterize

ReconstructFn = Callable[..., Gaussians]  # (3, H, W) image in [0, 1], (1, H, W) matte or None[, camera=InputCamera] -> unbatched Gaussians
INPUT_CAMERAS = ("estimated", "true")  # eval with the network's own pose estimate, or with the stored (oracle) camera
EVAL_VIEWS = ("front", "left", "right", "back")  # the order of eval_views()
PSNR_CAP = 100.0
GRID_ROWS = 8
GRID_TILE = 128
CSIM_MISSING = "n/a: optional models missing"
# Mean absolute difference (in [0, 1] colour) allowed when checking that a generator reproduces a stored view.
GENERATOR_TOLERANCE = 0.02
# A pixel belongs to the silhouette when it differs from the background colour by more than this (any channel).
SILHOUETTE_TOLERANCE = 0.05


@dataclasses.dataclass
class SubjectResult:
    subject: str
    psnr: float
    ssim: float
    lpips: float
    apd: float  # NaN when no face was found in the front pair
    csim: float | None  # None when unavailable (optional models missing or no face)
    recon_s: float
    render_ms_per_view: float
    peak_mem_mb: float
    gt_source: str  # "generator" (exact eval cameras) or "nearest" (nearest stored views)
    view_error_deg: float  # largest angle between an eval direction and the view used for it
    per_view: dict[str, dict[str, float]]
    pred_colour: list[float]  # foreground mean RGB over the four predicted views (for colour_r)
    gt_colour: list[float]  # the same over the four ground-truth views
    silhouette_iou: float  # mean over the views of the predicted vs true silhouette IoU


@dataclasses.dataclass
class EvalReport:
    label: str
    settings: dict
    subjects: list[SubjectResult]
    csim_status: str  # "ok" or why CSIM is missing
    grid_rows: list[np.ndarray] = dataclasses.field(default_factory=list, repr=False)

    def mean(self) -> dict[str, float | int | str | None]:
        """Means over subjects; APD over subjects with a detected face (``apd_missing`` counts the others)."""
        def avg(key: str) -> float:
            vals = [getattr(s, key) for s in self.subjects]
            return float(np.mean(vals)) if vals else float("nan")

        apds = [s.apd for s in self.subjects if not math.isnan(s.apd)]
        csims = [s.csim for s in self.subjects if s.csim is not None]
        return {
            "psnr": avg("psnr"), "ssim": avg("ssim"), "lpips": avg("lpips"),
            "apd": float(np.mean(apds)) if apds else float("nan"), "apd_missing": len(self.subjects) - len(apds),
            "csim": (float(np.mean(csims)) if csims else None) if self.csim_status == "ok" else self.csim_status,
            "recon_s": avg("recon_s"), "render_ms_per_view": avg("render_ms_per_view"),
            "peak_mem_mb": max((s.peak_mem_mb for s in self.subjects), default=float("nan")), "subjects": len(self.subjects),
            "silhouette_iou": avg("silhouette_iou"),
            "colour_r": colour_correlation([s.pred_colour for s in self.subjects], [s.gt_colour for s in self.subjects]),
        }

    def to_dict(self) -> dict:
        return {"label": self.label, "settings": self.settings, "csim_status": self.csim_status, "mean": _json_safe(self.mean()),
                "subjects": [_json_safe(dataclasses.asdict(s)) for s in self.subjects]}


def colour_correlation(pred: Sequence[Sequence[float]], gt: Sequence[Sequence[float]]) -> float:
    """Does the model read its input? Pearson r over subjects between predicted and true foreground mean
    colour, averaged over R, G, B. A network that returns the same head for every photo scores 0 (its
    colour does not vary), one that tracks every subject's colouring scores 1. NaN with fewer than 3
    subjects or when the ground truth itself does not vary."""
    p, t = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    if p.shape != t.shape or p.ndim != 2:
        raise ValueError(f"colour_correlation needs two equal (subjects, channels) arrays, got {p.shape} and {t.shape}")
    if len(p) < 3:
        return float("nan")
    rs = []
    for pc, tc in zip(p.T, t.T):
        if tc.std() < 1e-6:
            continue
        rs.append(0.0 if pc.std() < 1e-6 else float(((pc - pc.mean()) * (tc - tc.mean())).mean() / (pc.std() * tc.std())))
    return float(np.mean(rs)) if rs else float("nan")


def _json_safe(x):
    """NaN/inf -> None so the file is strict JSON."""
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


# --- ground truth ----------------------------------------------------------------------------------

def input_view(world_to_cam: torch.Tensor) -> int:
    """Index of the stored view closest to frontal (the fixed input view of the training loader)."""
    return int(torch.argmax(frontalness(world_to_cam.float())))


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-2:] == (size, size):
        return images.float()
    return F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def stored_cameras(sample: dict) -> Cameras:
    """The cameras of a loaded subject's stored views (:func:`~panolam.data.dataset.load_subject`), at the images' size."""
    h, w = sample["images"].shape[-2:]
    return Cameras(sample["world_to_cam"].float(), sample["K"].float(), w, h)


def _generator_render(generator, subject, cams: Cameras, background: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        premult, alpha = generator.render(subject, cams)
    rgb = premult.cpu().float() + (1 - alpha.cpu().float()) * background
    return rgb.clamp(0, 1).permute(0, 3, 1, 2)


def resolve_generator(meta: dict, generator=None):
    """The generator to rebuild ``meta``'s subject with: the one given, else the registered one of that id."""
    if generator is not None:
        return generator
    from panolam.data.generators import get_generator

    try:
        return get_generator(meta.get("generator", ""))
    except ValueError:
        return None


def generator_ground_truth(sample: dict, size: int, generator) -> tuple[torch.Tensor, Cameras] | None:
    """GT at the exact eval cameras, or None when ``generator`` does not reproduce the stored input view."""
    meta = sample["meta"]
    if generator is None or getattr(generator, "id", None) != meta.get("generator") or "seed" not in meta:
        return None
    bg = torch.tensor(meta.get("background", [1.0, 1.0, 1.0]), dtype=torch.float32)
    subject = generator.subject(int(meta["seed"]))
    first = input_view(sample["world_to_cam"])
    check = _generator_render(generator, subject, stored_cameras(sample)[first:first + 1], bg)
    if (check[0] - sample["images"][first].float()).abs().mean() > GENERATOR_TOLERANCE:
        return None
    cams = eval_views(size)
    return _generator_render(generator, subject, cams, bg), cams


def nearest_ground_truth(sample: dict, size: int) -> tuple[torch.Tensor, Cameras, float]:
    """Stored views nearest to each eval direction, their own cameras at ``size``, and the largest angular gap (degrees)."""
    stored = stored_cameras(sample)
    have = F.normalize(stored.cam_to_world[:, :3, 3], dim=-1)
    want = F.normalize(eval_views(8).cam_to_world[:, :3, 3], dim=-1)
    cos = want @ have.T  # (4, V)
    best = cos.argmax(1)
    err = math.degrees(math.acos(float(cos.max(1).values.min().clamp(-1, 1))))
    return _resize(sample["images"][best], size), stored[best].resized(size, size), err


# --- one subject -------------------------------------------------------------------------------------

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_rss_mb() -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if os.uname().sysname == "Darwin" else rss / 1024


def _reconstruct(fn: ReconstructFn, image: torch.Tensor, mask: torch.Tensor | None, camera=None) -> tuple[Gaussians, float, float]:
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    with torch.inference_mode():
        # Only an oracle-camera eval passes ``camera``, so reconstructors of two arguments keep working.
        g = fn(image, mask) if camera is None else fn(image, mask, camera=camera)
    _sync(g.device)
    seconds = time.perf_counter() - t0
    mem = torch.cuda.max_memory_allocated() / 2**20 if g.device.type == "cuda" else _peak_rss_mb()
    return g, seconds, mem


def _render(g: Gaussians, cams: Cameras, background: torch.Tensor) -> tuple[torch.Tensor, float]:
    g = g.detach().map(lambda t: t.float())
    _sync(g.device)
    t0 = time.perf_counter()
    with torch.no_grad():
        out = rasterize(g, cams.to(g.device), background.to(g.device))
    _sync(g.device)
    ms = (time.perf_counter() - t0) * 1000 / len(cams)
    return out.rgb.float().cpu().clamp(0, 1).permute(0, 3, 1, 2), ms


def silhouette_iou(pred: torch.Tensor, gt: torch.Tensor, background: torch.Tensor, tol: float = SILHOUETTE_TOLERANCE) -> torch.Tensor:
    """Per-view IoU (V,) of the silhouettes of (V, 3, H, W) images on a flat ``background``: a pixel is in a
    silhouette when it differs from the background by more than ``tol``. On held-out procedural subjects
    most of the squared error sits where the two silhouettes disagree, so this isolates the shape part."""
    a, b = (foreground(x, background, tol) for x in (pred, gt))
    union = (a | b).flatten(1).sum(1)
    return torch.where(union > 0, (a & b).flatten(1).sum(1) / union.clamp_min(1), torch.ones_like(union, dtype=torch.float32)).float()


def image_metrics(pred: torch.Tensor, gt: torch.Tensor, lpips_weights: str | None = None) -> dict[str, torch.Tensor]:
    """Per-view PSNR (capped), SSIM and ST-LPIPS of (V, 3, H, W) image pairs in [0, 1]."""
    return {"psnr": metrics.psnr(pred, gt).clamp(max=PSNR_CAP), "ssim": metrics.ssim(pred, gt),
            "lpips": metrics.lpips(pred, gt, lpips_weights).float().cpu()}


class _Csim:
    """CSIM on front views; remembers once that the optional models are missing."""

    def __init__(self) -> None:
        self.status = "ok"

    def __call__(self, pred: torch.Tensor, gt: torch.Tensor) -> float | None:
        if self.status != "ok":
            return None
        try:
            return metrics.csim(pred, gt)
        except metrics.MissingOptionalModel:
            self.status = CSIM_MISSING
            return None


def true_input_camera(sample: dict):
    """The stored camera of the subject's input view, as the network's :class:`InputCamera` (batch of one)."""
    from panolam.model.pixel_aligned import InputCamera

    first = input_view(sample["world_to_cam"])
    return InputCamera.from_cameras(stored_cameras(sample)[first:first + 1])


def evaluate_subject(fn: ReconstructFn, sample: dict, size: int, gt_mode: str, generator, csim: _Csim,
                     lpips_weights: str | None = None, input_camera: str = "estimated") -> tuple[SubjectResult, np.ndarray]:
    """Metrics of one subject and its grid row (input | pred f/l/r/b | GT f/l/r/b); ``input_camera="true"``
    hands the reconstructor the stored input camera (an oracle that isolates the pose estimate's cost)."""
    meta = sample["meta"]
    background = torch.tensor(meta.get("background", [1.0, 1.0, 1.0]), dtype=torch.float32)
    first = input_view(sample["world_to_cam"])
    exact = generator_ground_truth(sample, size, resolve_generator(meta, generator)) if gt_mode in ("auto", "generator") else None
    if exact is None and gt_mode == "generator":
        raise ValueError(f"subject {sample['subject']}: no generator reproduces its stored views (generator id "
                         f"{meta.get('generator')!r}); use gt='nearest' or pass the generator that made the dataset")
    if exact is not None:
        (gt, cams), source, err = exact, "generator", 0.0
    else:
        gt, cams, err = nearest_ground_truth(sample, size)
        source = "nearest"
    image = sample["images"][first].float()
    camera = true_input_camera(sample) if input_camera == "true" else None
    g, recon_s, mem = _reconstruct(fn, image, sample["masks"][first].float(), camera)
    pred, render_ms = _render(g, cams, background)
    m = image_metrics(pred, gt, lpips_weights)
    m["iou"] = silhouette_iou(pred, gt, background)
    apd = metrics.apd(pred[:1], gt[:1])
    per_view = {v: {k: float(m[k][i]) for k in m} for i, v in enumerate(EVAL_VIEWS)}
    bg = background.tolist()
    pred_colour, gt_colour = (foreground_mean_colour(torch.cat(list(x), dim=-1), bg).tolist() for x in (pred, gt))
    result = SubjectResult(
        subject=sample["subject"], psnr=float(m["psnr"].mean()), ssim=float(m["ssim"].mean()), lpips=float(m["lpips"].mean()),
        apd=float("nan") if apd is None else apd, csim=csim(pred[:1], gt[:1]), recon_s=recon_s, render_ms_per_view=render_ms,
        peak_mem_mb=mem, gt_source=source, view_error_deg=err, per_view=per_view, pred_colour=pred_colour, gt_colour=gt_colour,
        silhouette_iou=float(m["iou"].mean()))
    return result, grid_row(image, pred, gt)


# --- grid ----------------------------------------------------------------------------------------------

def grid_row(image: torch.Tensor, pred: torch.Tensor, gt: torch.Tensor, tile: int = GRID_TILE) -> np.ndarray:
    """(tile, 9·tile, 3) uint8: input, pred front/left/right/back, GT front/left/right/back, labelled."""
    from panolam.render.preview import label_image

    # The input keeps the dataset's resolution, which need not be the eval size: resize each part first.
    tiles = torch.cat([_resize(image[None], tile), _resize(pred, tile), _resize(gt, tile)])
    arr = (tiles.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)
    names = ["input"] + [f"pred {v}" for v in EVAL_VIEWS] + [f"GT {v}" for v in EVAL_VIEWS]
    return np.concatenate([label_image(a, n) for a, n in zip(arr, names)], axis=1)


# --- the whole split -----------------------------------------------------------------------------------

def eval_subjects(data_root: str | Path, split: str = "test", limit: int | None = None) -> list[str]:
    """Sorted, non-rejected subjects of ``split`` (the first ``limit``)."""
    manifest = load_manifest(data_root)
    skip = rejected(data_root)
    subjects = sorted(s for s in manifest.subjects(split) if s not in skip)
    if not subjects:
        raise ValueError(f"{data_root}: split {split!r} has no subjects to evaluate (counts: {manifest.counts()})")
    return subjects[:limit] if limit is not None else subjects


def evaluate(reconstruct_fn: ReconstructFn, data_root: str | Path, split: str = "test", limit: int | None = None,
             size: int = 256, *, label: str = "PanoLAM", gt: str = "auto", generator=None, lpips_weights: str | None = None,
             progress: bool = False, warmup: bool = True, input_camera: str = "estimated") -> "EvalReport":
    """Evaluate ``reconstruct_fn`` on the held-out subjects (see the module doc); ``gt`` is auto, generator or nearest;
    ``input_camera`` is "estimated" (the network's pose head) or "true" (the stored camera: an oracle).

    ``warmup`` runs one untimed reconstruction and render first, so JIT compilation (numba, CUDA kernels)
    and lazy model loading do not count as the first subject's time."""
    from tqdm.auto import tqdm

    if gt not in ("auto", "generator", "nearest"):
        raise ValueError(f"gt must be auto, generator or nearest, got {gt!r}")
    if input_camera not in INPUT_CAMERAS:
        raise ValueError(f"input_camera must be one of {INPUT_CAMERAS}, got {input_camera!r}")
    if size < 11:
        raise ValueError(f"size {size} is too small: SSIM needs at least 11x11 pixels")
    subjects = eval_subjects(data_root, split, limit)
    csim = _Csim()
    results, rows = [], []
    if warmup:
        _warm_up(reconstruct_fn, load_subject(data_root, subjects[0]), size)
    for sid in tqdm(subjects, desc=f"eval {label}", unit="subject", disable=not progress, dynamic_ncols=True):
        result, row = evaluate_subject(reconstruct_fn, load_subject(data_root, sid), size, gt, generator, csim, lpips_weights,
                                       input_camera)
        results.append(result)
        if len(rows) < GRID_ROWS:
            rows.append(row)
    if any(r.gt_source == "nearest" for r in results) and gt == "auto":
        warnings.warn("some subjects were scored against the nearest stored views (no generator reproduces them); "
                      "see gt_source/view_error_deg in metrics.json", stacklevel=2)
    settings = {"data": str(data_root), "split": split, "limit": limit, "size": size, "views": list(EVAL_VIEWS), "gt": gt,
                "lpips": "ST-LPIPS (AlexNet)" if lpips_weights is None else f"LPIPS ({Path(lpips_weights).name})",
                "psnr_cap_db": PSNR_CAP, "input_camera": input_camera, "device": "cuda" if torch.cuda.is_available() else "cpu"}
    return EvalReport(label, settings, results, csim.status, rows)


def _warm_up(fn: ReconstructFn, sample: dict, size: int) -> None:
    with torch.inference_mode():
        first = input_view(sample["world_to_cam"])
        g = fn(sample["images"][first].float(), sample["masks"][first].float())
    _render(g, eval_views(size)[:1], torch.ones(3))


# --- reconstructors --------------------------------------------------------------------------------------

def model_reconstructor(checkpoint: str | os.PathLike, device: str | torch.device = "auto", refine_steps: int = 0,
                        points: int | None = None) -> ReconstructFn:
    """A network checkpoint (a model dir, a ``step_XXXXXXXX`` dir or a training run dir) as a :data:`ReconstructFn`.

    ``refine_steps`` > 0 adds the test-time refinement of ``reconstruct --refine`` (:func:`panolam.refine.refine_head`)
    against the input view, from the camera the network sampled it with, so its cost counts in ``recon_s``.
    ``points``: dense Gaussians per head (default: the checkpoint's ``inference_dense_points``)."""
    from panolam.pipeline import Reconstructor, resolve_checkpoint

    if refine_steps < 0 or int(refine_steps) != refine_steps:
        raise ValueError(f"refine_steps must be a non-negative integer, got {refine_steps}")
    rec = Reconstructor(resolve_checkpoint(checkpoint), device=device, points=points)
    size = rec.model_cfg.image_size

    def fn(image: torch.Tensor, mask: torch.Tensor | None = None, camera=None) -> Gaussians:
        # Same resize as the training loop's encoder input; a pixel-aligned network estimates the camera
        # unless one is given (a plain network ignores it).
        x = F.interpolate(image[None].to(rec.device).float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        cam = None if camera is None else camera.to(rec.device)
        out = rec.model(x, camera=cam, masks=None if mask is None else mask[None].to(rec.device))
        if refine_steps == 0:
            return out.dense[0]
        return _refine_on_input(out.dense[0], image, mask, out.input_camera, refine_steps)

    return fn


def _refine_on_input(g: Gaussians, image: torch.Tensor, mask: torch.Tensor | None, camera, steps: int) -> Gaussians:
    """``g`` refined against its (3, H, W) input view; ``camera`` the network's InputCamera (None: the nominal
    frontal view of a plain network). Called in the eval's inference mode, which ``refine_head`` leaves."""
    from panolam.refine import refine_head

    h, w = image.shape[-2:]
    cams = Cameras.orbit(0.0, 0.0, width=w, height=h) if camera is None else camera.to_cameras(w, h)
    refined, _ = refine_head(g, image.to(g.device), None if mask is None else mask.to(g.device), cams.to(g.device), steps)
    return refined


def template_baseline(template: str = "builtin", vertices: int = 5023, opacity: float = 0.95,
                      background: Sequence[float] = (1.0, 1.0, 1.0)) -> ReconstructFn:
    """The trivial baseline: the undeformed template's vertices as isotropic Gaussians, all coloured with
    the mean colour of the input view's foreground (non-background pixels)."""
    from panolam.geometry.template import load_template
    from panolam.model.panolam import mean_edge_length

    tpl = load_template(template, vertices)
    verts = tpl.vertices.float()
    scale = mean_edge_length(verts, tpl.faces)
    n = verts.shape[0]

    def fn(image: torch.Tensor, mask: torch.Tensor | None = None, camera=None) -> Gaussians:
        colour = foreground_mean_colour(image, background)
        return Gaussians(means=verts.clone(), quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1),
                         scales=torch.full((n, 3), scale), opacities=torch.full((n,), opacity), colors=colour.expand(n, 3).clone())

    return fn


def foreground(images: torch.Tensor, background: Sequence[float] | torch.Tensor, tol: float) -> torch.Tensor:
    """Pixels of (..., 3, H, W) images that differ from the flat ``background`` colour by more than ``tol`` in any channel."""
    bg = torch.as_tensor(background, dtype=torch.float32, device=images.device)[:, None, None]
    return (images.float() - bg).abs().amax(-3) > tol


def foreground_mean_colour(image: torch.Tensor, background: Sequence[float] = (1.0, 1.0, 1.0), tol: float = 0.02) -> torch.Tensor:
    """Mean RGB of the pixels that differ from the background colour (the whole image if none do)."""
    fg = foreground(image, background, tol)
    flat = image.float().reshape(3, -1)
    return (flat[:, fg.reshape(-1)].mean(1) if fg.any() else flat.mean(1)).clamp(0, 1)

"""``refine_head``: a few Adam steps fitting the visible Gaussians of a head to its input photo.

What moves, and how far: colours and opacities through a logit-space delta (they stay in (0, 1));
positions by ``max_offset · tanh(δ)`` (bounded, a few millimetres at EG3D scale: the head is ~0.6
world units for ~20 cm); scales and rotations stay. Every delta is multiplied by a 0/1 visibility
mask computed once from the input-view render (and limited to the camera-facing half of the head), so
a frozen Gaussian is returned bit for bit; colour deltas are further scaled by :func:`colour_share`,
which fades them out where the photo cannot tell a Gaussian's colour (seen edge-on or through the
surface in front of it).
Colour drift is penalised (squared change, mean over the updated Gaussians) so that a colour only
moves as far as the photo asks. The photometric term is L1 over the person mask at a reduced render
size (``size`` pixels wide); ST-LPIPS is optional (``lpips_weight``) because one ST-LPIPS
forward+backward at 128² costs seconds on a 2-core CPU, more than the whole default budget.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

from panolam.config.render import REFINE_STEPS
from panolam.gaussians import Gaussians
from panolam.refine.adam import make_adam
from panolam.geometry.cameras import Cameras
from panolam.render import rasterize

DEFAULT_STEPS = REFINE_STEPS  # what `refine_head`, `reconstruct` and the app do when not given a count
DEFAULT_SIZE = 128  # render width of the fit (the input view); cost grows with the pixel count
MAX_OFFSET = 0.01  # world units (~3 mm at EG3D scale): offsets are max_offset·tanh(δ)
VISIBLE_WEIGHT = 0.05  # accumulated blending weight (in render pixels) below which a Gaussian is frozen
# How much of its fitted colour change a seen Gaussian keeps, from 0 to 1 linearly between the two values:
# FACING_RAMP on the cosine between its direction from the head's centre and its direction to the
# camera (a Gaussian seen edge-on takes the colour of whatever lies next to it in the photo: fitted
# fully, the face's edge came out as a second face on the side views); OCCLUSION_RAMP on how far (world
# units) it lies behind the rendered depth at its centre (seen through the front surface). On 100
# held-out subjects (BENCHMARKS, session of 2026-12-07 (7)) the ramps kept the side views at the
# unrefined PSNR (+0.12 dB over colouring every seen Gaussian) for 0.16 dB of the front view's gain.
FACING_RAMP = (0.2, 0.6)
OCCLUSION_RAMP = (0.02, 0.05)
LR = 0.1  # Adam step on the colour/opacity logits and the offset pre-tanh parameters
COLOUR_REG = 0.05  # weight of the mean squared colour change of the updated Gaussians
LOGIT_EPS = 1e-4
# The fit's tensors are tiny. On the 2-core machine with a training job running (load average ~3.5), two
# threads (torch and Numba) made 20 steps at 128² take 8.6 s of wall clock against 2.1 s with one; on the
# idle machine two threads take 1.1–1.2 s against 1.7–2.0 s. "auto" therefore uses torch's threads while
# other processes leave them free (:func:`auto_threads`), else fewer, down to one.
THREADS = "auto"
IDLE_MARGIN = 0.5  # cores another process may keep busy before a thread is given up
LOAD_WINDOW = (0.5, 10.0)  # seconds: a previous reading this far back measures the others' load since
LOAD_SAMPLE = 0.1  # seconds of sampling when there is no such reading


def _system_busy_seconds() -> float | None:
    """CPU seconds all cores have spent busy since boot (/proc/stat), or None where there is no /proc."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(x) for x in fields[1:9]]  # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def _reading() -> tuple[float, float, float] | None:
    """(wall clock, system busy CPU s, this process's CPU s including its finished children), or None."""
    busy = _system_busy_seconds()
    if busy is None:
        return None
    t = os.times()
    return time.perf_counter(), busy, t.user + t.system + t.children_user + t.children_system


_last_reading = _reading()


def other_processes_load() -> float | None:
    """Cores kept busy by other processes: the system's busy CPU time minus this process's own, over the
    time since the previous call when that lies within LOAD_WINDOW, else over a LOAD_SAMPLE-second sample.
    None where /proc/stat is missing. Unlike the load average, a batch of photos in this process does not
    count against its own refinement (the load average of a 10-photo run climbs to ~2 on two cores, which
    sent every later refinement to one thread)."""
    global _last_reading
    now = _reading()
    if now is None:
        return None
    before = _last_reading
    if before is None or not LOAD_WINDOW[0] <= now[0] - before[0] <= LOAD_WINDOW[1]:
        before = now
        time.sleep(LOAD_SAMPLE)
        now = _reading()
    _last_reading = now
    return max(0.0, ((now[1] - before[1]) - (now[2] - before[2])) / max(now[0] - before[0], 1e-6))


def auto_threads() -> int:
    """Threads for a CPU refinement: torch's setting when other processes leave the cores free, else the
    cores they leave (``cores − others + IDLE_MARGIN``, at least one). Without /proc/stat, the 1-minute
    load average stands in for the others' load (it counts this process too, so it errs towards one)."""
    others = other_processes_load()
    if others is None:
        try:
            others = os.getloadavg()[0]
        except (AttributeError, OSError):  # no load average (Windows): the safe choice
            return 1
    free = int((os.cpu_count() or 1) - others + IDLE_MARGIN)
    return max(1, min(torch.get_num_threads(), free))


@contextlib.contextmanager
def _limit_threads(n: int | None):
    """Run with at most ``n`` torch and Numba threads (None: leave them), restoring both afterwards."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    numba_before = None
    raster = sys.modules.get("panolam.render._cpu_numba")
    # Numba's OpenMP layer must not be started in a forked child (see the rasteriser); leave it alone there.
    if raster is not None and not getattr(raster, "_in_forked_child", True):
        import numba

        numba_before = numba.get_num_threads()
        numba.set_num_threads(max(1, min(n, numba_before)))
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
        if numba_before is not None:
            import numba

            numba.set_num_threads(numba_before)


@dataclasses.dataclass
class RefineStats:
    """What one refinement did; losses are the masked L1 in the input view at the fit's render size."""

    loss_before: float | None  # None when nothing ran (steps=0)
    loss_after: float | None
    steps: int
    seconds: float
    updated: int  # Gaussians visible in the input view (the ones allowed to change)
    total: int
    size: tuple[int, int]  # (width, height) of the fit's renders
    losses: list[float] = dataclasses.field(default_factory=list)  # total objective per step

    def summary(self) -> str:
        if self.loss_before is None:
            return "refinement: off"
        return (f"refinement: {self.steps} steps at {self.size[0]}x{self.size[1]} in {self.seconds:.2f} s, "
                f"{self.updated}/{self.total} Gaussians updated, input-view L1 {self.loss_before:.4f} -> {self.loss_after:.4f}")


def visibility_weights(gaussians: Gaussians, camera: Cameras, background: float = 1.0, backend: str = "auto") -> torch.Tensor:
    """Accumulated blending weight Σ_pixels wᵢ of every Gaussian in ``camera`` (one view), shape (N,).

    The rendered colour is Σ wᵢ·cᵢ (+ background), so ∂(Σ_pixels red)/∂(red of i) is exactly that
    sum: one backward of the render gives it for every Gaussian, occlusion included.
    """
    return _input_view(gaussians, camera, background, backend)[0]


def _input_view(gaussians: Gaussians, camera: Cameras, background: float, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(:func:`visibility_weights`, rendered expected depth (H, W)) of one view from one render."""
    g = gaussians.detach()
    colors = g.colors.clone().requires_grad_(True)
    with torch.enable_grad():
        out = rasterize(Gaussians(g.means, g.quats, g.scales, g.opacities, colors), camera, background, backend)
        (grad,) = torch.autograd.grad(out.rgb[..., 0].sum(), colors)
    return grad[:, 0], out.depth[0, ..., 0].detach()


def _ramp(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """0 at ``lo``, 1 at ``hi`` (either order), linear between."""
    return ((x - lo) / (hi - lo)).clamp(0, 1)


def colour_share(gaussians: Gaussians, camera: Cameras, background: float = 1.0, backend: str = "auto",
                 visible_weight: float = VISIBLE_WEIGHT, facing: tuple[float, float] | None = FACING_RAMP,
                 occlusion: tuple[float, float] | None = OCCLUSION_RAMP) -> torch.Tensor:
    """How much of its fitted colour change each Gaussian keeps, (N,) in [0, 1]; 0 = keeps its colour.

    A Gaussian takes part when its accumulated weight in the view exceeds ``visible_weight``; its share
    then falls off as it turns away from the camera (``facing``: cosine ramp, direction from the head's
    centre against the direction to the camera; the far half is always 0) and as it lies behind the
    rendered surface (``occlusion``: depth ramp in world units behind the expected depth at its
    centre's pixel; outside the image counts as hidden). None switches a ramp off; with both off it is
    the 0/1 mask of the Gaussians whose opacity and position :func:`refine_head` fits.
    """
    g = gaussians.detach().to(gaussians.device, torch.float32)
    weights, depth = _input_view(g, camera, background, backend)
    return _seen(g, camera, weights, visible_weight) * _ramps(g, camera, depth, facing, occlusion)


def _seen(g: Gaussians, camera: Cameras, weights: torch.Tensor, visible_weight: float) -> torch.Tensor:
    """0/1 per Gaussian: above ``visible_weight`` in the view and on the camera's half of the head."""
    head_centre = g.means.mean(0)
    towards = F.normalize(camera.centers[0].to(g.means) - head_centre, dim=0)
    # The far half stays frozen whatever the weight: through a semi-transparent front, Gaussians on the
    # far side still collect some blending weight, and fitting them copies the face onto the back.
    return ((weights > visible_weight) & ((g.means - head_centre) @ towards > 0)).float()


def _ramps(g: Gaussians, camera: Cameras, depth: torch.Tensor, facing: tuple[float, float] | None,
           occlusion: tuple[float, float] | None) -> torch.Tensor:
    """The product of :func:`colour_share`'s facing and occlusion ramps (1 where both are off)."""
    out = torch.ones_like(g.opacities)
    if facing is not None:
        cam_centre = camera.centers[0].to(g.means)
        cos = (F.normalize(g.means - g.means.mean(0), dim=1) * F.normalize(cam_centre - g.means, dim=1)).sum(1)
        out = out * _ramp(cos, *facing)
    if occlusion is not None:
        uv, z = camera[0].project_points(g.means)
        uv, z = torch.floor(uv[0]).long(), z[0]
        u, v = uv[:, 0], uv[:, 1]
        h, w = depth.shape
        inside = (z > 0) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
        front = depth[v.clamp(0, h - 1), u.clamp(0, w - 1)]
        out = out * torch.where(inside, 1 - _ramp(z - front, *occlusion), torch.zeros_like(z))
    return out


@functools.lru_cache(maxsize=2)
def _perceptual(net: str, device: str):
    from panolam.train.perceptual import Perceptual

    return Perceptual(net=net).to(device)


def _logit(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(LOGIT_EPS, 1 - LOGIT_EPS)
    return torch.log(x) - torch.log1p(-x)


def _prepare(image: torch.Tensor, mask: torch.Tensor | None, camera: Cameras, size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, Cameras]:
    """Target (3,h,w) and mask (1,h,w) resized to the fit's render size, and the camera resized to match."""
    if not isinstance(camera, Cameras) or len(camera) != 1:
        raise ValueError(f"refine_head needs the input camera as Cameras of one view, got {type(camera).__name__}"
                         + (f" with {len(camera)} views" if isinstance(camera, Cameras) else ""))
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"refine_head expects the input image as (3, H, W) in [0, 1], got shape {tuple(image.shape)}")
    h, w = image.shape[-2:]
    if abs(h / w - camera.height / camera.width) > 0.02:
        raise ValueError(f"image {w}x{h} does not have the camera's aspect ratio ({camera.width}x{camera.height})")
    if mask is None:
        mask = image.new_ones(1, h, w)
    mask = mask.reshape(1, *mask.shape[-2:]) if mask.ndim in (2, 3) else mask
    if mask.shape != (1, h, w):
        raise ValueError(f"mask must be (1, H, W) matching the image {h}x{w}, got {tuple(mask.shape)}")
    rw = min(size, w)  # never upsample the photo: a smaller one is fitted at its own size
    rh = max(1, round(rw * camera.height / camera.width))
    both = torch.cat([image, mask.to(image.dtype)])[None].to(device, torch.float32)
    if (h, w) != (rh, rw):
        both = F.interpolate(both, size=(rh, rw), mode="bilinear", align_corners=False, antialias=True)
    target, m = both[0, :3].clamp(0, 1), both[0, 3:].clamp(0, 1)
    if float(m.sum()) < 1:
        raise ValueError("refine_head: the person mask is empty at the fit's render size; nothing to fit")
    return target, m, camera.resized(rw, rh).to(device)


def refine_head(
    gaussians: Gaussians,
    image: torch.Tensor,
    mask: torch.Tensor | None,
    camera: Cameras,
    steps: int = DEFAULT_STEPS,
    *,
    size: int = DEFAULT_SIZE,
    lr: float = LR,
    max_offset: float = MAX_OFFSET,
    colour_reg: float = COLOUR_REG,
    lpips_weight: float = 0.0,
    lpips_net: str = "alex",
    visible_weight: float = VISIBLE_WEIGHT,
    facing: tuple[float, float] | None = FACING_RAMP,
    occlusion: tuple[float, float] | None = OCCLUSION_RAMP,
    background: float = 1.0,
    backend: str = "auto",
    threads: int | str | None = THREADS,
) -> tuple[Gaussians, RefineStats]:
    """Fit the Gaussians the input camera sees to ``image`` (3,H,W in [0,1], composited on ``background``)
    inside ``mask`` (1,H,W in [0,1]; None = whole image); returns new Gaussians and :class:`RefineStats`.

    ``camera`` is the input view at the image's size (any size with the same aspect: it is resized
    to ``size`` pixels wide, or the image's width when that is smaller). ``steps=0`` returns
    ``gaussians`` unchanged. ``facing`` and ``occlusion`` are :func:`colour_share`'s ramps (low, high; None = off).
    ``threads`` caps the CPU threads while it runs (None = as configured; "auto" = :func:`auto_threads`).
    """
    if not isinstance(gaussians, Gaussians) or gaussians.means.ndim != 2:
        raise ValueError("refine_head takes one unbatched Gaussians (N, 3)")
    if steps < 0 or int(steps) != steps:
        raise ValueError(f"steps must be a non-negative integer, got {steps}")
    if size < 8:
        raise ValueError(f"size must be at least 8 pixels, got {size}")
    for name, ramp in (("facing", facing), ("occlusion", occlusion)):
        if ramp is not None and not (len(ramp) == 2 and ramp[0] < ramp[1]):
            raise ValueError(f"{name} must be None or (low, high) with low < high, got {ramp}")
    n = len(gaussians)
    if steps == 0:
        return gaussians, RefineStats(None, None, 0, 0.0, 0, n, (0, 0))
    import panolam.render.rasterize  # noqa: F401 - make sure the rasteriser module is loaded before threads are capped

    if threads == "auto":
        threads = auto_threads()
    # Callers often hold tensors made under torch.inference_mode (a network forward, the eval loop), which
    # autograd cannot save: the fit runs outside inference mode on copies of those.
    with torch.inference_mode(False), _limit_threads(threads if gaussians.device.type == "cpu" else None):
        gaussians = gaussians.map(_outside_inference)
        image, mask = _outside_inference(image), None if mask is None else _outside_inference(mask)
        camera = Cameras(_outside_inference(camera.world_to_cam), _outside_inference(camera.K), camera.width, camera.height)
        return _refine(gaussians, image, mask, camera, steps, size, lr, max_offset, colour_reg, lpips_weight, lpips_net,
                       visible_weight, facing, occlusion, background, backend)


def _outside_inference(t: torch.Tensor) -> torch.Tensor:
    """``t``, or a normal copy of it when it is an inference tensor."""
    return t.clone() if t.is_inference() else t


def _refine(gaussians, image, mask, camera, steps, size, lr, max_offset, colour_reg, lpips_weight, lpips_net,
            visible_weight, facing, occlusion, background, backend) -> tuple[Gaussians, RefineStats]:
    n = len(gaussians)
    t0 = time.perf_counter()
    device, dtype = gaussians.device, gaussians.means.dtype
    target, m, cam = _prepare(image, mask, camera, size, device)
    g0 = gaussians.detach().to(device, torch.float32)

    weights, depth = _input_view(g0, cam, background, backend)
    # Opacities and positions of every seen Gaussian may change (the silhouette is fitted there, at the
    # rim too); colours only by each Gaussian's share, so the rim and what lies under the surface keep
    # the prediction's colours.
    moves = _seen(g0, cam, weights, visible_weight)
    share = moves * _ramps(g0, cam, depth, facing, occlusion)
    vis_idx = moves > 0
    # Gaussians that add nothing to the input view (behind the opaque front, or outside the image) are
    # left out of the fitting renders: at step 0 that render is exact, and it halves a hole-free head.
    drawn = torch.nonzero(weights > 0).squeeze(1)
    c_logit, o_logit = _logit(g0.colors), _logit(g0.opacities)
    c_base, o_base = torch.sigmoid(c_logit), torch.sigmoid(o_logit)
    dc = torch.zeros_like(g0.colors, requires_grad=True)
    do = torch.zeros_like(g0.opacities, requires_grad=True)
    dm = torch.zeros_like(g0.means, requires_grad=True)
    opt = make_adam([dc, do, dm], lr)  # torch's Adam numerics; on CPU without importing torch._dynamo
    perceptual = _perceptual(lpips_net, str(device)) if lpips_weight > 0 else None
    norm = 3 * m.sum()

    def assemble() -> Gaussians:
        # base + (σ(logit + δ) − σ(logit)): exactly the input where δ = 0 or the Gaussian is frozen.
        colors = g0.colors + share[:, None] * (torch.sigmoid(c_logit + dc) - c_base)
        opac = g0.opacities + moves * (torch.sigmoid(o_logit + do) - o_base)
        means = g0.means + moves[:, None] * max_offset * torch.tanh(dm)
        return Gaussians(means, g0.quats, g0.scales, opac, colors)

    def photometric(g: Gaussians, cull: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        rgb = rasterize(g.select(drawn) if cull else g, cam, background, backend).rgb[0].permute(2, 0, 1)
        return (m * (rgb - target).abs()).sum() / norm, rgb

    losses: list[float] = []
    loss_before = None
    with torch.enable_grad():
        for _ in range(steps):
            g = assemble()
            l1, rgb = photometric(g)
            if loss_before is None:
                loss_before = float(l1.detach())
            loss = l1
            if vis_idx.any():
                loss = loss + colour_reg * (g.colors - g0.colors)[vis_idx].pow(2).sum(-1).mean()
            if perceptual is not None:
                # Outside the mask both images show the background, so only the person is compared.
                a, b = (m * rgb + (1 - m) * background)[None], (m * target + (1 - m) * background)[None]
                loss = loss + lpips_weight * perceptual(a, b).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    with torch.no_grad():
        g = assemble()
        g = Gaussians(g.means, g.quats, g.scales, g.opacities.clamp(LOGIT_EPS, 1 - LOGIT_EPS), g.colors.clamp(0, 1))
        loss_after = float(photometric(g, cull=False)[0])
        # Only what was refined is replaced: a frozen Gaussian comes back exactly as it went in (any dtype).
        src = gaussians.detach()
        keep = vis_idx.to(device)
        out = Gaussians(torch.where(keep[:, None], g.means.to(dtype), src.means), src.quats, src.scales,
                        torch.where(keep, g.opacities.to(dtype), src.opacities), torch.where(keep[:, None], g.colors.to(dtype), src.colors))
    if not all(math.isfinite(v) for v in (loss_before, loss_after)):
        raise FloatingPointError("refine_head produced a non-finite loss; the input Gaussians or image contain NaN/inf")
    stats = RefineStats(loss_before, loss_after, steps, time.perf_counter() - t0, int(vis_idx.sum()), n, (cam.width, cam.height), losses)
    return out, stats

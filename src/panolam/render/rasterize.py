"""Public entry of the differentiable Gaussian rasteriser: :func:`rasterize` → :class:`RenderOutput`.

One call renders unbatched :class:`~panolam.gaussians.Gaussians` into C cameras and returns RGB,
accumulated alpha and expected depth, differentiable w.r.t. means, quats, scales, opacities and
colours. Backends: ``"gsplat"`` (CUDA, nerfstudio's gsplat 1.5), ``"cpu"`` (the project's Numba
kernels: tile binning + per-pixel front-to-back blend, hand-written backward), ``"torch"``
(pure PyTorch, autograd, any dtype and device) and ``"auto"`` (gsplat for CUDA tensors, otherwise ``"cpu"``,
falling back to ``"torch"`` with a warning if Numba is unusable; ``PANOLAM_CUDA_RASTERIZER=torch`` makes it
the torch backend for CUDA tensors). All follow gsplat's rules: EWA
projection + 0.3 px² dilation without compensation, α = min(0.999, o·exp(-½dᵀΣ⁻¹d)), α < 1/255
skipped, front-to-back by camera z of the mean, stop when T would fall to ≤ 1e-4, near plane 0.01,
pixel centres at (i + 0.5, j + 0.5). The quaternion is normalised in the forward and gradients
flow through that normalisation. Depth is the expected camera z of the means,
``Σ wᵢ zᵢ / max(α, 1e-10)`` (gsplat's "ED"; 0 where nothing is hit). Background is composited as
``rgb + (1 - α)·bg`` and receives no gradient.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import warnings
from collections.abc import Sequence

import torch

from panolam.gaussians import Gaussians
from panolam.geometry.cameras import Cameras

BACKENDS = ("auto", "cpu", "torch", "gsplat")
CUDA_BACKENDS = ("gsplat", "torch")
CUDA_RASTERIZER_ENV = "PANOLAM_CUDA_RASTERIZER"  # what "auto" means for CUDA tensors (default gsplat)
DEPTH_EPS = 1e-10


@dataclasses.dataclass
class RenderOutput:
    """Rendered images for C cameras: rgb (C,H,W,3), alpha (C,H,W,1), depth (C,H,W,1)."""

    rgb: torch.Tensor
    alpha: torch.Tensor
    depth: torch.Tensor


def rasterize(
    gaussians: Gaussians,
    cameras: Cameras,
    background: float | Sequence[float] | torch.Tensor = 0.0,
    backend: str = "auto",
) -> RenderOutput:
    """Render ``gaussians`` (unbatched, N points) into every camera of ``cameras``."""
    _check_inputs(gaussians, cameras, backend)
    device, dtype = gaussians.means.device, gaussians.means.dtype
    bg = _background(background, device, dtype)
    backend = _resolve_backend(backend, device)
    if backend == "gsplat":
        from panolam.render._gsplat import rasterize_gsplat

        feats, alpha = rasterize_gsplat(gaussians, cameras)
    else:
        feats, alpha = _rasterize_cpu(gaussians, cameras, backend)
    alpha = alpha[..., None]
    rgb = feats[..., :3] + (1.0 - alpha) * bg
    depth = feats[..., 3:4] / torch.clamp(alpha, min=DEPTH_EPS)
    return RenderOutput(rgb=rgb, alpha=alpha, depth=depth)


def _rasterize_cpu(gaussians: Gaussians, cameras: Cameras, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Unnormalised features (C,H,W,4: Σw·rgb, Σw·z) and alpha (C,H,W) via our own kernels."""
    from panolam.render._project import project

    proj = project(gaussians, cameras)
    C = len(cameras)
    feats = torch.cat([gaussians.colors[None].expand(C, -1, -1), proj.depths[..., None]], dim=-1)
    if backend == "cpu":
        from panolam.render._cpu_numba import blend_numba

        return blend_numba(proj, feats, cameras.width, cameras.height)
    from panolam.render._torch_raster import blend_torch

    return blend_torch(proj, feats, cameras.width, cameras.height)


def _resolve_backend(backend: str, device: torch.device) -> str:
    """The concrete backend for ``backend`` and the tensors' device. For CUDA tensors "auto" is gsplat,
    or what ``PANOLAM_CUDA_RASTERIZER`` names (``torch``: a GPU where gsplat is not built)."""
    if backend == "auto":
        if device.type == "cuda":
            choice = os.environ.get(CUDA_RASTERIZER_ENV, "").strip().lower() or "gsplat"
            if choice not in CUDA_BACKENDS:
                raise ValueError(f"{CUDA_RASTERIZER_ENV}={choice!r}: choose {' or '.join(CUDA_BACKENDS)} (or unset it)")
            return choice
        return "cpu" if _numba_usable() else "torch"
    if backend == "cpu" and device.type != "cpu":
        raise ValueError(f"backend='cpu' needs CPU tensors, got Gaussians on {device}; use backend='gsplat' or 'torch', or move them with .to('cpu')")
    return backend


def _numba_usable() -> bool:
    try:
        import panolam.render._cpu_numba  # noqa: F401
    except Exception as err:  # numba missing or broken on this platform
        warnings.warn(f"Numba rasteriser unavailable ({err}); using the slower pure-PyTorch backend", RuntimeWarning, stacklevel=3)
        return False
    return True


def _check_inputs(gaussians: Gaussians, cameras: Cameras, backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown rasteriser backend {backend!r}; choose from {BACKENDS}")
    if not isinstance(gaussians, Gaussians):
        raise TypeError(f"rasterize expects a panolam Gaussians, got {type(gaussians).__name__}")
    if gaussians.means.ndim != 2:
        raise ValueError(f"rasterize takes unbatched Gaussians (N, 3); got means of shape {tuple(gaussians.means.shape)} — render one batch item at a time")
    if not isinstance(cameras, Cameras):
        raise TypeError(f"rasterize expects panolam Cameras, got {type(cameras).__name__}")
    if not gaussians.means.is_floating_point():
        raise TypeError(f"Gaussians must be floating point, got {gaussians.means.dtype}")


def _background(background: float | Sequence[float] | torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    bg = torch.as_tensor(background, dtype=dtype, device=device).detach()
    if bg.ndim == 0:
        bg = bg.expand(3)
    if bg.shape != (3,):
        raise ValueError(f"background must be a float or 3 values (RGB), got shape {tuple(bg.shape)}")
    return bg


def warm_up(backend: str = "auto") -> None:
    """Render and differentiate a tiny scene so that the CPU kernels are loaded before the first real call.

    A new process pays ~0.9 s there on the 2-core box: importing Numba and loading its compiled
    kernels from the on-disk cache. Run on a thread (:func:`warm_up_in_background`) while the model
    loads and the photo is preprocessed, most of that overlaps: the loading runs largely outside the GIL.
    """
    n = 4
    g = Gaussians(torch.zeros(n, 3), torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1), torch.full((n, 3), 0.05),
                  torch.full((n,), 0.5), torch.full((n, 3), 0.5, requires_grad=True))
    with torch.inference_mode(False), torch.enable_grad():
        rasterize(g, Cameras.orbit(0.0, 0.0, width=16, height=16), 1.0, backend).rgb.sum().backward()


def warm_up_in_background(backend: str = "auto") -> threading.Thread:
    """:func:`warm_up` on a daemon thread (started; join it to wait). Errors are left to the first real render."""

    def run() -> None:
        try:
            warm_up(backend)
        except Exception:  # noqa: BLE001 - a broken backend reports itself, with its message, on the real call
            pass

    thread = threading.Thread(target=run, name="panolam-rasteriser-warm-up", daemon=True)
    thread.start()
    return thread

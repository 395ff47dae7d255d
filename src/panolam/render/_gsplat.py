"""The CUDA path: our Gaussians/Cameras mapped onto gsplat 1.5's ``rasterization``.

gsplat is imported lazily, only when this path runs, because its first import compiles CUDA
code with nvcc. Settings are chosen so gsplat applies the same rules as the CPU path: classic
(non-antialiased) mode, eps2d 0.3, near plane 0.01, opacity-aware boxes (gsplat passes the
opacities to its projection), render mode "RGB+D" (accumulated Σw·z; the caller divides by
max(α, 1e-10), which is exactly gsplat's "ED" without a divide-then-multiply round trip). We ask
gsplat for *no* background so that the caller composites it exactly as on CPU; both paths hand
back Σw·rgb, Σw·z and α.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from panolam.gaussians import Gaussians
from panolam.geometry.cameras import Cameras
from panolam.render._project import EPS2D, FAR_PLANE, NEAR_PLANE

INSTALL_HINT = (
    'the CUDA rasteriser needs gsplat: pip install "panolam[cuda]" (gsplat==1.5.3). '
    "gsplat's first import compiles its CUDA code with nvcc, which takes several minutes; "
    "on a machine without CUDA use backend='cpu'"
)


class GsplatUnavailableError(RuntimeError):
    """gsplat is missing or its CUDA extension cannot be built/loaded."""


def load_gsplat_rasterization() -> Callable:
    """Import gsplat's ``rasterization`` or raise :class:`GsplatUnavailableError` with install advice."""
    try:
        from gsplat import rasterization
    except Exception as err:  # ImportError, or nvcc/compile failures raised at import time
        raise GsplatUnavailableError(f"{INSTALL_HINT} (import failed: {err})") from err
    return rasterization


def gsplat_arguments(gaussians: Gaussians, cameras: Cameras) -> dict:
    """Keyword arguments for ``gsplat.rasterization`` equivalent to our CPU rules (float32: gsplat's
    kernels only take float32; autograd carries gradients back through the casts)."""
    device, f32 = gaussians.means.device, torch.float32
    return dict(
        means=gaussians.means.to(f32),
        quats=gaussians.quats.to(f32),
        scales=gaussians.scales.to(f32),
        opacities=gaussians.opacities.to(f32),
        colors=gaussians.colors.to(f32),
        viewmats=cameras.world_to_cam.to(device=device, dtype=f32),
        Ks=cameras.K.to(device=device, dtype=f32),
        width=int(cameras.width),
        height=int(cameras.height),
        near_plane=NEAR_PLANE,
        far_plane=FAR_PLANE,
        eps2d=EPS2D,
        radius_clip=0.0,
        packed=False,
        tile_size=16,
        backgrounds=None,
        render_mode="RGB+D",
        rasterize_mode="classic",
    )


def rasterize_gsplat(gaussians: Gaussians, cameras: Cameras) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (C,H,W,4: Σw·rgb, Σw·z) and alpha (C,H,W) rendered by gsplat."""
    if gaussians.means.device.type != "cuda":
        raise ValueError(f"backend='gsplat' needs CUDA tensors, got Gaussians on {gaussians.means.device}; use backend='cpu'")
    rasterization = load_gsplat_rasterization()
    try:
        return render_with(rasterization, gaussians, cameras)
    except (ImportError, OSError) as err:  # some gsplat versions build the extension on first call
        raise GsplatUnavailableError(f"{INSTALL_HINT} (CUDA extension failed: {err})") from err


def render_with(rasterization: Callable, gaussians: Gaussians, cameras: Cameras) -> tuple[torch.Tensor, torch.Tensor]:
    """Call a gsplat-compatible ``rasterization`` and convert its output to our convention."""
    if len(gaussians) == 0:
        zeros = gaussians.means.new_zeros(len(cameras), cameras.height, cameras.width, 4)
        return zeros, zeros[..., 0]
    render, alphas, _ = rasterization(**gsplat_arguments(gaussians, cameras))
    feats, alpha = split_gsplat_render(render, alphas)
    dtype = gaussians.means.dtype
    return feats.to(dtype), alpha.to(dtype)


def split_gsplat_render(render: torch.Tensor, alphas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """gsplat "RGB+D" output (C,H,W,4), alpha (C,H,W,1) → our (Σw·rgb ‖ Σw·z, α (C,H,W))."""
    return render, alphas[..., 0]

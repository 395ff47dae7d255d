"""Pure-PyTorch alpha blending of projected Gaussians (``backend="torch"``).

Slower than the Numba kernels but needs nothing compiled, supports any float dtype and is
differentiated by autograd, so it is the cross-check for the compiled path and the fallback
where Numba cannot run. The image is cut into square tiles; each tile blends only the Gaussians
whose opacity-aware box touches it, as a dense (pixels × Gaussians) problem. Front-to-back
termination is exact: transmittance only decreases, so "stop when T·(1-α) would be ≤ 1e-4" keeps
the prefix of Gaussians whose inclusive transmittance stays above 1e-4. With gradients on, each
tile is checkpointed so memory stays at one tile's worth of intermediates.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from panolam.render._project import ALPHA_THRESHOLD, Projected

T_MIN = 1e-4
MAX_ALPHA = 0.999


def _blend_tile(pix: torch.Tensor, means2d: torch.Tensor, conics: torch.Tensor, opac: torch.Tensor, feats: torch.Tensor):
    """Blend depth-sorted Gaussians over pixel centres ``pix`` (P, 2): returns features (P, F) and alpha (P,)."""
    d = means2d[None, :, :] - pix[:, None, :]
    dx, dy = d[..., 0], d[..., 1]
    sigma = 0.5 * (conics[:, 0] * dx * dx + conics[:, 2] * dy * dy) + conics[:, 1] * dx * dy
    alpha = torch.clamp(opac * torch.exp(-sigma), max=MAX_ALPHA)
    alpha = torch.where((sigma >= 0) & (alpha >= ALPHA_THRESHOLD), alpha, torch.zeros_like(alpha))
    t_incl = torch.cumprod(1.0 - alpha, dim=1)
    t_excl = torch.cat([torch.ones_like(t_incl[:, :1]), t_incl[:, :-1]], dim=1)
    weights = alpha * t_excl * (t_incl > T_MIN)
    return weights @ feats, weights.sum(dim=1)


def blend_torch(proj: Projected, feats: torch.Tensor, width: int, height: int, tile: int = 32):
    """Features (C, H, W, F) = Σ w_i f_i and alpha (C, H, W) = Σ w_i for per-camera features (C, N, F)."""
    C, _, nf = feats.shape
    dtype, device = feats.dtype, feats.device
    out_rows = []
    use_ckpt = torch.is_grad_enabled() and any(t.requires_grad for t in (proj.means2d, proj.conics, proj.opacities, feats))
    ys, xs = torch.meshgrid(torch.arange(height, device=device, dtype=dtype), torch.arange(width, device=device, dtype=dtype), indexing="ij")
    pix_all = torch.stack([xs, ys], dim=-1) + 0.5  # (H, W, 2) pixel centres
    for c in range(C):
        n_vis = int(proj.valid[c].sum())
        idx = proj.order[c, :n_vis]
        m2, co, op, fe = proj.means2d[c, idx], proj.conics[c, idx], proj.opacities[c, idx], feats[c, idx]
        with torch.no_grad():
            r = proj.radii[c, idx].to(dtype)
            lo = torch.ceil(m2.detach() - r - 0.5)  # first pixel index whose centre is inside the box
            hi = torch.floor(m2.detach() + r - 0.5)
        rows = []
        for y0 in range(0, height, tile):
            row = []
            for x0 in range(0, width, tile):
                y1, x1 = min(y0 + tile, height), min(x0 + tile, width)
                sel = torch.nonzero((hi[:, 0] >= x0) & (lo[:, 0] <= x1 - 1) & (hi[:, 1] >= y0) & (lo[:, 1] <= y1 - 1)).squeeze(1)
                if len(sel) == 0:
                    row.append(torch.zeros(y1 - y0, x1 - x0, nf + 1, dtype=dtype, device=device))
                    continue
                pix = pix_all[y0:y1, x0:x1].reshape(-1, 2)
                args = (pix, m2[sel], co[sel], op[sel], fe[sel])
                f, a = checkpoint(_blend_tile, *args, use_reentrant=False) if use_ckpt else _blend_tile(*args)
                row.append(torch.cat([f, a[:, None]], dim=1).reshape(y1 - y0, x1 - x0, nf + 1))
            rows.append(torch.cat(row, dim=1))
        out_rows.append(torch.cat(rows, dim=0))
    out = torch.stack(out_rows) if out_rows else torch.zeros(0, height, width, nf + 1, dtype=dtype, device=device)
    return out[..., :nf], out[..., nf]


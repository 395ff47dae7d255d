"""Pure-PyTorch alpha blending of projected Gaussians (``backend="torch"``).

Slower than the Numba kernels but needs nothing compiled, supports any float dtype and is
differentiated by autograd, so it is the cross-check for the compiled path and the fallback
where Numba cannot run; it also runs on CUDA tensors (``PANOLAM_CUDA_RASTERIZER=torch``: training on a GPU
without gsplat's build). Gaussians are binned into 16×16 tiles by their opacity-aware box (as in
the Numba path), tiles are sorted by how many Gaussians they hold and blended a chunk of tiles at
a time as a dense (tiles × pixels × Gaussians) problem padded to the chunk's longest list.
Front-to-back termination is exact without a loop: transmittance only decreases, so "stop when
T·(1-α) would be ≤ 1e-4" keeps the prefix of Gaussians whose inclusive transmittance stays above
1e-4. With gradients on, each chunk is checkpointed so memory stays at one chunk's intermediates.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from panolam.render._project import ALPHA_THRESHOLD, Projected

T_MIN = 1e-4
MAX_ALPHA = 0.999
TILE = 16
CHUNK_ELEMENTS = 1 << 22  # tiles × pixels × Gaussians per dense chunk (~16 MB per float32 temporary)


def _blend_chunk(
    pix: torch.Tensor, means2d: torch.Tensor, conics: torch.Tensor, opac: torch.Tensor, feats: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Blend padded, depth-sorted lists: pix (T, P, 2), per-list tensors (T, M, ·), mask (T, M)."""
    d = means2d[:, None, :, :] - pix[:, :, None, :]  # (T, P, M, 2)
    dx, dy = d[..., 0], d[..., 1]
    co = conics[:, None]
    sigma = 0.5 * (co[..., 0] * dx * dx + co[..., 2] * dy * dy) + co[..., 1] * dx * dy
    alpha = torch.clamp(opac[:, None] * torch.exp(-sigma), max=MAX_ALPHA)
    keep = (sigma >= 0) & (alpha >= ALPHA_THRESHOLD) & mask[:, None]
    alpha = torch.where(keep, alpha, torch.zeros_like(alpha))
    t_incl = torch.cumprod(1.0 - alpha, dim=-1)
    t_excl = torch.cat([torch.ones_like(t_incl[..., :1]), t_incl[..., :-1]], dim=-1)
    weights = alpha * t_excl * (t_incl > T_MIN)
    return torch.cat([weights @ feats, weights.sum(-1, keepdim=True)], dim=-1)  # (T, P, F + 1)


def _tile_lists(lo: torch.Tensor, hi: torch.Tensor, ntx: int, nty: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(tile id, Gaussian rank) pairs sorted by tile then depth rank, for boxes [lo, hi] in pixels."""
    t_lo = torch.clamp(torch.div(lo, TILE, rounding_mode="floor"), min=0)
    t_hi = torch.minimum(torch.div(hi, TILE, rounding_mode="floor"), torch.tensor([ntx - 1, nty - 1], device=lo.device))
    span = torch.clamp(t_hi - t_lo + 1, min=0)
    count = span[:, 0] * span[:, 1]
    rank = torch.repeat_interleave(torch.arange(len(count), device=lo.device), count)
    local = torch.arange(int(count.sum()), device=lo.device) - torch.repeat_interleave(torch.cumsum(count, 0) - count, count)
    w = span[rank, 0]
    tile = (t_lo[rank, 1] + torch.div(local, w, rounding_mode="floor")) * ntx + t_lo[rank, 0] + local % w
    key = tile * max(len(count), 1) + rank
    order = torch.argsort(key)
    return tile[order], rank[order]


def _blend_camera(
    m2: torch.Tensor, co: torch.Tensor, op: torch.Tensor, fe: torch.Tensor, radii: torch.Tensor, width: int, height: int, use_ckpt: bool
) -> torch.Tensor:
    """(H, W, F + 1) image for one camera from depth-sorted visible Gaussians."""
    dtype, nf, device = fe.dtype, fe.shape[1], fe.device
    ntx, nty = -(-width // TILE), -(-height // TILE)
    out = torch.zeros(ntx * nty, TILE * TILE, nf + 1, dtype=dtype, device=device)
    with torch.no_grad():
        # First/last pixel whose centre is inside the box, clamped before the integer cast.
        bound = torch.tensor([width, height], dtype=dtype, device=device)
        lo = torch.clamp(torch.ceil(m2.detach() - radii - 0.5), min=-1.0)
        lo = torch.minimum(lo, bound).long()
        hi = torch.clamp(torch.floor(m2.detach() + radii - 0.5), min=-1.0)
        hi = torch.minimum(hi, bound).long()
        tile_of, rank = _tile_lists(lo, hi, ntx, nty)
        counts = torch.bincount(tile_of, minlength=ntx * nty)
        starts = torch.cumsum(counts, 0) - counts
        by_size = torch.argsort(counts, descending=True, stable=True)
        by_size = by_size[counts[by_size] > 0]
        ly, lx = torch.meshgrid(torch.arange(TILE, device=device), torch.arange(TILE, device=device), indexing="ij")
        local = torch.stack([lx, ly], -1).reshape(-1, 2).to(dtype) + 0.5
    results, tiles_done = [], []
    i = 0
    while i < len(by_size):
        m_max = int(counts[by_size[i]])
        n_t = max(1, min(len(by_size) - i, CHUNK_ELEMENTS // (TILE * TILE * m_max)))
        tiles = by_size[i : i + n_t]
        with torch.no_grad():
            slot = torch.arange(m_max, device=device)
            mask = slot[None] < counts[tiles][:, None]
            pos = torch.where(mask, starts[tiles][:, None] + slot[None], torch.zeros_like(mask, dtype=torch.long))
            idx = rank[pos]  # (n_t, m_max) Gaussian ranks, padding points at rank[0] but is masked
            origin = torch.stack([tiles % ntx, torch.div(tiles, ntx, rounding_mode="floor")], -1).to(dtype) * TILE
            pix = origin[:, None, :] + local[None]
        args = (pix, m2[idx], co[idx], op[idx], fe[idx], mask)
        results.append(checkpoint(_blend_chunk, *args, use_reentrant=False) if use_ckpt else _blend_chunk(*args))
        tiles_done.append(tiles)
        i += n_t
    if results:
        out = out.index_put((torch.cat(tiles_done),), torch.cat(results))
    img = out.reshape(nty, ntx, TILE, TILE, nf + 1).permute(0, 2, 1, 3, 4).reshape(nty * TILE, ntx * TILE, nf + 1)
    return img[:height, :width]


def blend_torch(proj: Projected, feats: torch.Tensor, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (C, H, W, F) = Σ wᵢ fᵢ and alpha (C, H, W) = Σ wᵢ for per-camera features (C, N, F)."""
    C, _, nf = feats.shape
    use_ckpt = torch.is_grad_enabled() and any(t.requires_grad for t in (proj.means2d, proj.conics, proj.opacities, feats))
    images = []
    for c in range(C):
        idx = proj.order[c, : int(proj.valid[c].sum())]
        radii = proj.radii[c, idx].to(feats.dtype)
        images.append(_blend_camera(proj.means2d[c, idx], proj.conics[c, idx], proj.opacities[c, idx], feats[c, idx], radii, width, height, use_ckpt))
    out = torch.stack(images) if images else feats.new_zeros(0, height, width, nf + 1)
    return out[..., :nf], out[..., nf]

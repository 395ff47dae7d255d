"""Numba kernels for the CPU rasteriser: tile binning, front-to-back blend and its hand-written backward.

The projection stays in torch (see ``_project``); :func:`blend_numba` wraps the kernels in a
``torch.autograd.Function`` whose inputs are the screen-space quantities (2D means, conics,
opacities, per-camera features = RGB + depth). Each camera's image is cut into 16×16 tiles;
every visible Gaussian is listed, in front-to-back order, in each tile its opacity-aware box
touches. The forward (``prange`` over tiles, so both cores work) walks a tile's list in depth
order and, row by row, visits only the pixels inside the Gaussian's α ≥ 1/255 ellipse; each
pixel therefore still sees exactly its Gaussians in depth order, and the kernel saves the final
transmittance and the list position where each pixel stopped. The backward walks the same list
back to front (3DGS-style: T is recovered by dividing by 1-α) and writes one gradient row per
(tile, Gaussian) intersection, so no two threads ever write the same memory; a serial pass then
sums the rows per Gaussian in a fixed order (deterministic). Float64 inputs run the exact float64
kernels (``gradcheck`` runs through them); every other dtype runs float32 kernels that apply each
Gaussian to a whole 16-pixel tile row as one vector (same rule, ~3× faster; see the section below).
``cache=True`` keeps the compiled code next to this file, so only the first call on a machine compiles.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from numba import njit, prange

from panolam.render._project import ALPHA_THRESHOLD, Projected

TILE = 16
T_MIN = 1e-4
MAX_ALPHA = 0.999
N_GRAD = 10  # d/d(mx, my, conic a, b, c, opacity, 4 features)


@njit(cache=True)
def _bin_gaussians(means2d, radii, order, n_valid, width, height, tile):
    """CSR lists of Gaussian ids per (camera, tile), each list in front-to-back order."""
    C = means2d.shape[0]
    ntx = (width + tile - 1) // tile
    nty = (height + tile - 1) // tile
    n_tiles = C * ntx * nty
    counts = np.zeros(n_tiles + 1, np.int64)
    boxes = np.zeros((C, means2d.shape[1], 4), np.int64)
    for c in range(C):
        for k in range(n_valid[c]):
            g = order[c, k]
            # Pixels whose centre (i + 0.5) lies inside [m - r, m + r], clipped to the image.
            x0 = int(max(0.0, math.ceil(means2d[c, g, 0] - radii[c, g, 0] - 0.5)))
            x1 = int(min(width - 1.0, math.floor(means2d[c, g, 0] + radii[c, g, 0] - 0.5)))
            y0 = int(max(0.0, math.ceil(means2d[c, g, 1] - radii[c, g, 1] - 0.5)))
            y1 = int(min(height - 1.0, math.floor(means2d[c, g, 1] + radii[c, g, 1] - 0.5)))
            if x1 < x0 or y1 < y0:
                boxes[c, k, 0] = 1
                boxes[c, k, 1] = 0
                continue
            boxes[c, k, 0], boxes[c, k, 1] = x0 // tile, x1 // tile
            boxes[c, k, 2], boxes[c, k, 3] = y0 // tile, y1 // tile
            for ty in range(boxes[c, k, 2], boxes[c, k, 3] + 1):
                for tx in range(boxes[c, k, 0], boxes[c, k, 1] + 1):
                    counts[1 + (c * nty + ty) * ntx + tx] += 1
    offsets = np.cumsum(counts)
    fill = offsets[:-1].copy()
    ids = np.empty(offsets[-1], np.int64)
    for c in range(C):
        for k in range(n_valid[c]):
            g = order[c, k]
            for ty in range(boxes[c, k, 2], boxes[c, k, 3] + 1):
                for tx in range(boxes[c, k, 0], boxes[c, k, 1] + 1):
                    t = (c * nty + ty) * ntx + tx
                    ids[fill[t]] = g
                    fill[t] += 1
    return offsets, ids


@njit(cache=True, inline="always")
def _gather(c, ids, start, end, means2d, conics, opac, feats, dtype):
    """Copy one tile's Gaussians into a contiguous (n, 11) block of ``dtype`` (the kernel's float type):
    mx my a b c o log(255·o) f0..f3."""
    n = end - start
    nf = feats.shape[2]
    buf = np.empty((n, 7 + nf), dtype)
    for j in range(n):
        g = ids[start + j]
        buf[j, 0], buf[j, 1] = means2d[c, g, 0], means2d[c, g, 1]
        buf[j, 2], buf[j, 3], buf[j, 4] = conics[c, g, 0], conics[c, g, 1], conics[c, g, 2]
        buf[j, 5] = opac[c, g]
        # α ≥ 1/255  ⇔  σ ≤ ln(255·o): test σ before paying for exp().
        buf[j, 6] = math.log(opac[c, g] / ALPHA_THRESHOLD) if opac[c, g] > 0 else -1.0
        for f in range(nf):
            buf[j, 7 + f] = feats[c, g, f]
    return buf


@njit(cache=True, inline="always")
def _row_range(buf, j, y_begin, y_end):
    """Tile rows [r0, r1] that can hold pixel centres with σ ≤ ln(255·o) (one row of slack)."""
    a, b, c, thr = buf[j, 2], buf[j, 3], buf[j, 4], buf[j, 6]
    det = a * c - b * b
    if thr < 0.0 or a <= 0.0 or det <= 0.0:
        return 0, -1
    ry = math.sqrt(2.0 * thr * a / det)  # half-height of the ellipse dᵀ Q d = 2·thr
    my = buf[j, 1] - 0.5
    return int(max(float(y_begin), math.floor(my - ry))), int(min(y_end - 1.0, math.ceil(my + ry)))


@njit(cache=True, inline="always")
def _col_range(buf, j, dy, x_begin, x_end):
    """Columns [c0, c1] of one row where σ ≤ ln(255·o) can hold (one column of slack)."""
    a, b, c, thr = buf[j, 2], buf[j, 3], buf[j, 4], buf[j, 6]
    bdy = b * dy
    disc = bdy * bdy - a * (c * dy * dy - 2.0 * thr)
    if disc < 0.0:
        return 0, -1
    sq = math.sqrt(disc)
    mx = buf[j, 0] - 0.5
    c0 = max(float(x_begin), math.floor(mx - (sq - bdy) / a))
    c1 = min(x_end - 1.0, math.ceil(mx + (sq + bdy) / a))
    return int(c0), int(c1)


@njit(cache=True)
def _tile_bounds(t, width, height, tile):
    """Camera index and pixel box [y0, y1) x [x0, x1) of flat tile index ``t`` (tiles are camera-major, row-major)."""
    ntx = (width + tile - 1) // tile
    nty = (height + tile - 1) // tile
    y0, x0 = ((t // ntx) % nty) * tile, (t % ntx) * tile
    return t // (ntx * nty), y0, x0, min(height, y0 + tile), min(width, x0 + tile)


@njit(cache=True)
def _forward_tile(t, offsets, ids, means2d, conics, opac, feats, width, height, tile, out, t_final, last):
    """Front-to-back blend of tile ``t`` into out/t_final/last. Inside a tile the loop runs over Gaussians (in depth order) and, per row,
    only over the columns their α ≥ 1/255 ellipse can reach, instead of testing every Gaussian at
    every pixel; each pixel still sees exactly its Gaussians in depth order, so the result is the
    per-pixel rule."""
    nf = feats.shape[2]
    c, y0, x0, y1, x1 = _tile_bounds(t, width, height, tile)
    start, end = offsets[t], offsets[t + 1]
    if end == start:
        return
    buf = _gather(c, ids, start, end, means2d, conics, opac, feats, np.float64)
    trans = np.ones((tile, tile))
    acc = np.zeros((tile, tile, nf))
    done = np.zeros((tile, tile), np.bool_)
    stop = np.zeros((tile, tile), np.int64)
    n_open = (y1 - y0) * (x1 - x0)
    for j in range(end - start):
        if n_open == 0:
            break
        r0, r1 = _row_range(buf, j, y0, y1)
        for py in range(r0, r1 + 1):
            dy = buf[j, 1] - (py + 0.5)
            c0, c1 = _col_range(buf, j, dy, x0, x1)
            for px in range(c0, c1 + 1):
                ly, lx = py - y0, px - x0
                if done[ly, lx]:
                    continue
                dx = buf[j, 0] - (px + 0.5)
                sigma = 0.5 * (buf[j, 2] * dx * dx + buf[j, 4] * dy * dy) + buf[j, 3] * dx * dy
                if sigma < 0.0 or sigma > buf[j, 6]:
                    continue
                alpha = min(MAX_ALPHA, buf[j, 5] * math.exp(-sigma))
                if alpha < ALPHA_THRESHOLD:
                    continue
                T = trans[ly, lx]
                next_t = T * (1.0 - alpha)
                if next_t <= T_MIN:
                    done[ly, lx] = True
                    n_open -= 1
                    continue
                w = alpha * T
                for f in range(nf):
                    acc[ly, lx, f] += w * buf[j, 7 + f]
                trans[ly, lx] = next_t
                stop[ly, lx] = j + 1
    for py in range(y0, y1):
        for px in range(x0, x1):
            for f in range(nf):
                out[c, py, px, f] = acc[py - y0, px - x0, f]
            t_final[c, py, px] = trans[py - y0, px - x0]
            last[c, py, px] = stop[py - y0, px - x0]


@njit(parallel=True, cache=True)
def _forward(offsets, ids, means2d, conics, opac, feats, width, height, tile):
    """Blend all (camera, tile) pairs on all cores; returns Σw·f, final T and per-pixel list stop."""
    C, nf = means2d.shape[0], feats.shape[2]
    out, t_final, last = np.zeros((C, height, width, nf)), np.ones((C, height, width)), np.zeros((C, height, width), np.int64)
    for t in prange(offsets.shape[0] - 1):
        _forward_tile(t, offsets, ids, means2d, conics, opac, feats, width, height, tile, out, t_final, last)
    return out, t_final, last


@njit(cache=True)
def _forward_serial(offsets, ids, means2d, conics, opac, feats, width, height, tile):
    """:func:`_forward` on one thread (forked children)."""
    C, nf = means2d.shape[0], feats.shape[2]
    out, t_final, last = np.zeros((C, height, width, nf)), np.ones((C, height, width)), np.zeros((C, height, width), np.int64)
    for t in range(offsets.shape[0] - 1):
        _forward_tile(t, offsets, ids, means2d, conics, opac, feats, width, height, tile, out, t_final, last)
    return out, t_final, last


@njit(cache=True)
def _backward_tile(t, offsets, ids, means2d, conics, opac, feats, width, height, tile, t_final, last, g_feat, g_alpha, rows):
    """Gradient rows of tile ``t``'s intersections (one row per list entry); Gaussians are visited back to front with the same
    row/column spans as the forward, each pixel only for the Gaussians it blended."""
    nf = feats.shape[2]
    c, y0, x0, y1, x1 = _tile_bounds(t, width, height, tile)
    start, end = offsets[t], offsets[t + 1]
    if end == start:
        return
    buf = _gather(c, ids, start, end, means2d, conics, opac, feats, np.float64)
    trans = np.empty((tile, tile))
    for py in range(y0, y1):
        for px in range(x0, x1):
            trans[py - y0, px - x0] = t_final[c, py, px]
    behind = np.zeros((tile, tile, nf))
    for j in range(end - start - 1, -1, -1):
        r = start + j
        r0, r1 = _row_range(buf, j, y0, y1)
        for py in range(r0, r1 + 1):
            dy = buf[j, 1] - (py + 0.5)
            c0, c1 = _col_range(buf, j, dy, x0, x1)
            for px in range(c0, c1 + 1):
                if j >= last[c, py, px]:
                    continue
                ly, lx = py - y0, px - x0
                dx = buf[j, 0] - (px + 0.5)
                sigma = 0.5 * (buf[j, 2] * dx * dx + buf[j, 4] * dy * dy) + buf[j, 3] * dx * dy
                if sigma < 0.0 or sigma > buf[j, 6]:
                    continue
                gauss = math.exp(-sigma)
                raw = buf[j, 5] * gauss
                alpha = min(MAX_ALPHA, raw)
                if alpha < ALPHA_THRESHOLD:
                    continue
                one_m = 1.0 - alpha
                T = trans[ly, lx] / one_m  # transmittance in front of Gaussian j
                trans[ly, lx] = T
                w = alpha * T
                # dL/dα: own colour minus what it hides behind it, plus the silhouette term.
                d_alpha = g_alpha[c, py, px] * t_final[c, py, px] / one_m
                for f in range(nf):
                    gf = g_feat[c, py, px, f]
                    rows[r, 6 + f] += gf * w
                    d_alpha += gf * (buf[j, 7 + f] * T - behind[ly, lx, f] / one_m)
                    behind[ly, lx, f] += buf[j, 7 + f] * w
                if raw >= MAX_ALPHA:
                    continue  # clamped: α does not depend on the Gaussian's parameters
                rows[r, 5] += d_alpha * gauss
                d_sigma = -d_alpha * raw
                rows[r, 0] += d_sigma * (buf[j, 2] * dx + buf[j, 3] * dy)
                rows[r, 1] += d_sigma * (buf[j, 4] * dy + buf[j, 3] * dx)
                rows[r, 2] += d_sigma * 0.5 * dx * dx
                rows[r, 3] += d_sigma * dx * dy
                rows[r, 4] += d_sigma * 0.5 * dy * dy


@njit(parallel=True, cache=True)
def _backward(offsets, ids, means2d, conics, opac, feats, width, height, tile, t_final, last, g_feat, g_alpha):
    """Per-intersection gradient rows (K, 10) for all tiles, on all cores (tiles own disjoint rows)."""
    rows = np.zeros((ids.shape[0], 6 + feats.shape[2]))
    for t in prange(offsets.shape[0] - 1):
        _backward_tile(t, offsets, ids, means2d, conics, opac, feats, width, height, tile, t_final, last, g_feat, g_alpha, rows)
    return rows


@njit(cache=True)
def _backward_serial(offsets, ids, means2d, conics, opac, feats, width, height, tile, t_final, last, g_feat, g_alpha):
    """:func:`_backward` on one thread (forked children)."""
    rows = np.zeros((ids.shape[0], 6 + feats.shape[2]))
    for t in range(offsets.shape[0] - 1):
        _backward_tile(t, offsets, ids, means2d, conics, opac, feats, width, height, tile, t_final, last, g_feat, g_alpha, rows)
    return rows


@njit(cache=True)
def _reduce_rows(rows, offsets, ids, C, n, tiles_per_cam):
    """Sum per-intersection rows into per-(camera, Gaussian) gradients, in a fixed order."""
    out = np.zeros((C, n, rows.shape[1]))
    for t in range(offsets.shape[0] - 1):
        c = t // tiles_per_cam
        for k in range(offsets[t], offsets[t + 1]):
            out[c, ids[k]] += rows[k]
    return out


# ---------------------------------------------------------------- float32 kernels, one tile row per vector
# The float64 kernels above are the exact reference (gradcheck runs through them). Float32 inputs, i.e.
# every render of the app, the previews, refinement and CPU training, take the kernels below instead:
# the same per-pixel rule, but a Gaussian is applied to a whole 16-pixel tile row at once, written
# branch-free (masks and selects) so that LLVM turns each row into one AVX-512 vector (two AVX2 ones)
# instead of visiting pixels one by one; exp() is a polynomial because libm's does not vectorise.
# A 24-frame 256² turntable of a 12,000-Gaussian head, 2 cores: forward 0.58–0.92 s -> 0.24–0.25 s, backward
# 1.34–1.54 s -> 0.45–0.48 s (BENCHMARKS.md, session of 2026-12-07 (10)).
_F32 = np.float32
_FAST = {"contract", "reassoc", "nsz", "arcp"}  # no nnan/ninf: masked lanes may hold inf and must stay selectable
_HALF, _ONE, _ZERO = _F32(0.5), _F32(1.0), _F32(0.0)
_ATH32, _TMIN32, _MAXA32 = _F32(ALPHA_THRESHOLD), _F32(T_MIN), _F32(MAX_ALPHA)
_SIXTEENTH = _F32(1.0 / 16.0)
_EXP_TAYLOR = tuple(_F32(1.0 / math.factorial(k)) for k in range(8))


@njit(cache=True, inline="always", fastmath=_FAST)
def _exp_neg32(s):
    """exp(-s) for s in [0, ln 255] (what the α ≥ 1/255 test lets through) to ~1e-6 relative: a degree-7 Taylor
    polynomial of exp(-s/16), squared four times. Lanes outside that range are masked by the caller."""
    y = -s * _SIXTEENTH
    c = _EXP_TAYLOR
    p = c[0] + y * (c[1] + y * (c[2] + y * (c[3] + y * (c[4] + y * (c[5] + y * (c[6] + y * c[7]))))))
    p = p * p
    p = p * p
    p = p * p
    return p * p


@njit(cache=True, fastmath=_FAST)
def _forward_tile32(t, offsets, ids, means2d, conics, opac, feats, width, height, out, t_final, last):
    """:func:`_forward_tile` in float32 for RGB + depth features (4), one 16-lane row at a time. ``live`` is 1
    for pixels inside the image that have not reached the transmittance stop; rows with none left are
    skipped, like the tile itself."""
    c, y0, x0, y1, x1 = _tile_bounds(t, width, height, TILE)
    start, end = offsets[t], offsets[t + 1]
    if end == start:
        return
    buf = _gather(c, ids, start, end, means2d, conics, opac, feats, _F32)
    trans = np.ones((TILE, TILE), _F32)
    acc = np.zeros((4, TILE, TILE), _F32)
    live = np.zeros((TILE, TILE), _F32)
    stop = np.zeros((TILE, TILE), np.int32)
    row_open = np.zeros(TILE, np.int64)
    for ly in range(y1 - y0):
        row_open[ly] = x1 - x0
        for lx in range(x1 - x0):
            live[ly, lx] = _ONE
    n_open = (y1 - y0) * (x1 - x0)
    for j in range(end - start):
        if n_open == 0:
            break
        r0, r1 = _row_range(buf, j, y0, y1)
        a, b, cc, o, thr = buf[j, 2], buf[j, 3], buf[j, 4], buf[j, 5], buf[j, 6]
        half_a = _HALF * a
        dx0 = buf[j, 0] - _F32(x0) - _HALF  # dx of lane 0; lane lx has dx0 - lx
        j1 = np.int32(j + 1)
        f0, f1, f2, f3 = buf[j, 7], buf[j, 8], buf[j, 9], buf[j, 10]
        for py in range(r0, r1 + 1):
            ly = py - y0
            if row_open[ly] == 0:
                continue
            dy = buf[j, 1] - (_F32(py) + _HALF)
            c0, c1 = _col_range(buf, j, dy, x0, x1)
            if c1 < c0:
                continue
            cdy, bdy = _HALF * cc * dy * dy, b * dy
            n_sat = 0
            for lx in range(TILE):
                dx = dx0 - _F32(lx)
                sigma = half_a * dx * dx + cdy + bdy * dx
                alpha = min(_MAXA32, o * _exp_neg32(sigma))
                T = trans[ly, lx]
                next_t = T * (_ONE - alpha)
                ok = (live[ly, lx] > _ZERO) & (sigma >= _ZERO) & (sigma <= thr) & (alpha >= _ATH32)
                blend = ok & (next_t > _TMIN32)
                saturated = ok & (next_t <= _TMIN32)
                wl = alpha * T if blend else _ZERO
                acc[0, ly, lx] += wl * f0
                acc[1, ly, lx] += wl * f1
                acc[2, ly, lx] += wl * f2
                acc[3, ly, lx] += wl * f3
                trans[ly, lx] = next_t if blend else T
                stop[ly, lx] = j1 if blend else stop[ly, lx]
                live[ly, lx] = _ZERO if saturated else live[ly, lx]
                n_sat += 1 if saturated else 0
            row_open[ly] -= n_sat
            n_open -= n_sat
    for py in range(y0, y1):
        for px in range(x0, x1):
            for f in range(4):
                out[c, py, px, f] = acc[f, py - y0, px - x0]
            t_final[c, py, px] = trans[py - y0, px - x0]
            last[c, py, px] = stop[py - y0, px - x0]


@njit(cache=True, fastmath=_FAST)
def _backward_tile32(t, offsets, ids, means2d, conics, opac, feats, width, height, t_final, last, g_feat, g_alpha, rows):
    """:func:`_backward_tile` in float32 for RGB + depth features, one 16-lane row at a time; each (Gaussian, row)
    adds its lane sums to the Gaussian's gradient row. Rows whose pixels all stopped before Gaussian j are skipped."""
    c, y0, x0, y1, x1 = _tile_bounds(t, width, height, TILE)
    start, end = offsets[t], offsets[t + 1]
    if end == start:
        return
    buf = _gather(c, ids, start, end, means2d, conics, opac, feats, _F32)
    trans = np.ones((TILE, TILE), _F32)
    stop = np.zeros((TILE, TILE), np.int64)  # 0 outside the image: nothing was blended there
    g_sil = np.zeros((TILE, TILE), _F32)
    g_f = np.zeros((4, TILE, TILE), _F32)
    behind = np.zeros((4, TILE, TILE), _F32)  # Σ w·f of the Gaussians behind j (already visited)
    row_last = np.zeros(TILE, np.int64)
    for py in range(y0, y1):
        ly = py - y0
        for px in range(x0, x1):
            lx = px - x0
            trans[ly, lx] = t_final[c, py, px]
            stop[ly, lx] = last[c, py, px]
            g_sil[ly, lx] = g_alpha[c, py, px] * t_final[c, py, px]
            for f in range(4):
                g_f[f, ly, lx] = g_feat[c, py, px, f]
            row_last[ly] = max(row_last[ly], last[c, py, px])
    for j in range(end - start - 1, -1, -1):
        r0, r1 = _row_range(buf, j, y0, y1)
        a, b, cc, o, thr = buf[j, 2], buf[j, 3], buf[j, 4], buf[j, 5], buf[j, 6]
        f0, f1, f2, f3 = buf[j, 7], buf[j, 8], buf[j, 9], buf[j, 10]
        half_a = _HALF * a
        dx0 = buf[j, 0] - _F32(x0) - _HALF
        s_mx, s_my, s_a, s_b, s_c, s_o = _ZERO, _ZERO, _ZERO, _ZERO, _ZERO, _ZERO
        s_f0, s_f1, s_f2, s_f3 = _ZERO, _ZERO, _ZERO, _ZERO
        for py in range(r0, r1 + 1):
            ly = py - y0
            if j >= row_last[ly]:
                continue
            dy = buf[j, 1] - (_F32(py) + _HALF)
            c0, c1 = _col_range(buf, j, dy, x0, x1)
            if c1 < c0:
                continue
            cdy, bdy = _HALF * cc * dy * dy, b * dy
            for lx in range(TILE):
                dx = dx0 - _F32(lx)
                sigma = half_a * dx * dx + cdy + bdy * dx
                e = _exp_neg32(sigma)
                alpha = min(_MAXA32, o * e)
                ok = (j < stop[ly, lx]) & (sigma >= _ZERO) & (sigma <= thr) & (alpha >= _ATH32)
                inv = _ONE / (_ONE - alpha)
                T = trans[ly, lx] * inv if ok else trans[ly, lx]  # transmittance in front of Gaussian j
                trans[ly, lx] = T
                wl = alpha * T if ok else _ZERO
                gf0, gf1, gf2, gf3 = g_f[0, ly, lx], g_f[1, ly, lx], g_f[2, ly, lx], g_f[3, ly, lx]
                # dL/dα: own features minus what α hides behind it, plus the silhouette term
                d_alpha = (g_sil[ly, lx] * inv
                           + gf0 * (f0 * T - behind[0, ly, lx] * inv) + gf1 * (f1 * T - behind[1, ly, lx] * inv)
                           + gf2 * (f2 * T - behind[2, ly, lx] * inv) + gf3 * (f3 * T - behind[3, ly, lx] * inv))
                behind[0, ly, lx] += f0 * wl
                behind[1, ly, lx] += f1 * wl
                behind[2, ly, lx] += f2 * wl
                behind[3, ly, lx] += f3 * wl
                s_f0 += gf0 * wl
                s_f1 += gf1 * wl
                s_f2 += gf2 * wl
                s_f3 += gf3 * wl
                gauss = e if ok else _ZERO
                raw = o * gauss
                # clamped α (raw ≥ 0.999) does not depend on the Gaussian's parameters; unblended lanes have gauss = 0
                da = d_alpha if raw < _MAXA32 else _ZERO
                da = da if ok else _ZERO
                d_sigma = -da * raw
                s_o += da * gauss
                s_mx += d_sigma * (a * dx + b * dy)
                s_my += d_sigma * (cc * dy + b * dx)
                s_a += d_sigma * _HALF * dx * dx
                s_b += d_sigma * dx * dy
                s_c += d_sigma * _HALF * dy * dy
        r = start + j
        rows[r, 0] += s_mx
        rows[r, 1] += s_my
        rows[r, 2] += s_a
        rows[r, 3] += s_b
        rows[r, 4] += s_c
        rows[r, 5] += s_o
        rows[r, 6] += s_f0
        rows[r, 7] += s_f1
        rows[r, 8] += s_f2
        rows[r, 9] += s_f3


@njit(parallel=True, cache=True)
def _forward32(offsets, ids, means2d, conics, opac, feats, width, height):
    """:func:`_forward` with the float32 row kernel."""
    C, nf = means2d.shape[0], feats.shape[2]
    out, t_final = np.zeros((C, height, width, nf), _F32), np.ones((C, height, width), _F32)
    last = np.zeros((C, height, width), np.int64)
    for t in prange(offsets.shape[0] - 1):
        _forward_tile32(t, offsets, ids, means2d, conics, opac, feats, width, height, out, t_final, last)
    return out, t_final, last


@njit(cache=True)
def _forward32_serial(offsets, ids, means2d, conics, opac, feats, width, height):
    """:func:`_forward32` on one thread (forked children)."""
    C, nf = means2d.shape[0], feats.shape[2]
    out, t_final = np.zeros((C, height, width, nf), _F32), np.ones((C, height, width), _F32)
    last = np.zeros((C, height, width), np.int64)
    for t in range(offsets.shape[0] - 1):
        _forward_tile32(t, offsets, ids, means2d, conics, opac, feats, width, height, out, t_final, last)
    return out, t_final, last


@njit(parallel=True, cache=True)
def _backward32(offsets, ids, means2d, conics, opac, feats, width, height, t_final, last, g_feat, g_alpha):
    """:func:`_backward` with the float32 row kernel (rows in float32; :func:`_reduce_rows` sums them in float64)."""
    rows = np.zeros((ids.shape[0], 6 + feats.shape[2]), _F32)
    for t in prange(offsets.shape[0] - 1):
        _backward_tile32(t, offsets, ids, means2d, conics, opac, feats, width, height, t_final, last, g_feat, g_alpha, rows)
    return rows


@njit(cache=True)
def _backward32_serial(offsets, ids, means2d, conics, opac, feats, width, height, t_final, last, g_feat, g_alpha):
    """:func:`_backward32` on one thread (forked children)."""
    rows = np.zeros((ids.shape[0], 6 + feats.shape[2]), _F32)
    for t in range(offsets.shape[0] - 1):
        _backward_tile32(t, offsets, ids, means2d, conics, opac, feats, width, height, t_final, last, g_feat, g_alpha, rows)
    return rows


# Numba's parallel layer here is GNU OpenMP, which kills a forked child that starts a parallel
# region after the parent used one (e.g. DataLoader workers that render). Forked children
# therefore run the same tile code through the serial drivers.
_in_forked_child = False


def _mark_forked_child() -> None:
    global _in_forked_child
    _in_forked_child = True


os.register_at_fork(after_in_child=_mark_forked_child)


def _kernels():
    """(forward, backward) kernels safe to call in this process."""
    return (_forward_serial, _backward_serial) if _in_forked_child else (_forward, _backward)


def _kernels32():
    """(forward, backward) float32 row kernels safe to call in this process."""
    return (_forward32_serial, _backward32_serial) if _in_forked_child else (_forward32, _backward32)


def _np(t: torch.Tensor, dtype) -> np.ndarray:
    """Detached, contiguous NumPy copy in ``dtype`` (float64 for the exact kernels, float32 for the row kernels)."""
    return np.ascontiguousarray(t.detach().cpu().to(torch.float64 if dtype == np.float64 else torch.float32).numpy())


class _BlendFunction(torch.autograd.Function):
    """Screen-space blend with the hand-written backward; integer inputs carry no gradient."""

    @staticmethod
    def forward(ctx, means2d, conics, opac, feats, radii, order, n_valid, width, height):
        # float64 (or other than RGB + depth): the exact kernels; otherwise the float32 row kernels
        exact = means2d.dtype == torch.float64 or feats.shape[-1] != 4
        np_dtype = np.float64 if exact else np.float32
        m2, co, op, fe = (_np(x, np_dtype) for x in (means2d, conics, opac, feats))
        offsets, ids = _bin_gaussians(m2 if exact else _np(means2d, np.float64), radii, order, n_valid, width, height, TILE)
        if exact:
            out, t_final, last = _kernels()[0](offsets, ids, m2, co, op, fe, width, height, TILE)
        else:
            out, t_final, last = _kernels32()[0](offsets, ids, m2, co, op, fe, width, height)
        ctx.state = (exact, m2, co, op, fe, offsets, ids, t_final, last, width, height)
        ctx.dtype = means2d.dtype
        return torch.from_numpy(out).to(means2d.dtype), torch.from_numpy(1.0 - t_final).to(means2d.dtype)

    @staticmethod
    def backward(ctx, g_feat, g_alpha):
        exact, m2, co, op, fe, offsets, ids, t_final, last, width, height = ctx.state
        C, n = m2.shape[0], m2.shape[1]
        gf = np.zeros(fe.shape[:1] + (height, width, fe.shape[2]), fe.dtype) if g_feat is None else _np(g_feat, fe.dtype)
        ga = np.zeros((C, height, width), fe.dtype) if g_alpha is None else _np(g_alpha, fe.dtype)
        if exact:
            rows = _kernels()[1](offsets, ids, m2, co, op, fe, width, height, TILE, t_final, last, gf, ga)
        else:
            rows = _kernels32()[1](offsets, ids, m2, co, op, fe, width, height, t_final, last, gf, ga)
        ntx, nty = -(-width // TILE), -(-height // TILE)
        grads = torch.from_numpy(_reduce_rows(rows, offsets, ids, C, n, ntx * nty)).to(ctx.dtype)
        return grads[..., 0:2], grads[..., 2:5], grads[..., 5], grads[..., 6:], None, None, None, None, None


def blend_numba(proj: Projected, feats: torch.Tensor, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (C, H, W, F) = Σ wᵢ fᵢ and alpha (C, H, W) = Σ wᵢ with the Numba kernels."""
    radii = np.ascontiguousarray(proj.radii.cpu().numpy().astype(np.float64))
    order = np.ascontiguousarray(proj.order.cpu().numpy())
    n_valid = proj.valid.sum(dim=1).cpu().numpy().astype(np.int64)
    return _BlendFunction.apply(proj.means2d, proj.conics, proj.opacities, feats, radii, order, n_valid, width, height)

"""``ProceduralHeads``: the embedded default generator — random Gaussian heads, no download needed.

Each seed builds one subject on the project's head template: a smooth random deformation of the
template (global proportions, jaw width, a few normal-direction bumps), area-weighted surface
samples turned into flat disc Gaussians coloured by region (skin tone modulated by a patch of a
natural photograph and value noise, lips, brows, irises with pupils, ears, neck, optional collar
and beard), hair grown away from the scalp (from bald and buzz cuts through short shells and curly
volumes to bobs, long curtains falling well below the template, ponytails and fringes), optional
hats/caps and glasses, and baked Lambert + ambient lighting from a random light. Everything is
drawn from ``numpy.random.default_rng(seed)``, so a seed always gives the same head; the subject's
Gaussians are rendered with :func:`panolam.render.rasterize.rasterize` (premultiplied RGB on black
plus alpha, as the generator interface asks).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np
import torch

from panolam.data.generators import Subject
from panolam.data.textures import CLOTH_PHOTOS, HAIR_PHOTOS, SKIN_PHOTOS, TextureMap, pattern, value_noise
from panolam.gaussians import Gaussians
from panolam.geometry.cameras import Cameras

SKIN_TONES = np.array([[0.98, 0.85, 0.76], [0.93, 0.74, 0.61], [0.80, 0.58, 0.44], [0.60, 0.41, 0.29], [0.38, 0.25, 0.17], [0.25, 0.16, 0.11]])
HAIR_COLOURS = {
    "black": (0.05, 0.045, 0.04), "dark_brown": (0.18, 0.11, 0.07), "brown": (0.35, 0.22, 0.13),
    "auburn": (0.5, 0.2, 0.1), "blond": (0.85, 0.7, 0.45), "grey": (0.65, 0.65, 0.65), "white": (0.92, 0.9, 0.86),
    "red": (0.75, 0.1, 0.08), "blue": (0.15, 0.3, 0.75), "pink": (0.95, 0.45, 0.65), "green": (0.2, 0.6, 0.3),
}
HAIR_COLOUR_P = np.array([0.25, 0.2, 0.15, 0.08, 0.1, 0.06, 0.03, 0.03, 0.03, 0.04, 0.03])
HAIR_STYLES = ("bald", "buzz", "short", "curly", "bob", "long", "ponytail")
HAIR_STYLE_P = np.array([0.07, 0.1, 0.2, 0.13, 0.17, 0.23, 0.1])
IRIS_COLOURS = np.array([[0.3, 0.18, 0.08], [0.15, 0.09, 0.05], [0.3, 0.45, 0.65], [0.35, 0.5, 0.3], [0.45, 0.45, 0.45], [0.5, 0.38, 0.2]])
REGIONS = ("skin", "scalp", "ear", "neck", "eye_l", "eye_r", "brow", "nose", "lips")
R = {n: i for i, n in enumerate(REGIONS)}


@functools.lru_cache(maxsize=2)
def _template(n_vertices: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from panolam.geometry.template import REGION_NAMES, load_template

    t = load_template("builtin", n_vertices)
    # Map the template's region names onto ours by name so a reordering upstream cannot mislabel.
    remap = np.array([R.get(name, R["skin"]) for name in REGION_NAMES])
    return t.vertices.numpy().astype(np.float64), t.faces.numpy(), remap[t.regions.numpy()]


def _vertex_normals(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    vn = np.zeros_like(v)
    for k in range(3):
        np.add.at(vn, f[:, k], fn)
    return vn / np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-12)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def quats_z_to(d: np.ndarray) -> np.ndarray:
    """(N, 4) wxyz quaternions rotating +z onto the unit directions ``d`` (N, 3)."""
    d = _unit(d)
    q = np.stack([1.0 + d[:, 2], -d[:, 1], d[:, 0], np.zeros(len(d))], axis=1)
    flip = d[:, 2] < -0.999999  # +z -> -z: any half-turn about x
    q[flip] = [0.0, 1.0, 0.0, 0.0]
    return _unit(q)


@dataclasses.dataclass
class Parts:
    """Gaussian attributes accumulated part by part (numpy, float64)."""

    means: list = dataclasses.field(default_factory=list)
    normals: list = dataclasses.field(default_factory=list)  # for lighting
    quats: list = dataclasses.field(default_factory=list)
    scales: list = dataclasses.field(default_factory=list)
    opacities: list = dataclasses.field(default_factory=list)
    colors: list = dataclasses.field(default_factory=list)

    def add(self, means, normals, quats, scales, opacities, colors) -> None:
        n = len(means)
        self.means.append(means)
        self.normals.append(normals)
        self.quats.append(quats)
        self.scales.append(np.broadcast_to(scales, (n, 3)))
        self.opacities.append(np.broadcast_to(opacities, (n,)))
        self.colors.append(np.broadcast_to(colors, (n, 3)))

    def cat(self, name: str) -> np.ndarray:
        return np.concatenate(getattr(self, name), axis=0)


class ProceduralHeads:
    """Random procedural heads on the built-in template (see module doc)."""

    id = "procedural"

    def __init__(self, template_vertices: int = 5023, surface_points: int = 14000, hair_points: int = 9000, backend: str = "auto") -> None:
        self.template_vertices, self.surface_points, self.hair_points, self.backend = template_vertices, surface_points, hair_points, backend

    def subject(self, seed: int) -> Subject:
        rng = np.random.default_rng(seed)
        attrs, parts = build_head(_template(self.template_vertices), rng, self.surface_points, self.hair_points)
        g = Gaussians(
            means=torch.from_numpy(parts.cat("means")).float(), quats=torch.from_numpy(parts.cat("quats")).float(),
            scales=torch.from_numpy(parts.cat("scales")).float(), opacities=torch.from_numpy(parts.cat("opacities")).float(),
            colors=torch.from_numpy(parts.cat("colors")).float().clamp(0, 1),
        )
        attrs["gaussians"] = len(g)
        return Subject(seed, attrs, g)

    def render(self, subject: Subject, cameras: Cameras) -> tuple[torch.Tensor, torch.Tensor]:
        from panolam.render.rasterize import rasterize

        out = rasterize(subject.payload, cameras, background=0.0, backend=self.backend)
        return out.rgb, out.alpha


# ---------------------------------------------------------------------------------------------


def _deform(v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Smooth random change of proportions: global scale, jaw width, crown height, normal bumps."""
    out = v * np.array([rng.uniform(0.9, 1.1), rng.uniform(0.94, 1.07), rng.uniform(0.92, 1.08)])
    lower = np.clip((-out[:, 1] - 0.03) / 0.2, 0, 1)
    out[:, 0] *= 1 + rng.uniform(-0.15, 0.12) * lower
    upper = np.clip((out[:, 1] - 0.1) / 0.17, 0, 1)
    out[:, 1] += rng.uniform(-0.02, 0.03) * upper
    return out


def _bumps(v: np.ndarray, normals: np.ndarray, rng: np.random.Generator, k: int = 7) -> np.ndarray:
    centres = v[rng.choice(len(v), size=k, replace=False)]
    amp = rng.normal(0, 0.008, size=k)
    width = rng.uniform(0.05, 0.12, size=k)
    d2 = ((v[:, None, :] - centres[None]) ** 2).sum(-1)
    disp = (amp * np.exp(-d2 / (2 * width**2))).sum(1)
    return v + normals * disp[:, None]


def _sample_surface(v, f, regions, n, rng, density):
    """Area-weighted samples with per-region density: points, normals, regions, disc radius."""
    vn = _vertex_normals(v, f)
    area = 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1)
    face_region = regions[f]  # (F, 3)
    w = area * np.max(density[face_region], axis=1)
    prob = w / w.sum()
    idx = rng.choice(len(f), size=n, p=prob)
    r1, r2 = np.sqrt(rng.random(n)), rng.random(n)
    bary = np.stack([1 - r1, r1 * (1 - r2), r1 * r2], axis=1)
    tri = f[idx]
    pts = (v[tri] * bary[..., None]).sum(1)
    nrm = _unit((vn[tri] * bary[..., None]).sum(1))
    reg = face_region[idx, np.argmax(bary, axis=1)]
    radius = np.sqrt(area[idx] / np.maximum(n * prob[idx], 1e-12) / np.pi) * 1.35
    return pts, nrm, reg, radius


def _skin_colors(pts, reg, rng, attrs) -> np.ndarray:
    t = rng.uniform(0, len(SKIN_TONES) - 1)
    i = int(min(np.floor(t), len(SKIN_TONES) - 2))
    tone = SKIN_TONES[i] * (1 - (t - i)) + SKIN_TONES[i + 1] * (t - i)
    tone = tone * rng.uniform(0.88, 1.08) * rng.uniform(0.97, 1.03, size=3)
    attrs["skin_tone"] = [round(float(x), 3) for x in tone]
    tex = TextureMap.random(rng, SKIN_PHOTOS).sample(pts)
    lum = tex.mean(1, keepdims=True)
    a, b = rng.uniform(0.05, 0.45), rng.uniform(0.0, 0.12)
    # Photo luminance modulates the tone; a little of its chroma (hue shifts beyond that stop looking like skin).
    col = tone * (1 + a * (lum - lum.mean())) + b * (tex - lum - (tex - lum).mean(0))
    col *= (1 + 0.08 * value_noise(pts, rng, 12.0))[:, None]
    cheeks = np.exp(-(((np.abs(pts[:, 0]) - 0.075) / 0.03) ** 2 + ((pts[:, 1] + 0.04) / 0.03) ** 2)) * (pts[:, 2] > 0.05)
    col += rng.uniform(0, 0.12) * cheeks[:, None] * np.array([0.6, -0.2, -0.2])
    if rng.random() < 0.25:  # freckles
        spots = value_noise(pts, rng, 90.0, octaves=1) > 0.85
        col[spots & (pts[:, 2] > 0.0)] *= np.array([0.85, 0.75, 0.7])
    return col


def _eye_colors(pts, reg, col, rng, attrs) -> None:
    iris = IRIS_COLOURS[rng.integers(len(IRIS_COLOURS))] * rng.uniform(0.8, 1.2)
    attrs["iris"] = [round(float(x), 3) for x in iris]
    r_iris = rng.uniform(0.009, 0.012)
    for name in ("eye_l", "eye_r"):
        m = reg == R[name]
        if not m.any():
            continue
        front = pts[m][np.argmax(pts[m][:, 2])]
        d = np.linalg.norm(pts[m][:, :2] - front[:2], axis=1)
        c = np.where((d < r_iris)[:, None], iris * (0.75 + 0.5 * (d[:, None] / r_iris)), np.array([0.93, 0.9, 0.88]))
        c[d < 0.45 * r_iris] = 0.03
        col[m] = c


def build_head(template, rng: np.random.Generator, surface_points: int, hair_points: int) -> tuple[dict[str, Any], Parts]:
    v0, f, regions = template
    attrs: dict[str, Any] = {}
    v = _deform(v0, rng)
    v = _bumps(v, _vertex_normals(v, f), rng)
    density = np.ones(len(REGIONS))
    density[[R["eye_l"], R["eye_r"], R["lips"], R["brow"]]] = 4.0
    pts, nrm, reg, radius = _sample_surface(v, f, regions, surface_points, rng, density)

    col = _skin_colors(pts, reg, rng, attrs)
    hair_name = str(rng.choice(list(HAIR_COLOURS), p=HAIR_COLOUR_P))
    hair_col = np.array(HAIR_COLOURS[hair_name]) * rng.uniform(0.85, 1.15, size=3)
    hair_tex = TextureMap.random(rng, HAIR_PHOTOS)
    hair_mix = rng.uniform(0.0, 0.45)
    attrs["hair_colour"] = hair_name
    lip = col[reg == R["lips"]].mean(0) * np.array([0.95, 0.6, 0.6]) if (reg == R["lips"]).any() else np.array([0.7, 0.4, 0.4])
    if rng.random() < 0.2:
        lip = rng.uniform(0.1, 0.9, size=3) * np.array([1.0, 0.4, 0.6])
    col[reg == R["lips"]] = lip * (1 + 0.05 * rng.normal(size=((reg == R["lips"]).sum(), 1)))
    col[reg == R["brow"]] = hair_col * 0.8 + col[reg == R["brow"]] * 0.2
    _eye_colors(pts, reg, col, rng, attrs)

    def hair_colors(p: np.ndarray) -> np.ndarray:
        tex = hair_tex.sample(p)
        lum = tex.mean(1, keepdims=True)
        return (1 - hair_mix) * hair_col * (0.55 + 0.9 * lum) + hair_mix * tex

    style = str(rng.choice(HAIR_STYLES, p=HAIR_STYLE_P))
    attrs["hair_style"] = style
    scalp = reg == R["scalp"]
    front_cut = rng.uniform(0.04, 0.2) if rng.random() < 0.3 else 1.0  # receding hairline
    scalp &= pts[:, 2] < front_cut
    if style == "buzz":
        col[scalp] = 0.6 * hair_colors(pts[scalp]) + 0.4 * col[scalp]
    elif style != "bald":
        col[scalp] = hair_colors(pts[scalp]) * 0.8
    if rng.random() < 0.15 and style != "bald":  # beard / stubble
        chin_jaw = (pts[:, 1] < -0.1) & (pts[:, 1] > -0.27) & (pts[:, 2] > -0.02)
        moustache = (np.abs(pts[:, 0]) < 0.05) & (pts[:, 1] < -0.08) & (pts[:, 2] > 0.1)
        beard = (chin_jaw | moustache) & (reg == R["skin"])
        strength = rng.uniform(0.3, 1.0)
        col[beard] = (1 - strength) * col[beard] + strength * hair_colors(pts[beard])
        attrs["beard"] = round(float(strength), 2)
    if rng.random() < 0.6:  # collar / clothing at the neck base
        collar_y = rng.uniform(-0.36, -0.27)
        cloth = TextureMap.random(rng, CLOTH_PHOTOS).sample(pts) * rng.uniform(0.5, 1.2, size=3)
        cloth = np.where(rng.random() < 0.4, cloth * (0.6 + 0.4 * pattern(pts, rng)[:, None]), cloth)
        m = (reg == R["neck"]) & (pts[:, 1] < collar_y)
        col[m] = cloth[m]
        pts[m] += nrm[m] * 0.006
        attrs["collar"] = True

    parts = Parts()
    scales = np.stack([radius, radius, radius * 0.25], axis=1)
    parts.add(pts, nrm, quats_z_to(nrm), scales, rng.uniform(0.9, 0.99, size=len(pts)), col)
    if style not in ("bald", "buzz"):
        _add_hair(parts, pts[scalp], nrm[scalp], style, hair_colors, rng, hair_points, attrs)
    if rng.random() < 0.2:
        _add_hat(parts, v, rng, attrs)
    if rng.random() < 0.25:
        _add_glasses(parts, pts, reg, rng, attrs)
    _light(parts, rng, attrs)
    return attrs, parts


def _add_hair(parts: Parts, sp, sn, style, hair_colors, rng, budget, attrs) -> None:
    if len(sp) == 0:
        return
    thick = {"short": (0.008, 0.025), "curly": (0.03, 0.075), "bob": (0.012, 0.03), "long": (0.01, 0.03), "ponytail": (0.006, 0.015)}[style]
    offset = rng.uniform(*thick)
    attrs["hair_thickness"] = round(float(offset), 3)
    shell_n = budget // 2 if style in ("bob", "long") else budget
    i = rng.integers(len(sp), size=shell_n)
    depth = rng.uniform(0.15, 1.0, size=shell_n) * offset
    p = sp[i] + sn[i] * depth[:, None] + rng.normal(0, 0.003, size=(shell_n, 3))
    n = sn[i]
    if style == "curly":
        s = rng.uniform(0.008, 0.014, size=(shell_n, 1)) * np.ones(3)
        q = _unit(rng.normal(size=(shell_n, 4)))
    else:
        # Comb direction: down and backwards along the scalp, with a random parting swirl.
        comb = _unit(np.array([0.0, -1.0, -0.6]) + rng.normal(0, 0.3, size=3))
        t = _unit(comb - (comb * n).sum(1, keepdims=True) * n + rng.normal(0, 0.15, size=(shell_n, 3)))
        q = quats_z_to(t)
        s = np.stack([np.full(shell_n, 0.004), np.full(shell_n, 0.0025), rng.uniform(0.01, 0.02, size=shell_n)], axis=1)
    parts.add(p, n, q, s, rng.uniform(0.6, 0.95, size=shell_n), hair_colors(p) * (0.75 + 0.25 * depth[:, None] / offset))
    if style in ("bob", "long"):
        length = rng.uniform(0.12, 0.22) if style == "bob" else rng.uniform(0.3, 0.55)
        attrs["hair_length"] = round(float(length), 3)
        _add_curtain(parts, sp, sn, offset, length, budget - shell_n, hair_colors, rng)
    if style == "ponytail":
        _add_ponytail(parts, sp, offset, hair_colors, rng, budget // 2)
    if style in ("short", "bob", "long") and rng.random() < 0.35:
        _add_fringe(parts, sp, sn, offset, hair_colors, rng, budget // 6)
        attrs["fringe"] = True


def _add_curtain(parts, sp, sn, offset, length, n_pts, hair_colors, rng) -> None:
    """Strands from the side/back rim of the hair shell falling down and slightly outward."""
    rim = (sn[:, 1] < 0.45) & (sp[:, 2] < 0.02)
    if not rim.any() or n_pts <= 0:
        return
    roots, rn = sp[rim], sn[rim]
    strands = max(1, n_pts // 14)
    k = rng.integers(len(roots), size=strands)
    out = _unit(rn[k] * np.array([1.0, 0.0, 1.0]))
    drift = rng.uniform(0.05, 0.25, size=(strands, 1))
    steps = np.linspace(0, 1, 14)
    t = steps[None, :, None] * length * rng.uniform(0.7, 1.0, size=(strands, 1, 1))
    wiggle = 0.006 * np.sin(t * rng.uniform(20, 60) + rng.uniform(0, 6.3, size=(strands, 1, 1)))
    base = roots[k] + rn[k] * offset * 0.9
    p = base[:, None] + t * np.array([0.0, -1.0, 0.0]) + t * drift[:, :, None] * out[:, None] + wiggle * out[:, None]
    tangent = _unit(np.gradient(p, axis=1).reshape(-1, 3))
    p = p.reshape(-1, 3)
    m = len(p)
    seg = length / 14
    s = np.stack([np.full(m, 0.006), np.full(m, 0.003), np.full(m, seg * 0.8)], axis=1)
    normal = np.repeat(out, 14, axis=0)
    parts.add(p, normal, quats_z_to(tangent), s, rng.uniform(0.6, 0.9, size=m), hair_colors(p))


def _add_ponytail(parts, sp, offset, hair_colors, rng, n_pts) -> None:
    back = sp[np.argmin(sp[:, 2] + 0.5 * np.abs(sp[:, 1] - 0.08))]
    start = back + np.array([0.0, 0.0, -offset - 0.01])
    length = rng.uniform(0.2, 0.4)
    u = rng.random(n_pts)
    centre = start + np.stack([np.zeros(n_pts), -u * length, -0.08 * np.sin(u * np.pi * 0.8)], axis=1)
    radius = 0.028 * (1 - 0.6 * u) + 0.005
    ang = rng.uniform(0, 2 * np.pi, size=n_pts)
    ring = np.stack([np.cos(ang), np.zeros(n_pts), np.sin(ang)], axis=1) * (radius * np.sqrt(rng.random(n_pts)))[:, None]
    p = centre + ring
    s = np.stack([np.full(n_pts, 0.005), np.full(n_pts, 0.003), np.full(n_pts, 0.02)], axis=1)
    parts.add(p, _unit(ring + 1e-6), quats_z_to(np.tile([0.0, -1.0, -0.2], (n_pts, 1))), s, 0.85, hair_colors(p))


def _add_fringe(parts, sp, sn, offset, hair_colors, rng, n_pts) -> None:
    """Bangs: strands from the front hairline hanging over the forehead."""
    front = sp[:, 2] > np.percentile(sp[:, 2], 85)
    if not front.any() or n_pts <= 0:
        return
    roots, rn = sp[front], sn[front]
    k = rng.integers(len(roots), size=n_pts)
    u = rng.random(n_pts)
    drop = rng.uniform(0.04, 0.09)
    p = roots[k] + rn[k] * offset + np.stack([np.zeros(n_pts), -u * drop, 0.012 + 0.02 * u], axis=1)
    s = np.stack([np.full(n_pts, 0.005), np.full(n_pts, 0.003), np.full(n_pts, 0.012)], axis=1)
    parts.add(p, np.tile([0.0, 0.3, 0.95], (n_pts, 1)), quats_z_to(np.tile([0.0, -1.0, 0.3], (n_pts, 1))), s, 0.85, hair_colors(p))


def _add_hat(parts, v, rng, attrs) -> None:
    kind = "cap" if rng.random() < 0.5 else "beanie"
    attrs["hat"] = kind
    hi = v.max(0)
    top = v[v[:, 1] > 0.0]
    centre = np.array([0.0, 0.04, top[:, 2].mean()])
    radii = np.array([np.abs(top[:, 0]).max(), hi[1] - 0.04, (top[:, 2].max() - top[:, 2].min()) / 2]) + rng.uniform(0.015, 0.03)
    n = 5000
    d = _unit(rng.normal(size=(n, 3)))
    brim_y = rng.uniform(0.06, 0.12) if kind == "cap" else rng.uniform(0.02, 0.08)
    p = centre + d * radii
    keep = p[:, 1] > brim_y - 0.25 * np.clip(-(p[:, 2] - centre[2]), 0, None)
    p, d = p[keep], d[keep]
    tex = TextureMap.random(rng, CLOTH_PHOTOS).sample(p) * 0.5 + rng.uniform(0, 1, size=3) * 0.5
    if rng.random() < 0.5:
        tex *= 0.7 + 0.3 * pattern(p, rng)[:, None]
    normal = _unit(d / radii)
    parts.add(p, normal, quats_z_to(normal), np.array([0.012, 0.012, 0.003]), 0.97, tex)
    if kind == "cap":
        m = 1500
        r, a = np.sqrt(rng.random(m)), rng.uniform(0, np.pi, size=m)
        bp = np.stack([np.cos(a) * r * radii[0] * 0.75, np.full(m, brim_y + 0.005), centre[2] + radii[2] * 0.75 + np.sin(a) * r * 0.11], axis=1)
        up = np.tile([0.0, 1.0, 0.12], (m, 1))
        parts.add(bp, _unit(up), quats_z_to(up), np.array([0.008, 0.008, 0.002]), 0.98, tex.mean(0) * 0.85)


def _add_glasses(parts, pts, reg, rng, attrs) -> None:
    sun = rng.random() < 0.3
    attrs["glasses"] = "sunglasses" if sun else "glasses"
    frame = rng.uniform(0, 0.5, size=3) if rng.random() < 0.7 else rng.uniform(0, 1, size=3)
    rx, ry = rng.uniform(0.024, 0.032), rng.uniform(0.016, 0.024)
    for name in ("eye_l", "eye_r"):
        m = reg == R[name]
        if not m.any():
            return
    centres = [pts[reg == R[n]][np.argmax(pts[reg == R[n]][:, 2])] + np.array([0.0, 0.0, 0.022]) for n in ("eye_l", "eye_r")]
    pieces = []
    for c in centres:
        a = np.linspace(0, 2 * np.pi, 90, endpoint=False)
        pieces.append(c + np.stack([np.cos(a) * rx, np.sin(a) * ry, np.zeros_like(a)], axis=1))
        side = np.sign(c[0])
        z = np.linspace(c[2], -0.03, 50)
        pieces.append(np.stack([np.full(50, c[0] + side * rx) + side * 0.03 * (c[2] - z), np.full(50, c[1] + 0.004), z], axis=1))
    inner_l, inner_r = centres[0] - np.array([rx, 0, 0]), centres[1] + np.array([rx, 0, 0])
    pieces.append(np.linspace(inner_r, inner_l, 20))
    p = np.concatenate(pieces)
    fwd = np.tile([0.0, 0.0, 1.0], (len(p), 1))
    parts.add(p, fwd, quats_z_to(fwd), np.array([0.0025, 0.0025, 0.0025]), 0.98, frame)
    if sun or rng.random() < 0.3:
        lens_col = rng.uniform(0.0, 0.25, size=3) if sun else np.array([0.8, 0.85, 0.9])
        for c in centres:
            k = 300
            r, a = np.sqrt(rng.random(k)), rng.uniform(0, 2 * np.pi, size=k)
            lp = c + np.stack([np.cos(a) * r * rx, np.sin(a) * r * ry, np.zeros(k)], axis=1)
            parts.add(lp, np.tile([0.0, 0.0, 1.0], (k, 1)), quats_z_to(np.tile([0.0, 0.0, 1.0], (k, 1))), np.array([0.004, 0.004, 0.001]), 0.8 if sun else 0.15, lens_col)


def _light(parts: Parts, rng: np.random.Generator, attrs: dict[str, Any]) -> None:
    """Bake wrap-Lambert + ambient shading from a random key light into the colours (in place)."""
    # Key light mostly from the camera side of the face, as in portraits, sometimes from behind.
    az, el = np.deg2rad(rng.normal(0, 60)), np.deg2rad(rng.uniform(-10, 60))
    light = np.array([np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)])
    ambient = rng.uniform(0.3, 0.6)
    tint = 1 + rng.uniform(-0.05, 0.05, size=3)
    attrs["light"] = {"dir": [round(float(x), 3) for x in light], "ambient": round(float(ambient), 3)}
    wrap = 0.3
    for i, (n, c) in enumerate(zip(parts.normals, parts.colors)):
        lam = np.clip(((n @ light) + wrap) / (1 + wrap), 0, 1)
        parts.colors[i] = c * (ambient + (1.1 - ambient) * lam)[:, None] * tint

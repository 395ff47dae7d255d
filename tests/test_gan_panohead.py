"""PanoHead and SphereHead parity: our generators against outputs of the official code
(random weights, CPU, fp32; fixtures made by scripts/make_gan_fixtures.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from panolam.data.gan.panohead import PanoHeadGenerator, SphereHeadGenerator

FIXTURES = Path(__file__).parent / "fixtures" / "gan"
TOL = 1e-4
CLASSES = {"panohead": PanoHeadGenerator, "spherehead": SphereHeadGenerator}


@pytest.mark.parametrize("family", sorted(CLASSES))
def test_tiny_generator_matches_official(family):
    fix = FIXTURES / f"{family}_tiny"
    meta = json.loads((fix / "config.json").read_text())
    G = CLASSES[family](**meta["init_kwargs"]).eval().requires_grad_(False)
    G.load_state_dict({k: v.float() for k, v in load_file(str(fix / "weights.safetensors")).items()}, strict=True)
    assert sum(p.numel() for p in G.parameters()) == meta["official_parameter_count"]
    inp, ref = load_file(str(fix / "inputs.safetensors")), load_file(str(fix / "outputs.safetensors"))
    with torch.no_grad():
        ws = G.mapping(inp["z"], inp["c"], meta["truncation_psi"], meta["truncation_cutoff"])
        planes = G.planes(ws, noise_mode="const")
        out = G.render_planes(planes, ws, inp["c"], meta["neural_rendering_resolution"],
                              generator=torch.Generator().manual_seed(meta["render_seed"]))
    s = meta["plane_stride"]
    flat = planes.flatten(1, 3) if family == "spherehead" else planes.flatten(1, 2)
    errors = {
        "ws": (ws - ref["ws"]).abs().max().item(),
        "planes": (flat[:, :, ::s, ::s] - ref["planes"]).abs().max().item(),
        "image_raw": (out.image_raw - ref["image_raw"]).abs().max().item(),
        "image_depth": (out.image_depth - ref["image_depth"]).abs().max().item(),
        "image_mask": (out.image_mask - ref["image_mask"]).abs().max().item(),
        "image": (out.image - ref["image"]).abs().max().item(),
    }
    print(family, "max abs errors:", errors)
    assert all(e <= TOL for e in errors.values()), errors
    assert ref["image"].std() > 1e-2 and 0 < ref["image_mask"].mean() < 1


@pytest.mark.parametrize("family,params,buffers", [
    # Measured on the official code (scripts/make_gan_fixtures.py count-panohead / count-spherehead):
    # TriPlaneGenerator at 512² with PanoHead's documented training settings (tri-grid depth 3, 256²
    # planes, ToRGB raw image, background network, SR 8XDC, 2-layer mapping).
    ("panohead", 53741548, 874963),
    ("spherehead", 54713868, 875027),
])
def test_full_size_has_official_parameter_count(family, params, buffers):
    from panolam.data.gan.panohead import full_size_kwargs

    with torch.device("meta"):
        G = CLASSES[family](**full_size_kwargs())
    assert sum(p.numel() for p in G.parameters()) == params
    assert sum(b.numel() for b in G.buffers()) == buffers


def test_panohead_plugin_renders_several_views_at_once():
    """The plug-in renders a batch of views from one subject's (expanded, non-contiguous) tri-grid."""
    from panolam.data.gan.plugin import GanGenerator
    from panolam.geometry.cameras import Cameras

    fix = FIXTURES / "panohead_tiny"
    meta = json.loads((fix / "config.json").read_text())
    G = PanoHeadGenerator(**meta["init_kwargs"])
    G.load_state_dict({k: v.float() for k, v in load_file(str(fix / "weights.safetensors")).items()})
    gen = GanGenerator(checkpoint=None, family="panohead", network=G, device="cpu", neural_rendering_resolution=8, batch=3)
    sub = gen.subject(5)
    assert "teacher_planes" not in sub.extras and sub.extras["gan_ws"].shape == (G.num_ws, 512)
    rgb, alpha = gen.render(sub, Cameras.orbit([0.0, 90.0, 180.0], 0.0, 2.7, 18.837, 16))
    assert rgb.shape == (3, 16, 16, 3) and alpha.shape == (3, 16, 16, 1)
    assert bool(((rgb >= 0) & (rgb <= alpha + 1e-6)).all())  # premultiplied colours in [0, alpha]

"""EG3D parity: our generator against outputs of the official code (random weights, CPU, fp32).

The fixture in tests/fixtures/gan/eg3d_tiny was made by scripts/make_gan_fixtures.py from
NVlabs/eg3d; see that script for how.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from panolam.data.gan.eg3d import TriPlaneGenerator
from panolam.data.gan.ops import conv2d_resample, setup_filter, upfirdn2d

FIX = Path(__file__).parent / "fixtures" / "gan" / "eg3d_tiny"
TOL = 1e-4


@pytest.fixture(scope="module")
def tiny():
    meta = json.loads((FIX / "config.json").read_text())
    G = TriPlaneGenerator(**meta["init_kwargs"]).eval().requires_grad_(False)
    state = {k: v.float() for k, v in load_file(str(FIX / "weights.safetensors")).items()}
    G.load_state_dict(state, strict=True)
    return G, meta, load_file(str(FIX / "inputs.safetensors")), load_file(str(FIX / "outputs.safetensors"))


def test_tiny_eg3d_matches_official(tiny):
    G, meta, inp, ref = tiny
    assert sum(p.numel() for p in G.parameters()) == meta["official_parameter_count"]
    with torch.no_grad():
        ws = G.mapping(inp["z"], inp["c"], meta["truncation_psi"], meta["truncation_cutoff"])
        planes = G.planes(ws, noise_mode="const")
        out = G.render_planes(planes, ws, inp["c"], meta["neural_rendering_resolution"],
                              generator=torch.Generator().manual_seed(meta["render_seed"]))
    s = meta["plane_stride"]
    errors = {
        "ws": (ws - ref["ws"]).abs().max().item(),
        "planes": (planes.flatten(1, 2)[:, :, ::s, ::s] - ref["planes"]).abs().max().item(),
        "image_raw": (out.image_raw - ref["image_raw"]).abs().max().item(),
        "image_depth": (out.image_depth - ref["image_depth"]).abs().max().item(),
        "image": (out.image - ref["image"]).abs().max().item(),
    }
    print("max abs errors:", errors)
    assert all(e <= TOL for e in errors.values()), errors
    # The outputs are not trivially constant (a broken renderer could match a constant reference).
    assert ref["image"].std() > 1e-2 and ref["image_raw"].std() > 1e-3


def test_upfirdn2d_matches_direct_convolution():
    """Zero-insert, pad, filter, decimate, against an explicit loop over output pixels."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, 5, 6, generator=g)
    f = setup_filter([1, 3, 3, 1])
    y = upfirdn2d(x, f, up=2, down=1, padding=[2, 1, 2, 1])
    up = torch.zeros(1, 2, 10, 12)
    up[:, :, ::2, ::2] = x
    pad = torch.nn.functional.pad(up, [2, 1, 2, 1])
    ref = torch.zeros_like(y)
    ff = f.flip([0, 1])
    for i in range(y.shape[2]):
        for j in range(y.shape[3]):
            ref[:, :, i, j] = (pad[:, :, i:i + 4, j:j + 4] * ff).sum((-1, -2))
    assert torch.allclose(y, ref, atol=1e-6)


def test_conv2d_resample_up_equals_upsample_then_conv():
    """The transposed-convolution path equals zero-insert + FIR + plain convolution."""
    g = torch.Generator().manual_seed(1)
    x, w = torch.randn(2, 3, 6, 6, generator=g), torch.randn(4, 3, 3, 3, generator=g)
    f = setup_filter([1, 3, 3, 1])
    fast = conv2d_resample(x, w, f, up=2, padding=1, flip_weight=False)
    # Upsampled image padded by the conv's 1 plus the filter's own (fw+up-1)//2, (fw-up)//2 = 2, 1.
    slow = conv2d_resample(upfirdn2d(x, f, up=2, padding=[3, 2, 3, 2], gain=4), w, None, padding=0, flip_weight=False)
    assert fast.shape == (2, 4, 12, 12)
    assert torch.allclose(fast, slow, atol=1e-5)


def test_full_size_eg3d_ffhq_has_official_parameter_count():
    # Measured on the official code: NVlabs/eg3d training.triplane.TriPlaneGenerator built with
    # train.py's --cfg=ffhq settings at 512² (scripts/make_gan_fixtures.py count-eg3d) printed
    # 30662136 parameters and 831024 buffer elements.
    from panolam.data.gan.eg3d import eg3d_ffhq_kwargs

    with torch.device("meta"):
        G = TriPlaneGenerator(**eg3d_ffhq_kwargs(512))
    assert sum(p.numel() for p in G.parameters()) == 30662136
    assert sum(b.numel() for b in G.buffers()) == 831024

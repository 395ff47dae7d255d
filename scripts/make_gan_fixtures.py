"""Build the official EG3D / PanoHead / SphereHead generators small, with random weights, and save parity fixtures.

Run from the PanoLAM repository root with checkouts of NVlabs/eg3d, SizheAn/PanoHead and
lhyfst/SphereHead *outside* the project (each in its own process: they share package names)::

    python scripts/make_gan_fixtures.py eg3d /path/to/eg3d/eg3d tests/fixtures/gan/eg3d_tiny
    python scripts/make_gan_fixtures.py panohead /path/to/PanoHead tests/fixtures/gan/panohead_tiny
    python scripts/make_gan_fixtures.py spherehead /path/to/SphereHead tests/fixtures/gan/spherehead_tiny
    python scripts/make_gan_fixtures.py count-{eg3d,panohead,spherehead} /path/to/official

This script contains none of the official code: it imports it from the path given on the command
line, builds ``training.triplane.TriPlaneGenerator`` with tiny widths (the super-resolution module
is the official 128² one, whose widths are fixed), perturbs every parameter and buffer with a fixed
seed (the official init leaves biases, noise strengths and w_avg at zero, which would hide bugs),
rounds them to fp16-representable values (so the weights can be stored as fp16 and still be exact)
and runs the generator on CPU in fp32 for fixed latents and cameras. Saved:

* ``weights.safetensors`` — the generator's state dict (fp16; exact).
* ``config.json`` — the constructor kwargs, the inputs' settings and the official parameter count.
* ``inputs.safetensors`` — z, c (conditioning/camera labels) and the RNG seed of the renderer.
* ``outputs.safetensors`` — ws, planes (every 16th texel), raw image, SR image, depth.
* ``official.pkl`` — the same generator pickled by the official ``torch_utils.persistence`` (fp16
  tensors), with every embedded module source replaced by a placeholder so that no official
  source ships with the fixture; the safe loader never reads the source anyway.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import types
from pathlib import Path

import torch

PLANE_STRIDE = 16
SEED_RENDER = 1234


def _import_official(path: str):
    sys.path.insert(0, str(Path(path).resolve()))
    # dnnlib.util imports requests (for URL downloads we never use); keep it out of the way.
    sys.modules.setdefault("requests", types.ModuleType("requests"))
    import training.triplane  # noqa: F401  (official)
    from torch_utils import persistence  # official

    return training.triplane, persistence


def tiny_eg3d_kwargs() -> dict:
    rendering = {
        "image_resolution": 128, "disparity_space_sampling": False, "clamp_mode": "softplus",
        "superresolution_module": "training.superresolution.SuperresolutionHybrid2X",
        "c_gen_conditioning_zero": False, "gpc_reg_prob": 0.5, "c_scale": 1.0,
        "superresolution_noise_mode": "none", "density_reg": 0.25, "density_reg_p_dist": 0.004,
        "reg_type": "l1", "decoder_lr_mul": 1.0, "sr_antialias": True,
        "depth_resolution": 12, "depth_resolution_importance": 12, "ray_start": 2.25, "ray_end": 3.3,
        "box_warp": 1, "avg_camera_radius": 2.7, "avg_camera_pivot": [0, 0, 0.2],
    }
    # The SR module hard-codes w_dim 512, so the mapping keeps w_dim 512 but is one layer deep
    # with a small label embedding; the backbone's widths come from channel_base/channel_max.
    return {
        "z_dim": 16, "c_dim": 25, "w_dim": 512, "img_resolution": 128, "img_channels": 3,
        "sr_num_fp16_res": 4, "mapping_kwargs": {"num_layers": 2, "embed_features": 8, "layer_features": 16},
        "rendering_kwargs": rendering, "sr_kwargs": {"channel_base": 256, "channel_max": 8, "fused_modconv_default": "inference_only"},
        "channel_base": 256, "channel_max": 8, "fused_modconv_default": "inference_only",
        "num_fp16_res": 0, "conv_clamp": None,
    }


def _perturb(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            if name.endswith("resample_filter"):
                continue
            if name.endswith("noise_strength"):
                t.copy_(0.3 + 0.2 * torch.rand(t.shape, generator=g))
            else:
                t.add_(0.3 * torch.randn(t.shape, generator=g))
            t.copy_(t.half().float())  # fp16-representable, so fp16 storage is exact


def _cameras(n: int) -> torch.Tensor:
    """EG3D labels (n, 25) for cameras at radius 2.7 looking at the origin with focal 4.2647."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from panolam.geometry.cameras import Cameras

    cams = Cameras.orbit(torch.linspace(-25, 35, n), torch.linspace(10, -5, n), 2.7, 18.837, 128)
    return cams.to_eg3d_label()


def tiny_panohead_kwargs() -> dict:
    """PanoHead's released settings (tri-grid depth 3, ToRGB raw image, no decoder activation,
    background network) at tiny widths and 32² planes."""
    kw = tiny_eg3d_kwargs()
    kw["rendering_kwargs"].update(triplane_size=32, triplane_depth=3, decoder_activation="none", use_torgb_raw=True, use_background=True)
    return kw


def make_eg3d(official: str, out: Path, which: str = "eg3d") -> None:
    triplane, persistence = _import_official(official)
    from safetensors.torch import save_file

    kwargs = tiny_eg3d_kwargs() if which == "eg3d" else tiny_panohead_kwargs()
    torch.manual_seed(0)
    G = triplane.TriPlaneGenerator(**kwargs).eval().requires_grad_(False)
    _perturb(G, 1)
    n_params = sum(p.numel() for p in G.parameters())
    nrr = 16
    z = torch.randn(2, kwargs["z_dim"], generator=torch.Generator().manual_seed(7))
    c = _cameras(2)
    psi, cutoff = 0.7, None
    with torch.no_grad():
        ws = G.mapping(z, c, truncation_psi=psi, truncation_cutoff=cutoff)
        planes = G.backbone.synthesis(ws, noise_mode="const")
        if which == "spherehead":  # the two spheres' planes, as the official synthesis() makes them
            shape = (len(planes), 1, 3, 32, planes.shape[-2], planes.shape[-1])
            planes = torch.cat([G.ConvA(planes).view(shape), G.ConvB(planes).view(shape)], 1).flatten(1, 3)
        torch.manual_seed(SEED_RENDER)
        out_d = G.synthesis(ws, c, neural_rendering_resolution=nrr, noise_mode="const")
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().half().contiguous() for k, v in G.state_dict().items()}
    save_file(state, str(out / "weights.safetensors"))
    save_file({"z": z.contiguous(), "c": c.contiguous()}, str(out / "inputs.safetensors"))
    stride = PLANE_STRIDE if which == "eg3d" else 4
    outputs = {
        "ws": ws.contiguous(), "planes": planes[:, :, ::stride, ::stride].contiguous(),
        "image_raw": out_d["image_raw"].contiguous(), "image": out_d["image"].contiguous(), "image_depth": out_d["image_depth"].contiguous(),
    }
    if "image_mask" in out_d:
        outputs["image_mask"] = out_d["image_mask"].contiguous()
    save_file(outputs, str(out / "outputs.safetensors"))
    meta = {
        "class_name": "training.triplane.TriPlaneGenerator", "init_kwargs": kwargs, "official_parameter_count": n_params,
        "truncation_psi": psi, "truncation_cutoff": cutoff, "neural_rendering_resolution": nrr, "noise_mode": "const",
        "render_seed": SEED_RENDER, "plane_stride": stride,
        "source": {"eg3d": "NVlabs/eg3d", "panohead": "SizheAn/PanoHead", "spherehead": "lhyfst/SphereHead"}[which]
        + " (random weights; made by scripts/make_gan_fixtures.py)",
    }
    (out / "config.json").write_text(json.dumps(meta, indent=1) + "\n")
    # The official-format pickle, fp16 tensors, embedded sources replaced by a placeholder.
    for cls in persistence._decorators:
        cls._orig_module_src = "# official source elided from this fixture\n"
    if which == "panohead":  # the loader is covered by the EG3D and SphereHead pickles; keep the repository small
        print(f"wrote {out}: {n_params} parameters")
        return
    G16 = G.half()
    with open(out / "official.pkl", "wb") as f:
        pickle.dump({"G_ema": G16, "training_set_kwargs": {"resolution": 128}}, f)
    print(f"wrote {out}: {n_params} parameters")


def count_full(official: str, which: str) -> None:
    """Print the parameter count of the official 512² generator (train.py's ffhq config; for PanoHead
    and SphereHead with the settings of PanoHead's documented training command)."""
    triplane, _ = _import_official(official)
    kw = tiny_eg3d_kwargs() if which == "eg3d" else tiny_panohead_kwargs()
    kw["rendering_kwargs"].update(image_resolution=512, superresolution_module="training.superresolution.SuperresolutionHybrid8XDC",
                                  depth_resolution=48, depth_resolution_importance=48)
    kw.update(z_dim=512, w_dim=512, img_resolution=512, mapping_kwargs={"num_layers": 2}, channel_base=32768, channel_max=512,
              sr_kwargs={"channel_base": 32768, "channel_max": 512, "fused_modconv_default": "inference_only"})
    if which != "eg3d":
        kw["rendering_kwargs"]["triplane_size"] = 256
    G = triplane.TriPlaneGenerator(**kw)
    print(f"{which} 512 parameters:", sum(p.numel() for p in G.parameters()),
          "buffers:", sum(b.numel() for b in G.buffers()))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("which", choices=("eg3d", "panohead", "spherehead", "count-eg3d", "count-panohead", "count-spherehead"))
    ap.add_argument("official", help="path to the official code (the folder holding training/ and torch_utils/)")
    ap.add_argument("out", nargs="?", help="fixture folder")
    a = ap.parse_args()
    if a.which.startswith("count-"):
        count_full(a.official, a.which.removeprefix("count-"))
    else:
        make_eg3d(a.official, Path(a.out), a.which)

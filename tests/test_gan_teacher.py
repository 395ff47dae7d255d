"""L_rgb^ST with SphereHead's own frozen decoder (train/gan_teacher.py), on the random-weight
SphereHead fixture: the loss is finite, gradients reach the student's planes, the GAN stays frozen,
and train.st_decoder_kind=auto picks the right decoder."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from panolam.cli import main
from panolam.config import get_config
from panolam.geometry.cameras import Cameras
from panolam.train.gan_teacher import SphereHeadDecoder, resolve_kind, spherehead_decoder
from panolam.train.losses import PanoLAMLoss

FIX = Path(__file__).parent / "fixtures" / "gan" / "spherehead_tiny" / "official.pkl"
EG3D = Path(__file__).parent / "fixtures" / "gan" / "eg3d_tiny" / "official.pkl"


@pytest.fixture(scope="module")
def sh_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("sh") / "data"
    assert main(["data", "gan", "--generator", "spherehead", "--checkpoint", str(FIX), "--out", str(out), "--subjects", "1",
                 "--views", "3", "--size", "16", "--render-resolution", "8", "--no-progress"]) == 0
    return out


def _batch(decoder: SphereHeadDecoder, size: int = 16) -> dict:
    cams = Cameras.orbit(torch.tensor([0.0, 60.0]), torch.tensor([0.0, 0.0]), width=size)
    g = torch.Generator().manual_seed(0)
    ws = torch.randn(1, decoder.net.num_ws, 512, generator=g) * 0.1
    return {"images": torch.rand(1, 2, 3, size, size, generator=g), "masks": torch.rand(1, 2, 1, size, size, generator=g),
            "world_to_cam": cams.world_to_cam[None], "K": cams.K[None], "subject": ["s0"], "gan_ws": ws}


def test_spherehead_decoder_loss_is_finite_reaches_the_planes_and_stays_frozen():
    torch.manual_seed(0)
    dec = spherehead_decoder(str(FIX))
    before = {k: v.clone() for k, v in dec.state_dict().items()}
    cfg = get_config("tiny", ["train.render_size=16", "train.st_render_size=8"]).train
    loss = PanoLAMLoss(cfg, dec)
    from types import SimpleNamespace

    sys.path.insert(0, str(Path(__file__).parent))
    from test_losses import _gaussians

    planes = (torch.randn(1, 6, 32, 8, 8) * 0.1).requires_grad_(True)
    out = SimpleNamespace(coarse=_gaussians(seed=1), dense=_gaussians(), planes=planes)
    res = loss(out, _batch(dec))
    assert "rgb_st" not in res.absent and torch.isfinite(res.total) and torch.isfinite(res.terms["rgb_st"])
    assert res.renders["triplane"].shape == (1, 2, 16, 16, 3)
    res.total.backward()
    assert planes.grad is not None and planes.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in dec.parameters())
    loss.train()
    assert not dec.training
    for k, v in dec.state_dict().items():
        assert torch.equal(v, before[k]), k
    # A batch without gan_ws (e.g. procedural data in a mix) skips L_rgb^ST instead of failing.
    batch = _batch(dec)
    del batch["gan_ws"]
    assert "rgb_st" in loss(SimpleNamespace(coarse=_gaussians(seed=1), dense=_gaussians(), planes=planes), batch).absent


def test_wrong_plane_channels_are_refused():
    dec = spherehead_decoder(str(FIX))
    cams = Cameras.orbit(torch.tensor([0.0]), torch.tensor([0.0]), width=8)
    with pytest.raises(ValueError, match="triplane_channels=32"):
        dec.render(torch.zeros(1, 6, 8, 4, 4), [cams], 8, {"gan_ws": torch.zeros(1, dec.net.num_ws, 512)})


def test_auto_kind(sh_data, tmp_path):
    assert resolve_kind("auto", str(FIX), [sh_data]) == "spherehead"
    assert resolve_kind("auto", None, [sh_data]) == "panolam"
    eg = tmp_path / "eg"
    assert main(["data", "gan", "--generator", "eg3d", "--checkpoint", str(EG3D), "--out", str(eg), "--subjects", "1",
                 "--views", "2", "--size", "16", "--render-resolution", "8", "--no-progress"]) == 0
    assert resolve_kind("auto", str(FIX), [eg]) == "panolam"
    assert resolve_kind("auto", str(FIX), [eg, sh_data]) == "spherehead"
    assert resolve_kind("panolam", str(FIX), [sh_data]) == "panolam"
    with pytest.raises(ValueError, match="st_decoder_kind"):
        resolve_kind("sphere", None, [])


@pytest.mark.slow
def test_training_step_with_the_spherehead_teacher(sh_data, tmp_path):
    from panolam.train import loop

    cfg = get_config("tiny", ["model.triplane_channels=32", "data.views_per_step=2", "train.steps=1", "train.checkpoint_every=0",
                              "train.batch_size=1", "train.render_size=16", "train.st_render_size=8",
                              f"train.st_decoder_checkpoint={FIX}", "train.sample_every=0"])
    trainer = loop.Trainer(cfg, [str(sh_data)], str(tmp_path / "run"), progress=False)
    assert isinstance(trainer.loss_fn.st_renderer, SphereHeadDecoder)  # auto -> spherehead
    before = {k: v.clone() for k, v in trainer.loss_fn.st_renderer.state_dict().items()}
    terms = trainer.fit()
    assert trainer.step == 1 and np.isfinite(terms["total"]) and np.isfinite(terms["rgb_st"]) and np.isfinite(terms["st"])
    assert all(torch.equal(v, before[k]) for k, v in trainer.loss_fn.st_renderer.state_dict().items())


def test_superres_render_is_finite_and_differentiable():
    torch.manual_seed(0)
    dec = spherehead_decoder(str(FIX), superres=True, background=0.0)
    planes = (torch.randn(1, 6, 32, 8, 8) * 0.1).requires_grad_(True)
    cams = Cameras.orbit(torch.tensor([0.0]), torch.tensor([0.0]), width=16)
    out = dec.render(planes, [cams], 16, {"gan_ws": torch.randn(1, dec.net.num_ws, 512) * 0.1})
    assert out.rgb.shape == (1, 1, 16, 16, 3) and torch.isfinite(out.rgb).all()
    assert (out.rgb <= out.alpha + 1e-6).all()  # premultiplied over a black background
    out.rgb.sum().backward()
    assert planes.grad.abs().sum() > 0

"""``panolam data gan``: a tiny multi-view dataset from the random-weight EG3D fixture generator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from panolam.cli import main
from panolam.data.dataset import load_subject
from panolam.data.extras import read_extra
from panolam.data.generators import find_generator_factory
from panolam.data.manifest import load_manifest

FIX = Path(__file__).parent / "fixtures" / "gan" / "eg3d_tiny"


def _args(out: Path, *extra: str) -> list[str]:
    return ["data", "gan", "--generator", "eg3d", "--checkpoint", str(FIX / "official.pkl"), "--out", str(out), "--subjects", "1",
            "--views", "2", "--size", "32", "--render-resolution", "8", "--no-progress", "--teacher-planes", *extra]


def test_data_gan_makes_a_resumable_dataset_with_teacher_planes(tmp_path):
    out = tmp_path / "ds"
    assert main(_args(out)) == 0
    m = load_manifest(out)
    assert m.counts()["train"] == 1
    cfg = m.header["generator_config"]
    assert cfg["family"] == "eg3d" and cfg["truncation"] == 0.7 and cfg["checkpoint"]["name"] == "official.pkl"
    assert cfg["network_kwargs"]["rendering_kwargs"]["ray_start"] == 2.25
    sub = load_subject(out, "train-000000")
    rgb, alpha = sub["images"], sub["masks"]
    assert rgb.shape == (2, 3, 32, 32) and alpha.shape == (2, 1, 32, 32)
    print("alpha mean", alpha.mean().item(), "rgb std", rgb.std().item())
    assert 0 < alpha.mean() <= 1 and rgb.std() > 0.01  # the renderer's opacity became the mask; images are not blank
    planes = read_extra(out, "teacher_planes", "train-000000")
    assert planes.shape == (3, 32, 256, 256) and planes.dtype == np.float16
    # The stored ws regenerate the stored planes with the checkpoint.
    from panolam.data.gan.pickle_io import load_gan_checkpoint
    from panolam.data.gan.plugin import build_network

    net, _ = build_network("eg3d", load_gan_checkpoint(FIX / "official.pkl"))
    ws = torch.from_numpy(read_extra(out, "gan_ws", "train-000000"))
    assert ws.shape == (net.num_ws, 512)
    with torch.no_grad():
        again = net.planes(ws[None], noise_mode="const")[0].half().numpy()
    assert np.abs(again.astype(np.float32) - planes.astype(np.float32)).max() < 1e-2
    # Resume: the same command skips the finished shard; other settings are refused.
    assert main(_args(out)) == 0
    assert main(_args(out, "--truncation", "0.5")) == 2


def test_data_gan_spherehead_stores_two_sphere_teacher_planes(tmp_path):
    out = tmp_path / "sh"
    args = _args(out, "--views", "1")
    args.remove("--teacher-planes")  # stored by default for SphereHead
    args[args.index("eg3d")] = "spherehead"
    args[args.index("--checkpoint") + 1] = str(FIX.parent / "spherehead_tiny" / "official.pkl")
    assert main(args) == 0
    planes = read_extra(out, "teacher_planes", "train-000000")
    assert planes.shape == (6, 32, 32, 32)  # spheres A, B × planes 0-2: panolam.geometry.triplane's layout
    assert load_manifest(out).header["generator_config"]["family"] == "spherehead"


def test_wrong_family_for_a_checkpoint_is_a_clear_error(tmp_path):
    args = _args(tmp_path / "x")
    args[args.index("eg3d")] = "panohead"
    assert main(args) == 2  # an EG3D checkpoint lacks PanoHead's rendering kwargs / tensors


def test_generators_are_found_by_name_or_module_path():
    from panolam.data.gan.plugin import GanGenerator

    assert find_generator_factory("panolam.data.gan.plugin:GanGenerator") is GanGenerator
    with pytest.raises(ValueError, match="registered"):
        find_generator_factory("nope")
    with pytest.raises(ValueError, match="cannot import"):
        find_generator_factory("panolam.data.gan.plugin:Missing")


"""``panolam teacher fit`` on a tiny real dataset: the loss falls, planes (float16 sidecars, the
network's plane shape) and the decoder (safetensors + JSON) are written, a rerun is idempotent, the
loader then yields ``teacher_planes`` and a training step with ``train.st_decoder`` computes L_st and
L_rgb^ST."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))
from _train_fixtures import BlobHeads  # noqa: E402

from panolam.cli import main  # noqa: E402
from panolam.config import get_config  # noqa: E402
from panolam.data.dataset import MultiViewDataset  # noqa: E402
from panolam.data.extras import read_extra  # noqa: E402
from panolam.data.synth import SynthSettings, generate_dataset  # noqa: E402
from panolam.train import loop  # noqa: E402
from panolam.train.teacher import DECODER_META, PLANES_EXTRA, fit_teacher, load_decoder, plane_shape  # noqa: E402

SUBJECTS = ["train-000000", "train-000001", "train-000002"]


pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("teacher_data")
    generate_dataset(root, BlobHeads(), SynthSettings(camera_set="front", views=4, size=32, subjects_per_shard=2), 3, 0, progress=False)
    cfg = get_config("tiny")
    # Two subjects fit the decoder jointly, the third is fitted against the frozen decoder.
    result = fit_teacher(cfg, root, steps=30, rays=128, subjects_per_batch=2, progress=False)
    return root, cfg, result


def test_loss_decreases_and_files_written(fitted):
    root, cfg, result = fitted
    assert result.fitted == SUBJECTS and result.skipped == []
    dec = np.asarray(result.decoder_losses)
    planes_only = np.asarray(result.plane_losses)
    assert len(dec) == 30 and len(planes_only) == 30
    assert dec[-5:].mean() < 0.8 * dec[:5].mean()
    assert planes_only[-5:].mean() < 0.8 * planes_only[:5].mean()
    for sub in SUBJECTS:
        arr = read_extra(root, PLANES_EXTRA, sub)
        assert arr.dtype == np.float16 and arr.shape == plane_shape(cfg) == (6, 8, 8, 8)
        assert np.isfinite(arr).all() and arr.std() > 0
    meta = json.loads((result.decoder_path.parent / DECODER_META).read_text())
    assert meta["plane_shape"] == [6, 8, 8, 8] and meta["fitted_on"] == SUBJECTS[:2]
    assert set(load_file(str(result.decoder_path))) == {f"decoder.net.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")}


def test_training_loader_and_frozen_decoder_match(fitted):
    root, cfg, result = fitted
    run_cfg = get_config("tiny", ["data.views_per_step=2", f"train.st_decoder={result.decoder_path}"])
    renderer = loop.build_st_renderer(run_cfg)
    saved = load_file(str(result.decoder_path))
    assert torch.equal(renderer.decoder.net[0].weight, saved["decoder.net.0.weight"])
    sample = next(iter(MultiViewDataset(root, "train", views_per_step=2, fixed_views=True)))
    assert tuple(sample["teacher_planes"].shape) == plane_shape(cfg)

    trainer = loop.Trainer(run_cfg, str(root), str(root / "run"), progress=False)
    res, _ = trainer.train_step(trainer.data.next())
    assert "st" not in res.absent and "rgb_st" not in res.absent
    assert float(res.terms["st"]) > 0 and float(res.terms["rgb_st"]) > 0
    assert torch.isfinite(res.total)


def test_rerun_is_idempotent_via_cli(fitted, capsys):
    root, _, result = fitted
    before = {s: read_extra(root, PLANES_EXTRA, s) for s in SUBJECTS}
    mtime = result.decoder_path.stat().st_mtime_ns
    rc = main(["teacher", "fit", "--data", str(root), "--config", "tiny", "--steps", "2", "--rays", "8", "--no-progress", "--device", "cpu"])
    out = capsys.readouterr().out
    assert rc == 0 and "fitted 0 subjects, kept 3" in out and f"train.st_decoder={result.decoder_path}" in out
    assert result.decoder_path.stat().st_mtime_ns == mtime
    assert all(np.array_equal(before[s], read_extra(root, PLANES_EXTRA, s)) for s in SUBJECTS)


def test_mismatched_config_and_bad_input_errors(fitted, tmp_path, capsys):
    root, _, result = fitted
    with pytest.raises(ValueError, match=r"fitted for planes \[6, 8, 8, 8\].*--force"):
        load_decoder(result.decoder_path, get_config("tiny", ["model.triplane_res=16"]))
    assert main(["teacher", "fit", "--data", str(tmp_path / "nope"), "--no-progress"]) == 2
    assert "no dataset there" in capsys.readouterr().err


def test_planes_phase_settings_are_separate(tmp_path):
    root = tmp_path / "data"
    generate_dataset(root, BlobHeads(), SynthSettings(camera_set="front", views=4, size=32, subjects_per_shard=2), 3, 0, progress=False)
    result = fit_teacher(get_config("tiny"), root, steps=12, rays=64, subjects_per_batch=1, plane_steps=5, plane_rays=32,
                         plane_subjects_per_batch=2, progress=False)
    # One joint batch of 1 subject (12 steps), then the other two together in one planes-only batch (5 steps).
    assert len(result.decoder_losses) == 12 and len(result.plane_losses) == 5
    assert result.fitted == SUBJECTS
    meta = json.loads((result.decoder_path.parent / DECODER_META).read_text())
    assert meta["fitted_on"] == SUBJECTS[:1] and meta["steps"] == 12
    with pytest.raises(ValueError, match="planes only"):
        fit_teacher(get_config("tiny"), root, plane_rays=0, progress=False)

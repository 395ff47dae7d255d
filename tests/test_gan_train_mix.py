"""Training on several datasets at once: a GAN dataset mixed with a procedural one (issue 13)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from panolam.cli import main

FIX = Path(__file__).parent / "fixtures" / "gan" / "eg3d_tiny"


@pytest.mark.slow
def test_train_one_step_on_gan_data_mixed_with_procedural(tmp_path):
    """Issue 13's end-to-end check: a GAN dataset from the random-weight fixture generator plus a
    procedural one, one training run drawing from both (MixedStream), resumable."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from _train_fixtures import make_tiny_dataset

    from panolam.config import get_config
    from panolam.train import loop
    from panolam.train.state_io import load_state

    gan = tmp_path / "gan"
    assert main(["data", "gan", "--generator", "eg3d", "--checkpoint", str(FIX / "official.pkl"), "--out", str(gan), "--subjects", "2",
                 "--views", "4", "--size", "32", "--render-resolution", "8", "--no-progress"]) == 0
    proc = make_tiny_dataset(tmp_path / "proc", n_train=4, n_test=0, views=8, size=32)
    cfg = get_config("tiny", ["data.views_per_step=2", "train.steps=3", "train.checkpoint_every=0", "train.batch_size=1"])
    trainer = loop.Trainer(cfg, [str(gan), proc], str(tmp_path / "run"), progress=False)
    drawn = [trainer.data.next()["dataset_index"] for _ in range(6)]
    assert drawn.count(1) == 4 and drawn.count(0) == 2  # 2 GAN : 4 procedural subjects -> 1:2 batches
    trainer.data.restore({"taken": [0, 0], "streams": [{"epoch": 0, "consumed": 0}] * 2})
    terms = trainer.fit()
    assert trainer.step == 3 and np.isfinite(terms["total"])
    state = load_state(tmp_path / "run" / "checkpoints" / "step_00000003")
    assert state["ranks"][0]["data"]["taken"] == [1, 2]

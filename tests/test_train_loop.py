"""Training engine on the real tiny model and a tiny dataset written by the data module: checkpoint
layout, exact resume (4 straight steps == 2 + resume + 2, bit for bit), NaN guard, LR schedule."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))
from _train_fixtures import make_tiny_dataset  # noqa: E402

from panolam.config import get_config  # noqa: E402
from panolam.train import loop  # noqa: E402
from panolam.train.state_io import load_state  # noqa: E402


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("data"))


def _cfg():
    return get_config("tiny", ["data.views_per_step=2", "train.steps=4", "train.checkpoint_every=2"])


def _weights(run: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / f"step_{step:08d}" / "model" / "model.safetensors"))


def test_resume_reproduces_uninterrupted_run(dataset, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    loop.train(_cfg(), dataset, str(straight), progress=False)
    loop.train(_cfg(), dataset, str(split), stop_after=2, progress=False)
    assert (split / "checkpoints" / "latest").read_text() == "step_00000002"
    loop.train(_cfg(), dataset, str(split), resume=True, progress=False)
    a, b = _weights(straight, 4), _weights(split, 4)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    # and training changed the weights
    init = _weights(straight, 2)
    assert any(not torch.equal(a[k], init[k]) for k in a)
    state = load_state(straight / "checkpoints" / "step_00000004")
    assert state["step"] == 4 and set(state["ranks"][0]) == {"rng", "data"} and "loop" in state["ranks"][0]["rng"]
    assert list((straight / "logs").glob("events.out.tfevents.*"))


def test_time_limit_stops_with_a_checkpoint_and_resume_finishes(dataset, tmp_path):
    run = tmp_path / "timed"
    trainer = loop.Trainer(_cfg(), dataset, str(run), progress=False)
    ticks = iter(range(1000))
    trainer._clock = lambda: float(next(ticks))  # one second per reading: the limit is read before each step
    trainer.fit(time_limit_s=2.5)
    assert trainer.step == 2 and (run / "checkpoints" / "latest").read_text() == "step_00000002"
    loop.train(_cfg(), dataset, str(run), resume=True, progress=False)
    assert (run / "checkpoints" / "latest").read_text() == "step_00000004"
    with pytest.raises(ValueError, match="time limit must be positive"):
        loop.train(_cfg(), dataset, str(run), time_limit_s=0, progress=False)


def test_set_total_steps_replans_the_schedule(dataset, tmp_path):
    cfg = get_config("tiny", ["data.views_per_step=2", "train.steps=100", "train.warmup_steps=1", "train.checkpoint_every=0"])
    trainer = loop.Trainer(cfg, dataset, str(tmp_path / "replan"), progress=False)
    trainer.fit(stop_after=1, save_at_end=False)
    assert not (tmp_path / "replan" / "checkpoints" / "latest").exists()  # the timed call wrote no checkpoint
    trainer.set_total_steps(3)
    trainer.fit()
    assert trainer.step == 3 and trainer.cfg.train.steps == 3
    assert trainer.scheduler.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12)  # decayed to zero at the new end
    with pytest.raises(ValueError, match="past the current step 3"):
        trainer.set_total_steps(2)


def test_nan_loss_names_step_and_subjects(dataset, tmp_path, monkeypatch):
    trainer = loop.Trainer(_cfg(), dataset, str(tmp_path / "nan"), progress=False)
    real = trainer.loss_fn.forward

    def poisoned(out, batch):
        res = real(out, batch)
        res.total = res.total * float("nan")
        return res

    monkeypatch.setattr(trainer.loss_fn, "forward", poisoned)
    with pytest.raises(loop.NonFiniteLoss, match=r"step 0 .*train-0000"):
        trainer.fit()


def test_lr_schedule_warmup_then_cosine():
    f = loop.lr_lambda(warmup=4, total=14)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(9) == pytest.approx(0.5) and f(14) == pytest.approx(0.0) and f(100) == pytest.approx(0.0)
    assert loop.resolve_mixed_precision("no") == "no"
    with pytest.raises(ValueError, match="mixed_precision"):
        loop.resolve_mixed_precision("fp8")


def test_resume_without_checkpoint_and_damaged_pointer(tmp_path):
    assert loop.latest_checkpoint(tmp_path) is None
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "latest").write_text("step_00000009")
    with pytest.raises(FileNotFoundError, match="step_00000009"):
        loop.latest_checkpoint(tmp_path)


def test_init_weights_starts_from_a_checkpoint(dataset, tmp_path):
    source = tmp_path / "source"
    loop.train(get_config("tiny", ["data.views_per_step=2", "train.steps=2"]), dataset, str(source), progress=False)
    trained = _weights(source, 2)
    # lr 0 (AdamW's decay is scaled by lr too): the run's weights stay exactly the ones it started from.
    frozen = ["data.views_per_step=2", "train.steps=1", "train.lr=0", "train.warmup_steps=0"]
    loop.train(get_config("tiny", [*frozen, f"train.init_weights={source}"]), dataset, str(tmp_path / "init"), progress=False)
    loop.train(get_config("tiny", frozen), dataset, str(tmp_path / "scratch"), progress=False)
    init, scratch = _weights(tmp_path / "init", 1), _weights(tmp_path / "scratch", 1)
    assert all(torch.equal(init[k], trained[k]) for k in trained)
    assert any(not torch.equal(scratch[k], trained[k]) for k in trained)
    with pytest.raises(FileNotFoundError, match="train.init_weights="):
        loop.Trainer(get_config("tiny", [f"train.init_weights={tmp_path / 'nowhere'}"]), dataset, str(tmp_path / "bad"), progress=False)


def test_pose_head_only_training_changes_the_pose_head_alone(dataset, tmp_path):
    """``train.trainable=pose_head``: the pose (and magnification) loss is the whole loss, it falls, only
    pose_head.* and magnification_head.* weights move, and the run's checkpoint is a complete network that loads like any other."""
    from panolam.model.checkpoint import load_model

    source = tmp_path / "source"
    loop.train(get_config("tiny", ["data.views_per_step=2", "train.steps=1"]), dataset, str(source), progress=False)
    start = _weights(source, 1)
    over = ["data.views_per_step=1", "train.steps=12", "train.batch_size=4", "train.lr=3e-3", "train.warmup_steps=0",
            "train.trainable=pose_head", f"train.init_weights={source}", "train.checkpoint_every=0"]
    trainer = loop.Trainer(get_config("tiny", over), dataset, str(tmp_path / "pose"), progress=False)
    probe = trainer.data.next()

    def probe_loss() -> float:
        from panolam.train.losses import pose_only_loss

        with torch.no_grad():
            out = trainer.model(loop.encoder_input(probe, trainer.cfg.model.image_size, torch.device("cpu")), pose_only=True)
        return float(pose_only_loss(out, probe).total)

    before = probe_loss()
    last = trainer.fit()
    assert set(last) == {"pose", "magnification", "total"} and probe_loss() < before
    after = _weights(tmp_path / "pose", 12)
    moved = {k for k in start if not torch.equal(start[k], after[k])}
    assert moved and all(k.startswith(("pose_head.", "magnification_head.")) for k in moved), sorted(moved)[:5]
    assert any(k.startswith("magnification_head.") for k in moved)
    model, _ = load_model(tmp_path / "pose" / "checkpoints" / "step_00000012" / "model")
    assert model.cfg.pose_head == "grid"
    with pytest.raises(ValueError, match="train.trainable"):
        loop.Trainer(get_config("tiny", ["train.trainable=encoder"]), dataset, str(tmp_path / "bad"), progress=False)
    with pytest.raises(ValueError, match="pose head"):
        loop.Trainer(get_config("tiny", ["train.trainable=pose_head", "model.pixel_aligned=false"]), dataset,
                     str(tmp_path / "bad2"), progress=False)


def test_heads_training_keeps_the_encoder_and_pose_head_fixed(dataset, tmp_path):
    """``train.trainable=heads``: the image tokens cannot change (encoder and pose head frozen) while the
    rest of the network learns from the full loss."""
    source = tmp_path / "source"
    loop.train(get_config("tiny", ["data.views_per_step=2", "train.steps=1"]), dataset, str(source), progress=False)
    start = _weights(source, 1)
    over = ["data.views_per_step=2", "train.steps=2", "train.warmup_steps=0", "train.trainable=heads",
            f"train.init_weights={source}"]
    loop.train(get_config("tiny", over), dataset, str(tmp_path / "heads"), progress=False)
    after = _weights(tmp_path / "heads", 2)
    moved = {k for k in start if not torch.equal(start[k], after[k])}
    assert moved and not any(k.startswith(("encoder.", "pose_head.", "magnification_head.")) for k in moved), sorted(moved)[:5]
    assert any(k.startswith("dense_head.") for k in moved)


def _camera_batch(b: int = 2, size: int = 32) -> dict:
    """A batch whose input views look at the head from yaw 40° (one view each)."""
    from panolam.geometry.cameras import EG3D_RADIUS, Cameras

    cam = Cameras.orbit([40.0], 0.0, EG3D_RADIUS, 18.837, size)
    return {"images": torch.rand(b, 1, 3, size, size), "masks": torch.ones(b, 1, 1, size, size),
            "world_to_cam": cam.world_to_cam.expand(b, 1, 4, 4).clone(), "K": cam.K.expand(b, 1, 3, 3).clone()}


def test_input_camera_choice_decides_what_the_points_are_projected_with():
    """``train.input_camera``: true passes the stored camera (noise 0: exactly it), estimated passes
    none, so the network projects with its own pose/magnification estimate as at inference."""
    batch = _camera_batch()
    truth = loop.model_inputs(batch, get_config("tiny", ["train.input_camera_noise_deg=0"]), torch.device("cpu"))
    assert torch.equal(truth["camera"].world_to_cam, loop.batch_input_camera(batch).world_to_cam)
    est = loop.model_inputs(batch, get_config("tiny", ["train.input_camera=estimated"]), torch.device("cpu"))
    assert est["camera"] is None and est["masks"].shape == (2, 1, 32, 32)


def test_bad_input_camera_choice_is_refused(dataset, tmp_path):
    with pytest.raises(ValueError, match="train.input_camera must be one of"):
        loop.Trainer(get_config("tiny", ["train.input_camera=oracle"]), dataset, str(tmp_path / "bad"), progress=False)

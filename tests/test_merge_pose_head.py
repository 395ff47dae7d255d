"""scripts/merge_pose_head.py joins the heads stage and the pose-head stage of the shipped model's recipe."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "merge_pose_head.py"


def _script():
    spec = importlib.util.spec_from_file_location("merge_pose_head", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _model(d: Path, enc: float, head: float, pose: float, extra: bool = False) -> Path:
    d.mkdir()
    t = {"encoder.w": torch.full((2,), enc), "dense_head.w": torch.full((3,), head), "pose_head.w": torch.full((2, 2), pose)}
    if extra:
        t["other.w"] = torch.zeros(1)
    save_file(t, str(d / "model.safetensors"))
    (d / "panolam.json").write_text(json.dumps({"from": d.name}))
    return d


def test_merge_takes_pose_head_from_one_and_the_rest_from_the_other(tmp_path):
    heads, pose = _model(tmp_path / "h", 1.0, 2.0, 3.0), _model(tmp_path / "p", 1.0, 5.0, 7.0)
    assert _script().merge(heads, pose, tmp_path / "out") == 1
    out = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert torch.equal(out["pose_head.w"], torch.full((2, 2), 7.0))
    assert torch.equal(out["dense_head.w"], torch.full((3,), 2.0))
    assert json.loads((tmp_path / "out" / "panolam.json").read_text()) == {"from": "h"}


@pytest.mark.parametrize("enc, extra, msg", [(9.0, False, "encoders differ"), (1.0, True, "different tensors")])
def test_merge_refuses_models_that_do_not_share_the_encoder(tmp_path, enc, extra, msg):
    heads, pose = _model(tmp_path / "h", 1.0, 2.0, 3.0), _model(tmp_path / "p", enc, 5.0, 7.0, extra)
    with pytest.raises(SystemExit, match=msg):
        _script().merge(heads, pose, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_merge_adds_a_magnification_head_and_switches_it_on(tmp_path):
    heads, pose = _model(tmp_path / "h", 1.0, 2.0, 3.0), _model(tmp_path / "p", 1.0, 5.0, 7.0)
    (heads / "panolam.json").write_text(json.dumps({"config": {"model": {"pixel_aligned": True}}, "num_parameters": 9}))
    t = load_file(str(pose / "model.safetensors"))
    t["magnification_head.mlp.w"] = torch.full((4,), 0.5)
    save_file(t, str(pose / "model.safetensors"))
    assert _script().merge(heads, pose, tmp_path / "out") == 2
    out = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert torch.equal(out["magnification_head.mlp.w"], torch.full((4,), 0.5)) and torch.equal(out["dense_head.w"], torch.full((3,), 2.0))
    meta = json.loads((tmp_path / "out" / "panolam.json").read_text())
    assert meta["config"]["model"] == {"pixel_aligned": True, "magnification_head": True} and meta["num_parameters"] == 13
    # The other way round would drop the head: refused.
    with pytest.raises(SystemExit, match="magnification head"):
        _script().merge(tmp_path / "out", heads, tmp_path / "out2")


def test_merge_only_the_magnification_head_keeps_the_pose_head(tmp_path):
    heads, pose = _model(tmp_path / "h", 1.0, 2.0, 3.0), _model(tmp_path / "p", 1.0, 5.0, 7.0)
    t = load_file(str(pose / "model.safetensors"))
    t["magnification_head.mlp.w"] = torch.full((4,), 0.5)
    save_file(t, str(pose / "model.safetensors"))
    script = _script()
    script.main([str(heads), str(pose), str(tmp_path / "out"), "--only", "magnification_head"])
    out = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert torch.equal(out["pose_head.w"], torch.full((2, 2), 3.0))  # the heads model's own
    assert torch.equal(out["magnification_head.mlp.w"], torch.full((4,), 0.5))
    with pytest.raises(SystemExit):
        script.merge(heads, pose, tmp_path / "out2", only=("encoder.",))

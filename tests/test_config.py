import json

import pytest

from panolam.config import PRESET_NAMES, from_dict, get_config


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_presets_build_and_round_trip_through_json(name):
    cfg = get_config(name)
    again = from_dict(json.loads(cfg.to_json()))
    assert again.to_dict() == cfg.to_dict()


def test_paper_preset_has_paper_hyperparameters():
    m, t = get_config("paper").model, get_config("paper").train
    assert (m.c_t, m.heads, m.point_blocks, m.dense_points, m.ray_samples, m.triplane_res) == (512, 16, 8, 10000, 32, 64)
    assert (m.offset_coarse, m.offset_dense) == (0.15, 0.056)
    assert (t.lambda_rgb_st, t.lambda_st) == (0.1, 1e-4)


def test_overrides_are_typed():
    cfg = get_config("tiny", ["model.c_t=64", "model.ray_aggregation=false", "train.lr=1", "model.encoder_layers=[1,2]"])
    assert cfg.model.c_t == 64 and cfg.model.ray_aggregation is False
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert cfg.model.encoder_layers == (1, 2)
    # A text field keeps text that JSON would read as a boolean or number.
    assert get_config("tiny", ["train.input_camera=true"]).train.input_camera == "true"
    assert get_config("tiny", ["train.out_dir=42"]).train.out_dir == "42"
    assert get_config("tiny", ["train.lpips_weights=null"]).train.lpips_weights is None


@pytest.mark.parametrize("bad, msg", [
    ("model.c_t", "section.field=value"),
    ("modle.c_t=3", "no config section"),
    ("model.nope=3", "has no field 'nope'"),
    ("model.c_t=abc", "expected int"),
    ("model.ray_aggregation=1", "true/false"),
])
def test_bad_overrides_say_what_is_wrong(bad, msg):
    with pytest.raises(ValueError, match=msg):
        get_config("tiny", [bad])


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown config preset"):
        get_config("huge")

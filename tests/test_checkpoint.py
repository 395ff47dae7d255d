"""Checkpoints: exact round trip, atomic overwrite, and clear errors for missing, corrupt, wrong-version
and mismatched checkpoints."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
import torch

from panolam.config import get_config
from panolam.model.checkpoint import FORMAT_VERSION, CheckpointError, load_model, read_metadata, save_model
from panolam.model.panolam import PanoLAM


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    cfg = get_config("tiny")
    model = PanoLAM(cfg.model).eval()
    path = save_model(tmp_path_factory.mktemp("ckpt") / "step_000010", model, cfg, extra={"step": 10})
    return path, model, cfg


def test_round_trip_gives_identical_outputs(saved):
    path, model, cfg = saved
    loaded, loaded_cfg = load_model(path)
    assert loaded_cfg.to_dict() == cfg.to_dict()
    assert not loaded.training
    images = torch.rand(2, 3, 56, 56)
    with torch.no_grad():
        a, b = model(images), loaded(images)
    for name in ("means", "quats", "scales", "opacities", "colors"):
        assert torch.equal(getattr(a.dense, name), getattr(b.dense, name))
        assert torch.equal(getattr(a.coarse, name), getattr(b.coarse, name))
    assert torch.equal(a.planes, b.planes)


def test_metadata_and_loading_by_file_path(saved):
    path, model, _ = saved
    meta = read_metadata(path)
    assert meta["format_version"] == FORMAT_VERSION and meta["num_parameters"] == model.num_parameters()
    assert meta["extra"] == {"step": 10} and meta["config_kind"] == "panolam" and "created" in meta
    loaded, _ = load_model(path / "model.safetensors")
    assert loaded.num_parameters() == model.num_parameters()
    from safetensors.torch import load_file

    keys = set(load_file(str(path / "model.safetensors")))
    assert not any("template" in k or "densify" in k for k in keys)  # template-derived data is never saved


def test_model_config_only_and_atomic_overwrite(tmp_path):
    cfg = get_config("tiny", ["model.ray_aggregation=false"]).model
    torch.manual_seed(1)
    first = PanoLAM(cfg)
    save_model(tmp_path / "ck", first, cfg)
    torch.manual_seed(2)
    second = PanoLAM(cfg)
    save_model(tmp_path / "ck", second, cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # no temporary or old directories left behind
    loaded, loaded_cfg = load_model(tmp_path / "ck")
    assert loaded_cfg == cfg
    name = "dense_head.out.weight"
    assert torch.equal(loaded.state_dict()[name], second.state_dict()[name])
    # The directory gets the permissions any new directory would get (not mkdtemp's 0700).
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "ck").stat().st_mode & 0o777 == 0o777 & ~mask


def test_missing_checkpoint_names_the_path_and_how_to_get_one(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no PanoLAM checkpoint at .*nothing.*panolam train"):
        load_model(tmp_path / "nothing")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "panolam.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="model.safetensors is missing"):
        load_model(tmp_path / "half")


def _copy(saved, tmp_path):
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(saved[0], dst)
    return dst


def test_corrupt_weights_are_a_clear_error(saved, tmp_path):
    path = _copy(saved, tmp_path)
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_model(path)
    (path / "panolam.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_model(path)


def test_wrong_format_version_is_refused(saved, tmp_path):
    path = _copy(saved, tmp_path)
    meta = json.loads((path / "panolam.json").read_text())
    meta["format_version"] = FORMAT_VERSION + 1
    (path / "panolam.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=f"format version {FORMAT_VERSION + 1}"):
        load_model(path)


def test_weights_not_matching_the_config_list_the_mismatches(saved, tmp_path):
    path = _copy(saved, tmp_path)
    meta = json.loads((path / "panolam.json").read_text())
    meta["config"]["model"]["c_t"] = 48  # every width changes
    meta["config"]["model"]["point_blocks"] = 2  # and a block appears
    (path / "panolam.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    text = str(err.value)
    assert "does not match" in text and "missing keys" in text and "point_branch.blocks.blocks.1" in text
    assert "shape mismatches" in text and "vs config" in text


def test_save_rejects_a_non_config(tmp_path, saved):
    with pytest.raises(TypeError, match="PanoLAMConfig or ModelConfig"):
        save_model(tmp_path / "x", saved[1], {"c_t": 32})
    assert not (tmp_path / "x").exists()


def test_frozen_pretrained_backbone_is_not_saved_and_is_reread(tmp_path):
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(3)
    base = get_config("tiny").model
    Dinov2Model(Dinov2Config(hidden_size=base.vit_dim, num_hidden_layers=base.vit_depth,
                             num_attention_heads=base.vit_heads, image_size=56)).save_pretrained(tmp_path / "dino")
    cfg = dataclasses.replace(base, encoder="dinov2", encoder_frozen=True, encoder_table_size=56,
                              encoder_weights=str(tmp_path / "dino"))
    model = PanoLAM(cfg).eval()
    save_model(tmp_path / "slim", model, cfg)
    save_model(tmp_path / "full", model, cfg, include_frozen_encoder=True)
    from safetensors.torch import load_file

    slim_keys = set(load_file(str(tmp_path / "slim" / "model.safetensors")))
    assert not any(k.startswith("encoder.backbone.") for k in slim_keys) and "encoder.fuse.0.weight" in slim_keys
    assert read_metadata(tmp_path / "slim")["encoder_excluded"] is True
    images = torch.rand(1, 3, 56, 56)
    with torch.no_grad():
        ref = model(images).dense.colors
        assert torch.equal(load_model(tmp_path / "slim")[0](images).dense.colors, ref)
        (tmp_path / "dino").rename(tmp_path / "moved")
        assert torch.equal(load_model(tmp_path / "full")[0](images).dense.colors, ref)  # stands alone
        with pytest.raises(CheckpointError, match="without its frozen DINOv2 backbone"):
            load_model(tmp_path / "slim")
        again, again_cfg = load_model(tmp_path / "slim", encoder_weights=str(tmp_path / "moved"))
        assert torch.equal(again(images).dense.colors, ref) and again_cfg.encoder_weights == str(tmp_path / "moved")
    from panolam.model.checkpoint import load_weights_into

    with pytest.warns(UserWarning, match="RANDOMLY"):
        random_backbone = PanoLAM(dataclasses.replace(cfg, encoder_weights=None))
    with pytest.raises(CheckpointError, match="holds no DINOv2 backbone"):
        load_weights_into(random_backbone, tmp_path / "slim")


def test_load_weights_into_an_existing_model(saved):
    from panolam.model.checkpoint import load_weights_into

    path, model, cfg = saved
    torch.manual_seed(9)
    other = PanoLAM(cfg.model).eval()
    meta = load_weights_into(other, path)
    assert meta["extra"] == {"step": 10}
    for k, v in model.state_dict().items():
        assert torch.equal(other.state_dict()[k], v), k
    wrong = PanoLAM(dataclasses.replace(cfg.model, c_t=48))
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_weights_into(wrong, path)


def test_a_checkpoint_from_before_pixel_aligned_loads_as_the_plain_network(tmp_path):
    """Configs saved before ``model.pixel_aligned`` existed lack it; they must not take the (pixel-aligned)
    preset's value, or every older checkpoint of the ``default`` preset would stop loading."""
    import json

    from panolam.config import get_config
    from panolam.model.checkpoint import load_model, save_model
    from panolam.model.panolam import PanoLAM

    cfg = get_config("tiny", ["model.pixel_aligned=false"])
    where = save_model(tmp_path / "old", PanoLAM(cfg.model), cfg)
    meta_path = where / "panolam.json"
    meta = json.loads(meta_path.read_text())
    del meta["config"]["model"]["pixel_aligned"]
    meta_path.write_text(json.dumps(meta))
    model, loaded = load_model(where)
    assert get_config("tiny").model.pixel_aligned  # the preset itself is pixel-aligned ...
    assert not loaded.model.pixel_aligned and not hasattr(model, "pose_head")  # ... the old checkpoint is not


def test_a_checkpoint_from_before_the_grid_pose_head_loads_with_its_own_head(tmp_path):
    """A pixel-aligned checkpoint saved before ``model.pose_head`` / ``model.dense_scale_floor`` /
    ``model.silhouette_cues`` / ``model.magnification_head`` existed has the mean-pooled pose head, no
    scale floor, no silhouette cues and no magnification head; it must load as such, weights and all."""
    import json

    from panolam.config import get_config
    from panolam.model.checkpoint import load_model, save_model
    from panolam.model.panolam import PanoLAM

    cfg = get_config("tiny", ["model.pose_head=mean", "model.silhouette_cues=false", "model.magnification_head=false"])
    torch.manual_seed(0)
    old = PanoLAM(cfg.model)
    where = save_model(tmp_path / "old", old, cfg)
    meta_path = where / "panolam.json"
    meta = json.loads(meta_path.read_text())
    for field in ("pose_head", "dense_scale_floor", "silhouette_cues", "magnification_head"):
        del meta["config"]["model"][field]
    meta_path.write_text(json.dumps(meta))
    model, loaded = load_model(where)
    preset = get_config("tiny").model
    assert preset.pose_head == "grid" and preset.silhouette_cues and preset.magnification_head  # the preset moved on ...
    assert loaded.model.pose_head == "mean" and loaded.model.dense_scale_floor == 0.0  # ... the old checkpoint did not
    assert not loaded.model.silhouette_cues and not hasattr(model, "point_silhouette_proj")
    assert not loaded.model.magnification_head and not hasattr(model, "magnification_head")
    for (name, a), (_, b) in zip(old.pose_head.state_dict().items(), model.pose_head.state_dict().items()):
        assert torch.equal(a, b), name


def test_fine_tuning_init_keeps_a_rebuilt_module_fresh_and_loads_the_rest(tmp_path):
    """``load_weights_into(allow_missing=True)`` from a mean-pose-head checkpoint into a grid-pose-head
    network: the pose head keeps its initialisation (and is reported), every other weight loads; a
    strict load refuses the mismatch."""
    from panolam.config import get_config
    from panolam.model.checkpoint import CheckpointError, load_weights_into, save_model
    from panolam.model.panolam import PanoLAM

    torch.manual_seed(0)
    old_cfg = get_config("tiny", ["model.pose_head=mean"])
    old = PanoLAM(old_cfg.model)
    where = save_model(tmp_path / "old", old, old_cfg)
    torch.manual_seed(1)
    new = PanoLAM(get_config("tiny").model)
    fresh = {k: v.clone() for k, v in new.pose_head.state_dict().items()}
    meta = load_weights_into(new, where, allow_missing=True)
    assert meta["missing_keys"] and all(k.startswith("pose_head.") for k in meta["missing_keys"])
    assert all(torch.equal(v, new.pose_head.state_dict()[k]) for k, v in fresh.items())
    old_state = old.state_dict()
    assert all(torch.equal(v, old_state[k]) for k, v in new.state_dict().items() if not k.startswith("pose_head."))
    with pytest.raises(CheckpointError, match="pose_head"):
        load_weights_into(PanoLAM(get_config("tiny").model), where)


def test_a_checkpoint_from_before_flip_averaging_keeps_the_single_camera_estimate():
    """``model.pose_flip_average`` is on in the default preset; a saved default config without the field
    (every checkpoint before it) loads with it off, so its behaviour does not change under it."""
    from pathlib import Path

    from panolam.config import get_config
    from panolam.model.checkpoint import _config_from_meta

    cfg = get_config("default").to_dict()
    assert cfg["model"].pop("pose_flip_average") is True
    _, model_cfg = _config_from_meta({"config_kind": "full", "config": cfg}, Path("old"))
    assert model_cfg.pose_flip_average is False and model_cfg.magnification_head is True

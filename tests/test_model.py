"""PanoLAM network (tiny preset): shapes, activation ranges and bounds, gradients, ablation switches,
frozen encoder, encoder weight loading from local files, and the paper preset building."""

from __future__ import annotations

import dataclasses
import math
import warnings

import pytest
import torch

from panolam.config import get_config
from panolam.model.encoder import EncoderWeightsError, ImageEncoder, official_dinov2_to_hf
from panolam.model.heads import SCALE_MIN
from panolam.model.panolam import PanoLAM
from panolam.model.point_branch import positional_encoding


def tiny_cfg(**changes):
    """The tiny preset as the paper's network (the pixel-aligned additions have their own tests)."""
    return dataclasses.replace(get_config("tiny").model, **{"pixel_aligned": False, "silhouette_cues": False, "magnification_head": False, **changes})


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return PanoLAM(tiny_cfg())


def _check_gaussians(g, n, batch, cfg, offset_max, base):
    assert g.means.shape == (batch, n, 3) and g.quats.shape == (batch, n, 4)
    assert g.scales.shape == (batch, n, 3) and g.opacities.shape == (batch, n) and g.colors.shape == (batch, n, 3)
    assert torch.all((g.colors >= 0) & (g.colors <= 1))
    assert torch.all((g.opacities > 0) & (g.opacities < 1))
    assert torch.allclose(g.quats.norm(dim=-1), torch.ones(batch, n), atol=1e-5)
    assert torch.all((g.scales >= SCALE_MIN) & (g.scales <= cfg.scale_max))
    assert (g.means - base).abs().max() <= offset_max + 1e-6


def test_forward_shapes_ranges_and_offset_bounds(tiny_model):
    cfg = tiny_model.cfg
    images = torch.rand(2, 3, 40, 48)  # not image_size: the encoder resizes
    with torch.no_grad():
        out = tiny_model(images)
    mc, md = tiny_model.num_coarse, tiny_model.num_dense
    assert md == cfg.dense_points and mc == tiny_model.template_vertices.shape[0]
    _check_gaussians(out.coarse, mc, 2, cfg, cfg.offset_coarse, tiny_model.template_vertices)
    from panolam.geometry.densify import densify

    dense_base = densify(tiny_model.densify_matrix, out.coarse.means)
    _check_gaussians(out.dense, md, 2, cfg, cfg.offset_dense, dense_base)
    assert out.planes.shape == (2, 6, cfg.triplane_channels, cfg.triplane_res, cfg.triplane_res)
    # Different images give different heads (the image actually conditions the output).
    assert not torch.allclose(out.dense.colors[0], out.dense.colors[1])


def test_untrained_model_is_a_head_shaped_blob(tiny_model):
    with torch.no_grad():
        out = tiny_model(torch.rand(1, 3, 56, 56))
    edge = torch.cdist(tiny_model.template_vertices, tiny_model.template_vertices)
    edge.fill_diagonal_(math.inf)
    spacing = edge.min(dim=1).values.mean()
    assert out.coarse.opacities.min() > 0.5 and out.coarse.opacities.max() < 0.9
    assert 0.3 * spacing < out.coarse.scales.mean() < 4 * spacing
    assert (out.coarse.means - tiny_model.template_vertices).abs().max() < 0.02  # small initial offsets
    assert torch.allclose(out.coarse.quats[..., 0], torch.ones(()), atol=0.05)  # near identity


def _all_params_get_grads(model, images):
    out = model(images)
    loss = out.dense.means.sum() + out.dense.colors.sum() + out.dense.opacities.sum() + out.dense.scales.sum() * 10
    loss = loss + out.dense.quats[..., 1:].sum() + out.planes.square().mean()
    if out.coarse is not None:
        c = out.coarse
        loss = loss + c.means.sum() + c.colors.sum() + c.opacities.sum() + c.scales.sum() * 10 + c.quats[..., 1:].sum()
    loss.backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    without = [n for n, p in trainable.items() if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    return trainable, without


def test_gradients_reach_every_trainable_parameter():
    torch.manual_seed(1)
    model = PanoLAM(tiny_cfg())
    trainable, without = _all_params_get_grads(model, torch.rand(2, 3, 56, 56))
    assert len(trainable) > 50
    assert not without, f"no gradient for {without}"
    groups = {n.split(".")[0] for n in trainable}
    assert groups == {"encoder", "point_branch", "triplane_branch", "dense_head"}


@pytest.mark.parametrize("change", [{"coarse_to_fine": False}, {"ray_aggregation": False}])
def test_ablation_switches_run_and_train(change):
    torch.manual_seed(2)
    cfg = tiny_cfg(**change)
    model = PanoLAM(cfg)
    trainable, without = _all_params_get_grads(model, torch.rand(1, 3, 56, 56))
    assert not without, f"no gradient for {without}"
    with torch.no_grad():
        out = model(torch.rand(1, 3, 56, 56))
    assert out.dense.means.shape == (1, cfg.dense_points, 3)
    if change.get("coarse_to_fine") is False:
        assert out.coarse is None
        assert (out.dense.means - model.dense_template).abs().max() <= cfg.offset_coarse + 1e-6
    else:
        assert out.coarse.means.shape[1] == model.num_coarse
        assert model.triplane_branch.aggregate_mlp[0].in_features == cfg.triplane_channels


def test_ray_aggregation_width_matches_cameras_and_samples(tiny_model):
    cfg = tiny_model.cfg
    assert tiny_model.triplane_branch.aggregate_mlp[0].in_features == cfg.ray_cameras * cfg.ray_samples * cfg.triplane_channels


def test_frozen_encoder_gets_no_gradient_and_stays_in_eval():
    torch.manual_seed(3)
    model = PanoLAM(tiny_cfg(encoder_frozen=True))
    model.train()
    assert not model.encoder.backbone.training
    assert all(not p.requires_grad for p in model.encoder.backbone.parameters())
    out = model(torch.rand(1, 3, 56, 56))
    out.dense.colors.sum().backward()
    assert all(p.grad is None for p in model.encoder.backbone.parameters())
    assert all(p.grad is not None for p in model.encoder.fuse.parameters())
    summary = model.param_summary()["encoder"]
    assert summary["trainable"] == sum(p.numel() for p in model.encoder.fuse.parameters())
    assert model.num_parameters(trainable_only=True) < model.num_parameters()


def test_positional_encoding_matches_nerf_formula():
    x = torch.tensor([[0.25, -0.5, 0.125]])
    enc = positional_encoding(x, 2)
    assert enc.shape == (1, 3 + 12)
    assert torch.allclose(enc[0, :3], x[0])
    # sin(2^k π x_j) laid out per coordinate j, then k.
    expected_sin = torch.tensor([math.sin(math.pi * 0.25), math.sin(2 * math.pi * 0.25),
                                 math.sin(-math.pi * 0.5), math.sin(-2 * math.pi * 0.5),
                                 math.sin(math.pi * 0.125), math.sin(2 * math.pi * 0.125)])
    assert torch.allclose(enc[0, 3:9], expected_sin, atol=1e-6)


def test_encoder_uses_requested_layers_and_rejects_bad_config():
    cfg = tiny_cfg(encoder_layers=(2, 3))
    enc = ImageEncoder(cfg)
    assert len(enc.backbone.encoder.layer) == 3  # blocks after the deepest fused one are cut
    assert enc.fuse[0].in_features == 2 * cfg.vit_dim
    tokens = enc(torch.rand(1, 3, 56, 56))
    assert tokens.shape == (1, (56 // 14) ** 2, cfg.c_t)  # CLS dropped
    with pytest.raises(ValueError, match="encoder_layers"):
        ImageEncoder(tiny_cfg(encoder_layers=(0, 5)))
    with pytest.raises(ValueError, match="multiple of patch_size"):
        ImageEncoder(tiny_cfg(image_size=50))
    with pytest.raises(ValueError, match="images must be"):
        enc(torch.rand(1, 56, 56))


def _dinov2_cfg(**changes):
    return tiny_cfg(encoder="dinov2", encoder_frozen=True, encoder_table_size=42, **changes)


def test_dinov2_without_weights_warns_loudly():
    with pytest.warns(UserWarning, match="RANDOMLY INITIALISED"):
        ImageEncoder(_dinov2_cfg())


def test_dinov2_missing_weights_path_is_a_clear_error(tmp_path):
    with pytest.raises(EncoderWeightsError, match=str(tmp_path / "nope")):
        ImageEncoder(_dinov2_cfg(encoder_weights=str(tmp_path / "nope")))


def _reference_backbone(cfg):
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(4)
    conf = Dinov2Config(hidden_size=cfg.vit_dim, num_hidden_layers=cfg.vit_depth, num_attention_heads=cfg.vit_heads,
                        patch_size=14, image_size=42, layerscale_value=0.5)
    model = Dinov2Model(conf).eval()
    with torch.no_grad():  # make layer scales non-trivial so a wrong mapping shows
        for name, p in model.named_parameters():
            if "lambda1" in name or "bias" in name:
                p.uniform_(-0.5, 0.5)
    return model


def _expected_tokens(ref, enc, images):
    pixels = enc.preprocess(images)
    with torch.no_grad():
        hs = ref(pixel_values=pixels, output_hidden_states=True).hidden_states
        return torch.cat([ref.layernorm(hs[i][:, 1:]) for i in enc.layers], dim=-1)


def _assert_loads_reference(cfg, ref, weights) -> None:
    """An encoder built from ``weights`` gives the reference backbone's tokens."""
    enc = ImageEncoder(dataclasses.replace(cfg, encoder_weights=str(weights)))
    images = torch.rand(1, 3, 56, 56)
    with torch.no_grad():
        got = enc.backbone_features(enc.preprocess(images))
    assert torch.allclose(got, _expected_tokens(ref, enc, images), atol=1e-5)


def test_dinov2_loads_a_local_hugging_face_directory(tmp_path):
    cfg = _dinov2_cfg()
    ref = _reference_backbone(cfg)
    ref.save_pretrained(tmp_path / "dino")
    _assert_loads_reference(cfg, ref, tmp_path / "dino")
    with pytest.raises(EncoderWeightsError, match="vit_dim"):
        ImageEncoder(dataclasses.replace(cfg, vit_dim=64, vit_heads=2, encoder_weights=str(tmp_path / "dino")))
    with pytest.raises(EncoderWeightsError, match="encoder_table_size=42"):
        ImageEncoder(dataclasses.replace(cfg, encoder_table_size=518, encoder_weights=str(tmp_path / "dino")))


def _as_official(ref) -> dict[str, torch.Tensor]:
    """Write the reference model in the official DINOv2 key layout (fused qkv, ls*.gamma)."""
    sd = ref.state_dict()
    out = {"cls_token": sd["embeddings.cls_token"], "mask_token": sd["embeddings.mask_token"],
           "pos_embed": sd["embeddings.position_embeddings"],
           "patch_embed.proj.weight": sd["embeddings.patch_embeddings.projection.weight"],
           "patch_embed.proj.bias": sd["embeddings.patch_embeddings.projection.bias"],
           "norm.weight": sd["layernorm.weight"], "norm.bias": sd["layernorm.bias"]}
    for i in range(ref.config.num_hidden_layers):
        p = f"encoder.layer.{i}."
        for leaf in ("weight", "bias"):
            out[f"blocks.{i}.attn.qkv.{leaf}"] = torch.cat([sd[p + f"attention.{n}_proj.{leaf}"] for n in "qkv"])
            out[f"blocks.{i}.attn.proj.{leaf}"] = sd[p + f"attention.o_proj.{leaf}"]
            for name in ("norm1", "norm2", "mlp.fc1", "mlp.fc2"):
                out[f"blocks.{i}.{name}.{leaf}"] = sd[p + f"{name}.{leaf}"]
        out[f"blocks.{i}.ls1.gamma"] = sd[p + "layer_scale1.lambda1"]
        out[f"blocks.{i}.ls2.gamma"] = sd[p + "layer_scale2.lambda1"]
    return out


def test_dinov2_loads_an_official_pth_file(tmp_path):
    cfg = _dinov2_cfg()
    ref = _reference_backbone(cfg)
    torch.save(_as_official(ref), tmp_path / "dinov2_vits14_pretrain.pth")
    _assert_loads_reference(cfg, ref, tmp_path / "dinov2_vits14_pretrain.pth")
    with pytest.raises(EncoderWeightsError, match="unexpected key"):
        official_dinov2_to_hf({"head.weight": torch.zeros(1)})
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(EncoderWeightsError, match="junk.pth"):
        ImageEncoder(dataclasses.replace(cfg, encoder_weights=str(tmp_path / "junk.pth")))


@pytest.mark.slow
def test_paper_preset_builds_and_runs_one_small_forward():
    # Full paper sizes (ViT-L/14 random init, C_t 512, 8+8 blocks, 5023 points, K_m 32) except a 28 px
    # input, 6K dense points and 16x16 tri-planes so one CPU forward stays short (neither changes the
    # parameter count except the tri-plane query tokens, added back below).
    cfg = get_config("paper", ["model.image_size=28", "model.triplane_res=16", "model.dense_points=6000"]).model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = PanoLAM(cfg)
    n = model.num_parameters()
    full = n + 6 * (64 * 64 - 16 * 16) * cfg.c_t  # the 64x64 tri-plane queries of the real paper preset
    print(f"paper preset parameters: {full:,} ({model.num_parameters(trainable_only=True) + full - n:,} trainable)")
    assert 300e6 < full < 600e6
    assert model.param_summary()["encoder"]["trainable"] < 5e6  # DINOv2 frozen, only the fusion MLP trains
    with torch.no_grad():
        out = model(torch.rand(1, 3, 28, 28))
    assert abs(out.coarse.means.shape[1] - 5023) <= 503  # the built-in template is within 10% of 5023
    assert out.dense.means.shape == (1, 6000, 3)
    assert out.planes.shape == (1, 6, 32, 16, 16)


def test_bf16_autocast_forward_and_backward(tiny_model):
    tiny_model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = tiny_model(torch.rand(1, 3, 56, 56))
        loss = out.dense.colors.float().mean() + out.coarse.means.float().mean() + out.planes.float().mean()
    loss.backward()
    assert torch.isfinite(out.dense.means).all()
    assert tiny_model.dense_head.out.weight.grad is not None
    assert torch.isfinite(tiny_model.point_branch.embed[0].weight.grad).all()
    tiny_model.zero_grad()


@pytest.mark.parametrize("up", [1, 2])
def test_each_plane_cell_comes_from_its_own_query_token(up):
    from panolam.model.triplane_branch import TriplaneBranch

    torch.manual_seed(5)
    cfg = tiny_cfg(triplane_blocks=0, triplane_upsample=up)  # no attention: tokens do not mix
    branch = TriplaneBranch(cfg)
    planes = branch.planes(torch.rand(1, 4, cfg.c_t))
    assert planes.shape == (1, 6, cfg.triplane_channels, cfg.triplane_res, cfg.triplane_res)
    side = cfg.triplane_res // up
    assert branch.queries.shape[0] == 6 * side * side
    plane, row, col = 4, 5, 2
    planes[0, plane, :, row, col].sum().backward()
    touched = branch.queries.grad.abs().sum(dim=1).nonzero().flatten().tolist()
    assert touched == [plane * side * side + (row // up) * side + col // up]
    with pytest.raises(ValueError, match="triplane_upsample"):
        TriplaneBranch(tiny_cfg(triplane_upsample=3))

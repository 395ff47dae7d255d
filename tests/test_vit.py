"""MiniViT (panolam.model.vit) against transformers' Dinov2Model: same keys, same numerics, and the
shipped default model loads into it with unchanged outputs."""
from __future__ import annotations

import torch

from panolam.config.model import ModelConfig
from panolam.model.encoder import _dinov2_config
from panolam.model.vit import MiniViT, ViTConfig


def _pair(image_size: int = 56) -> tuple[torch.nn.Module, MiniViT]:
    from transformers import Dinov2Model

    cfg = ModelConfig(vit_dim=48, vit_depth=3, vit_heads=4, patch_size=14, image_size=image_size)
    torch.manual_seed(0)
    ref = Dinov2Model._from_config(_dinov2_config(cfg, image_size), attn_implementation="sdpa").eval()
    with torch.no_grad():
        for name, p in ref.named_parameters():  # non-trivial layer scales, norms and biases
            p.add_(0.05 * torch.randn_like(p))
    mine = MiniViT(ViTConfig(48, 3, 4, 14, image_size)).eval()
    mine.load_state_dict(ref.state_dict(), strict=True)
    return ref, mine


def test_same_keys_and_strict_load_both_ways() -> None:
    ref, mine = _pair()
    assert list(ref.state_dict()) == list(mine.state_dict())
    ref.load_state_dict(mine.state_dict(), strict=True)


def test_forward_parity_fp32() -> None:
    ref, mine = _pair()
    torch.manual_seed(1)
    for side in (56, 84):  # the table's own grid, and one that interpolates the position table
        x = torch.randn(2, 3, side, side)
        with torch.no_grad():
            a = ref(pixel_values=x, output_hidden_states=True)
            b = mine(pixel_values=x, output_hidden_states=True)
        assert len(a.hidden_states) == len(b.hidden_states) == 4
        for ha, hb in zip(a.hidden_states, b.hidden_states):
            assert (ha - hb).abs().max().item() <= 1e-5
        assert (a.last_hidden_state - b.last_hidden_state).abs().max().item() <= 1e-5


def test_shipped_model_loads_into_minivit_with_unchanged_outputs() -> None:
    from panolam.model.checkpoint import load_model
    from panolam.model.encoder import build_backbone

    model, _ = load_model("src/panolam/assets/default_model")
    assert isinstance(model.encoder.backbone, MiniViT)
    from transformers import Dinov2Model

    cfg = model.cfg
    ref = build_backbone(cfg, load_weights=True)
    assert isinstance(ref, Dinov2Model)
    ref.encoder.layer = ref.encoder.layer[:len(model.encoder.backbone.encoder.layer)]
    ref.load_state_dict(model.encoder.backbone.state_dict(), strict=True)
    ref.eval()
    torch.manual_seed(2)
    x = torch.rand(1, 3, cfg.image_size, cfg.image_size)
    with torch.no_grad():
        tokens = model.encoder.backbone(pixel_values=x, output_hidden_states=True).hidden_states
        ref_tokens = ref(pixel_values=x, output_hidden_states=True).hidden_states
    for a, b in zip(tokens, ref_tokens):
        assert (a - b).abs().max().item() <= 1e-5


def test_shipped_model_forward_identical_with_transformers_backbone() -> None:
    """The whole network's output with the MiniViT backbone equals, bit for bit, that of the same
    checkpoint loaded into a model built with transformers' Dinov2Model (how it loaded before)."""
    from transformers import Dinov2Model

    from panolam.model.checkpoint import _read_weights, _resolve_dir, load_model
    from panolam.model.panolam import PanoLAM

    model, _ = load_model("src/panolam/assets/default_model")
    before = PanoLAM(model.cfg, load_encoder_weights=True)
    assert isinstance(before.encoder.backbone, Dinov2Model)
    before.load_state_dict(_read_weights(_resolve_dir("src/panolam/assets/default_model")), strict=True)
    before.eval()
    torch.manual_seed(3)
    x = torch.rand(1, 3, 160, 160)
    with torch.no_grad():
        a, b = model(x), before(x)
    for name in ("means", "quats", "scales", "opacities", "colors"):
        assert torch.equal(getattr(a.dense, name), getattr(b.dense, name)), name
    assert torch.equal(a.planes, b.planes)
    if a.pose is not None:
        assert torch.equal(a.pose, b.pose)

"""Image encoder (paper eq. 1, DESIGN §2): a DINOv2 ViT whose patch tokens from several depths are
concatenated on channels and fused by an MLP into the image tokens F_I of width C_t.

Two transformer kinds, both the transformers ``Dinov2Model`` class so that code paths and memory behaviour match:
``encoder="dinov2"`` is the real backbone (paper: ViT-L/14, frozen), with weights read ONLY from a
local path given by ``encoder_weights`` — a Hugging Face directory (``config.json`` +
``model.safetensors``) or an official ``dinov2_vit*14_pretrain.pth`` file, whose keys are mapped to
the transformers layout here. Nothing is ever fetched from a hub; without weights the backbone is
randomly initialised and a warning says so. ``encoder="vit"`` builds the same class at the small
sizes of the config, randomly initialised and trainable (the CPU presets); a checkpoint of it is loaded
into :class:`panolam.model.vit.MiniViT` instead (same keys, same numerics, no transformers import,
which costs ~4 s of a cold start). ``encoder="vgg"`` is a
pretrained CNN instead (DESIGN §9): the shift-tolerant VGG16 trunk whose weights ship in
``stlpips-pytorch`` (see :mod:`panolam.model.cnn_trunk`), ALWAYS frozen whatever ``encoder_frozen``
says (it is a fixed feature extractor, and then checkpoints need not store it); its relu3_3, relu4_3 and relu5_3 maps
(slices 3-5, 256/512/512 channels) are average-pooled to the (image_size / patch_size)² token grid,
concatenated on channels and fused by the same MLP as the DINOv2 layers. Images come in as
(B, 3, H, W) in [0, 1]; they are resized to ``image_size`` and ImageNet-normalised inside.

Encoders are a registry (:func:`register_encoder`): a builder returns a :class:`Backbone` (module,
feature width, frozen/pretrained flags, pixels -> grid tokens), and everything downstream — the fused
tokens, the token map the pixel-aligned sampler reads, checkpoints — works for any registered name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from panolam.config.model import ModelConfig
from panolam.errors import PanoLAMError
from panolam.model.cnn_trunk import BlurPool, Trunk, load_pretrained_trunk, trunk_for

# ImageNet normalisation. For the "vgg" trunk this equals the LPIPS scaling layer it was trained
# behind: ((2x - 1) - (2·mean - 1)) / (2·std) = (x - mean) / std.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VGG_STAGES = (3, 4, 5)  # 1-based VGG16 trunk slices fused by encoder="vgg": relu3_3, relu4_3, relu5_3
VGG_MIN_SIZE = 32  # four blur-pool halvings with reflect padding 2 need at least this many pixels


class EncoderWeightsError(PanoLAMError):
    """The encoder weights at ``encoder_weights`` are missing, unreadable or do not fit the config."""


def _dinov2_config(cfg: ModelConfig, table_size: int):
    from transformers import Dinov2Config

    return Dinov2Config(
        hidden_size=cfg.vit_dim, num_hidden_layers=cfg.vit_depth, num_attention_heads=cfg.vit_heads,
        patch_size=cfg.patch_size, image_size=table_size, mlp_ratio=4,
    )


def official_dinov2_to_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map an official DINOv2 ``*_pretrain.pth`` state dict to the transformers ``Dinov2Model`` layout.

    The official blocks fuse q, k, v into one ``attn.qkv`` matrix (rows ordered q, k, v); transformers
    keeps three projections, so the matrix is split in thirds. SwiGLU (ViT-g) checkpoints are refused.
    """
    if any(".mlp.w12." in k for k in state):
        raise EncoderWeightsError("SwiGLU DINOv2 checkpoints (ViT-g) are not supported; use ViT-S/B/L/14")
    top = {
        "cls_token": "embeddings.cls_token", "mask_token": "embeddings.mask_token",
        "pos_embed": "embeddings.position_embeddings",
        "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
        "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
        "norm.weight": "layernorm.weight", "norm.bias": "layernorm.bias",
    }
    block = {
        "norm1": "norm1", "norm2": "norm2", "attn.proj": "attention.o_proj", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2",
    }
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in top:
            out[top[key]] = value.reshape(1, -1) if key == "mask_token" else value
            continue
        parts = key.split(".")
        if parts[0] != "blocks":
            raise EncoderWeightsError(f"unexpected key {key!r} in official DINOv2 checkpoint")
        prefix, rest = f"encoder.layer.{parts[1]}.", ".".join(parts[2:])
        if rest.startswith("attn.qkv."):
            for name, chunk in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                out[prefix + f"attention.{name}.{parts[-1]}"] = chunk.contiguous()
        elif rest in ("ls1.gamma", "ls2.gamma"):
            out[prefix + f"layer_scale{rest[2]}.lambda1"] = value
        else:
            module, leaf = rest.rsplit(".", 1)
            if module not in block:
                raise EncoderWeightsError(f"unexpected key {key!r} in official DINOv2 checkpoint")
            out[prefix + f"{block[module]}.{leaf}"] = value
    return out


def _skip_random_init():
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # other transformers versions: initialise normally (slower, same result)
        return contextlib.nullcontext()
    return no_init_weights()


def _load_official_pth(path: Path, cfg: ModelConfig):
    from transformers import Dinov2Model

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the file is unusable
        raise EncoderWeightsError(f"cannot read DINOv2 weights {path}: {exc}") from exc
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or "pos_embed" not in state:
        raise EncoderWeightsError(f"{path} is not an official DINOv2 state dict (no 'pos_embed' entry)")
    state = official_dinov2_to_hf(state)
    side = int(round((state["embeddings.position_embeddings"].shape[1] - 1) ** 0.5)) * cfg.patch_size
    _check_table(side, cfg, path)
    with _skip_random_init():  # every weight is overwritten just below; ViT-L init alone takes ~20 s on CPU
        model = Dinov2Model._from_config(_dinov2_config(cfg, side), attn_implementation="sdpa")
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise EncoderWeightsError(
            f"DINOv2 weights {path} do not fit vit_dim={cfg.vit_dim}, vit_depth={cfg.vit_depth}: "
            f"missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}"
        )
    return model


def _check_table(side: int, cfg: ModelConfig, path: Path) -> None:
    if side != cfg.encoder_table_size:
        raise EncoderWeightsError(
            f"DINOv2 weights {path} have a position table for {side} px images but model.encoder_table_size is "
            f"{cfg.encoder_table_size}; set model.encoder_table_size={side}"
        )


def _load_hf_dir(path: Path, cfg: ModelConfig):
    from transformers import Dinov2Model

    if not (path / "config.json").is_file():
        raise EncoderWeightsError(f"{path} is not a Hugging Face DINOv2 directory: config.json is missing")
    try:
        model = Dinov2Model.from_pretrained(str(path), local_files_only=True, attn_implementation="sdpa")
    except Exception as exc:  # noqa: BLE001 - report any loader failure with the path
        raise EncoderWeightsError(f"cannot load DINOv2 weights from {path}: {exc}") from exc
    got = (model.config.hidden_size, model.config.num_hidden_layers, model.config.patch_size)
    want = (cfg.vit_dim, cfg.vit_depth, cfg.patch_size)
    if got != want:
        raise EncoderWeightsError(
            f"DINOv2 weights in {path} have (hidden_size, layers, patch) = {got} but the config asks for {want}; "
            "set model.vit_dim / model.vit_depth / model.vit_heads to match"
        )
    _check_table(model.config.image_size, cfg, path)
    return model


def build_backbone(cfg: ModelConfig, load_weights: bool = True):
    """The transformers Dinov2Model for ``cfg``: from local weights, or randomly initialised. For
    ``encoder="vit"`` with ``load_weights=False`` (a checkpoint overwrites every weight right after) it is
    the uninitialised :class:`~panolam.model.vit.MiniViT` instead: same keys and numerics, no transformers import."""
    if cfg.encoder == "vit" and not load_weights:
        from panolam.model.vit import MiniViT, ViTConfig

        return MiniViT(ViTConfig(cfg.vit_dim, cfg.vit_depth, cfg.vit_heads, cfg.patch_size, cfg.image_size))
    from transformers import Dinov2Model

    if cfg.encoder == "vit":
        return Dinov2Model._from_config(_dinov2_config(cfg, cfg.image_size), attn_implementation="sdpa")
    if cfg.encoder != "dinov2":
        raise ValueError(f"build_backbone builds the transformer encoders 'dinov2' and 'vit', got {cfg.encoder!r}")
    if cfg.encoder_weights and load_weights:
        path = Path(cfg.encoder_weights).expanduser()
        if not path.exists():
            raise EncoderWeightsError(
                f"DINOv2 weights not found at {path}: give a local Hugging Face directory (config.json + "
                "model.safetensors, e.g. a copy of facebook/dinov2-large) or an official dinov2_vitl14_pretrain.pth"
            )
        return _load_hf_dir(path, cfg) if path.is_dir() else _load_official_pth(path, cfg)
    if load_weights:
        warnings.warn(
            "PanoLAM image encoder 'dinov2' has NO pretrained weights (model.encoder_weights is unset): it is "
            "RANDOMLY INITIALISED. Set model.encoder_weights to a local DINOv2 directory or .pth file for real use.",
            UserWarning, stacklevel=3,
        )
    with _skip_random_init():
        model = Dinov2Model._from_config(_dinov2_config(cfg, cfg.encoder_table_size), attn_implementation="sdpa")
    _placeholder_init(model)
    return model


@torch.no_grad()
def _placeholder_init(model: nn.Module) -> None:
    """Cheap stand-in weights for a DINOv2 without its pretrained ones (tests, timing): N(0, 0.02)
    matrices and embeddings, unit norms and layer scales, zero biases. transformers' own truncated-
    normal init takes ~20 s for ViT-L on CPU for weights that are placeholders anyway."""
    for name, p in model.named_parameters():
        if p.ndim >= 2:
            p.normal_(0.0, 0.02)
        elif "lambda1" in name or ("norm" in name and name.endswith("weight")):
            p.fill_(1.0)
        else:
            p.zero_()


@dataclasses.dataclass
class Backbone:
    """What an encoder plug-in gives :class:`ImageEncoder`: the feature network and how to read it.

    ``features`` maps ImageNet-normalised pixels (B, 3, S, S) to token features (B, grid², width) on
    the ``image_size // patch_size`` grid, row-major; the encoder fuses them to C_t. ``module`` is
    stored as ``ImageEncoder.backbone`` (checkpoint keys ``encoder.backbone.*``); ``frozen`` backbones
    are never trained, and ``pretrained`` ones whose weights came from a file need not be saved.
    """

    module: nn.Module
    width: int
    frozen: bool
    pretrained: bool
    features: Callable[[torch.Tensor], torch.Tensor]
    layers: tuple[int, ...] = ()  # which blocks/stages (1-based) the features concatenate


BackboneBuilder = Callable[[ModelConfig, bool], Backbone]
_REGISTRY: dict[str, BackboneBuilder] = {}


def register_encoder(name: str) -> Callable[[BackboneBuilder], BackboneBuilder]:
    """Register ``builder(cfg, load_weights) -> Backbone`` as ``model.encoder=name`` (the one place a new
    image encoder plugs in; the tokens and the token map it yields feed every branch)."""
    def deco(builder: BackboneBuilder) -> BackboneBuilder:
        _REGISTRY[name] = builder
        return builder
    return deco


def encoder_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def _transformer_backbone(cfg: ModelConfig, load_weights: bool) -> Backbone:
    """DINOv2-class ViT: the patch tokens of ``cfg.encoder_layers`` concatenated on channels."""
    bad = [i for i in cfg.encoder_layers if not 1 <= i <= cfg.vit_depth]
    if bad or not cfg.encoder_layers:
        raise ValueError(f"model.encoder_layers={cfg.encoder_layers} must be 1-based block indices in 1..{cfg.vit_depth}")
    layers = tuple(cfg.encoder_layers)
    model = build_backbone(cfg, load_weights)
    # Cut blocks after the deepest fused one (never read) and freeze the mask token (never used: no
    # masked pre-training here), so every trainable parameter does get a gradient.
    model.encoder.layer = model.encoder.layer[:max(layers)]
    model.embeddings.mask_token.requires_grad_(False)
    skip = 1 + int(getattr(model.config, "num_register_tokens", 0) or 0)

    def features(pixels: torch.Tensor) -> torch.Tensor:
        # hidden_states[0] is the embedding output, hidden_states[i] the output of block i (1-based). Each
        # passes the final LayerNorm first, as DINOv2's get_intermediate_layers(norm=True) does: the raw
        # residual stream has a few huge channels.
        out = model(pixel_values=pixels, output_hidden_states=True)
        return torch.cat([model.layernorm(out.hidden_states[i][:, skip:]) for i in layers], dim=-1)

    pretrained = cfg.encoder == "dinov2" and bool(cfg.encoder_weights) and load_weights
    return Backbone(model, model.config.hidden_size * len(layers), cfg.encoder_frozen, pretrained, features, layers)


register_encoder("dinov2")(_transformer_backbone)
register_encoder("vit")(_transformer_backbone)


@register_encoder("vgg")
def _vgg_backbone(cfg: ModelConfig, load_weights: bool) -> Backbone:
    """Pretrained shift-tolerant VGG16 trunk (fused width 256 + 512 + 512), ALWAYS frozen: a fixed
    feature extractor, so ``encoder_frozen`` is ignored. ``model.encoder_weights`` may name a local
    copy of an ST-LPIPS VGG16 file; unset, the file shipped in ``stlpips-pytorch`` is read.
    ``load_weights=False`` builds the trunk untrained (a checkpoint that stored it is about to overwrite it)."""
    if cfg.image_size < VGG_MIN_SIZE:
        raise ValueError(f"model.image_size={cfg.image_size} is too small for encoder='vgg' (needs >= {VGG_MIN_SIZE})")
    trunk = _vgg_trunk(cfg, load_weights)
    grid = cfg.image_size // cfg.patch_size

    def features(pixels: torch.Tensor) -> torch.Tensor:
        """Each chosen stage resized to the grid x grid token grid (average pooling when the map is
        larger, bilinear when smaller: relu5_3 is at ~1/16 of the side, the patch grid at 1/14) and
        layer-normalised per token without learned parameters — the role DINOv2's final LayerNorm
        plays for its layers, so that stages of different depth (and scale) enter the MLP balanced."""
        maps = trunk(pixels)
        tokens = []
        for stage in VGG_STAGES:
            f = maps[stage - 1]
            if f.shape[-2] >= grid and f.shape[-1] >= grid:
                f = F.adaptive_avg_pool2d(f, (grid, grid))
            else:
                f = F.interpolate(f, size=(grid, grid), mode="bilinear", align_corners=False)
            f = f.flatten(2).transpose(1, 2)
            tokens.append(F.layer_norm(f, f.shape[-1:]))
        return torch.cat(tokens, dim=-1)

    return Backbone(trunk, sum(trunk.channels[i - 1] for i in VGG_STAGES), True, load_weights, features, VGG_STAGES)


class ImageEncoder(nn.Module):
    """Images (B, 3, H, W) in [0, 1] -> image tokens F_I (B, N_patches, C_t); :meth:`token_map` gives
    the same tokens as a (B, C_t, grid, grid) feature map. The backbone comes from the encoder registry."""

    def __init__(self, cfg: ModelConfig, load_weights: bool = True) -> None:
        super().__init__()
        if cfg.encoder not in _REGISTRY:
            raise ValueError(f"model.encoder must be one of {encoder_names()}, got {cfg.encoder!r}")
        if cfg.image_size % cfg.patch_size:
            raise ValueError(f"model.image_size={cfg.image_size} must be a multiple of patch_size={cfg.patch_size}")
        self.kind = cfg.encoder
        self.image_size = cfg.image_size
        self.grid = cfg.image_size // cfg.patch_size
        spec = _REGISTRY[cfg.encoder](cfg, load_weights)
        self.backbone = spec.module
        self.frozen, self.pretrained, self._features, self.layers = spec.frozen, spec.pretrained, spec.features, spec.layers
        self.fuse = nn.Sequential(
            nn.Linear(spec.width, cfg.c_t), nn.GELU(), nn.Linear(cfg.c_t, cfg.c_t), nn.LayerNorm(cfg.c_t)
        )
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if self.frozen:
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    def train(self, mode: bool = True) -> "ImageEncoder":
        super().train(mode)
        if self.frozen:  # a frozen backbone stays in eval mode (no dropout / drop-path) while training
            self.backbone.eval()
        return self

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W) in [0, 1], got shape {tuple(images.shape)}")
        if images.shape[-2:] != (self.image_size, self.image_size):
            images = F.interpolate(images, size=(self.image_size, self.image_size), mode="bilinear",
                                   align_corners=False, antialias=True)
        return (images - self.mean) / self.std

    def backbone_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """The backbone's token features before fusion: (B, grid², width)."""
        return self._features(pixels)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = self.preprocess(images)
        if self.frozen:
            with torch.no_grad():
                feats = self.backbone_features(pixels)
        else:
            feats = self.backbone_features(pixels)
        return self.fuse(feats)

    def token_map(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens (B, grid², C) as a feature map (B, C, grid, grid) (row-major patch order)."""
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], self.grid, self.grid)


def _vgg_trunk(cfg: ModelConfig, load_weights: bool) -> Trunk:
    """The shift-tolerant VGG16 trunk up to the deepest fused stage, pretrained unless ``load_weights`` is False."""
    num_slices = max(VGG_STAGES)
    if not load_weights:
        return trunk_for("vgg", shift_tolerant=True, num_slices=num_slices)
    where = cfg.encoder_weights or "the stlpips-pytorch package"
    try:
        trunk = load_pretrained_trunk("vgg", cfg.encoder_weights, num_slices)
    except (OSError, ValueError) as exc:
        raise EncoderWeightsError(f"cannot load the VGG16 encoder weights from {where}: {exc}") from exc
    if not any(isinstance(m, BlurPool) for m in trunk.modules()):
        # Checkpoints rebuild the trunk without reading a file, always shift tolerant.
        raise EncoderWeightsError(f"{where}: encoder='vgg' needs a shift-tolerant (ST-LPIPS) VGG16 file, got a vanilla one")
    return trunk

"""Model checkpoints: a directory holding ``model.safetensors`` (the network's weights) and
``panolam.json`` (format version, the full config, parameter count, creation time, caller extras).

A frozen DINOv2 backbone that was read from ``model.encoder_weights`` is NOT saved by default (it
never changes, and at paper size it is 1.2 GB of the 1.6 GB): ``panolam.json`` then records
``encoder_excluded`` and loading reads the backbone from ``model.encoder_weights`` again (or from
``load_model(..., encoder_weights=...)``). Pass ``include_frozen_encoder=True`` for a checkpoint
that stands alone. The same holds for the always-frozen ``encoder="vgg"`` trunk: its weights ship in
the ``stlpips-pytorch`` package (or ``model.encoder_weights``), so they are left out and re-read on
load. Every other model (trainable or randomly initialised encoder) is saved whole.

Nothing derived from the head template (template vertices, densification matrix) is saved; it is
rebuilt from the config on load, so a checkpoint of a model built on a user's FLAME file contains no
FLAME-derived data (the loader then needs the same FLAME file at ``model.template``).

Writes are atomic: the files go to a temporary sibling directory which is then renamed into place
(an existing checkpoint is moved aside first and removed after), so readers see the old checkpoint,
or the new one, never a half-written one. :func:`load_model` checks, with errors that name the path:
the directory/files exist, the format version is known, the safetensors file is readable, and the
weights' keys and shapes match the network the config builds (mismatches are listed).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from panolam.config import PanoLAMConfig, from_dict
from panolam.config.model import ModelConfig
from panolam.errors import PanoLAMError
from panolam.atomic import staging_dir
from panolam.model.panolam import PanoLAM

FORMAT_VERSION = 1
WEIGHTS_NAME = "model.safetensors"
META_NAME = "panolam.json"
BACKBONE_PREFIX = "encoder.backbone."
_HOW_TO_GET = "train one with `panolam train` (it writes OUT/checkpoints/step_XXXXXX/) or pass the path of an existing one"


class CheckpointError(PanoLAMError):
    """A checkpoint exists but cannot be used (corrupt, wrong version, or not matching its config)."""


def _config_dict(cfg: PanoLAMConfig | ModelConfig) -> tuple[str, dict[str, Any]]:
    if isinstance(cfg, PanoLAMConfig):
        return "panolam", cfg.to_dict()
    if isinstance(cfg, ModelConfig):
        return "model", dataclasses.asdict(cfg)
    raise TypeError(f"cfg must be a PanoLAMConfig or ModelConfig, got {type(cfg).__name__}")


def save_model(path_dir: str | os.PathLike, model: PanoLAM, cfg: PanoLAMConfig | ModelConfig,
               extra: dict[str, Any] | None = None, include_frozen_encoder: bool = False) -> Path:
    """Write ``model`` and ``cfg`` to the directory ``path_dir`` atomically; returns the directory."""
    from safetensors.torch import save_file

    target = Path(path_dir)
    kind, config = _config_dict(cfg)
    target.parent.mkdir(parents=True, exist_ok=True)
    exclude = model.encoder_is_frozen_pretrained and not include_frozen_encoder
    tensors = {
        k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()
        if not (exclude and k.startswith(BACKBONE_PREFIX))
    }
    meta = {
        "format": "panolam-checkpoint", "format_version": FORMAT_VERSION, "config_kind": kind, "config": config,
        "num_parameters": model.num_parameters(), "created": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        "encoder_excluded": exclude, "extra": extra or {},
    }
    tmp = staging_dir(target.parent, f".{target.name}.tmp-")
    try:
        save_file(tensors, str(tmp / WEIGHTS_NAME), metadata={"format_version": str(FORMAT_VERSION)})
        (tmp / META_NAME).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
        _swap_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _swap_into_place(tmp: Path, target: Path) -> None:
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, old / "ckpt")
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


def _resolve_dir(path: str | os.PathLike) -> Path:
    p = Path(path)
    if p.is_file() and p.name in (WEIGHTS_NAME, META_NAME):
        p = p.parent
    if not p.exists():
        raise FileNotFoundError(f"no PanoLAM checkpoint at {p}: {_HOW_TO_GET}")
    if not p.is_dir():
        raise CheckpointError(f"{p} is not a PanoLAM checkpoint: give its directory (with {WEIGHTS_NAME} and {META_NAME})")
    for name in (META_NAME, WEIGHTS_NAME):
        if not (p / name).is_file():
            raise FileNotFoundError(f"PanoLAM checkpoint {p} is incomplete: {name} is missing; {_HOW_TO_GET}")
    return p


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``panolam.json`` of a checkpoint, with its format version checked."""
    p = _resolve_dir(path)
    try:
        meta = json.loads((p / META_NAME).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{p / META_NAME} is not valid JSON ({exc}); the checkpoint is corrupt") from exc
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{p / META_NAME} has checkpoint format version {version!r}; this panolam reads version {FORMAT_VERSION}"
        )
    return meta


# Model fields added after checkpoint format 1 was fixed, with the behaviour a checkpoint written before
# them had: a saved config that lacks one gets this value, not the (newer) preset's.
LEGACY_MODEL_FIELDS: dict[str, Any] = {"pixel_aligned": False, "pose_head": "mean", "dense_scale_floor": 0.0, "silhouette_cues": False,
                                       "magnification_head": False, "inference_dense_points": 0, "pose_flip_average": False}


def _with_legacy_fields(meta: dict[str, Any]) -> dict[str, Any]:
    config = meta.get("config")
    if not isinstance(config, dict):
        return meta
    if meta.get("config_kind") == "model":
        return {**meta, "config": {**LEGACY_MODEL_FIELDS, **config}}
    if isinstance(config.get("model"), dict):
        return {**meta, "config": {**config, "model": {**LEGACY_MODEL_FIELDS, **config["model"]}}}
    return meta


def _config_from_meta(meta: dict[str, Any], where: Path) -> tuple[PanoLAMConfig | ModelConfig, ModelConfig]:
    meta = _with_legacy_fields(meta)
    try:
        if meta.get("config_kind") == "model":
            model_cfg = ModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["config"].items()})
            return model_cfg, model_cfg
        full = from_dict(meta["config"])
        return full, full.model
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{where / META_NAME} holds an unusable config: {exc}") from exc


def _read_weights(where: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(where / WEIGHTS_NAME), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{where / WEIGHTS_NAME} is not a readable safetensors file (corrupt or truncated?): {exc}") from exc


def _check_state(state: dict[str, torch.Tensor], model: PanoLAM, where: Path, skip_backbone: bool,
                 allow_missing: bool = False) -> list[str]:
    """Raise :class:`CheckpointError` unless ``state`` fits ``model``; returns the model keys the state lacks
    (an error too, unless ``allow_missing``)."""
    expected = {
        k: tuple(v.shape) for k, v in model.state_dict().items() if not (skip_backbone and k.startswith(BACKBONE_PREFIX))
    }
    got = {k: tuple(v.shape) for k, v in state.items()}
    absent = sorted(set(expected) - set(got))
    missing = [] if allow_missing else absent
    unexpected = sorted(set(got) - set(expected))
    shapes = sorted(f"{k}: checkpoint {got[k]} vs config {expected[k]}" for k in set(got) & set(expected) if got[k] != expected[k])
    if missing or unexpected or shapes:
        lines = [f"{where / WEIGHTS_NAME} does not match the network its config describes:"]
        for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
            if items:
                more = f" (+{len(items) - 10} more)" if len(items) > 10 else ""
                lines.append(f"  {title} ({len(items)}): {', '.join(items[:10])}{more}")
        raise CheckpointError("\n".join(lines))
    return absent


def load_model(path_dir_or_file: str | os.PathLike, device: str | torch.device = "cpu",
               encoder_weights: str | None = None) -> tuple[PanoLAM, PanoLAMConfig | ModelConfig]:
    """Load a checkpoint written by :func:`save_model`: returns ``(model in eval mode, config)``.

    ``encoder_weights`` overrides where a checkpoint saved without its frozen DINOv2 backbone finds it
    (default: the ``model.encoder_weights`` recorded in its config).
    """
    where = _resolve_dir(path_dir_or_file)
    meta = read_metadata(where)
    config, model_cfg = _config_from_meta(meta, where)
    state = _read_weights(where)
    excluded = bool(meta.get("encoder_excluded"))
    if excluded:
        model = _build_with_encoder_weights(model_cfg, encoder_weights, where)
        model_cfg.encoder_weights = model.cfg.encoder_weights  # report where the backbone came from
    else:
        model = PanoLAM(model_cfg, load_encoder_weights=False)
    _check_state(state, model, where, skip_backbone=excluded)
    model.load_state_dict(state, strict=not excluded)
    return model.to(device).eval(), config


def load_weights_into(model: PanoLAM, path_dir_or_file: str | os.PathLike, allow_missing: bool = False) -> dict[str, Any]:
    """Load a checkpoint's weights into an existing ``model`` (e.g. to resume training) with the same
    checks as :func:`load_model`; a frozen backbone the checkpoint left out keeps the model's own
    weights (read from ``encoder_weights`` when the model was built). ``allow_missing`` lets parts of
    ``model`` that the checkpoint lacks or that ``model`` builds differently keep their initialisation
    (fine-tuning a network with new or rebuilt modules, e.g. a pixel-aligned one from a plain one); they are listed in the returned metadata's
    ``missing_keys``. Returns the metadata."""
    where = _resolve_dir(path_dir_or_file)
    meta = read_metadata(where)
    state = _read_weights(where)
    excluded = bool(meta.get("encoder_excluded"))
    if excluded and not model.encoder_is_frozen_pretrained:
        if model.cfg.encoder == "vgg":
            raise CheckpointError(
                f"checkpoint {where} holds no VGG16 encoder trunk (saved without its frozen encoder) and this model's "
                "trunk was not read from its pretrained weights: build the model with load_encoder_weights=True"
            )
        raise CheckpointError(
            f"checkpoint {where} holds no DINOv2 backbone weights (saved without its frozen encoder) and this "
            "model's backbone was not read from model.encoder_weights: build the model with encoder_weights set"
        )
    if allow_missing:
        state = _drop_rebuilt_modules(state, model)
    absent = _check_state(state, model, where, skip_backbone=excluded, allow_missing=allow_missing)
    model.load_state_dict(state, strict=not (excluded or absent))
    return {**meta, "missing_keys": absent}


def _drop_rebuilt_modules(state: dict[str, torch.Tensor], model: PanoLAM) -> dict[str, torch.Tensor]:
    """The checkpoint entries of top-level modules that ``model`` builds differently (other keys or
    shapes, e.g. a grid pose head replacing a mean-pooled one): dropped, so the new module keeps its
    initialisation and is reported among the missing keys, while every module that fits loads."""
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    rebuilt = {k.split(".")[0] for k, v in state.items() if own.get(k, tuple(v.shape)) != tuple(v.shape)}
    rebuilt |= {k.split(".")[0] for k in state if k not in own and any(o.split(".")[0] == k.split(".")[0] for o in own)}
    return {k: v for k, v in state.items() if k.split(".")[0] not in rebuilt}


def _build_with_encoder_weights(model_cfg: ModelConfig, encoder_weights: str | None, where: Path) -> PanoLAM:
    from panolam.model.encoder import EncoderWeightsError

    cfg = dataclasses.replace(model_cfg, encoder_weights=encoder_weights or model_cfg.encoder_weights)
    try:
        return PanoLAM(cfg, load_encoder_weights=True)
    except EncoderWeightsError as exc:
        if cfg.encoder == "vgg":
            raise CheckpointError(
                f"checkpoint {where} was saved without its frozen VGG16 encoder trunk, which is re-read from "
                f"{cfg.encoder_weights or 'the stlpips-pytorch package'}; that failed: {exc}. Install "
                "stlpips-pytorch==0.0.2 or pass the file (load_model(..., encoder_weights=PATH))"
            ) from exc
        raise CheckpointError(
            f"checkpoint {where} was saved without its frozen DINOv2 backbone, which it reads from "
            f"model.encoder_weights={cfg.encoder_weights!r}; that failed: {exc}. Pass the DINOv2 weights' local "
            "path (load_model(..., encoder_weights=PATH)) or re-save with include_frozen_encoder=True"
        ) from exc

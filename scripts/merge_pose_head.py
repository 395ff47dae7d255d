"""Put the camera heads (pose, magnification) of one model directory into another: ``merge_pose_head.py HEADS POSE OUT``.

The shipped model is trained in two stages that both freeze the same encoder (``train.trainable=heads``
and ``train.trainable=pose_head``), so they can run side by side; this joins them. It refuses models
whose encoders or key sets differ, because then the pose head would read other tokens than it learned on.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from panolam.atomic import atomic_write_bytes
from panolam.model.pixel_aligned import CAMERA_HEADS  # what the pose-head stage trains


def merge(heads_dir: Path, pose_dir: Path, out_dir: Path, only: tuple[str, ...] = CAMERA_HEADS) -> int:
    """Write ``out_dir`` = ``heads_dir`` with every camera-head tensor (``pose_head.*``, ``magnification_head.*``;
    ``only`` some of those prefixes) from ``pose_dir``; returns their count. A magnification head that only the
    pose stage has is added, and switched on in the output's config."""
    if not only or not set(only) <= set(CAMERA_HEADS):
        raise SystemExit(f"only: choose among {', '.join(CAMERA_HEADS)}, got {only}")
    heads = load_file(str(heads_dir / "model.safetensors"))
    pose = load_file(str(pose_dir / "model.safetensors"))
    rest_h = {k for k in heads if not k.startswith(CAMERA_HEADS)}
    rest_p = {k for k in pose if not k.startswith(CAMERA_HEADS)}
    if rest_h != rest_p:
        raise SystemExit(f"the two models have different tensors: {sorted(rest_h ^ rest_p)[:5]}")
    encoder = [k for k in heads if k.startswith("encoder.")]
    if not encoder or not all(torch.equal(heads[k], pose[k]) for k in encoder):
        raise SystemExit("the two models' encoders differ: both stages must start from the same frozen encoder")
    if not any(k.startswith("pose_head.") for k in pose):
        raise SystemExit("no pose_head.* tensors: train with --set model.pixel_aligned=true")
    moved = [k for k in pose if k.startswith(only)]
    has_mag = any(k.startswith("magnification_head.") for k in moved)
    if not has_mag and "magnification_head." in only and any(k.startswith("magnification_head.") for k in heads):
        raise SystemExit("the heads stage has a magnification head and the pose stage has none: train the pose stage "
                         "with --set model.magnification_head=true")
    merged = {k: v for k, v in heads.items() if not k.startswith(only)} | {k: pose[k] for k in moved}
    meta = json.loads((heads_dir / "panolam.json").read_text())
    if has_mag and isinstance(meta.get("config"), dict) and isinstance(meta["config"].get("model"), dict):
        meta["config"]["model"]["magnification_head"] = True
    if isinstance(meta.get("num_parameters"), int):  # the added head's parameters (it holds no buffers)
        meta["num_parameters"] += sum(pose[k].numel() for k in moved if k not in heads)
    atomic_write_bytes(out_dir / "model.safetensors", save(merged, metadata={"format": "pt"}))
    atomic_write_bytes(out_dir / "panolam.json", (json.dumps(meta, indent=2) + "\n").encode())
    return len(moved)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("heads", type=Path, help="model dir of the heads stage (everything but the pose head)")
    ap.add_argument("pose", type=Path, help="model dir of the pose-head stage")
    ap.add_argument("out", type=Path, help="output model dir")
    ap.add_argument("--only", nargs="+", choices=[p.rstrip(".") for p in CAMERA_HEADS], default=None,
                    help="take only these camera heads from POSE (default: both); e.g. --only magnification_head keeps HEADS' pose head")
    a = ap.parse_args(argv)
    only = CAMERA_HEADS if a.only is None else tuple(p + "." for p in a.only)
    print(f"copied {merge(a.heads, a.pose, a.out, only)} pose/magnification head tensors into {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()

"""Put the pose head of one model directory into another: ``merge_pose_head.py HEADS POSE OUT``.

The shipped model is trained in two stages that both freeze the same encoder (``train.trainable=heads``
and ``train.trainable=pose_head``), so they can run side by side; this joins them. It refuses models
whose encoders or key sets differ, because then the pose head would read other tokens than it learned on.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from panolam.atomic import atomic_write_bytes


def merge(heads_dir: Path, pose_dir: Path, out_dir: Path) -> int:
    """Write ``out_dir`` = ``heads_dir`` with every ``pose_head.*`` tensor from ``pose_dir``; returns their count."""
    heads = load_file(str(heads_dir / "model.safetensors"))
    pose = load_file(str(pose_dir / "model.safetensors"))
    if heads.keys() != pose.keys():
        raise SystemExit(f"the two models have different tensors: {sorted(set(heads) ^ set(pose))[:5]}")
    encoder = [k for k in heads if k.startswith("encoder.")]
    if not encoder or not all(torch.equal(heads[k], pose[k]) for k in encoder):
        raise SystemExit("the two models' encoders differ: both stages must start from the same frozen encoder")
    moved = [k for k in heads if k.startswith("pose_head.")]
    if not moved:
        raise SystemExit("no pose_head.* tensors: train with --set model.pixel_aligned=true")
    heads.update({k: pose[k] for k in moved})
    atomic_write_bytes(out_dir / "model.safetensors", save(heads, metadata={"format": "pt"}))
    atomic_write_bytes(out_dir / "panolam.json", (heads_dir / "panolam.json").read_bytes())
    return len(moved)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("heads", type=Path, help="model dir of the heads stage (everything but the pose head)")
    ap.add_argument("pose", type=Path, help="model dir of the pose-head stage")
    ap.add_argument("out", type=Path, help="output model dir")
    a = ap.parse_args(argv)
    print(f"copied {merge(a.heads, a.pose, a.out)} pose_head tensors into {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()

"""Helpers shared by the command modules: config flags and device choice."""

from __future__ import annotations

import argparse

import torch

from panolam.config import PRESET_NAMES, PanoLAMConfig, get_config


def add_config_args(p: argparse.ArgumentParser, default: str = "default") -> None:
    p.add_argument("--config", default=default, help=f"preset ({', '.join(PRESET_NAMES)}) or a config .json (default: {default})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override a config value, e.g. --set model.dense_points=20000 (repeatable)")


def config_from_args(args: argparse.Namespace) -> PanoLAMConfig:
    return get_config(args.config, args.overrides)


def add_device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 … (default: cuda if available, else cpu)")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine (torch {torch.__version__})")
    return dev

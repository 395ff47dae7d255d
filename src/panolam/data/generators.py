"""The generator plug-in interface (DESIGN §4: "give me subject i, then render it from cameras").

A generator turns a seed into a :class:`Subject` and renders a subject from a batch of
:class:`~panolam.geometry.cameras.Cameras` to straight RGB and alpha. The embedded default is
:class:`panolam.data.procedural.ProceduralHeads` (no download); GAN-backed generators that a user
owns register themselves with :func:`register_generator` and then work with ``panolam data synth
--generator NAME`` unchanged.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Protocol, runtime_checkable

import torch

from panolam.geometry.cameras import Cameras


@dataclasses.dataclass
class Subject:
    """A generated subject: its seed, a description (JSON-able) and whatever the renderer needs."""

    seed: int
    attributes: dict[str, Any]
    payload: Any  # generator-private scene (e.g. Gaussians, or GAN tri-planes)
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)  # arrays to store as sidecar extras


@runtime_checkable
class Generator(Protocol):
    id: str

    def subject(self, seed: int) -> Subject: ...

    def render(self, subject: Subject, cameras: Cameras) -> tuple[torch.Tensor, torch.Tensor]:
        """(C, H, W, 3) straight RGB in [0, 1] and (C, H, W, 1) alpha."""
        ...


_REGISTRY: dict[str, Callable[..., Generator]] = {}


def register_generator(name: str, factory: Callable[..., Generator]) -> None:
    _REGISTRY[name] = factory


def generator_names() -> list[str]:
    _ensure_builtin()
    return sorted(_REGISTRY)


def get_generator(name: str = "procedural", **kwargs: Any) -> Generator:
    _ensure_builtin()
    if name not in _REGISTRY:
        raise ValueError(f"unknown generator {name!r}; registered: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](**kwargs)


def _ensure_builtin() -> None:
    if "procedural" not in _REGISTRY:
        from panolam.data.procedural import ProceduralHeads

        register_generator("procedural", ProceduralHeads)

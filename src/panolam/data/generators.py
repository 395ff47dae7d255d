"""The generator plug-in interface (DESIGN §4: "give me subject i, then render it from cameras").

A generator turns a seed into a :class:`Subject` and renders a subject from a batch of
:class:`~panolam.geometry.cameras.Cameras` to straight RGB and alpha. The embedded default is
:class:`panolam.data.procedural.ProceduralHeads` (no download); GAN-backed generators that a user
owns register themselves with :func:`register_generator` and then work with ``panolam data synth
--generator NAME`` unchanged.

:func:`get_generator` finds a generator by registered name (built in: ``procedural``, and the 3D
GANs ``eg3d``, ``panohead``, ``spherehead`` of :mod:`panolam.data.gan.plugin`), by an installed package's entry point in the
group ``panolam.generators``, or by ``module:Class`` (any importable factory), so a new generator
needs no edit of the CLI. A generator may carry a JSON-able ``config`` dict; the dataset manifest
records it and refuses to resume with a different one.
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


ENTRY_POINT_GROUP = "panolam.generators"


def find_generator_factory(name: str) -> Callable[..., Generator]:
    """The factory for a registered name, an entry point of group ``panolam.generators``, or ``module:Class``."""
    _ensure_builtin()
    if name in _REGISTRY:
        return _REGISTRY[name]
    from importlib import import_module
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return ep.load()
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            obj = import_module(module)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"generator {name!r}: cannot import {attr!r} from {module!r} ({e})") from None
        if not callable(obj):
            raise ValueError(f"generator {name!r} is not callable")
        return obj
    raise ValueError(f"unknown generator {name!r}; registered: {', '.join(sorted(_REGISTRY))} "
                     f"(or give module:Class, or install a package with a {ENTRY_POINT_GROUP!r} entry point)")


def get_generator(name: str = "procedural", **kwargs: Any) -> Generator:
    return find_generator_factory(name)(**kwargs)


def _ensure_builtin() -> None:
    if "procedural" not in _REGISTRY:
        from panolam.data.procedural import ProceduralHeads

        register_generator("procedural", ProceduralHeads)
    if "eg3d" not in _REGISTRY:
        # Imported on use only: building a network needs the user's checkpoint.
        def gan(family: str) -> Callable[..., Generator]:
            def factory(**kwargs: Any) -> Generator:
                from panolam.data.gan.plugin import GanGenerator

                return GanGenerator(family=family, **kwargs)

            return factory

        for family in ("eg3d", "panohead", "spherehead"):
            register_generator(family, gan(family))

"""Shared helpers for the training tests: a tiny real dataset written through the data module."""

from __future__ import annotations

import torch

from panolam.data.generators import Subject
from panolam.data.synth import SynthSettings, generate_dataset
from panolam.gaussians.container import Gaussians
from panolam.render import rasterize


class BlobHeads:
    """A minimal generator: a few coloured Gaussian blobs around the origin, varied by seed."""

    id = "test-blobs"

    def subject(self, seed: int) -> Subject:
        g = torch.Generator().manual_seed(seed)
        n = 12
        gs = Gaussians(means=torch.randn(n, 3, generator=g) * 0.12, quats=torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
                       scales=torch.full((n, 3), 0.08), opacities=torch.full((n,), 0.9), colors=torch.rand(n, 3, generator=g))
        return Subject(seed, {"blobs": n}, gs)

    def render(self, subject: Subject, cameras):
        out = rasterize(subject.payload, cameras, 0.0, backend="torch")
        return out.rgb, out.alpha


def make_tiny_dataset(root, n_train: int = 4, n_test: int = 2, views: int = 8, size: int = 32) -> str:
    generate_dataset(root, BlobHeads(), SynthSettings(views=views, size=size, subjects_per_shard=2), n_train, n_test, progress=False)
    return str(root)

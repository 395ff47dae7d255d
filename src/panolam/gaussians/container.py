"""Gaussians with activated attributes: what the network outputs and the rasteriser consumes."""

from __future__ import annotations

import dataclasses

import torch

SH_C0 = 0.28209479177387814  # zeroth spherical-harmonic constant (INRIA f_dc <-> RGB)


@dataclasses.dataclass
class Gaussians:
    """N Gaussians (optionally with leading batch dims ``(..., N, k)``).

    means: world positions; quats: unit quaternions (w, x, y, z); scales: per-axis standard
    deviations (linear, > 0); opacities: in (0, 1), shape (..., N); colors: RGB in [0, 1].
    """

    means: torch.Tensor
    quats: torch.Tensor
    scales: torch.Tensor
    opacities: torch.Tensor
    colors: torch.Tensor

    def __post_init__(self) -> None:
        lead = self.means.shape[:-1]
        expected = {"means": 3, "quats": 4, "scales": 3, "colors": 3}
        for name, k in expected.items():
            t = getattr(self, name)
            if t.shape != (*lead, k):
                raise ValueError(f"Gaussians.{name} must have shape {(*lead, k)}, got {tuple(t.shape)}")
        if self.opacities.shape != lead:
            raise ValueError(f"Gaussians.opacities must have shape {tuple(lead)}, got {tuple(self.opacities.shape)}")

    def __len__(self) -> int:
        return self.means.shape[-2]

    @property
    def device(self) -> torch.device:
        return self.means.device

    def fields(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def map(self, fn) -> "Gaussians":
        """Apply ``fn`` to every attribute tensor (e.g. ``.map(lambda t: t[0])`` to drop a batch dim)."""
        return Gaussians(**{k: fn(v) for k, v in self.fields().items()})

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "Gaussians":
        return self.map(lambda t: t.to(device=device, dtype=dtype) if dtype else t.to(device))

    def detach(self) -> "Gaussians":
        return self.map(torch.Tensor.detach)

    def __getitem__(self, idx) -> "Gaussians":
        """Index the leading batch dimension of a batched container."""
        if self.means.ndim < 3:
            raise IndexError("Gaussians has no batch dimension to index; use .select() for a subset of points")
        return self.map(lambda t: t[idx])

    def select(self, mask_or_index: torch.Tensor) -> "Gaussians":
        """Subset of points (last point dimension) of an unbatched container."""
        return Gaussians(
            self.means[mask_or_index], self.quats[mask_or_index], self.scales[mask_or_index],
            self.opacities[mask_or_index], self.colors[mask_or_index],
        )

    @staticmethod
    def cat(items: list["Gaussians"]) -> "Gaussians":
        return Gaussians(**{k: torch.cat([g.fields()[k] for g in items], dim=-2 if k != "opacities" else -1) for k in items[0].fields()})

"""Preview rendering settings: image size, background, turntable."""

from __future__ import annotations

import dataclasses

# Test-time refinement steps that `panolam reconstruct` and the app run by default: ~1 s of one CPU
# core at the 128² fit, and what turns the feed-forward face into one dlib calls the same person
# (BENCHMARKS.md, real photos). 0 turns it off.
REFINE_STEPS = 20


@dataclasses.dataclass
class RenderConfig:
    size: int = 512
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    turntable_frames: int = 120
    turntable_fps: int = 30
    turntable_pitch_deg: float = 0.0
    radius: float = 2.7
    fov_deg: float = 18.837  # EG3D diagonal FOV (DESIGN §3)


PRESETS: dict[str, RenderConfig] = {
    "paper": RenderConfig(),
    "default": RenderConfig(),
    "tiny": RenderConfig(size=64, turntable_frames=8),
}

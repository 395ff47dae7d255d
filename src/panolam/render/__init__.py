"""Differentiable Gaussian rasterisation (the project's own fast CPU path; gsplat on CUDA) and the previews built on it: contact sheets and turntables.
"""

from panolam.render.rasterize import RenderOutput, rasterize

__all__ = ["RenderOutput", "rasterize"]

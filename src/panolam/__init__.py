"""PanoLAM: one unposed photo -> a 3D Gaussian-splat full head in a single forward pass.

Subpackages, bottom layer first (each imports only the ones above it in this list):
``config`` (typed presets), ``geometry`` (cameras, head template, densification, spherical
tri-plane query), ``gaussians`` (container, activations, PLY/.splat I/O), ``render``
(differentiable rasteriser, previews), ``model`` (the network and checkpoints), ``data``
(dataset format, camera laws, generators, labels), ``train`` / ``eval`` (losses, loop, metrics),
``preprocess`` (photo -> framed RGBA), ``cli`` / ``app`` (commands and web pages).
"""

__version__ = "0.1.0"

"""Differentiable Gaussian rasterisation (the project's own fast CPU path; gsplat on CUDA) and the previews built on it: contact sheets and turntables.
"""

"""The Gaussians container (activated attributes), the activations that produce them, and file
I/O: INRIA 3DGS PLY (what SuperSplat, gsplat.js and Gradio's viewer read) and antimatter15's
``.splat``. Every other layer passes heads around as :class:`Gaussians`.
"""

from panolam.gaussians.container import Gaussians

__all__ = ["Gaussians"]

"""Test-time refinement of a predicted head against its input photo (issue 12, item 3; beyond the paper).

The feed-forward network returns a plausible but averaged head. :func:`refine_head` spends a few
Adam steps fitting the colours, opacities and small, bounded position offsets of the Gaussians that
the input camera actually sees to the photo, with the differentiable rasteriser at a reduced render
size and a photometric loss inside the person mask (L1, optionally plus ST-LPIPS). Visibility is
read off the render itself — the accumulated blending weight of each Gaussian in the input view —
and every Gaussian below the threshold is frozen, so the back and the hidden sides keep the network's
prediction; colours also fade out where the photo shows a Gaussian edge-on or through the surface in
front of it (:func:`colour_share`), so the face's edge is not copied onto the side of the head. It
sits with train/eval: it uses the renderer and the perceptual loss, never the network.
"""

from panolam.refine.head import DEFAULT_SIZE, DEFAULT_STEPS, RefineStats, colour_share, refine_head, visibility_weights

__all__ = ["DEFAULT_SIZE", "DEFAULT_STEPS", "RefineStats", "colour_share", "refine_head", "visibility_weights"]

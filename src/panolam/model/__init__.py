"""The PanoLAM network: image encoder, transformer blocks, Gaussian heads, the point and spherical tri-plane branches, the frozen tri-plane decoder, and checkpoints. It never renders and never reads datasets.
"""

"""Training: losses (eq. 7-8), the perceptual network, the spherical tri-plane teacher, and the training loop (single process or distributed).
"""

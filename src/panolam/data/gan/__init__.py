"""3D-GAN data generators (EG3D, and the PanoHead/SphereHead family built on it), inference only.

Our own PyTorch implementation of the published architectures — no code or weights of theirs
ship with PanoLAM. A user who owns a checkpoint converts it with ``panolam data convert-gan``
(:mod:`panolam.data.gan.pickle_io` reads the official pickle without running any code in it) and
samples multi-view data with ``panolam data gan`` (:mod:`panolam.data.gan.plugin`).

Modules: :mod:`~panolam.data.gan.ops` (reference upfirdn2d / bias_act / conv2d_resample),
:mod:`~panolam.data.gan.stylegan2` (mapping + synthesis networks), :mod:`~panolam.data.gan.eg3d`
(tri-plane generator, OSG decoder, importance renderer, super-resolution).
"""

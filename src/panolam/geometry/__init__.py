"""Geometry of the GAN world frame: cameras and their conventions, the head template, the
network-free densification matrix and the spherical tri-plane query. Pure tensor maths; imports
nothing else of ours, so every other layer can build on it.
"""

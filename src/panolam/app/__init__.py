"""Local web pages: the reconstruction demo with an interactive splat viewer. The web UI library is imported only here.
"""

"""Photo -> framed RGBA: find the head (face landmarks, person-mask fallback), crop/rotate/scale to the training framing, remove the background.
"""

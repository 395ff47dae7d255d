"""Photo -> framed RGBA: find the head (face landmarks, person-mask fallback), crop/rotate/scale to the training framing, remove the background.

``load_photo`` reads any common image file upright; ``frame_photo`` maps it to the framing of the
training renders and returns a :class:`Framed` (composited image, alpha, the photo->framed
transform and the landmarks). Input problems raise :class:`PreprocessError` (a ``ValueError``).
"""

from panolam.preprocess.framing import Framed, frame_photo, parse_background
from panolam.preprocess.io import PreprocessError, load_photo, save_png

__all__ = ["Framed", "PreprocessError", "frame_photo", "load_photo", "parse_background", "save_png"]

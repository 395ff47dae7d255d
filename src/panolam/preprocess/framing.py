"""Crop, rotate and scale a photo to the framing the network was trained on, and remove the background.

Training images are EG3D/SphereHead renders (DESIGN §3): camera radius 2.7, normalised focal
4.2647, so a 512² image spans ±0.317 world units at the head and the head fills ~80 % of the
height with the face a little above centre. A photo is mapped onto that framing by one
similarity transform (rotation + uniform scale + shift), found from the face landmarks (eye
line for roll, eye-to-mouth distance for scale) or, when no face is visible (profile, back of
the head), from the top of the person mask. The background is replaced by a flat colour (white,
like the training renders) using the refined person mask. Coordinates are pixel-centre based
(OpenCV ``warpAffine``): pixel (0, 0) covers [-0.5, 0.5]².
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import numpy as np

from panolam.preprocess.detect import Face, detect_faces, person_mask
from panolam.preprocess.head_pose import landmark_head_pose
from panolam.preprocess.io import PreprocessError, check_photo
from panolam.preprocess.matting import keep_region, refine_alpha

# Face framing, as fractions of the output side, measured on the training framing: MediaPipe on
# front renders of procedural heads (mean camera) gives eyes at (0.504, 0.425) and eye-to-mouth
# 0.239 ± 0.026; the template's eye/lip centroids project to y 0.464 and 0.231
# (tests/test_preprocess.py checks the template numbers).
EYE_CENTER = (0.5, 0.43)
EYE_TO_MOUTH = 0.23
# A strongly pitched face foreshortens eye-to-mouth; the eye distance (≈ eye-to-mouth on frontal
# faces) bounds the scale from below so such faces are not blown up.
EYE_DISTANCE_WEIGHT = 0.8

# Person-mask fallback: the head is the top of the mask, down to HEAD_ASPECT x its width. Its
# size/position are calibrated so that on skimage's astronaut (a frontal portrait, where both
# paths apply) the fallback frames the head like the face path does (0.887 / 0.457 measured with
# eye-to-mouth 0.17 and eyes at 0.42; scaled about the eyes to the constants above).
HEAD_ASPECT = 1.3
HEAD_HEIGHT = 0.88 * EYE_TO_MOUTH / 0.17  # head-box height (crown to HEAD_ASPECT widths below) / output side
HEAD_CENTER_Y = EYE_CENTER[1] + 0.04 * EYE_TO_MOUTH / 0.17  # vertical centre of that box / output side
MIN_PERSON_AREA = 0.005  # masks smaller than this fraction of the photo are noise, not a person
MAX_PERSON_AREA = 0.75  # a "person" filling the whole photo leaves no way to tell where the head is

BACKGROUNDS = {"white": (255, 255, 255), "black": (0, 0, 0), "gray": (128, 128, 128), "grey": (128, 128, 128)}


class MultipleFacesWarning(UserWarning):
    """The photo has several faces and one was picked."""


@dataclasses.dataclass
class Framed:
    """A photo mapped to the training framing.

    ``image`` is the composite on ``background``; ``rgba`` the same pixels before compositing with
    the alpha matte; ``transform`` maps photo pixels to framed pixels (2x3, ``[x', y'] = A @ [x, y, 1]``)
    and ``inverse`` back. ``face_box`` (x0, y0, x1, y1) and ``landmarks`` (K, 2) are in framed
    pixels (478 mesh points, or the detector's eyes+mouth when the mesh failed); both are None
    for the person-mask fallback. ``face_pose_deg`` is the face's (yaw, pitch, roll) in degrees from
    the mesh's 3D landmarks in the framed image (:func:`~panolam.preprocess.head_pose.landmark_head_pose`;
    positive yaw = the face turned towards image left), None without a mesh.
    """

    image: np.ndarray  # (size, size, 3) uint8
    alpha: np.ndarray  # (size, size) float32 in [0, 1]
    rgba: np.ndarray  # (size, size, 4) uint8
    transform: np.ndarray  # (2, 3) photo -> framed
    inverse: np.ndarray  # (2, 3) framed -> photo
    method: str  # "face" or "person"
    face_box: np.ndarray | None
    landmarks: np.ndarray | None
    num_faces: int
    face_index: int | None
    photo_size: tuple[int, int]  # (width, height)
    background: tuple[int, int, int]
    face_pose_deg: tuple[float, float, float] | None = None

    @property
    def size(self) -> int:
        return self.image.shape[0]

    def to_json(self) -> dict[str, Any]:
        """Everything except the pixels, as plain JSON types."""
        return {
            "size": self.size,
            "method": self.method,
            "photo_size": list(self.photo_size),
            "transform": self.transform.tolist(),
            "inverse": self.inverse.tolist(),
            "num_faces": self.num_faces,
            "face_index": self.face_index,
            "face_box": None if self.face_box is None else self.face_box.tolist(),
            "landmarks": None if self.landmarks is None else self.landmarks.round(2).tolist(),
            "face_pose_deg": None if self.face_pose_deg is None else [round(v, 2) for v in self.face_pose_deg],
            "background": list(self.background),
            "convention": "pixel-centre coordinates (OpenCV warpAffine); [x', y'] = transform @ [x, y, 1]",
        }


def parse_background(value: str | tuple[int, int, int] | None) -> tuple[int, int, int]:
    """'white' / 'black' / 'gray' / '#rrggbb' / 'r,g,b' / a tuple -> an RGB tuple."""
    if value is None:
        return BACKGROUNDS["white"]
    if isinstance(value, (tuple, list)):
        parts = list(value)
    elif value.lower() in BACKGROUNDS:
        return BACKGROUNDS[value.lower()]
    elif value.startswith("#") and len(value) == 7:
        try:
            parts = [int(value[i:i + 2], 16) for i in (1, 3, 5)]
        except ValueError:
            parts = []
    else:
        try:
            parts = [int(p) for p in value.split(",")]
        except ValueError:
            parts = []
    if len(parts) != 3 or not all(0 <= int(p) <= 255 for p in parts):
        raise ValueError(f"background {value!r}: use white, black, gray, #rrggbb or r,g,b with values 0..255")
    return tuple(int(p) for p in parts)  # type: ignore[return-value]


def _similarity(angle: float, scale: float, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 matrix rotating by -angle and scaling about ``src``, then moving it to ``dst``."""
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    a = np.array([[c, s], [-s, c]])
    return np.hstack([a, (dst - a @ src)[:, None]])


def invert_affine(a: np.ndarray) -> np.ndarray:
    lin = np.linalg.inv(a[:, :2])
    return np.hstack([lin, -lin @ a[:, 2:]])


def apply_affine(a: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ a[:, :2].T + a[:, 2]


def face_transform(face: Face, size: int) -> np.ndarray:
    """Photo -> framed similarity putting the eye centre at EYE_CENTER and eye-to-mouth at EYE_TO_MOUTH."""
    eye = face.eye_center
    e2e = face.eye_left - face.eye_right
    e2m = face.mouth - eye
    right = np.array([e2m[1], -e2m[0]])  # the face's "right-hand" direction implied by the mouth being below the eyes
    if e2e @ right < 0:  # mirrored photos / swapped eye labels: orient the eye line consistently
        e2e = -e2e
    # Roll from the eye line, stabilised with the mouth direction (helps when the head is turned).
    x_axis = e2e + right
    angle = float(np.arctan2(x_axis[1], x_axis[0]))
    dist = max(float(np.linalg.norm(e2m)), EYE_DISTANCE_WEIGHT * float(np.linalg.norm(e2e)))
    if dist < 1e-3:
        raise PreprocessError("face landmarks are degenerate (eyes and mouth coincide)")
    target = np.array([EYE_CENTER[0] * size - 0.5, EYE_CENTER[1] * size - 0.5])
    return _similarity(angle, EYE_TO_MOUTH * size / dist, eye, target)


def measure_framing(image: np.ndarray) -> tuple[tuple[float, float], float] | None:
    """Eye centre (x, y) and eye-to-mouth distance, as fractions of the side, of the largest face in ``image``.

    Run it on front renders of the training data to tune EYE_CENTER / EYE_TO_MOUTH; None without a face.
    """
    faces = detect_faces(np.ascontiguousarray(image[..., :3]))
    if not faces:
        return None
    face = max(faces, key=lambda f: f.area)
    side = image.shape[0]
    eye = (face.eye_center + 0.5) / side
    return (float(eye[0]), float(eye[1])), float(np.linalg.norm(face.mouth - face.eye_center) / side)


def head_from_mask(mask: np.ndarray) -> tuple[np.ndarray, float]:
    """Head centre (x, y) and height in photo pixels from the top of a person mask.

    The head is the mask's rows from its top down to HEAD_ASPECT x the head width, where the width
    is the widest row seen before descending 0.75 widths (past the widest part of the skull, above
    the shoulders).
    """
    h, w = mask.shape
    region = keep_region(mask > 0.5)
    area = region.mean()
    if area < MIN_PERSON_AREA:
        raise PreprocessError("no person found in the photo (no face detected and the person mask is empty)")
    if area > MAX_PERSON_AREA or region[0].mean() > 0.25:
        raise PreprocessError(
            f"no face found, and the person mask covers {area:.0%} of the photo and runs off its top edge, so the head "
            "cannot be located; use a photo of a person with the whole head visible")
    rows = np.flatnonzero(region.any(axis=1))
    top = rows[0]
    widths = region.sum(axis=1)
    widest, r = 0, top
    while r < h and (r - top) < 0.75 * max(widest, 1) or r == top:
        widest = max(widest, int(widths[r]))
        r += 1
    head_h = HEAD_ASPECT * widest
    cols = np.nonzero(region[top:r])[1]
    return np.array([cols.mean(), top + head_h / 2]), head_h


def person_transform(mask: np.ndarray, size: int) -> np.ndarray:
    centre, head_h = head_from_mask(mask)
    target = np.array([0.5 * size - 0.5, HEAD_CENTER_Y * size - 0.5])
    return _similarity(0.0, HEAD_HEIGHT * size / head_h, centre, target)


def warp(img: np.ndarray, a: np.ndarray, size: int, border: str = "replicate") -> np.ndarray:
    """Resample ``img`` through the photo->framed matrix ``a``; large reductions pre-shrink with area averaging."""
    import cv2

    scale = float(np.sqrt(abs(np.linalg.det(a[:, :2]))))
    if scale < 0.5:  # bilinear warping alone would alias; shrink first, then warp the rest of the way
        h, w = img.shape[:2]
        nw, nh = max(1, round(w * 2 * scale)), max(1, round(h * 2 * scale))
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
        fx, fy = nw / w, nh / h
        shrink = np.array([[fx, 0, 0.5 * fx - 0.5], [0, fy, 0.5 * fy - 0.5], [0, 0, 1]])
        a = (np.vstack([a, [0, 0, 1]]) @ np.linalg.inv(shrink))[:2]
    mode = cv2.BORDER_REPLICATE if border == "replicate" else cv2.BORDER_CONSTANT
    return cv2.warpAffine(img, a, (size, size), flags=cv2.INTER_LINEAR, borderMode=mode, borderValue=0)


def _choose_face(faces: list[Face], index: int | None) -> int:
    if index is not None:
        if not -len(faces) <= index < len(faces):
            raise PreprocessError(f"--index {index}: the photo has {len(faces)} face(s) (numbered 0..{len(faces) - 1} from the left)")
        return index % len(faces)
    best = max(range(len(faces)), key=lambda i: faces[i].area)
    if len(faces) > 1:
        warnings.warn(f"{len(faces)} faces found; using the largest (index {best}, counting from the left); "
                      "choose another with index=/--index", MultipleFacesWarning, stacklevel=3)
    return best


class NoHeadError(PreprocessError):
    """No face in the photo: it may not show a head at all (``--force`` frames it from the person mask)."""


NO_HEAD_MESSAGE = ("no face found, so this may not be a photo of a head (the person segmenter also fires on objects such as "
                   "cups); if it is a head seen from the side or behind, rerun with --force to frame it from the person mask")


def frame_photo(photo: np.ndarray, size: int = 512, index: int | None = None,
                background: str | tuple[int, int, int] | None = "white", method: str = "auto",
                require_face: bool = False) -> Framed:
    """Map a photo (H, W, 3|4) uint8 to the training framing and remove its background.

    ``index`` picks a face (counting from the left) when there are several, default the largest.
    ``method`` is "auto" (face, else person mask), "face" (error without a face) or "person".
    An RGBA photo with real transparency uses its own alpha instead of the person segmenter.
    ``require_face`` (the reconstruction default) refuses a photo without a face in "auto" mode with
    :class:`NoHeadError`: the person mask alone cannot tell a head from a coffee cup.
    """
    if method not in ("auto", "face", "person"):
        raise ValueError(f"method {method!r}: use auto, face or person")
    if size < 64:
        raise ValueError(f"size {size}: the framed image needs at least 64 pixels")
    bg = parse_background(background)
    photo = check_photo(photo)
    rgb, photo_alpha = _split_alpha(photo)
    h, w = rgb.shape[:2]
    faces = detect_faces(rgb) if method != "person" else []
    chosen: int | None = None
    if faces:
        chosen = _choose_face(faces, index)
        a = face_transform(faces[chosen], size)
        seed = (EYE_CENTER[0] * size, EYE_CENTER[1] * size)
        used = "face"
    elif method == "face":
        raise PreprocessError("no face found in the photo (try method='person' for a profile or the back of a head)")
    elif method == "auto" and require_face:
        raise NoHeadError(NO_HEAD_MESSAGE)
    else:
        mask = photo_alpha if photo_alpha is not None else person_mask(rgb)
        a = person_transform(mask, size)
        seed = (0.5 * size, HEAD_CENTER_Y * size)
        used = "person"
    framed_rgb = warp(rgb, a, size)
    inside = warp(np.full((h, w), 255, np.uint8), a, size, border="constant").astype(np.float32) / 255
    if photo_alpha is not None:
        soft = warp(photo_alpha, a, size, border="constant")
    else:
        soft = person_mask(framed_rgb)
    alpha = refine_alpha(soft * inside, framed_rgb, seed) * inside
    alpha = np.clip(alpha, 0, 1).astype(np.float32)
    composite = framed_rgb.astype(np.float32) * alpha[..., None] + np.array(bg, np.float32) * (1 - alpha[..., None])
    face = faces[chosen] if chosen is not None else None
    landmarks = None if face is None else apply_affine(
        a, face.landmarks if face.landmarks is not None else np.stack([face.eye_right, face.eye_left, face.mouth]))
    return Framed(
        image=np.clip(composite + 0.5, 0, 255).astype(np.uint8),
        alpha=alpha,
        rgba=np.dstack([framed_rgb, np.clip(alpha * 255 + 0.5, 0, 255).astype(np.uint8)]),
        transform=a,
        inverse=invert_affine(a),
        method=used,
        face_box=None if face is None else _box_through(a, face.box),
        landmarks=landmarks,
        num_faces=len(faces),
        face_index=chosen,
        photo_size=(w, h),
        background=bg,
        face_pose_deg=None if face is None or face.landmark_depth is None else framed_face_pose(a, landmarks, face.landmark_depth),
    )


def framed_face_pose(a: np.ndarray, framed_landmarks: np.ndarray, depth: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of a face from its mesh landmarks already mapped by the photo -> framed
    similarity ``a`` and their depth in photo pixels (so roll is what is left after levelling the eyes)."""
    scale = math.sqrt(abs(np.linalg.det(a[:, :2])))  # a similarity scales depth as it scales x and y
    pts = np.column_stack([framed_landmarks, depth * scale])
    return tuple(float(v) for v in np.degrees(landmark_head_pose(pts)))


def _split_alpha(photo: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """RGB for the detectors (transparent areas shown as white) and the photo's own alpha, if any."""
    if photo.shape[-1] == 3:
        return photo, None
    alpha = photo[..., 3]
    a = alpha[..., None].astype(np.float32) / 255
    rgb = (photo[..., :3].astype(np.float32) * a + 255 * (1 - a) + 0.5).astype(np.uint8)
    return rgb, alpha.astype(np.float32) / 255


def _box_through(a: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Axis-aligned bounds of a photo box after the transform (framed pixels)."""
    x0, y0, x1, y1 = box
    pts = apply_affine(a, np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]]))
    return np.concatenate([pts.min(axis=0), pts.max(axis=0)])

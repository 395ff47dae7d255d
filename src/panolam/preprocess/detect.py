"""Faces and person masks from MediaPipe 0.10.21's legacy ``mp.solutions`` models (DESIGN §9).

The ``.tflite`` weights ship inside the mediapipe wheel, so nothing is downloaded. Three models:
BlazeFace full-range detection (boxes + 6 keypoints, finds every face), the 478-point face mesh
(run on a crop around the chosen face, so small faces in big photos still get landmarks) and the
selfie segmenter (soft person mask). The graphs are built once per process and are not
thread-safe, so every call holds a lock (the web app serves requests from several threads).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import os
import sys
import threading
import types

import numpy as np

# Silence TensorFlow Lite / glog start-up chatter before mediapipe is imported.
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_LOCK = threading.Lock()


@contextlib.contextmanager
def _native_quiet():
    """Hide MediaPipe's C++ (absl) start-up warnings, which ignore GLOG_minloglevel, by pointing fd 2 at
    /dev/null around its calls. Python exceptions are unaffected; PANOLAM_DEBUG=1 keeps the output."""
    if os.environ.get("PANOLAM_DEBUG"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)

# Face-mesh indices (MediaPipe canonical topology): eye corners and mouth corners.
RIGHT_EYE = (33, 133)  # subject's right eye = left side of the image
LEFT_EYE = (362, 263)
MOUTH = (61, 291)
MESH_CROP_SCALE = 2.2  # crop side / detector box side for the mesh pass: whole face plus margin


@dataclasses.dataclass
class Face:
    """One face in photo pixel coordinates (OpenCV convention: pixel (0, 0)'s centre is at (0, 0))."""

    box: np.ndarray  # (4,) x0, y0, x1, y1
    score: float
    eye_right: np.ndarray  # (2,) subject's right eye (image left)
    eye_left: np.ndarray  # (2,)
    mouth: np.ndarray  # (2,)
    landmarks: np.ndarray | None = None  # (478, 2) face mesh, when the mesh pass succeeded
    landmark_depth: np.ndarray | None = None  # (478,) the mesh's depth in photo pixels (away from the viewer)

    @property
    def area(self) -> float:
        return float((self.box[2] - self.box[0]) * (self.box[3] - self.box[1]))

    @property
    def eye_center(self) -> np.ndarray:
        return (self.eye_right + self.eye_left) / 2


class _DeferredModule(types.ModuleType):
    """Stands in for a module until an attribute is read, then imports the real one and reads it there."""

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return getattr(importlib.import_module(self.__name__), attr)


def import_mediapipe() -> types.ModuleType:
    """``import mediapipe``, without the matplotlib import its plotting helpers make at import time.

    mediapipe's package ``__init__`` imports ``solutions.drawing_utils``, which runs ``import
    matplotlib.pyplot``: 0.66 s of the 1.15 s the import costs here, for plotting functions this
    project never calls. While mediapipe is imported, matplotlib and pyplot are stand-ins that import
    the real modules the first time anything is read from them (so mediapipe's plotting still works), and
    they are taken out of ``sys.modules`` afterwards so that any later ``import matplotlib`` is the real one.
    """
    if "mediapipe" in sys.modules or "matplotlib" in sys.modules:
        import mediapipe

        return mediapipe
    mpl, plt = _DeferredModule("matplotlib"), _DeferredModule("matplotlib.pyplot")
    mpl.__path__ = []  # a package, so that "matplotlib.pyplot" resolves to the stand-in
    mpl.__dict__["pyplot"] = plt
    sys.modules["matplotlib"], sys.modules["matplotlib.pyplot"] = mpl, plt
    try:
        import mediapipe
    finally:
        for name, stand_in in (("matplotlib", mpl), ("matplotlib.pyplot", plt)):
            if sys.modules.get(name) is stand_in:
                del sys.modules[name]
    return mediapipe


@functools.lru_cache(maxsize=None)
def _models():
    mp = import_mediapipe()
    sol = mp.solutions
    return {
        "detector": sol.face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.5),
        "mesh": sol.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True, min_detection_confidence=0.3),
        "selfie": sol.selfie_segmentation.SelfieSegmentation(model_selection=0),
    }


def _to_px(x: float, y: float, w: int, h: int) -> np.ndarray:
    """MediaPipe normalised coordinates (0..1 over the image edges) -> pixel-centre coordinates."""
    return np.array([x * w - 0.5, y * h - 0.5])


def detect_faces(rgb: np.ndarray, with_mesh: bool = True) -> list[Face]:
    """All faces, ordered left to right by box centre; landmarks from the mesh pass when ``with_mesh``."""
    rgb = np.ascontiguousarray(rgb[..., :3])
    h, w = rgb.shape[:2]
    with _LOCK, _native_quiet():
        result = _models()["detector"].process(rgb)
    faces = []
    for det in result.detections or []:
        rb = det.location_data.relative_bounding_box
        kp = [_to_px(k.x, k.y, w, h) for k in det.location_data.relative_keypoints]
        box = np.array([rb.xmin * w, rb.ymin * h, (rb.xmin + rb.width) * w, (rb.ymin + rb.height) * h])
        # BlazeFace keypoints: right eye, left eye, nose tip, mouth centre, right ear, left ear.
        faces.append(Face(box=box, score=float(det.score[0]), eye_right=kp[0], eye_left=kp[1], mouth=kp[3]))
    faces.sort(key=lambda f: (f.box[0] + f.box[2]) / 2)
    if with_mesh:
        for face in faces:
            _refine_with_mesh(rgb, face)
    return faces


def _refine_with_mesh(rgb: np.ndarray, face: Face) -> None:
    """Replace the detector's coarse keypoints by face-mesh ones computed on a square crop around the face."""
    import cv2

    cx, cy = (face.box[:2] + face.box[2:]) / 2
    side = MESH_CROP_SCALE * max(face.box[2] - face.box[0], face.box[3] - face.box[1])
    crop_size = int(np.clip(round(side), 128, 512))
    s = crop_size / side
    # photo -> crop similarity (scale + translation) so the crop is centred on the face
    a = np.array([[s, 0, crop_size / 2 - s * cx], [0, s, crop_size / 2 - s * cy]])
    crop = cv2.warpAffine(rgb, a, (crop_size, crop_size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    with _LOCK, _native_quiet():
        result = _models()["mesh"].process(crop)
    if not result.multi_face_landmarks:
        return
    marks = result.multi_face_landmarks[0].landmark
    pts = np.array([_to_px(p.x, p.y, crop_size, crop_size) for p in marks])
    pts = (pts - a[:, 2]) / s  # crop -> photo
    depth = np.array([p.z for p in marks]) * crop_size / s  # FaceMesh's z is on the scale of x
    # The mesh must land on the detected face; otherwise keep the detector's keypoints.
    centre = pts.mean(axis=0)
    if not (face.box[0] <= centre[0] <= face.box[2] and face.box[1] <= centre[1] <= face.box[3]):
        return
    face.landmarks, face.landmark_depth = pts, depth
    face.eye_right = pts[list(RIGHT_EYE)].mean(axis=0)
    face.eye_left = pts[list(LEFT_EYE)].mean(axis=0)
    face.mouth = pts[list(MOUTH)].mean(axis=0)


def person_mask(rgb: np.ndarray) -> np.ndarray:
    """Soft person mask (H, W) float32 in [0, 1] from the selfie segmenter."""
    rgb = np.ascontiguousarray(rgb[..., :3])
    with _LOCK, _native_quiet():
        mask = _models()["selfie"].process(rgb).segmentation_mask
    return np.clip(np.asarray(mask, dtype=np.float32), 0.0, 1.0)

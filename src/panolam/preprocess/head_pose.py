"""The face's rotation from FaceMesh's 3D landmarks: an anatomical head frame (eye corners, forehead,
chin) read off directly, since FaceMesh returns a depth for every landmark on the scale of x. No
package ships a generic 3D face to run PnP against, and this frame needs no correspondence between
FaceMesh's landmarks and our procedural template. Used by the preprocessing (a yaw hint for the network's input camera, see
:func:`panolam.pipeline.Reconstructor.reconstruct`) and by the APD metric.
"""

from __future__ import annotations

import math

import numpy as np

# FaceMesh landmark ids: eye outer corners (subject's right 33, left 263), forehead 10 and chin 152.
EYE_RIGHT, EYE_LEFT, FOREHEAD, CHIN = 33, 263, 10, 152


def landmark_head_pose(landmarks: np.ndarray) -> np.ndarray:
    """(yaw, pitch, roll) in radians of a face from its (≥468, 3) FaceMesh landmarks in pixels (x right,
    y down, z away from the viewer, z on the scale of x).

    The head frame is x = right eye → left eye (image right for a frontal face), y = forehead → chin
    made orthogonal to x, z = x × y (into the image); a frontal, upright face gives (0, 0, 0). Positive
    yaw is the face turned towards image left, i.e. a camera orbiting to the subject's left: the same
    sign as the orbit cameras' yaw (:func:`panolam.geometry.cameras.orbit_position`)."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim != 2 or lm.shape[1] != 3 or lm.shape[0] <= max(EYE_RIGHT, EYE_LEFT, FOREHEAD, CHIN):
        raise ValueError(f"landmark_head_pose needs (>=468, 3) FaceMesh landmarks, got shape {lm.shape}")
    x = lm[EYE_LEFT] - lm[EYE_RIGHT]
    x /= np.linalg.norm(x) + 1e-12
    y = lm[CHIN] - lm[FOREHEAD]
    y -= x * (x @ y)
    y /= np.linalg.norm(y) + 1e-12
    return euler_yxz(np.stack([x, y, np.cross(x, y)], axis=1))


def euler_yxz(r: np.ndarray) -> np.ndarray:
    """Yaw (about y), pitch (about x), roll (about z) of a rotation matrix R = Ry·Rx·Rz."""
    pitch = math.asin(max(-1.0, min(1.0, -r[1, 2])))
    yaw = math.atan2(r[0, 2], r[2, 2])
    roll = math.atan2(r[1, 0], r[1, 1])
    return np.array([yaw, pitch, roll])

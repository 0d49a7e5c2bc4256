"""Per-face quality: size, sharpness, pose and detector confidence, kept apart.

The score ranks shots of the same face (best-shot selection in tracking) and
gates enrolment. Pose angles are estimates from the 5 landmarks, good to
tell a frontal face from a turned one, not a head-pose measurement.

Sharpness is judged at the face's own resolution: a face smaller than the
112x112 crop was enlarged into it, and enlarging smooths, so at 112 px a
sharp 40 px ID-photo face looked as blurred as a defocused large one and was
refused for it. Shrinking the crop back to the face's size undoes the
enlargement's smoothing but not the photo's own blur. The Laplacian's
variance grows as the same face gets fewer pixels, so it is scaled back to
the crop's 112 px: sharpness then measures blur relative to the face, the
same for a sharp face at 24 px as at 130 px, and how small a face may be
stays the size part's job alone. Only the face itself (brows to mouth) is
measured: the crop's edges hold hair, background and, for a tight crop or a
face at the image's edge, the hard line where the image ends, which made a
blurred face look sharp.
"""

from __future__ import annotations

import cv2
import numpy as np

from facetrail.vision.align import ARCFACE_TEMPLATE, AlignedFaces, roll_degrees
from facetrail.vision.types import FaceDetections, FaceQuality

FULL_SIZE_PX = 80.0  # faces this size or larger get the full size score
FULL_SHARPNESS = 120.0  # Laplacian variance of a crisp face (brows to mouth, at its size up to 112 px)
MIN_NATIVE_SIDE = 8  # a face is never judged on fewer pixels than this a side
SHARPNESS_REGION = (30, 100, 22, 90)  # rows y0:y1, columns x0:x1 of the 112x112 crop: brows to mouth
# Laplacian variance of the same sharp face at `side` px, relative to 112 px, is about (112 / side) ** 1.2:
# LFW View 1 DevTest first images (853) shrunk to faces of 64/48/40/32/24/20 px gave x1.9/3.0/3.7/4.8/6.1/7.1
# (medians), a least-squares exponent of 1.20; scaled back by it, the medians are 140-145 at every size
# (143 as shot).
SHARPNESS_SIZE_EXPONENT = 1.20
MAX_YAW, MAX_PITCH = 70.0, 50.0  # degrees at which the pose score reaches zero
MAX_RESIDUAL_PX = 12.0  # landmarks further than this (crop px, RMS) from a face shape are not trusted
_T0 = (ARCFACE_TEMPLATE[2, 1] - ARCFACE_TEMPLATE[:2, 1].mean()) / (
    ARCFACE_TEMPLATE[3:, 1].mean() - ARCFACE_TEMPLATE[:2, 1].mean())


def assess(faces: FaceDetections, aligned: AlignedFaces) -> list[FaceQuality]:
    """Quality of every face, given its detection and its aligned crop."""
    rolls = roll_degrees(faces.landmarks)
    out = []
    for i in range(len(faces)):
        matrix = aligned.matrices[i]
        scale = float(np.hypot(matrix[0, 0], matrix[0, 1]))
        face_px = 112.0 / scale
        sharpness = native_sharpness(aligned.crops[i], face_px)
        points = faces.landmarks[i] @ matrix[:, :2].T + matrix[:, 2]
        yaw, pitch = _pose(points)
        det = float(faces.scores[i])
        residual = float(aligned.residuals[i])
        parts = {
            "size": min(face_px / FULL_SIZE_PX, 1.0),
            "sharpness": min(sharpness / FULL_SHARPNESS, 1.0),
            "pose": max(0.0, 1.0 - (yaw / MAX_YAW) ** 2) * max(0.0, 1.0 - (pitch / MAX_PITCH) ** 2),
            "detector": min(det / 0.8, 1.0),
            "alignment": max(0.0, min(1.0, (MAX_RESIDUAL_PX - residual) / (MAX_RESIDUAL_PX / 2))),
        }
        score = float(np.prod(list(parts.values())))
        out.append(FaceQuality(score=round(score, 4), face_px=round(face_px, 1),
                               sharpness=round(sharpness, 1), yaw=round(yaw, 1),
                               pitch=round(pitch, 1), roll=round(float(rolls[i]), 1),
                               detector_score=round(det, 4),
                               parts={k: round(v, 4) for k, v in parts.items()}))
    return out


def native_sharpness(crop: np.ndarray, face_px: float) -> float:
    """Laplacian variance of an aligned crop, measured at the face's native size when that is smaller.

    ``face_px``: how many source pixels the crop's width covers. Faces at
    least as large as the crop are measured on it as they are; smaller ones
    on the crop shrunk to their size, scaled to the crop's size (see
    ``SHARPNESS_SIZE_EXPONENT``), so the value means the same at every size.
    """
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
    full = int(grey.shape[0])
    side = int(round(max(face_px, MIN_NATIVE_SIDE)))
    if side < full:
        grey = cv2.resize(grey, (side, side), interpolation=cv2.INTER_AREA)
    k = grey.shape[0] / 112.0
    y0, y1, x0, x1 = (int(round(v * k)) for v in SHARPNESS_REGION)
    variance = float(cv2.Laplacian(grey, cv2.CV_64F)[y0:y1, x0:x1].var())
    return variance if side >= full else variance * float((side / full) ** SHARPNESS_SIZE_EXPONENT)


def _pose(points: np.ndarray) -> tuple[float, float]:
    """Yaw and pitch estimates (degrees) from landmarks in aligned-crop coordinates."""
    eyes_mid = points[:2].mean(axis=0)
    mouth_mid = points[3:].mean(axis=0)
    half_eye = max(float(np.linalg.norm(points[1] - points[0])) / 2.0, 1e-6)
    yaw_ratio = (points[2, 0] - (eyes_mid[0] + mouth_mid[0]) / 2.0) / half_eye
    yaw = float(np.degrees(np.arcsin(np.clip(yaw_ratio, -1.0, 1.0))))
    span = max(float(mouth_mid[1] - eyes_mid[1]), 1e-6)
    pitch_ratio = ((points[2, 1] - eyes_mid[1]) / span - _T0) * 2.0
    pitch = float(np.degrees(np.arcsin(np.clip(pitch_ratio, -1.0, 1.0))))
    return yaw, pitch

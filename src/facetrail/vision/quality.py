"""Per-face quality: size, sharpness, pose and detector confidence, kept apart.

The score ranks shots of the same face (best-shot selection in tracking) and
gates enrolment. Pose angles are estimates from the 5 landmarks, good to
tell a frontal face from a turned one, not a head-pose measurement.
"""

from __future__ import annotations

import cv2
import numpy as np

from facetrail.vision.align import ARCFACE_TEMPLATE, AlignedFaces, roll_degrees
from facetrail.vision.types import FaceDetections, FaceQuality

FULL_SIZE_PX = 80.0  # faces this size or larger get the full size score
FULL_SHARPNESS = 120.0  # Laplacian variance of a crisp 112x112 crop
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
        grey = cv2.cvtColor(aligned.crops[i], cv2.COLOR_BGR2GRAY)
        sharpness = float(cv2.Laplacian(grey, cv2.CV_64F).var())
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

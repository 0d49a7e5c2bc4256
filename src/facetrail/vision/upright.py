"""Re-checking the landmarks of strongly rolled faces on an upright copy.

SCRFD is trained on roughly upright faces. On a face turned by about 90 or
180 degrees its box is right but its landmarks can come out swapped or
misplaced, and a face aligned on them gets a wrong embedding without any
error. So every face rolled past a limit is looked at again: its region is
turned upright (by its measured roll, and if that does not give an upright
face, by the roll plus 90, 180 and 270 degrees) and detected again, and the
upright look's landmarks replace the first ones; where no upright face is
found, the face is dropped and counted. Faces within the limit keep the
detector's landmarks untouched (bit-exact with InsightFace's pipeline);
beyond it facetrail deliberately differs from InsightFace, for the better:
on ../shared/data/conditions/rotation the face turned 90 degrees matches the
upright photo at 0.99 instead of 0.87, the one turned 270 at 0.99 instead of
0.08 (see tests/test_vision_models.py).
"""

from __future__ import annotations

from typing import Protocol, cast

import cv2
import numpy as np

from facetrail.vision.align import roll_degrees
from facetrail.vision.image import BGRImage
from facetrail.vision.types import FaceDetections, FloatArray

ROLL_LIMIT = 40.0  # faces rolled more than this (degrees) get a second, upright look
UPRIGHT_WITHIN = 15.0  # a second look counts as upright when its roll is within this
MAX_TURNS = 3  # further turns by the residual roll before a start angle is given up


class _Detector(Protocol):
    def detect(self, image: BGRImage) -> FaceDetections: ...


def verify_upright(detector: _Detector, image: BGRImage, faces: FaceDetections) -> FaceDetections:
    """``faces`` with the landmarks of strongly rolled faces checked, fixed or dropped."""
    rolls = roll_degrees(faces.landmarks)
    suspects = np.flatnonzero(np.abs(rolls) > ROLL_LIMIT)
    if suspects.size == 0:
        return faces
    keep = np.ones(len(faces), bool)
    landmarks = faces.landmarks.copy()
    for i in suspects:
        second = _second_look(detector, image, faces.xyxy[i], float(rolls[i]))
        if second is None:
            keep[i] = False
            continue
        landmarks[i] = second
    checked = FaceDetections(faces.xyxy.copy(), faces.scores.copy(), landmarks, faces.rotation,
                             dropped=faces.dropped + int((~keep).sum()))
    return checked if keep.all() else checked.select(keep)


def _second_look(detector: _Detector, image: BGRImage, box: FloatArray, roll: float) -> FloatArray | None:
    """Landmarks (5, 2) in image pixels from an upright copy of the face's region, or None.

    Starts by undoing the measured roll; when the face found there is still
    rolled (the first landmarks were wrong), turns further by that residual
    roll, a few times at most; when nothing is found, tries quarter turns.
    """
    centre = (float(box[0] + box[2]) / 2.0, float(box[1] + box[3]) / 2.0)
    side = int(2.0 * max(box[2] - box[0], box[3] - box[1])) + 1
    starts = [roll, roll + 90.0, roll + 180.0, roll + 270.0]
    for angle in starts:
        for _ in range(MAX_TURNS):
            found = _look(detector, image, centre, side, angle)
            if found is None:
                break
            points, residual_roll = found
            if abs(residual_roll) <= UPRIGHT_WITHIN:
                return points
            angle += residual_roll
    return None


def _look(detector: _Detector, image: BGRImage, centre: tuple[float, float], side: int,
          angle: float) -> tuple[FloatArray, float] | None:
    """The face nearest the centre of the region turned by ``angle``: image landmarks and its roll there."""
    # Rotate about the face centre and move that centre to the middle of a square patch.
    matrix = cv2.getRotationMatrix2D(centre, angle, 1.0)
    matrix[:, 2] += np.array([side / 2.0 - centre[0], side / 2.0 - centre[1]])
    patch = cast(BGRImage, cv2.warpAffine(image, matrix, (side, side), borderValue=0.0))
    found = detector.detect(patch)
    if len(found) == 0:
        return None
    distance = np.hypot(*(found.landmarks[:, 2] - side / 2.0).T)
    nearest = int(np.argmin(distance))
    if distance[nearest] > side / 4.0:
        return None
    inverse = cv2.invertAffineTransform(matrix)
    points: FloatArray = (found.landmarks[nearest] @ inverse[:, :2].T + inverse[:, 2]).astype(np.float32)
    return points, float(roll_degrees(found.landmarks[nearest : nearest + 1])[0])

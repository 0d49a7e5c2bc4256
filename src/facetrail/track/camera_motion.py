"""Global motion compensation: how the whole picture moved between two analysed frames.

A panning or zooming camera moves every face at once, often further between
two analysed frames than a face is wide; box overlap alone then loses every
track. As in BoT-SORT, the camera's own motion is estimated (sparse optical
flow on a small grey copy, a RANSAC similarity transform) and applied to the
tracks' predictions before they are matched. A still camera costs a few
milliseconds and yields the identity.
"""

from __future__ import annotations

import cv2
import numpy as np

from facetrail.vision.image import BGRImage

WORK_WIDTH = 320
MAX_CORNERS = 300
MIN_POINTS = 12


class CameraMotion:
    """Estimates, frame after frame, the 2x3 transform from the previous frame to the current one."""

    def __init__(self, work_width: int = WORK_WIDTH) -> None:
        self.work_width = work_width
        self._previous: np.ndarray | None = None
        self._scale = 1.0

    def reset(self) -> None:
        """Forget the previous frame (a new stream)."""
        self._previous = None

    def estimate(self, image: BGRImage) -> np.ndarray | None:
        """Transform (2x3, full-resolution pixels) from the previous frame to this one; None for the first."""
        grey = self._small(image)
        previous, self._previous = self._previous, grey
        if previous is None or previous.shape != grey.shape:
            return None
        corners = cv2.goodFeaturesToTrack(previous, MAX_CORNERS, 0.01, 8)
        if corners is None or len(corners) < MIN_POINTS:
            return None
        moved, found, _ = cv2.calcOpticalFlowPyrLK(previous, grey, corners, None,
                                                   winSize=(21, 21), maxLevel=4)
        good = found.reshape(-1) == 1
        if good.sum() < MIN_POINTS:
            return None
        matrix, inliers = cv2.estimateAffinePartial2D(corners[good], moved[good], method=cv2.RANSAC,
                                                      ransacReprojThreshold=2.0)
        if matrix is None or inliers is None or int(inliers.sum()) < MIN_POINTS:
            return None
        full = np.asarray(matrix, np.float64).copy()
        full[:, 2] /= self._scale  # translation back to full-resolution pixels
        return full

    def _small(self, image: BGRImage) -> np.ndarray:
        height, width = image.shape[:2]
        self._scale = min(1.0, self.work_width / width)
        size = (max(1, round(width * self._scale)), max(1, round(height * self._scale)))
        return np.asarray(cv2.cvtColor(cv2.resize(image, size, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY),
                          np.uint8)

"""Global motion compensation: how the whole picture moved between two analysed frames.

A panning or zooming camera moves every face at once, often further between
two analysed frames than a face is wide; box overlap alone then loses every
track. As in BoT-SORT, the camera's own motion is estimated (sparse optical
flow on a small grey copy, a RANSAC similarity transform) and applied to the
tracks' predictions before they are matched.

The optical flow costs 2.5-3 ms of CPU per frame (150 corners on the 320-px
copy), more than the tracker itself, and most cameras never move. The copy
itself (0.1 ms from 640x360, 1.1 ms from 1080p) is the frame's own small grey
copy (``Frame.grey``), made once and shared with the motion gate. Two
shortcuts keep the result where it matters:

- With no track to move (nobody in view) the transform would be thrown
  away: only the grey copy is kept, for the next frame.
- A camera whose estimate stays under ``STILL_PX`` for ``STILL_FRAMES``
  frames in a row is *still*: it is then estimated only every
  ``CHECK_EVERY``-th frame (from the frame just before it, so the check
  measures one frame's motion) and the frames between get no transform (the
  identity). The first check that finds motion brings back every frame.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from facetrail.vision.image import GREY_WIDTH, BGRImage, GreyImage, small_grey

WORK_WIDTH = GREY_WIDTH  # the frame's shared small grey copy is used as it is
# Corners followed by the optical flow, whose cost grows with them: 150 cost 35% less CPU than 300 and move the
# estimate by at most 1.6 px of a 1080p frame on street.mp4 and 0.7 px of the 640x360 demo clip (median 0.7 and
# 0.05), under the estimate's own noise; both clips give the same tracks and names (tests/test_camera_motion.py).
MAX_CORNERS = 150
MIN_POINTS = 12
# A still camera: every corner of the frame moved less than this (pixels of the 320-px copy: 1.5 px of a 640-px
# frame, 4.5 px of a 1080p one) for STILL_FRAMES estimates in a row; it is then checked every CHECK_EVERY frames.
# The estimate's own noise on a still synthetic camera (sensor noise, H.264) is 0.2-0.6 px; street.mp4, a
# hand-held camera drifting 0.6-2 px per 5 fps frame on this scale, never counts as still.
STILL_PX = 0.75
STILL_FRAMES = 10  # 2 s at 5 analysed fps
CHECK_EVERY = 5  # 1 s at 5 analysed fps: a camera that starts to pan is compensated again within a second


class CameraMotion:
    """Estimates, frame after frame, the 2x3 transform from the previous frame to the current one."""

    def __init__(self, work_width: int = WORK_WIDTH, *, max_corners: int = MAX_CORNERS,
                 check_every: int | None = None) -> None:
        """``check_every``: how often a still camera is estimated (default ``CHECK_EVERY``; 1: every frame)."""
        self.work_width = work_width
        self.max_corners = max_corners
        self.check_every = max(1, CHECK_EVERY if check_every is None else check_every)
        self._previous: np.ndarray | None = None
        self._scale = 1.0
        self._still = 0  # estimates in a row under STILL_PX
        self._since_check = 0  # frames since the last estimate, while still
        self.estimated = 0  # frames whose optical flow was computed
        self.skipped = 0  # frames that skipped it (still camera, or nothing to move)

    @property
    def still(self) -> bool:
        """True while the camera counts as still (estimated only every ``check_every`` frames)."""
        return self.check_every > 1 and self._still >= STILL_FRAMES

    def reset(self) -> None:
        """Forget the previous frame (a new stream)."""
        self._previous = None
        self._still = self._since_check = 0

    def estimate(self, image: BGRImage, *, needed: bool = True,
                 grey: Callable[[], GreyImage] | None = None) -> np.ndarray | None:
        """Transform (2x3, full-resolution pixels) from the previous frame to this one.

        None for the first frame, when the flow finds too little to go on, when ``needed`` is False (no track
        to apply it to: only this frame's grey copy is kept) and on the frames a still camera skips.
        ``grey``: gives the frame's small grey copy (``small_grey``, made once per frame and shared with the
        motion gate), asked for only when this frame needs it; without it the copy is made here.
        """
        if self.still:
            self._since_check += 1
            if self._since_check < self.check_every:
                # the frame just before a check keeps its grey copy, so the check measures one frame's motion
                self._previous = self._small(image, grey) if self._since_check == self.check_every - 1 else None
                self.skipped += 1
                return None
            self._since_check = 0
        small = self._small(image, grey)
        previous, self._previous = self._previous, small
        if previous is None or previous.shape != small.shape:
            return None
        if not needed:
            self.skipped += 1
            return None
        self.estimated += 1
        matrix = self._flow(previous, small)
        moved = _displacement(matrix, small.shape[1], small.shape[0]) if matrix is not None else np.inf
        self._still = self._still + 1 if moved < STILL_PX else 0
        if matrix is None:
            return None
        full = np.asarray(matrix, np.float64).copy()
        full[:, 2] /= self._scale  # translation back to full-resolution pixels
        return full

    def _flow(self, previous: np.ndarray, grey: np.ndarray) -> np.ndarray | None:
        """The similarity transform (2x3, work pixels) from ``previous`` to ``grey``; None when unsure."""
        corners = cv2.goodFeaturesToTrack(previous, self.max_corners, 0.01, 8)
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
        return np.asarray(matrix, np.float64)

    def _small(self, image: BGRImage, grey: Callable[[], GreyImage] | None = None) -> np.ndarray:
        width = image.shape[1]
        self._scale = min(1.0, self.work_width / width)
        if grey is not None and self.work_width == GREY_WIDTH:
            return grey()
        return small_grey(image, self.work_width)


def _displacement(matrix: np.ndarray, width: int, height: int) -> float:
    """How far (pixels) the transform moves the farthest corner of a ``width`` x ``height`` picture."""
    corners = np.array([[0, 0, 1], [width, 0, 1], [0, height, 1], [width, height, 1]], np.float64)
    return float(np.abs(corners @ matrix.T - corners[:, :2]).max())

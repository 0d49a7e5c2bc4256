"""The motion gate: skip detection on frames where nothing moved.

Each frame is turned grey, shrunk and blurred (from the frame's small grey
copy when the reader made one, which camera motion reuses later), then compared with the last
frame that was let through; when too few pixels changed, the frame is
skipped. So that a person standing still is not forgotten, one frame passes
every ``max_skip_s`` seconds anyway (a heartbeat).
"""

from __future__ import annotations

from typing import Literal, cast

import cv2
import numpy as np
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from facetrail.video.picture import FramePicture
from facetrail.vision.image import GreyImage

MotionDecision = Literal["motion", "heartbeat", "skip"]


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class MotionSettings:
    """The motion gate: detection is skipped where nothing moved."""

    enabled: bool = Field(default=True, title="Enabled", description="Skip detection on frames without motion.")
    threshold: int = Field(default=25, ge=1, le=255, title="Pixel threshold",
                           description="Grey-level change that counts as motion.")
    min_changed: float = Field(default=0.002, ge=0, le=1, title="Changed fraction",
                               description="Fraction of pixels that must change.")
    downscale_width: int = Field(default=160, ge=16, le=1920, title="Comparison width",
                                 description="Frames are compared at this width.")
    max_skip_s: float = Field(default=2.0, gt=0, title="Heartbeat",
                              description="Analyse one frame at least this often even without motion.")


class MotionGate:
    """Decides per frame whether detection should run; one gate per camera (it keeps the last frame)."""

    def __init__(self, settings: MotionSettings | None = None) -> None:
        self.settings = settings or MotionSettings()
        self._previous: GreyImage | None = None
        self._passed_at = 0.0
        self.last_changed = 0.0  # fraction of pixels that changed in the last frame checked

    def reset(self) -> None:
        """Forget the reference frame (after a reconnect the next frame passes)."""
        self._previous = None

    def check(self, picture: FramePicture, pts: float, grey: GreyImage | None = None) -> MotionDecision:
        """``motion``, ``heartbeat`` (nothing moved for ``max_skip_s``) or ``skip``; the first frame is motion.

        ``grey``: the frame's small grey copy (``small_grey``), shrunk on from there when it is wide enough;
        otherwise the comparison copy is made from the BGR picture.
        """
        if not self.settings.enabled:
            return "motion"
        small = self._small(picture, grey)
        if self._previous is None or self._previous.shape != small.shape:
            self.last_changed = 1.0
            return self._pass(small, pts, "motion")
        diff = cv2.absdiff(small, self._previous)
        self.last_changed = float(np.count_nonzero(diff > self.settings.threshold)) / diff.size
        if self.last_changed >= self.settings.min_changed:
            return self._pass(small, pts, "motion")
        if pts - self._passed_at >= self.settings.max_skip_s:
            return self._pass(small, pts, "heartbeat")
        return "skip"

    def _pass(self, small: GreyImage, pts: float, decision: MotionDecision) -> MotionDecision:
        self._previous = small
        self._passed_at = pts
        return decision

    def _small(self, picture: FramePicture, grey: GreyImage | None) -> GreyImage:
        width, height = picture.size
        target = min(self.settings.downscale_width, width)
        size = (target, max(1, round(height * target / width)))
        if grey is not None and grey.shape[1] >= target:
            # from the shared grey copy: 0.03 ms instead of 2.3 (1080p) to shrink three channels and make them grey
            small = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
        else:
            small = cv2.cvtColor(cv2.resize(picture.bgr(), size, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY)
        return cast(GreyImage, cv2.GaussianBlur(small, (5, 5), 0))

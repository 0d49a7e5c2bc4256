"""Frames handed to analysis, and the two decisions made before a picture becomes one.

``RateSampler`` picks pictures at the analysis rate by media time (so variable
frame rate sources are sampled evenly); ``output_size`` works out the size a
picture is converted to when the camera asks for a width and/or height.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property

from facetrail.video.picture import FramePicture
from facetrail.vision.image import BGRImage, GreyImage, small_grey

# Slack for pts that land a hair below a slot boundary through float rounding (e.g. 0.6 * 5 = 2.9999999999999996).
_SLOT_EPSILON = 1e-6
# A backward jump in media time larger than this is a timestamp reset (live stream discontinuity).
_RESET_JUMP_S = 1.0


@dataclass(frozen=True, eq=False)
class Frame:
    """One picture of one camera, delivered for analysis."""

    camera: str
    picture: FramePicture  # its pixels: converted to BGR when the analysis first asks (``image``)
    index: int  # running number of frames this camera delivered for analysis
    pts: float  # media time in seconds from the start of the source
    captured_at: datetime  # UTC: arrival time for live sources (streams, files in real time), else start + pts
    received_monotonic: float  # time.monotonic() when decoded
    motion: bool = True  # False when the motion gate let it through only as a heartbeat
    made_grey: GreyImage | None = field(default=None, repr=False)  # the reader's small grey copy, when it made one

    @property
    def image(self) -> BGRImage:
        """The picture as BGR uint8, HxWx3 (converted from the decoded frame on first use)."""
        return self.picture.bgr()

    @cached_property
    def grey(self) -> GreyImage:
        """The frame's small grey copy (``small_grey``), made once: the motion gate and camera motion share it."""
        return self.made_grey if self.made_grey is not None else small_grey(self.image)


class RateSampler:
    """Takes the first picture of every ``1/fps`` slot of media time; ``fps=None`` takes all.

    ``after`` skips everything up to and including that media time, so a source
    reopened after a failure resumes on the same sampling grid.
    """

    def __init__(self, fps: float | None, after: float | None = None) -> None:
        if fps is not None and fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self._fps = fps
        self._after = after
        self._last_slot = self._slot(after) if after is not None and fps is not None else None
        self._last_pts: float | None = None

    def _slot(self, pts: float) -> int:
        assert self._fps is not None
        return math.floor(pts * self._fps + _SLOT_EPSILON)

    def take(self, pts: float) -> bool:
        """Whether the picture at media time ``pts`` (seconds) is analysed."""
        if self._last_pts is not None and pts < self._last_pts - _RESET_JUMP_S:
            self._last_slot = None
            self._after = None
        self._last_pts = pts
        if self._after is not None and pts <= self._after:
            return False
        if self._fps is None:
            return True
        slot = self._slot(pts)
        if self._last_slot is not None and slot <= self._last_slot:
            return False
        self._last_slot = slot
        return True


def output_size(width: int, height: int, want_width: int | None, want_height: int | None) -> tuple[int, int] | None:
    """The (width, height) to convert a ``width`` x ``height`` picture to, or None to keep it.

    Both given: exactly that size. One given: the other follows the aspect ratio.
    """
    if want_width is None and want_height is None:
        return None
    if want_width is not None and want_height is not None:
        size = (want_width, want_height)
    elif want_width is not None:
        size = (want_width, max(1, round(height * want_width / width)))
    else:
        assert want_height is not None
        size = (max(1, round(width * want_height / height)), want_height)
    return None if size == (width, height) else size

"""What is kept of the video for people to watch: the live view's and the event clips' settings, and the MP4 writer.

The settings are the configuration file's ``live:`` and ``clips:`` sections (``config/schema.py`` uses these
classes as they are). :func:`write_mp4` encodes timestamped frames into an H.264 MP4 that browsers play (libx264,
else OpenH264; MPEG-4 part 2 only when this PyAV build has neither, which browsers may not play).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterable
from datetime import UTC, datetime
from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import cast

import av
import cv2
import numpy as np
import numpy.typing as npt
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

log = logging.getLogger(__name__)

H264_ENCODERS = ("libx264", "libopenh264")
FALLBACK_ENCODER = "mpeg4"
TIME_BASE = Fraction(1, 1000)  # frame times in milliseconds: analysed frames come at uneven intervals


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class LiveViewSettings:
    """The live view: each camera's analysed frames with boxes and names, while someone watches."""

    fps: float = Field(default=5.0, gt=0, le=30, title="Live view fps",
                       description="At most this many annotated frames a second per camera, and only while a "
                                   "viewer is connected (never more than the camera's analysed rate).")
    width: int = Field(default=960, ge=160, le=3840, title="Live view width",
                       description="Frames wider than this are scaled down (pixels).")
    quality: int = Field(default=75, ge=10, le=100, title="Live view JPEG quality", description="JPEG quality.")


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class ClipSettings:
    """Short recordings around each event, written as MP4 from the analysed frames."""

    enabled: bool = Field(default=False, title="Enabled",
                          description="Record a clip around every event (off by default: it keeps more video of "
                                      "people; retention deletes clips with the event's snapshot).")
    pre_s: float = Field(default=5.0, ge=0, le=60, title="Seconds before",
                         description="How much video before the event the clip starts.")
    post_s: float = Field(default=5.0, ge=0, le=60, title="Seconds after",
                          description="How much video after the event the clip goes on; it is written when this "
                                      "window has passed.")
    width: int = Field(default=640, ge=160, le=1920, title="Clip width",
                       description="Frames are kept (and recorded) at most this wide (pixels); smaller keeps less "
                                   "memory per camera.")
    quality: int = Field(default=80, ge=10, le=100, title="Buffer JPEG quality",
                         description="Recent frames wait in memory as JPEG of this quality until a clip needs them.")


@cache
def clip_encoder() -> str:
    """The encoder clips are written with: H.264 when this PyAV build has one, else MPEG-4 part 2 (logged once)."""
    for name in H264_ENCODERS:
        with contextlib.suppress(av.codec.codec.UnknownCodecError, ValueError):
            av.codec.Codec(name, "w")
            return name
    log.warning("this PyAV build has no H.264 encoder (%s); clips are written as MPEG-4 part 2, which browsers may "
                "not play", ", ".join(H264_ENCODERS))
    return FALLBACK_ENCODER


def write_mp4(path: Path, frames: Iterable[tuple[float, npt.NDArray[np.uint8]]], *,
              started_at: datetime | None = None) -> int:
    """Encode ``(seconds from the clip's start, BGR frame)`` pairs into an MP4 at ``path``; returns the frame count.

    Frames keep their own times (variable frame rate). Every frame is resized to the first one's size, padded
    to even sides. ``started_at``: the first frame's time, stored as the file's ``creation_time`` (whole seconds)
    and, to the millisecond, in its ``comment`` (``starts <ISO 8601>``). Written under a temporary name and
    renamed when complete, so ``path`` never holds half a clip.
    """
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        count = _encode(tmp, frames, started_at)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return count


def _encode(tmp: Path, frames: Iterable[tuple[float, npt.NDArray[np.uint8]]], started_at: datetime | None) -> int:
    codec = clip_encoder()
    count = 0
    last_pts = -1
    with av.open(str(tmp), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
        if started_at is not None:
            moment = started_at.astimezone(UTC)
            container.metadata["creation_time"] = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            container.metadata["comment"] = f"starts {moment.isoformat(timespec='milliseconds')}"
        stream = container.add_stream(codec, rate=30)
        assert isinstance(stream, av.VideoStream)
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "26", "preset": "veryfast"}
        elif codec == FALLBACK_ENCODER:
            stream.codec_context.qscale = 5  # type: ignore[assignment]
        stream.codec_context.time_base = TIME_BASE
        stream.time_base = TIME_BASE
        size: tuple[int, int] | None = None
        for seconds, frame in frames:
            if size is None:
                size = (frame.shape[1] + frame.shape[1] % 2, frame.shape[0] + frame.shape[0] % 2)
                stream.width, stream.height = size
            image = frame if (frame.shape[1], frame.shape[0]) == size else cv2.resize(frame, size)
            pts = max(last_pts + 1, round(seconds / TIME_BASE))
            yuv = cast(npt.NDArray[np.uint8], cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_BGR2YUV_I420))
            video_frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
            video_frame.pts, video_frame.time_base = pts, TIME_BASE
            container.mux(stream.encode(video_frame))
            last_pts, count = pts, count + 1
        if count == 0:
            raise ValueError("no frames to write")
        container.mux(stream.encode(None))
    return count

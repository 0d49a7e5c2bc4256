"""A camera's record stream: its high-resolution input, read on its own thread into a small ring of frames.

Frigate's ``record`` role: detection and tracking run on the low-resolution
``detect`` stream; a face too small there is cut from the record stream's
frame nearest in time (``facetrail.pipeline.high_resolution``). The input is
opened and decoded by ``AVSource`` like any other (its ``decode_skip``,
``decode_threads``, ``skip_loop_filter`` and ``hwaccel`` apply; sampled at
the camera's analysis rate, the auto policy leaves undecoded the frames
nobody would keep). This reader keeps little: the newest ``ring_frames``
sampled frames as decoded YUV (``AVSource.frames``: ``av.VideoFrame``, 1.5
bytes a pixel), converting to BGR only the region a shot needs, when it is
asked for.

Time: live inputs (streams, files read in real time) are stamped on arrival
with the wall clock, as the detect stream's frames are; files read as fast
as possible by media time, and their reader never runs ahead of the detect
stream (``advance``), so "nearest in time" means the same frame in both.
A record stream that fails is retried with the camera's back-off and shown
in its status; it never stops the camera's detection.
"""

from __future__ import annotations

import collections
import logging
import math
import time
from dataclasses import dataclass as plain_dataclass
from datetime import datetime
from typing import cast

import av
import av.video
import numpy as np
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from facetrail.video.backoff import Pacer
from facetrail.video.camera import DEFAULT_TIMEOUT_S, CameraState, ReconnectSettings, VideoInput
from facetrail.video.errors import SourceError, StreamEndedError, mask_credentials
from facetrail.video.frames import Frame
from facetrail.video.luma import plane_array
from facetrail.video.reader import ReaderThread, Stopped
from facetrail.video.sources import AVSource, open_video, source_kind
from facetrail.vision.image import BGRImage

log = logging.getLogger(__name__)

_I420 = frozenset({"yuv420p", "yuvj420p"})


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class RecordStreamSettings:
    """When a shot is cut from a camera's record stream, and how that stream is read (``record_stream:``)."""

    # 64 px: one 40-px shot misses 2.8% of true matches at the named threshold, a full-size face 0.5%
    # (facetrail.track.bestshot.ShotGate), and the quality's size part is full only from 80 px.
    max_face_px: float = Field(default=64, ge=0, le=1000, title="Small face width",
                               description="A face narrower than this in the detect stream (pixels) is cut from "
                                           "the record stream when that stream is at least min_scale times larger. "
                                           "0: never.")
    min_scale: float = Field(default=1.5, ge=1, le=16, title="Smallest size ratio",
                             description="The record stream is used only when its frames are at least this many "
                                         "times the detect stream's (width and height).")
    max_gap_s: float = Field(default=0.2, gt=0, le=5, title="Largest time gap",
                             description="Seconds between the detect frame and the record frame a shot is cut "
                                         "from, at most (arrival times for live inputs, media times for files).")
    ring_frames: int = Field(default=3, ge=1, le=50, title="Frames kept",
                             description="Newest record-stream frames kept, sampled at the camera's analysis rate "
                                         "and held as decoded YUV (1080p: 3.1 MB each).")


@plain_dataclass(frozen=True, eq=False)
class RecordFrame:
    """One kept frame of the record stream, still in the decoder's pixel format."""

    t: float  # arrival wall clock (live) or media time (files), the detect stream's clock
    pts: float
    frame: av.VideoFrame

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.frame.width, self.frame.height

    def region(self, x1: float, y1: float, x2: float, y2: float) -> tuple[BGRImage, tuple[int, int]]:
        """The frame's pixels inside the box, as BGR, and the region's top-left corner in the frame.

        I420 frames (what H.264 and HEVC cameras send) are converted in the region alone by FFmpeg, the same
        conversion as a whole frame's; other formats convert the whole frame first.
        """
        width, height = self.size
        # I420 has one chroma sample per 2x2 pixels: the region starts and ends on even pixels.
        left, top = max(0, math.floor(x1) & ~1), max(0, math.floor(y1) & ~1)
        right, bottom = min(width & ~1, (math.ceil(x2) + 1) & ~1), min(height & ~1, (math.ceil(y2) + 1) & ~1)
        if right - left < 2 or bottom - top < 2:
            raise ValueError(f"empty region ({x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f}) of a {width}x{height} frame")
        if self.frame.format.name in _I420:
            planes = [plane_array(self.frame, k) for k in range(3)]
            luma = planes[0][top:bottom, left:right]
            blue = planes[1][top // 2:bottom // 2, left // 2:right // 2]
            red = planes[2][top // 2:bottom // 2, left // 2:right // 2]
            i420 = np.concatenate([luma.ravel(), blue.ravel(), red.ravel()]).reshape(-1, right - left)
            part = av.VideoFrame.from_ndarray(i420, format=self.frame.format.name)
            part.colorspace, part.color_range = self.frame.colorspace, self.frame.color_range
            image = part.to_ndarray(format="bgr24")
        else:
            image = self.frame.to_ndarray(format="bgr24")[top:bottom, left:right]
        return cast(BGRImage, np.ascontiguousarray(image)), (left, top)

    @property
    def nbytes(self) -> int:
        """Bytes of pixel data held."""
        return sum(plane.buffer_size for plane in self.frame.planes)


@plain_dataclass(frozen=True)
class RecordStatus:
    """A record stream's state as operators see it."""

    name: str  # the camera's
    state: CameraState
    error: str | None
    attempts: int
    next_retry_at: datetime | None
    frames_decoded: int
    frames_kept: int  # sampled into the ring
    ring_bytes: int
    size: tuple[int, int] | None  # (width, height) of the stream's frames, once one was decoded
    path: str  # credentials masked


class RecordStream(ReaderThread):
    """The reader thread of a camera's record input and its ring of the newest sampled frames."""

    def __init__(self, name: str, source: VideoInput, settings: RecordStreamSettings, *, fps: float,
                 timeout_s: float = DEFAULT_TIMEOUT_S, reconnect: ReconnectSettings | None = None) -> None:
        self.name = name
        self.source = source
        self.settings = settings
        self.fps = fps
        self.timeout_s = timeout_s
        self.reconnect = reconnect or ReconnectSettings()
        super().__init__(f"camera {name}: record stream", f"record-{name}", self.reconnect,
                         aside="detection goes on")
        self.live = source.live
        self._label = mask_credentials(source.path)
        self._ring: collections.deque[RecordFrame] = collections.deque(maxlen=settings.ring_frames)
        self._wanted = -math.inf  # files: the detect stream's latest media time; the reader stops just past it
        self._source: AVSource | None = None
        self._decoded_closed = 0  # decoded by sources already closed
        self._kept = 0
        self._size: tuple[int, int] | None = None

    # -- control and consumer side --------------------------------------------------------------------

    @property
    def size(self) -> tuple[int, int] | None:
        """(width, height) of the stream's frames, once one was decoded."""
        with self._cond:
            return self._size

    @property
    def error(self) -> str | None:
        """Why the stream is not delivering frames now (None while it is, or has not failed)."""
        with self._cond:
            return self._backoff.error if self._state in ("retrying", "failed") else None

    def moment(self, frame: Frame) -> float:
        """A detect frame's time on this stream's clock: arrival for live inputs, media time for files."""
        return frame.captured_at.timestamp() if self.live else frame.pts

    def advance(self, frame: Frame) -> None:
        """The detect stream reached ``frame``: a file's reader may decode up to just past it."""
        if self.live:
            return
        with self._cond:
            if frame.pts > self._wanted:
                self._wanted = frame.pts
                self._cond.notify_all()

    def nearest(self, frame: Frame) -> RecordFrame | None:
        """The kept frame nearest in time to the detect ``frame``, if one is within ``max_gap_s``.

        Files: waits (up to the camera's timeout) until the reader has passed the frame's media time. Live
        inputs never wait: the pipeline loop serves every camera, and a main stream that lags the sub-stream
        by more than ``max_gap_s`` would hold all of them on every frame.
        """
        t = self.moment(frame)
        self.advance(frame)
        with self._cond:
            def caught_up() -> bool:
                over = self._ended or self._stop.is_set() or self._state in ("retrying", "failed")
                return over or (bool(self._ring) and self._ring[-1].t >= t)

            if not self.live:
                self._cond.wait_for(caught_up, self.timeout_s)
            best = min(self._ring, key=lambda kept: abs(kept.t - t), default=None)
        return best if best is not None and abs(best.t - t) <= self.settings.max_gap_s else None

    def status(self) -> RecordStatus:
        """A consistent snapshot of the stream's state and counters."""
        with self._cond:
            decoded = self._decoded_closed + (self._source.frames_decoded if self._source is not None else 0)
            backoff = self._backoff
            return RecordStatus(name=self.name, state=self._state, error=backoff.error, attempts=backoff.attempts,
                                next_retry_at=backoff.next_retry_at, frames_decoded=decoded,
                                frames_kept=self._kept, ring_bytes=sum(f.nbytes for f in self._ring),
                                size=self._size, path=self._label)

    # -- reader thread ----------------------------------------------------------------------------------

    def _read(self) -> None:
        stream = source_kind(self.source.path) == "stream"
        paced = self.live and not stream  # a file read in real time
        offset = 0.0  # added to pts: earlier passes of a looped file
        resume: float | None = None  # files: media time already kept, skipped (sought past) after a reopen
        while True:
            try:
                # The input's own decode settings (decode_skip, threads, hwaccel) apply, as on a detect input;
                # sampled at detect.fps, the auto policy skips what the ring would never keep.
                source = open_video(self.source.path, input_args=self.source.input_args, timeout_s=self.timeout_s,
                                    fps=self.fps, start_after=resume, decode=self.source)
            except SourceError as error:
                self._fail(str(error))
                continue
            with self._cond:
                self._check_stop()
                self._state, self._source = "connected", source
                self._backoff.waited()
            log.info("camera %s: reading the record stream %s", self.name, self._label)
            last: float | None = None  # the last kept frame's time, offset included
            try:
                pacer = Pacer(self._stop)
                for pts, frame in source.frames():
                    if paced and not pacer.wait(offset + pts):
                        raise Stopped
                    self._keep(RecordFrame(time.time() if self.live else offset + pts, offset + pts, frame))
                    last = offset + pts
                if stream:
                    raise StreamEndedError(self._label)
            except SourceError as error:
                if not stream and last is not None:
                    resume = last - offset
                self._fail(str(error))
                continue
            finally:
                source.close()
                with self._cond:
                    self._decoded_closed += source.frames_decoded
                    self._source = None
            if self.source.loop and last is not None:
                offset, resume = last + 1.0 / self.fps, None
                continue
            with self._cond:
                self._state = "finished"
                self._cond.notify_all()
            log.info("camera %s: finished reading the record stream %s", self.name, self._label)
            return

    def _keep(self, kept: RecordFrame) -> None:
        with self._cond:
            self._check_stop()
            self._ring.append(kept)
            self._kept += 1
            self._backoff.succeeded()
            self._size = kept.size
            self._cond.notify_all()
            if not self.live:  # a file never runs ahead of the detect stream: wait until it passes this frame
                while kept.t > self._wanted:
                    self._check_stop()
                    self._cond.wait()

"""One camera: a reader thread that opens, samples, gates and hands over frames, and reconnects.

A camera that cannot be opened or drops mid-stream is retried with
exponential back-off and reported in its status; its thread never raises,
so one broken camera never stops the others. Realtime sources never wait
for the consumer: only the two newest frames are kept (an older one waiting
is dropped and counted), so what is analysed is at most one sampling period
late and a camera holds two decoded pictures, not a backlog, while a frame
that waits out a burst of other cameras' frames is not lost. Files that are
not read in real time wait instead, so every sampled frame is analysed;
their reader yields the cores to the analysis (a lower priority,
``priority.py``).

The status gives counts and rates per second over the last ``FPS_WINDOW_S``:
analysed, dropped (the consumer did not keep up: the machine is overloaded)
and skipped by the motion gate, beside the target rate (``detect.fps``).
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass as plain_dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator
from pydantic.dataclasses import dataclass

from facetrail.video.backoff import Pacer
from facetrail.video.decoding import HWACCEL_TYPES
from facetrail.video.errors import SourceError, StreamEndedError, mask_credentials
from facetrail.video.frames import Frame
from facetrail.video.motion import MotionGate, MotionSettings
from facetrail.video.picture import FramePicture
from facetrail.video.priority import READ_AHEAD_NICE, lower_this_thread
from facetrail.video.reader import ReaderState, ReaderThread, Stopped
from facetrail.video.sources import FrameSource, SourceKind, is_stream, open_source, source_kind
from facetrail.vision.image import GreyImage, small_grey

log = logging.getLogger(__name__)

CameraState = ReaderState
FPS_WINDOW_S = 10.0
# Frames a live camera keeps for analysis: the newest two. Cameras' frames often arrive together (and people
# appear in several at once), so the analysis serves them in bursts: with only the newest kept, a frame that
# waited one sampling period behind the others was replaced and lost while the machine had CPU to spare
# (measured in docs/architecture.md, "Graceful overload"). The cost: whenever the analysis is a frame behind (a
# moment of many faces will do) a frame is analysed up to one period later (alerts' median latency went from
# about 100 to about 180 ms at 5 fps), and a camera holds one more picture.
LIVE_QUEUE = 2
FILE_QUEUE = 2  # frames a file not read in real time decodes ahead while it waits

# The settings below are also the configuration file's (config/schema.py uses them as its camera sections),
# so each is defined once, here, with its title, description and bounds.
_SETTINGS = ConfigDict(extra="forbid")
DEFAULT_TIMEOUT_S = 10.0
StreamTimeout = Annotated[float, Field(gt=0, le=300, title="Timeout", description="Seconds to open or read a stream.")]


@dataclass(frozen=True, config=_SETTINGS)
class VideoInput:
    """One input of a camera."""

    path: str = Field(title="Path", description="Video file, image folder, or stream URL (rtsp://, http://...).")
    input_args: dict[str, str] = Field(default_factory=dict, title="Input arguments",
                                       description="FFmpeg options, e.g. rtsp_transport: tcp.")
    loop: bool = Field(default=False, title="Loop", description="Files: start again at the end.")
    realtime: bool | None = Field(default=None, title="Real time",
                                  description="Read at the source's own speed and drop frames when behind. Empty: "
                                              "yes for streams, no for files (every sampled frame is analysed).")
    decode_skip: Literal["auto", "off"] = Field(
        default="auto", title="Decode only what is analysed",
        description="auto: when the camera is analysed below its frame rate, the decoder skips frames that no "
                    "other frame refers to, and decodes key frames only when they come at least as often as frames "
                    "are analysed; off: decode every frame.")
    decode_threads: int | None = Field(
        default=None, ge=0, le=64, title="Decoder threads",
        description="Codec threads per decoder; 0: FFmpeg's choice (one per core plus one). More than one: frame "
                    "threads for files read as fast as they are analysed, slice threads for streams and real-time "
                    "files (each costs memory). Empty: twice FFmpeg's choice for files read as fast as they are "
                    "analysed, one for streams and real-time files (many cameras share the cores) and where a "
                    "hardware device decodes.")
    skip_loop_filter: bool = Field(
        default=False, title="Skip the loop filter",
        description="Skip H.264/HEVC deblocking: less decoding CPU, at the cost of blocking artefacts that build "
                    "up until the next key frame.")
    hwaccel: str | None = Field(default=None, title="Hardware decoding",
                                description=f"Decode on this FFmpeg device type ({', '.join(HWACCEL_TYPES)}); where "
                                            "it is not available, a warning is logged and the CPU decodes. Empty: "
                                            "the CPU.")

    @field_validator("hwaccel")
    @classmethod
    def _known_device(cls, value: str | None) -> str | None:
        if value is not None and value not in HWACCEL_TYPES:
            raise ValueError(f"unknown hardware decoder {value!r}; FFmpeg's device types are: "
                             f"{', '.join(HWACCEL_TYPES)}")
        return value

    @field_validator("input_args", mode="before")
    @classmethod
    def _as_text(cls, value: object) -> object:
        # FFmpeg takes every option as text; `timeout: 5000000` in YAML is a number.
        if isinstance(value, dict):
            return {k: str(v).lower() if isinstance(v, bool) else str(v) if isinstance(v, int | float) else v
                    for k, v in value.items()}
        return value

    @property
    def is_stream(self) -> bool:
        """True for network inputs."""
        return is_stream(self.path)

    @property
    def kind(self) -> SourceKind:
        """``stream``, ``folder`` or ``file``."""
        return source_kind(self.path)

    @property
    def live(self) -> bool:
        """True when frames are read at the source's own pace and old ones may be dropped."""
        return self.kind == "stream" if self.realtime is None else self.realtime


@dataclass(frozen=True, config=_SETTINGS)
class DetectSettings:
    """How often, and at what size, a camera is analysed."""

    fps: float = Field(default=5.0, gt=0, le=60, title="Analysis rate", description="Frames analysed per second.")
    width: int | None = Field(default=None, ge=64, le=7680, title="Width", description="Resize to this width first.")
    height: int | None = Field(default=None, ge=64, le=4320, title="Height", description="Resize to this height first.")


@dataclass(frozen=True, config=_SETTINGS)
class ReconnectSettings:
    """Retrying a camera that fails."""

    initial_s: float = Field(default=1.0, gt=0, title="First wait", description="Seconds before the first retry.")
    max_s: float = Field(default=30.0, gt=0, title="Longest wait", description="Back-off never waits longer than this.")
    factor: float = Field(default=2.0, ge=1, title="Factor", description="Each failed retry waits this much longer.")
    max_attempts: int | None = Field(default=None, ge=1, title="Attempts",
                                     description="Give up (state failed) after this many failures in a row. Empty: "
                                                 "retry forever.")

    @model_validator(mode="after")
    def _bounds(self) -> ReconnectSettings:
        if self.max_s < self.initial_s:
            raise ValueError(f"max_s ({self.max_s}) must not be below initial_s ({self.initial_s})")
        return self

    def delay(self, failures: int) -> float:
        """Seconds after the ``failures``-th failure in a row: ``initial_s * factor**(failures-1)``, up to ``max_s``."""
        return float(min(self.max_s, self.initial_s * self.factor ** max(0, failures - 1)))


@dataclass(frozen=True, config=_SETTINGS)
class CameraSettings:
    """One camera's reader: its detect input, analysis rate and size, timeout, motion gate and back-off."""

    name: str
    input: VideoInput
    detect: DetectSettings = Field(default_factory=DetectSettings)
    timeout_s: StreamTimeout = DEFAULT_TIMEOUT_S
    motion: MotionSettings = Field(default_factory=MotionSettings)
    reconnect: ReconnectSettings = Field(default_factory=ReconnectSettings)
    start_time: datetime | None = None  # files not read in real time: captured_at = start_time + pts
    resume_after: float | None = None  # files: start after this media time (a camera resumed elsewhere)

    @property
    def kind(self) -> SourceKind:
        """``stream``, ``folder`` or ``file``."""
        return self.input.kind

    @property
    def live(self) -> bool:
        """True when frames are read at the source's own pace and old ones may be dropped."""
        return self.input.live


@plain_dataclass(frozen=True)
class CameraStatus:
    """A camera's state as operators see it; ``error`` is the last failure while not connected."""

    name: str
    state: CameraState
    last_frame_at: datetime | None  # wall clock (UTC) when the reader last got a frame
    error: str | None
    attempts: int  # consecutive failures; a frame resets it
    next_retry_at: datetime | None
    frames_decoded: int
    frames_analysed: int  # handed to the consumer (get() or the sink)
    frames_skipped_motion: int
    analysed_fps: float
    frames_dropped: int = 0  # realtime: dropped from the queue because nobody took them in time
    connections: int = 0  # times the source was opened
    path: str = ""  # credentials masked
    target_fps: float = 0.0  # the analysis rate asked for (detect.fps)
    dropped_fps: float = 0.0  # frames dropped per second over the window: > 0 means the machine is behind
    skipped_motion_fps: float = 0.0  # frames skipped by the motion gate per second over the window
    # Frames the source skipped before decoding them (the decode policy's `frames_skipped`; 0 without one).
    frames_skipped_decoder: int = 0

    @property
    def overloaded(self) -> bool:
        """True when frames were dropped in the last window because analysis did not keep up."""
        return self.dropped_fps > 0


class Camera(ReaderThread):
    """A camera's reader thread and its queue of frames for analysis.

    With a ``sink`` every frame is passed to it on the reader thread (keep it quick);
    without one, frames wait in a queue of ``queue_size`` for ``get()`` (default: the
    ``LIVE_QUEUE`` newest ones for live cameras, ``FILE_QUEUE`` for files that wait).
    """

    def __init__(self, settings: CameraSettings, sink: Callable[[Frame], None] | None = None,
                 queue_size: int | None = None) -> None:
        super().__init__(f"camera {settings.name}", f"camera-{settings.name}", settings.reconnect)
        self.settings = settings
        self._sink = sink
        self._label = mask_credentials(settings.input.path)
        self._live = settings.live  # resolved once: kind looks at the file system
        self._queue: collections.deque[Frame] = collections.deque()
        self._queue_size = max(1, queue_size if queue_size is not None else
                                LIVE_QUEUE if self._live else FILE_QUEUE)
        self._start_time = datetime.now(UTC)
        self._last_frame_at: datetime | None = None
        self._source: FrameSource | None = None
        self._decoded_closed = 0  # decoded by sources already closed
        self._not_decoded_closed = 0  # skipped before decoding by sources already closed
        self._analysed = 0
        self._skipped = 0
        self._dropped = 0
        self._connections = 0
        self._index = 0
        self._rates = {kind: _Rate() for kind in ("analysed", "dropped", "skipped")}
        self._first_frame: float | None = None  # monotonic: when the reader first got a frame

    # -- control and consumer side ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the reader thread (a daemon, one per camera)."""
        start = self.settings.start_time or datetime.now(UTC)
        self._start_time = start if start.tzinfo is not None else start.replace(tzinfo=UTC)
        super().start()

    def get(self, timeout: float | None = None) -> Frame | None:
        """The oldest waiting frame; None when none comes within ``timeout`` s (0: don't wait) or reading ended."""
        with self._cond:
            def ready() -> bool:
                return bool(self._queue) or self._reading_over()

            if timeout is None:
                self._cond.wait_for(ready)
            elif timeout > 0:
                self._cond.wait_for(ready, timeout)
            if not self._queue:
                return None
            frame = self._queue.popleft()
            self._count_analysed()
            self._cond.notify_all()
            return frame

    @property
    def done(self) -> bool:
        """True when reading is over (finished, failed or stopped) and every queued frame was taken."""
        with self._cond:
            return self._reading_over() and not self._queue

    def status(self) -> CameraStatus:
        """A consistent snapshot of the camera's state and counters."""
        with self._cond:
            decoded = self._decoded_closed + (self._source.frames_decoded if self._source is not None else 0)
            not_decoded = self._not_decoded_closed + _skipped_by_decoder(self._source)
            return CameraStatus(
                name=self.settings.name, state=self._state, last_frame_at=self._last_frame_at,
                error=self._backoff.error, attempts=self._backoff.attempts,
                next_retry_at=self._backoff.next_retry_at, frames_decoded=decoded,
                frames_analysed=self._analysed, frames_skipped_motion=self._skipped,
                analysed_fps=self._fps("analysed"), frames_dropped=self._dropped, connections=self._connections,
                path=self._label, target_fps=self.settings.detect.fps, dropped_fps=self._fps("dropped"),
                skipped_motion_fps=self._fps("skipped"), frames_skipped_decoder=not_decoded)

    def _reading_over(self) -> bool:
        return self._ended or self._stop.is_set() or self._thread is None

    def _count_analysed(self) -> None:
        self._analysed += 1
        self._rates["analysed"].add(time.monotonic())

    def _fps(self, kind: str) -> float:
        """Events per second over the last FPS_WINDOW_S (or since the first frame, when that is shorter)."""
        if self._first_frame is None:
            return 0.0
        now = time.monotonic()
        return self._rates[kind].count(now) / min(FPS_WINDOW_S, max(1.0, now - self._first_frame))

    # -- reader thread ----------------------------------------------------------------------------------

    def _read(self) -> None:
        if not self._live:
            lower_this_thread(READ_AHEAD_NICE)  # it reads ahead of the analysis: see priority.py
        settings = self.settings
        source_input, detect = settings.input, settings.detect
        stream = settings.kind == "stream"
        gate = MotionGate(settings.motion)
        resume = settings.resume_after  # files: media time of this pass already delivered
        offset = 0.0  # added to the source's pts: earlier passes of a looped file, or time across a reconnect
        last: tuple[float, float] | None = None  # (pts, monotonic) of the latest frame
        while True:
            try:
                source = open_source(source_input.path, input_args=source_input.input_args,
                                     timeout_s=settings.timeout_s, fps=detect.fps, width=detect.width,
                                     height=detect.height, start_after=resume, decode=source_input)
            except SourceError as error:
                self._fail(str(error))
                continue
            except Exception as error:
                log.exception("camera %s: unexpected error opening %s", settings.name, self._label)
                self._fail(mask_credentials(f"cannot open {source_input.path}: {type(error).__name__}: {error}"))
                continue
            with self._cond:
                self._check_stop()
                self._state, self._source = "connected", source
                self._backoff.waited()
                self._connections += 1
            log.info("camera %s: reading %s", settings.name, self._label)
            if stream:
                gate.reset()
                if last is not None:
                    offset = last[0] + time.monotonic() - last[1]
            delivered = 0
            try:
                pacer = Pacer(self._stop)
                for pts, picture, grey in source.samples():
                    self._check_stop()
                    if self._live and not stream and not pacer.wait(offset + pts):
                        raise Stopped
                    last = (offset + pts, time.monotonic())
                    if not stream:
                        resume = pts
                    self._take(picture, grey, offset + pts, gate, stream)
                    delivered += 1
                    del picture, grey  # not kept while the next frame decodes (see AVSource.samples)
                if stream:
                    raise StreamEndedError(self._label)
            except SourceError as error:
                self._fail(str(error))
                continue
            except Stopped:
                raise
            except Exception as error:
                log.exception("camera %s: unexpected error reading %s", settings.name, self._label)
                self._fail(mask_credentials(f"error reading {source_input.path}: {type(error).__name__}: {error}"))
                continue
            finally:
                source.close()
                with self._cond:
                    self._decoded_closed += source.frames_decoded
                    self._not_decoded_closed += _skipped_by_decoder(source)
                    self._source = None
            if source_input.loop and delivered:
                assert last is not None
                offset = last[0] + 1.0 / detect.fps
                resume = None
                continue
            if source_input.loop:
                self._fail(f"{self._label}: no frames to loop over")
                continue
            with self._cond:
                self._state = "finished"
            log.info("camera %s: finished reading %s", settings.name, self._label)
            return

    def _take(self, picture: FramePicture, grey: GreyImage | None, pts: float, gate: MotionGate,
              stream: bool) -> None:
        """Gate a sampled picture and pass it on as a Frame, with its small grey copy (for camera motion).

        ``grey``: the copy the source made (from a video frame's luma); otherwise the gate makes one here. The
        picture stays as decoded: whoever takes the frame converts it (``Frame.image``), so a frame dropped from
        a live camera's queue is never converted and no reader keeps converted frames (picture.py).
        """
        if grey is None and gate.settings.enabled:
            grey = small_grey(picture.bgr())
        decision = gate.check(picture, pts, grey)
        received = time.monotonic()
        now = datetime.now(UTC)
        with self._cond:
            self._backoff.succeeded()
            self._last_frame_at = now
            if self._first_frame is None:
                self._first_frame = received
            if decision == "skip":
                self._skipped += 1
                self._rates["skipped"].add(received)
                return
            index = self._index
            self._index += 1
        # A live source (a stream, or a file read in real time) is stamped when the frame arrives, as a
        # camera would be; a file read as fast as possible replays on the clock of its start time.
        captured = now if stream or self._live else self._start_time + timedelta(seconds=pts)
        frame = Frame(self.settings.name, picture, index, pts, captured, received, motion=decision == "motion",
                      made_grey=grey)
        if self._sink is not None:
            try:
                self._sink(frame)
            except Exception:
                log.exception("camera %s: the frame sink failed; frame %d lost", self.settings.name, index)
                return
            with self._cond:
                self._count_analysed()
            return
        with self._cond:
            if self._live:
                while len(self._queue) >= self._queue_size:
                    self._queue.popleft()  # freed here: a live camera never holds more than its newest frames
                    self._dropped += 1
                    self._rates["dropped"].add(received)
            else:
                while len(self._queue) >= self._queue_size:
                    self._check_stop()
                    self._cond.wait()
            self._queue.append(frame)
            self._cond.notify_all()


class _Rate:
    """Moments of one kind of event, kept for FPS_WINDOW_S, to give a rate per second."""

    def __init__(self) -> None:
        self._moments: collections.deque[float] = collections.deque()

    def add(self, moment: float) -> None:
        self._moments.append(moment)
        self._forget(moment)  # bounded even when nobody asks for the rate

    def count(self, now: float) -> int:
        """Events within the window before ``now``."""
        self._forget(now)
        return len(self._moments)

    def _forget(self, now: float) -> None:
        while self._moments and now - self._moments[0] > FPS_WINDOW_S:
            self._moments.popleft()


def _skipped_by_decoder(source: FrameSource | None) -> int:
    """Frames ``source`` skipped without decoding them (0 without a source)."""
    return source.frames_skipped if source is not None else 0

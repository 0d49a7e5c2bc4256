"""Event clips: a bounded buffer of each camera's recent frames, and an MP4 around every event.

Every analysed frame goes into its camera's ring buffer, scaled to ``clips.width`` and JPEG-compressed (so a
camera costs a few megabytes, not hundreds: see :meth:`ClipRecorder.buffered_bytes`). New events of this run's
cameras are read from the store (whoever raised them: the recorder, the door service, the API) right after the
frame that can raise them; when a frame past an event's ``post_s`` window arrives, the frames from ``pre_s``
before the event to ``post_s`` after are handed to a writer thread, which encodes them
(:func:`~facetrail.video.recording.write_mp4`) to ``<data_dir>/clips/<event id>.mp4``. The clip then exists,
and the event's ``has_clip`` is announced (an ``update`` message) from the pipeline's own thread.

The clips hold the analysed frames (``detect.fps``) at their own times: a clip shows what the pipeline saw.
While the motion gate rests, the scene does not change, and its last frame is shown for that time.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import cv2
import numpy as np
from sqlalchemy import func, select

from facetrail.events.messages import EventView
from facetrail.events.outlet import EventOutlet, view_of
from facetrail.pipeline.batch import FrameBatch
from facetrail.pipeline.consumers import Consumer
from facetrail.pipeline.pictures import jpeg
from facetrail.store.db import Database
from facetrail.store.media import ClipFiles
from facetrail.store.models import Event, as_utc
from facetrail.video.recording import ClipSettings, write_mp4

log = logging.getLogger(__name__)

POLL_S = 1.0  # frame time between looks for new events when no track was decided (door and API events)
LATE_S = 2.0  # how late an event may be found and still get its full pre_s
MAX_FPS = 30.0  # the buffer never holds more frames than this rate over its window
WRITE_QUEUE = 16  # clips waiting for the writer; beyond that a clip is dropped, with a warning


@dataclass(frozen=True)
class _Buffered:
    at: datetime
    jpeg: bytes


@dataclass(frozen=True)
class _Window:
    event_id: int
    start: datetime
    end: datetime


@dataclass(frozen=True)
class _Job:
    event_id: int
    frames: list[_Buffered]


class ClipRecorder(Consumer):
    """Ring buffers of recent frames per camera and a clip per event (see the module's description)."""

    name = "clips"

    def __init__(self, db: Database, files: ClipFiles, settings: ClipSettings, cameras: Iterable[str], *,
                 announce: Callable[[int], None] | None = None) -> None:
        """``announce(event id)``: called on the pipeline's thread once the event's clip exists."""
        self.db, self.files, self.settings, self.announce = db, files, settings, announce
        self.cameras = list(cameras)
        self.horizon = timedelta(seconds=settings.pre_s + settings.post_s + LATE_S)
        size = max(2, math.ceil(self.horizon.total_seconds() * MAX_FPS))
        self._rings: dict[str, deque[_Buffered]] = {camera: deque(maxlen=size) for camera in self.cameras}
        self._windows: dict[str, list[_Window]] = {camera: [] for camera in self.cameras}
        self._polled: dict[str, datetime] = {}
        self._last_event = 0
        self._jobs: queue.Queue[_Job | None] = queue.Queue(WRITE_QUEUE)
        self._written: queue.Queue[int] = queue.Queue()
        self._writer: threading.Thread | None = None
        self.written = 0  # clips written so far

    def start(self) -> None:
        self.files.folder.mkdir(parents=True, exist_ok=True)
        with self.db.session() as session:
            self._last_event = session.scalar(select(func.max(Event.id))) or 0
        self._writer = threading.Thread(target=self._write_clips, name="clip writer", daemon=True)
        self._writer.start()

    def on_frame(self, batch: FrameBatch) -> None:
        if batch.camera not in self._rings:
            return
        self._rings[batch.camera].append(_Buffered(batch.captured_at, self._compressed(batch.frame.image)))
        ring = self._rings[batch.camera]
        while len(ring) > 1 and ring[1].at <= batch.captured_at - self.horizon:
            ring.popleft()  # one frame older than the window stays: the scene while the motion gate rested
        polled = self._polled.get(batch.camera)
        if bool(batch.decided.any()) or polled is None or batch.captured_at - polled >= timedelta(seconds=POLL_S):
            self._polled[batch.camera] = batch.captured_at
            self._find_events()
        due = [w for w in self._windows[batch.camera] if batch.captured_at >= w.end]
        for window in due:
            self._windows[batch.camera].remove(window)
            self._hand_over(batch.camera, window, complete=True)

    def housekeeping(self, now: float) -> None:
        self._announce_written()

    def stop(self) -> None:
        """Write every clip still waiting for its window with the frames there are, then wait for the writer."""
        self._find_events()
        for camera, windows in self._windows.items():
            for window in windows:
                self._hand_over(camera, window, complete=False)
            windows.clear()
        if self._writer is not None:
            self._jobs.put(None)
            self._writer.join()
            self._writer = None
        self._announce_written()

    def buffered_bytes(self, camera: str) -> int:
        """Memory the camera's buffered frames take now (their JPEG bytes)."""
        return sum(len(item.jpeg) for item in self._rings.get(camera, ()))

    def buffered_frames(self, camera: str) -> int:
        """How many frames the camera's buffer holds now."""
        return len(self._rings.get(camera, ()))

    # -- internals -------------------------------------------------------------------------------------------

    def _compressed(self, image: np.ndarray) -> bytes:
        width = self.settings.width
        if image.shape[1] > width:
            # Linear, not area: 1 ms against 14 for a 1080p frame, on every analysed frame of every camera.
            image = cv2.resize(image, (width, max(2, round(image.shape[0] * width / image.shape[1]))),
                               interpolation=cv2.INTER_LINEAR)
        return jpeg(image, self.settings.quality)

    def _find_events(self) -> None:
        with self.db.session() as session:
            rows = session.execute(select(Event.id, Event.camera, Event.started_at).where(
                Event.id > self._last_event, Event.camera.in_(self.cameras)).order_by(Event.id)).all()
        for event_id, camera, started_at in rows:
            self._last_event = max(self._last_event, int(event_id))
            start = as_utc(started_at)
            self._windows[camera].append(_Window(int(event_id), start - timedelta(seconds=self.settings.pre_s),
                                                 start + timedelta(seconds=self.settings.post_s)))

    def _hand_over(self, camera: str, window: _Window, *, complete: bool) -> None:
        """Queue the window's frames for the writer; ``complete``: the window has passed (the camera goes on).

        The motion gate analyses no frame while nothing moves, so the frame before the window stands for the
        scene up to the window's first frame, and (when the window has passed) the last frame for the scene
        up to its end: the clip covers the whole window, as the pipeline saw it.
        """
        ring = self._rings[camera]
        frames = [item for item in ring if window.start <= item.at <= window.end]
        before = [item for item in ring if item.at < window.start]
        if before and frames:
            frames.insert(0, _Buffered(window.start, before[-1].jpeg))
        if complete and frames and frames[-1].at < window.end:
            frames.append(_Buffered(window.end, frames[-1].jpeg))
        if not frames:
            log.info("%s: no frames around event %d (before this run or past the buffer); no clip", camera,
                     window.event_id)
            return
        try:
            self._jobs.put_nowait(_Job(window.event_id, frames))
        except queue.Full:
            log.warning("%s: %d clips wait for the writer; the clip of event %d is dropped", camera, WRITE_QUEUE,
                        window.event_id)

    def _write_clips(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                first = job.frames[0].at
                images = ((
                    (item.at - first).total_seconds(),
                    np.asarray(cv2.imdecode(np.frombuffer(item.jpeg, np.uint8), cv2.IMREAD_COLOR), np.uint8))
                    for item in job.frames)
                count = write_mp4(self.files.path(job.event_id), images, started_at=first)
                log.info("clip of event %d: %d frames, %.1f s", job.event_id, count,
                         (job.frames[-1].at - first).total_seconds())
                self._written.put(job.event_id)
            except Exception:  # one clip failing (disk full, a bad frame) stops neither the writer nor the pipeline
                log.exception("could not write the clip of event %d", job.event_id)

    def _announce_written(self) -> None:
        while True:
            try:
                event_id = self._written.get_nowait()
            except queue.Empty:
                return
            self.written += 1
            if self.announce is not None:
                self.announce(event_id)


def announce_clip(db: Database, outlet: EventOutlet, open_view: Callable[[str], EventView | None],
                  event_id: int) -> None:
    """Tell the event's receivers that it has a clip now (an ``update`` with ``has_clip``).

    ``open_view(uid)``: the producer's own view of an event still open (so its later messages keep
    ``has_clip``); other events are described from their stored row.
    """
    with db.session() as session:
        row = session.get(Event, event_id)
        if row is None:  # deleted meanwhile (retention, forget)
            return
        view = open_view(row.uid) or view_of(session, row)
        before = view.as_dict()
        view.has_clip = True
        outlet.update(session, view, before=before)

"""The live view's producer: each watched camera's analysed frames, boxes and names drawn, for the API to stream.

Frames travel as files (:class:`~facetrail.store.media.LiveFrames`): the API touches a camera's watch marker
while a viewer is connected; this consumer checks that marker at most once a second per camera and, while it
is fresh, draws and encodes at most ``live.fps`` frames a second and replaces the camera's newest JPEG. When
nobody watches, nothing is drawn or encoded (``encoded`` stays put): the cost is one ``stat`` a second.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable

from facetrail.clock import Clock
from facetrail.pipeline.batch import FrameBatch
from facetrail.pipeline.consumers import Consumer
from facetrail.pipeline.pictures import labelled_jpeg
from facetrail.store.media import LiveFrames
from facetrail.video.recording import LiveViewSettings

WATCH_CHECK_S = 1.0
COLOURS = {"named": (60, 200, 60), "unknown": (0, 200, 255), "uncertain": (0, 140, 255),
           "pending": (200, 200, 200)}  # BGR: green, amber, orange, grey


class LiveView(Consumer):
    """Annotated frames of the cameras someone watches, at most ``settings.fps`` a second each."""

    name = "live view"

    def __init__(self, frames: LiveFrames, settings: LiveViewSettings, cameras: Iterable[str], clock: Clock, *,
                 visitor_of: Callable[[str, int], int | None] = lambda camera, track: None) -> None:
        """``visitor_of(camera, track id)``: the anonymous visitor id of a track in view, for its label."""
        self.frames, self.settings, self.clock, self.visitor_of = frames, settings, clock, visitor_of
        self.cameras = list(cameras)
        self.encoded = 0  # frames drawn and encoded so far (zero while nobody watches)
        self._checked: dict[str, tuple[float, bool]] = {}  # camera -> (when checked, watched)
        self._last_sent: dict[str, float] = {}

    def on_frame(self, batch: FrameBatch) -> None:
        now = self.clock.monotonic()
        if not self._watched(batch.camera, now):
            return
        if now - self._last_sent.get(batch.camera, -float("inf")) < 1.0 / self.settings.fps:
            return
        self._last_sent[batch.camera] = now
        labels, colours = [], []
        for row in batch.rows():
            verdict = batch.verdicts[row]
            labels.append(self._label(batch.camera, int(batch.track_ids[row]), verdict.status, verdict.name))
            colours.append(COLOURS.get(verdict.status, COLOURS["pending"]))
        picture = labelled_jpeg(batch.frame.image, [[float(v) for v in box] for box in batch.boxes], labels,
                                colours, quality=self.settings.quality, width=self.settings.width)
        self.frames.publish(batch.camera, picture)
        self.encoded += 1

    def stop(self) -> None:
        for camera in self.cameras:  # a stopped pipeline leaves no frame that looks live
            self.frames.clear(camera)

    def _watched(self, camera: str, now: float) -> bool:
        checked = self._checked.get(camera)
        if checked is not None and now - checked[0] < WATCH_CHECK_S:
            return checked[1]
        watched = self.frames.watched(camera, now=self.clock.now().timestamp())
        if checked is not None and checked[1] and not watched:
            self.frames.clear(camera)
        self._checked[camera] = (now, watched)
        return watched

    def _label(self, camera: str, track_id: int, status: str, name: str | None) -> str:
        if status == "named" and name:
            # OpenCV's fonts draw ASCII only: "José" is drawn "Jose" rather than "Jos??".
            return unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode() or "named"
        if status == "unknown":
            visitor = self.visitor_of(camera, track_id)
            return f"visitor {visitor}" if visitor is not None else "unknown"
        return "uncertain" if status == "uncertain" else ""

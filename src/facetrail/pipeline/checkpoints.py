"""Each camera's checkpoint: how far its file was read with everything it raised stored, and what it left open.

Used by the cluster's camera groups and by ``--processes`` workers, so that a file camera whose process died
is read on from where its work was stored, not from the start.

The checkpoint is written after the frame's sightings and events (the consumers run in order, the sightings
first), so a camera resumed from it never re-reads a frame whose events are stored; the tracks it was
following are continued by :meth:`Recorder.resume` rather than announced again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from facetrail.pipeline.batch import FrameBatch
from facetrail.pipeline.consumers import Consumer
from facetrail.pipeline.orphans import ADOPT_WITHIN_S
from facetrail.store.db import Database
from facetrail.store.placements import checkpoint
from facetrail.video.camera import Camera

QUIET_EVERY_S = 1.0  # checkpoint interval while nobody is in view


class Checkpoints(Consumer):
    """Writes each camera's media position after its frame's work is stored; ends left-open events in time."""

    name = "checkpoints"

    def __init__(self, db: Database, cameras: Sequence[Camera], resumed_at: dict[str, float]) -> None:
        """``cameras``: those whose position is kept (others' frames are ignored); ``resumed_at``: camera -> media
        time it resumed after."""
        self.db = db
        self.cameras = cameras
        self._names = {camera.settings.name for camera in cameras}
        self.resumed_at = dict(resumed_at)  # camera -> media time it resumed after
        self.end_orphans: Callable[[list[str]], int] | None = None  # set to the recorder's, once it exists
        self._written: dict[str, float] = {}  # camera -> media time of its last checkpoint
        self._in_view: dict[str, bool] = {}  # camera -> its last frame had tracks in view

    def on_frame(self, batch: FrameBatch) -> None:
        # Every frame while someone is in view (and the frame they left), else once a second: replaying a second
        # of empty frames after a crash stores nothing, and a write per frame costs a commit per frame.
        camera = batch.camera
        if camera not in self._names:
            return
        if len(batch) or self._in_view.get(camera) or batch.pts - self._written.get(camera, -1e9) >= QUIET_EVERY_S:
            with self.db.session() as session:
                checkpoint(session, camera, batch.pts)
            self._written[camera] = batch.pts
        self._in_view[camera] = len(batch) > 0
        start = self.resumed_at.get(batch.camera)
        if start is not None and batch.pts - start >= ADOPT_WITHIN_S and self.end_orphans is not None:
            del self.resumed_at[batch.camera]
            self.end_orphans([batch.camera])

    def stop(self) -> None:
        if self.end_orphans is not None:
            self.end_orphans([camera.settings.name for camera in self.cameras])
        finished = [camera.settings.name for camera in self.cameras if camera.status().state == "finished"]
        if finished:
            with self.db.session() as session:
                for name in finished:
                    checkpoint(session, name, None)

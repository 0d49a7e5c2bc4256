"""What reads the seam: each consumer takes the frame batches and the ended tracks, and does one job.

:class:`Consumer` is the whole interface: ``on_frame(batch)``,
``on_track_ended(track)``, ``housekeeping(now)``, plus ``start``/``stop``.
``Pipeline.step`` hands every batch to every consumer (each call guarded, so
one failing consumer or camera stops nothing else) and knows none of their
insides; adding a consumer touches no other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from facetrail.events.messages import EventView
from facetrail.pipeline.batch import EndedTrack, FrameBatch
from facetrail.pipeline.doors import DoorFace, DoorService
from facetrail.pipeline.health import PipelineHealth
from facetrail.pipeline.matcher import GalleryMatcher
from facetrail.pipeline.pictures import boxed_jpeg
from facetrail.pipeline.recorder import Evidence, Recorder, TrackRecord
from facetrail.store.cameras import CameraReport, report_cameras
from facetrail.store.db import Database
from facetrail.video.camera import Camera

FLUSH_EVERY_S = 1.0
REPORT_EVERY_S = 2.0  # cameras' status and latest frame, for the API and the dashboard
FRAME_QUALITY = 70


class Consumer:
    """A stage after the tracker. Every method is optional; the defaults do nothing."""

    name = "consumer"

    def start(self) -> None:
        """Before the first frame."""

    def on_frame(self, batch: FrameBatch) -> None:
        """One analysed frame of one camera."""

    def on_track_ended(self, track: EndedTrack) -> None:
        """A track left its camera for good."""

    def housekeeping(self, now: float) -> None:
        """Periodic work (``now``: the monotonic clock), called between steps."""

    def stop(self) -> None:
        """After the last frame and the last ended track."""


class Sightings(Consumer):
    """Sightings, anonymous visitors and the events they raise (watchlist hits, visitors seen again)."""

    name = "sightings"

    def __init__(self, recorder: Recorder, matcher: GalleryMatcher) -> None:
        self.recorder = recorder
        self.matcher = matcher
        self.events = 0  # events raised so far
        self._records: dict[tuple[str, int], TrackRecord] = {}
        self._last_flush = -float("inf")

    def on_frame(self, batch: FrameBatch) -> None:
        for merge in batch.merges:
            self._merge(batch.camera, merge.survivor, merge.absorbed)
        for row in batch.rows():
            key = (batch.camera, int(batch.track_ids[row]))
            record = self._records.get(key)
            if record is None:
                record = self._records[key] = TrackRecord(uid=batch.uids[row], camera=batch.camera,
                                                          first_seen=batch.captured_at, last_seen=batch.captured_at)
            self.recorder.touch(record, batch.captured_at)
        for row in batch.rows():
            if batch.decided[row]:
                self._decided(batch, row)

    def on_track_ended(self, track: EndedTrack) -> None:
        record = self._records.pop((track.camera, track.track_id), None)
        if record is not None:
            self.recorder.ended(record, track.at)

    def housekeeping(self, now: float) -> None:
        if now - self._last_flush >= FLUSH_EVERY_S:
            self._last_flush = now
            self.recorder.flush(self._records.values())

    def _decided(self, batch: FrameBatch, row: int) -> None:
        verdict = batch.verdicts[row]
        if verdict.embedding is None:
            return
        record = self._records[(batch.camera, int(batch.track_ids[row]))]
        named = verdict.status == "named" and verdict.identity_id is not None
        x1, y1, x2, y2 = (float(v) for v in batch.boxes[row])
        face = int(batch.face_index[row])
        evidence = Evidence(frame=batch.frame.image, box=(x1, y1, x2, y2), thumbnail=batch.frame.thumbnail(face),
                            embedding=verdict.embedding, quality=verdict.quality, model_id=batch.model_id)
        before = len(record.events)
        self.recorder.decided(record, status=verdict.status, identity_id=verdict.identity_id if named else None,
                              identity_name=verdict.name if named else None,
                              score=verdict.score if named else None,
                              rules=self.matcher.watchlists_of(verdict.identity_id)
                              if named and verdict.identity_id is not None else [],
                              evidence=evidence, frame_time=batch.captured_at)
        self.events += len(record.events) - before

    def visitor_of(self, camera: str, track_id: int) -> int | None:
        """The anonymous visitor id of a track in view (None while it has none), for the live view's labels."""
        record = self._records.get((camera, track_id))
        return record.visitor_id if record is not None else None

    def open_event(self, uid: str) -> EventView | None:
        """The description of an event of a track still in view (so a change to it is kept), else None."""
        return next((view for record in self._records.values() for view in record.events.values()
                     if view.uid == uid), None)

    def _merge(self, camera: str, survivor: int, absorbed: int) -> None:
        gone = self._records.pop((camera, absorbed), None)
        kept = self._records.get((camera, survivor))
        if gone is not None and kept is not None:
            kept.frames += gone.frames
            kept.last_seen = max(kept.last_seen, gone.last_seen)
            kept.dirty = True


class Doors(Consumer):
    """The door decisions at door cameras (liveness, rules, commands): a thin adapter to :class:`DoorService`."""

    name = "doors"

    def __init__(self, doors: DoorService) -> None:
        self.doors = doors
        self.cameras = doors.cameras

    def start(self) -> None:
        self.doors.start()

    def on_frame(self, batch: FrameBatch) -> None:
        if batch.camera not in self.cameras:
            return
        for merge in batch.merges:
            self.doors.merged(batch.camera, merge.survivor, merge.absorbed)
        faces = [DoorFace(int(batch.track_ids[row]), batch.uids[row], int(batch.face_index[row]))
                 for row in batch.rows()]
        made = {int(batch.face_index[row]): batch.embeddings[row] for row in batch.rows() if batch.embedded[row]}
        self.doors.frame(batch.camera, batch.captured_at, batch.frame, faces, made)

    def on_track_ended(self, track: EndedTrack) -> None:
        if track.camera in self.cameras:
            self.doors.ended(track.camera, track.track_id, track.at)

    def housekeeping(self, now: float) -> None:
        self.doors.housekeeping()

    def stop(self) -> None:
        self.doors.stop()


@dataclass(frozen=True)
class _Picture:
    jpeg: bytes
    at: datetime
    faces: int


class CameraStatus(Consumer):
    """Each camera's status (its reader's counts and rates, its faults) and a recent frame with the faces boxed.

    The picture is the first frame analysed after the previous report, encoded at once: holding the decoded
    frame until the report instead would keep a full picture (6 MB at 1080p) per camera alive.
    """

    name = "camera status"

    def __init__(self, db: Database, run_id: str, cameras: Sequence[Camera], health: PipelineHealth) -> None:
        self.db, self.run_id, self.cameras, self.health = db, run_id, cameras, health
        self._pictures: dict[str, _Picture] = {}
        self._wanted = {camera.settings.name for camera in cameras}  # cameras whose next frame is pictured
        self._last_report = -float("inf")

    def on_frame(self, batch: FrameBatch) -> None:
        if batch.camera not in self._wanted:
            return
        self._wanted.discard(batch.camera)
        boxes = [[float(v) for v in box] for box in batch.frame.faces.xyxy]
        self._pictures[batch.camera] = _Picture(boxed_jpeg(batch.frame.image, boxes, quality=FRAME_QUALITY),
                                                batch.captured_at, len(batch.frame))

    def housekeeping(self, now: float) -> None:
        if now - self._last_report >= REPORT_EVERY_S:
            self._last_report = now
            self.report()

    def stop(self) -> None:
        self.report()

    def report(self) -> None:
        """Write every camera's status now."""
        reports = []
        for camera in self.cameras:
            status = camera.status()
            name = camera.settings.name
            picture: dict[str, Any] = {}
            latest = self._pictures.pop(name, None)
            if latest is not None:
                picture = {"frame_jpeg": latest.jpeg, "frame_at": latest.at, "faces_in_frame": latest.faces}
            self._wanted.add(name)
            health = self.health.cameras.get(name)
            reports.append(CameraReport(
                camera=name, run_id=self.run_id, state=str(status.state), source=status.path,
                error=status.error, attempts=status.attempts, last_frame_at=status.last_frame_at,
                analysed_fps=status.analysed_fps, frames_analysed=status.frames_analysed,
                frames_skipped_motion=status.frames_skipped_motion, frames_dropped=status.frames_dropped,
                target_fps=status.target_fps, dropped_fps=status.dropped_fps,
                skipped_motion_fps=status.skipped_motion_fps, frames_skipped_decoder=status.frames_skipped_decoder,
                faults=health.faults if health else 0, last_fault=health.last_fault if health else None,
                failing=", ".join(health.failing) or None if health else None, **picture))
        with self.db.session() as session:
            report_cameras(session, reports)

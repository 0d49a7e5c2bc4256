"""The pipeline: every camera's frames through detection, tracking, recognition and the event rules.

One reader thread per camera (``facetrail.video``) decodes and samples; this
loop takes at most one frame per camera per step, detects faces in all of
them in one batch, tracks per camera, and embeds the shots that tracks ask
for in one shared batch. A slow or broken camera never holds the others: its
reader is on its own thread, and the loop only takes what is ready.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from facetrail.config.schema import FacetrailConfig
from facetrail.events.dispatcher import Dispatcher
from facetrail.events.mqtt import MqttPublisher
from facetrail.events.webhooks import WebhookSender
from facetrail.gallery.gallery import Gallery, GallerySettings
from facetrail.gallery.people import purge as purge_people
from facetrail.pipeline import settings as cfg
from facetrail.pipeline.analyzer import AnalysedFrame, FrameAnalyzer
from facetrail.pipeline.doors import DoorFace, DoorService
from facetrail.pipeline.matcher import GalleryMatcher
from facetrail.pipeline.pictures import boxed_jpeg
from facetrail.pipeline.recorder import Evidence, Recorder, TrackRecord
from facetrail.store import audit
from facetrail.store.cameras import CameraReport, report_cameras
from facetrail.store.models import utcnow
from facetrail.store.retention import purge_data
from facetrail.track.bestshot import Shot
from facetrail.track.camera_motion import CameraMotion
from facetrail.track.decision import decide
from facetrail.track.tracker import FaceTracker, Track
from facetrail.track.unknowns import UnknownClusters
from facetrail.video.camera import Camera, CameraStatus
from facetrail.video.frames import Frame
from facetrail.vision.engine import FaceEngine
from facetrail.vision.lowlight import LowLightConfig

log = logging.getLogger(__name__)

IDLE_WAIT_S = 0.01
FLUSH_EVERY_S = 1.0
REPORT_EVERY_S = 2.0  # cameras' status and latest frame, for the API and the dashboard
GALLERY_REFRESH_S = 5.0  # people enrolled or deleted by another process are picked up this often
FRAME_QUALITY = 70


@dataclass
class PipelineStats:
    """Running totals of one pipeline run."""

    frames: int = 0
    faces: int = 0
    embedded: int = 0
    tracks: int = 0
    named_tracks: int = 0
    events: int = 0
    per_camera_frames: dict[str, int] = field(default_factory=dict)


@dataclass
class _CameraRuntime:
    name: str
    camera: Camera
    tracker: FaceTracker
    low_light: LowLightConfig
    recognition_threshold: float
    unknown_score: float
    motion: CameraMotion = field(default_factory=CameraMotion)
    last_t: float = 0.0
    last_at: datetime | None = None
    closed: bool = False
    latest: AnalysedFrame | None = None  # newest analysed frame not yet reported
    door_faces: list[DoorFace] = field(default_factory=list)  # this frame's confirmed faces, at a door camera


class Pipeline:
    """Cameras, engine, gallery, recorder and delivery, run from one configuration."""

    def __init__(self, config: FacetrailConfig, *, engine: FaceEngine | None = None,
                 start_time: datetime | None = None, actor: str = "pipeline") -> None:
        """Open the gallery and cameras of ``config``; nothing runs until ``start`` (or ``run``)."""
        self.config = config
        self.actor = actor
        self.run_id = uuid.uuid4().hex[:12]
        self.engine = engine or FaceEngine(cfg.engine_config(config))
        self.gallery = Gallery(GallerySettings(config.data_dir, config.database.url, config.recogniser),
                               engine=self.engine)
        calibrated = self.engine.threshold
        self.analyzer = FrameAnalyzer(self.engine)
        self.matcher = GalleryMatcher(self.gallery, default_threshold=calibrated)
        unknowns = config.unknowns
        keep_unknowns = not config.retention.only_watchlist_hits
        clusters = None
        if unknowns.enabled and keep_unknowns:
            threshold = unknowns.cluster_threshold if unknowns.cluster_threshold is not None else max(
                calibrated, cfg.DEFAULT_CLUSTER_THRESHOLD)
            clusters = UnknownClusters(threshold, timedelta(days=unknowns.window_days))
        self.recorder = Recorder(self.gallery.db, channels=cfg.channels(config), rules=cfg.event_rules(config),
                                 clusters=clusters, keep_unknowns=keep_unknowns)
        self.recorder.load_visitors(utcnow() - timedelta(days=unknowns.window_days))
        self.cameras: list[_CameraRuntime] = []
        for name, camera in config.cameras.items():
            if not camera.enabled:
                continue
            recognition = config.camera_recognition(name)
            named, unknown = cfg.thresholds(recognition, calibrated)
            tracker = FaceTracker(cfg.tracker_settings(config), cfg.best_shot_settings(config, recognition))
            door = any(d.camera == name for d in config.doors.values())
            reader = Camera(cfg.camera_settings(name, camera, start_time=start_time, watches_door=door))
            self.cameras.append(_CameraRuntime(name, reader, tracker, cfg.low_light(recognition), named, unknown))
        self.mqtt: MqttPublisher | None = None
        mqtt = cfg.mqtt_settings(config)
        if mqtt is not None:
            self.mqtt = MqttPublisher(mqtt)
        targets = cfg.webhook_targets(config)
        self.dispatcher: Dispatcher | None = None
        if self.mqtt is not None or targets:
            self.dispatcher = Dispatcher(self.gallery.db, mqtt=self.mqtt,
                                         webhooks=WebhookSender(targets) if targets else None)
        self.doors = DoorService(config, self.gallery.db, self.matcher, self.analyzer,
                                 default_threshold=calibrated)
        self._door_cameras = self.doors.cameras
        self.stats = PipelineStats()
        self._shot_ids = itertools.count(1)
        self._turn = 0
        self._last_flush = time.monotonic()
        self._last_purge = -float("inf")
        self._last_report = -float("inf")
        self._last_refresh = time.monotonic()
        self._started = False
        self._announced = 0

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Record the run in the audit log, then start delivery and the camera readers."""
        with self.gallery.db.session() as session:
            audit.record(session, actor=self.actor, action="run.start",
                         target="cameras:" + ",".join(c.name for c in self.cameras), purpose=self.config.purpose,
                         details={"run": self.run_id, "recogniser": self.gallery.model_id,
                                  "retention": self.config.retention.model_dump()})
        if self.mqtt is not None:
            self.mqtt.start()
        if self.dispatcher is not None:
            self.dispatcher.start()
        self.doors.start()
        for runtime in self.cameras:
            runtime.camera.start()
        self._started = True

    def stop(self) -> None:
        """End every open track, stop cameras and delivery (after a last drain), close the gallery."""
        for runtime in self.cameras:
            runtime.camera.stop()
            self._close_camera(runtime)
        if self._started:
            self.report_cameras()
        self.doors.stop()
        if self.dispatcher is not None:
            self.dispatcher.drain_once()
            self.dispatcher.stop()
        if self.mqtt is not None:
            self.mqtt.stop()
        if self._started:
            with self.gallery.db.session() as session:
                audit.record(session, actor=self.actor, action="run.stop", target=f"run:{self.run_id}",
                             details={"frames": self.stats.frames, "tracks": self.stats.tracks,
                                      "events": self.stats.events})
        self.gallery.close()

    @property
    def done(self) -> bool:
        """True when every camera has finished or failed and its tracks are closed."""
        return all(runtime.closed for runtime in self.cameras)

    def status(self) -> list[CameraStatus]:
        """Each camera's reader status."""
        return [runtime.camera.status() for runtime in self.cameras]

    def run(self, stop: threading.Event | None = None, *, until_done: bool = True) -> PipelineStats:
        """Start, process until stopped (or, with ``until_done``, until every camera ended), stop."""
        self.start()
        try:
            while not (stop is not None and stop.is_set()):
                self.step()
                if until_done and self.done:
                    break
        finally:
            self.stop()
        return self.stats

    # -- one step ------------------------------------------------------------------------------------------

    def step(self) -> int:
        """Analyse the frames that are ready (at most one per camera); returns how many."""
        frames = self._take_frames()
        for runtime in self.cameras:
            if not runtime.closed and runtime.camera.done:
                self._close_camera(runtime)
        if not frames:
            time.sleep(IDLE_WAIT_S)
            self._housekeeping()
            return 0
        analysed = self.analyzer.analyse([f.image for _, f in frames], [r.low_light for r, _ in frames])
        requests: list[tuple[_CameraRuntime, Track, Shot, Frame, AnalysedFrame, int]] = []
        for (runtime, frame), result in zip(frames, analysed, strict=True):
            requests.extend(self._track(runtime, frame, result))
        vectors = self.analyzer.embed([(result, i) for _, _, _, _, result, i in requests])
        self.stats.embedded += len(requests)
        for (runtime, track, shot, frame, result, i), vector in zip(requests, vectors, strict=True):
            survivor = runtime.tracker.set_embedding(track, shot.shot_id, vector)
            if survivor is not track:
                self._merge_records(survivor, track)
                self._merge_door_faces(runtime, survivor, track)
            self._decide(runtime, survivor, frame, result, i)
        for (runtime, frame), result in zip(frames, analysed, strict=True):
            if runtime.name in self._door_cameras:
                made = {i: vector for (_, _, _, _, shot_of, i), vector in zip(requests, vectors, strict=True)
                        if shot_of is result}
                self.doors.frame(runtime.name, frame.captured_at, result, runtime.door_faces, made)
        for runtime, _frame in frames:
            for ended in runtime.tracker.end_stale(runtime.last_t):
                self._end_track(runtime, ended)
        self._wake_dispatcher()
        self._housekeeping()
        return len(frames)

    def _wake_dispatcher(self) -> None:
        """Have what was just enqueued delivered now rather than at the dispatcher's next poll."""
        if self.dispatcher is not None and self.recorder.enqueued != self._announced:
            self._announced = self.recorder.enqueued
            self.dispatcher.wake()

    def _take_frames(self) -> list[tuple[_CameraRuntime, Frame]]:
        taken = []
        count = len(self.cameras)
        for k in range(count):
            runtime = self.cameras[(self._turn + k) % count]
            if runtime.closed:
                continue
            frame = runtime.camera.get(timeout=0)
            if frame is not None:
                taken.append((runtime, frame))
        self._turn += 1
        return taken

    def _track(self, runtime: _CameraRuntime, frame: Frame,
               result: AnalysedFrame) -> list[tuple[_CameraRuntime, Track, Shot, Frame, AnalysedFrame, int]]:
        t = frame.captured_at.timestamp()
        runtime.last_t, runtime.last_at = t, frame.captured_at
        runtime.latest = result
        self.stats.frames += 1
        self.stats.faces += len(result)
        self.stats.per_camera_frames[runtime.name] = self.stats.per_camera_frames.get(runtime.name, 0) + 1
        requests = []
        runtime.door_faces = []
        camera_motion = runtime.motion.estimate(frame.image)
        for track in runtime.tracker.update(result.faces.xyxy, result.faces.scores, t, camera_motion):
            i = track.detection
            if i is None or not track.confirmed:
                continue
            record = self._record(runtime, track, frame)
            self.recorder.touch(record, frame.captured_at)
            if runtime.name in self._door_cameras:
                runtime.door_faces.append(DoorFace(track.track_id, record.uid, i))
            if result.area(i) < track.shots.settings.min_area:
                continue  # too small to recognise: tracked, never aligned or embedded
            face = result.shot(i)
            if not face.usable:
                continue
            shot = Shot(shot_id=next(self._shot_ids), t=t, quality=face.quality.score, area=result.area(i),
                        crop=face.crop, thumbnail=None)
            if track.shots.offer(shot):
                requests.append((runtime, track, shot, frame, result, i))
        return requests

    def _record(self, runtime: _CameraRuntime, track: Track, frame: Frame) -> TrackRecord:
        record = track.payload.get("record")
        if record is None:
            record = TrackRecord(uid=f"{self.run_id}:{runtime.name}:{track.track_id}", camera=runtime.name,
                                 first_seen=frame.captured_at, last_seen=frame.captured_at)
            track.payload["record"] = record
            self.stats.tracks += 1
        assert isinstance(record, TrackRecord)
        return record

    def _merge_records(self, survivor: Track, absorbed: Track) -> None:
        kept = survivor.payload.get("record")
        gone = absorbed.payload.get("record")
        if isinstance(kept, TrackRecord) and isinstance(gone, TrackRecord):
            kept.frames += gone.frames
            kept.last_seen = max(kept.last_seen, gone.last_seen)
            kept.dirty = True
            self.stats.tracks -= 1

    def _merge_door_faces(self, runtime: _CameraRuntime, survivor: Track, absorbed: Track) -> None:
        """At a door camera, the absorbed track's face in this frame belongs to the survivor from now on."""
        if runtime.name not in self._door_cameras:
            return
        record = survivor.payload.get("record")
        uid = record.uid if isinstance(record, TrackRecord) else str(survivor.track_id)
        runtime.door_faces = [DoorFace(survivor.track_id, uid, f.index) if f.track_id == absorbed.track_id else f
                              for f in runtime.door_faces]
        self.doors.merged(runtime.name, survivor.track_id, absorbed.track_id)

    def _decide(self, runtime: _CameraRuntime, track: Track, frame: Frame, result: AnalysedFrame, i: int) -> None:
        record = track.payload["record"]
        assert isinstance(record, TrackRecord)
        decision = decide(track.shots.embedded(), self.matcher, method=self.config.tracking.decision,
                          threshold=runtime.recognition_threshold)
        if decision.identity_id is not None:
            status, identity, name = "named", decision.identity_id, self.matcher.name(decision.identity_id)
            rules = self.matcher.watchlists_of(decision.identity_id)
            if record.status != "named":
                self.stats.named_tracks += 1
        else:
            status = "unknown" if decision.score <= runtime.unknown_score else "uncertain"
            identity, name, rules = None, None, []
        best = track.shots.best()
        embedded = [shot for shot in track.shots.embedded() if shot.embedding is not None]
        vector = max(embedded, key=lambda s: s.quality).embedding if embedded else None
        if vector is None:
            return
        x1, y1, x2, y2 = (float(v) for v in result.faces.xyxy[i])
        evidence = Evidence(frame=result.image, box=(x1, y1, x2, y2), thumbnail=result.thumbnail(i),
                            embedding=vector, quality=best.quality if best else 0.0, model_id=self.gallery.model_id)
        before = len(record.events)
        self.recorder.decided(record, status=status, identity_id=identity, identity_name=name,
                              score=decision.score if identity is not None else None, rules=rules,
                              evidence=evidence, frame_time=frame.captured_at)
        self.stats.events += len(record.events) - before

    def _end_track(self, runtime: _CameraRuntime, track: Track) -> None:
        if runtime.name in self._door_cameras:
            self.doors.ended(runtime.name, track.track_id, runtime.last_at or utcnow())
        record = track.payload.get("record")
        if isinstance(record, TrackRecord):
            self.recorder.ended(record, runtime.last_at or record.last_seen)

    def _close_camera(self, runtime: _CameraRuntime) -> None:
        if runtime.closed:
            return
        for track in runtime.tracker.end_all():
            self._end_track(runtime, track)
        runtime.closed = True
        self._wake_dispatcher()

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if now - self._last_flush >= FLUSH_EVERY_S:
            self._last_flush = now
            self.recorder.flush(track.payload["record"] for runtime in self.cameras
                                for track in runtime.tracker.active if "record" in track.payload)
        if now - self._last_refresh >= GALLERY_REFRESH_S:
            self._last_refresh = now
            added, removed = self.gallery.refresh()
            if added or removed:
                log.info("gallery changed: %d template(s) added, %d removed", added, removed)
        self.doors.housekeeping()
        if now - self._last_report >= REPORT_EVERY_S:
            self._last_report = now
            self.report_cameras()
        if now - self._last_purge >= self.config.retention.purge_interval_s:
            self._last_purge = now
            self.purge()

    def report_cameras(self) -> None:
        """Write each camera's status, and its newest analysed frame with the faces boxed, to the store."""
        reports = []
        for runtime in self.cameras:
            status = runtime.camera.status()
            picture: dict[str, Any] = {}
            if runtime.latest is not None:
                latest, runtime.latest = runtime.latest, None
                boxes = [[float(v) for v in box] for box in latest.faces.xyxy]
                picture = {"frame_jpeg": boxed_jpeg(latest.image, boxes, quality=FRAME_QUALITY),
                           "frame_at": runtime.last_at, "faces_in_frame": len(latest)}
            reports.append(CameraReport(
                camera=runtime.name, run_id=self.run_id, state=str(status.state), source=status.path,
                error=status.error, attempts=status.attempts, last_frame_at=status.last_frame_at,
                analysed_fps=status.analysed_fps, frames_analysed=status.frames_analysed,
                frames_skipped_motion=status.frames_skipped_motion, frames_dropped=status.frames_dropped,
                **picture))
        with self.gallery.db.session() as session:
            report_cameras(session, reports)

    def purge(self) -> None:
        """Apply retention now: video data per class, then expired watchlists and identities."""
        with self.gallery.db.session() as session:
            report = purge_data(session, cfg.retention_policy(self.config.retention))
        people = purge_people(self.gallery)
        if report.total or people.forgotten or people.expired_watchlists:
            log.info("retention purge: %s; %d identities forgotten, %d watchlists expired", report.counts,
                     len(people.forgotten), len(people.expired_watchlists))

"""The pipeline: every camera's frames through detection, tracking, recognition and the consumers.

One reader thread per camera (``facetrail.video``) decodes and samples; the
detection thread takes at most one frame per camera per step (and at most
``frames_per_step`` in all, in turn) and detects faces in them in one batch,
while the loop's own thread tracks the batch before, per camera, and embeds
the shots that tracks ask for in one shared batch. Each camera's tracking stage then hands one
:class:`~facetrail.pipeline.batch.FrameBatch` to every consumer (sightings
and events, doors, camera status): the loop knows none of their insides.

A slow or broken camera never holds the others: its reader is on its own
thread, the loop only takes what is ready, and every stage and consumer call
is guarded per camera (:mod:`facetrail.pipeline.health`): an error is
logged, counted in that camera's status and retried on the next frame.

Overload is fair: a live camera keeps only its two newest frames, and the loop
takes frames in round-robin order, starting each step after the last camera
served, so when the machine cannot keep up every camera gets the same share
of analysed frames (at most one sampling period old) and drops the rest,
counted in its status as a rate.
"""

from __future__ import annotations

import collections
import itertools
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import partial

import numpy as np

from facetrail.clock import Clock, SystemClock
from facetrail.config.schema import FacetrailConfig
from facetrail.gallery.gallery import Gallery, GallerySettings
from facetrail.gallery.retention import apply_retention
from facetrail.heap import TRIM_EVERY_S, give_memory_back, reuse_large_buffers
from facetrail.pipeline import settings as cfg
from facetrail.pipeline.analyzer import AnalysedFrame, FrameAnalyzer
from facetrail.pipeline.batch import EndedTrack, FrameBatch
from facetrail.pipeline.clips import ClipRecorder, announce_clip
from facetrail.pipeline.consumers import CameraStatus, Consumer, Doors, Sightings
from facetrail.pipeline.delivery import Delivery
from facetrail.pipeline.doors import DoorService
from facetrail.pipeline.health import PipelineHealth
from facetrail.pipeline.high_resolution import HighResolutionShots
from facetrail.pipeline.live import LiveView
from facetrail.pipeline.matcher import GalleryMatcher
from facetrail.pipeline.recorder import Recorder
from facetrail.pipeline.tracking import CameraTracking, EmbedRequest, RecognitionRule
from facetrail.store import audit
from facetrail.store.media import ClipFiles, LiveFrames
from facetrail.store.models import utcnow
from facetrail.track.tracker import FaceTracker
from facetrail.track.unknowns import UnknownClusters
from facetrail.video.camera import Camera
from facetrail.video.camera import CameraStatus as ReaderStatus
from facetrail.video.frames import Frame
from facetrail.video.record_stream import RecordStatus, RecordStream
from facetrail.vision.embedder import CropEmbedder
from facetrail.vision.engine import FaceEngine
from facetrail.vision.lowlight import LowLightConfig

log = logging.getLogger(__name__)

IDLE_WAIT_S = 0.01
# Frames detected in one step, at most. On the CPU a larger batch saves nothing (street.mp4 1080p, 2 cores:
# 34, 36, 40, 42 ms of CPU per frame in batches of 1, 2, 4, 8) while onnxruntime's arena grows by about
# 36 MB per frame of the largest batch and keeps it: one batch of every camera made memory grow per camera.
# On a GPU the batch grows to one frame of every camera: there a batch costs little more than one frame.
FRAMES_PER_STEP = 2
GALLERY_REFRESH_S = 5.0  # people enrolled or deleted by another process are picked up this often


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


def summed(parts: Iterable[PipelineStats]) -> PipelineStats:
    """The totals of several pipelines (a cluster's groups, a run's worker processes)."""
    total = PipelineStats()
    for stats in parts:
        total.frames += stats.frames
        total.faces += stats.faces
        total.embedded += stats.embedded
        total.tracks += stats.tracks
        total.named_tracks += stats.named_tracks
        total.events += stats.events
        for camera, frames in stats.per_camera_frames.items():
            total.per_camera_frames[camera] = total.per_camera_frames.get(camera, 0) + frames
    return total


@dataclass
class _CameraRuntime:
    name: str
    camera: Camera
    tracking: CameraTracking
    low_light: LowLightConfig
    record: RecordStream | None = None  # the camera's high-resolution input, when it lists one
    closed: bool = False


class Pipeline:
    """Cameras, engine, gallery, the consumers and delivery, run from one configuration."""

    def __init__(self, config: FacetrailConfig, *, engine: FaceEngine | None = None,
                 start_time: datetime | None = None, actor: str = "pipeline",
                 consumers: Sequence[Consumer] = (), clock: Clock | None = None,
                 frames_per_step: int | None = None, positions: Mapping[str, float] | None = None,
                 deliver: bool = True, embedder: CropEmbedder | None = None) -> None:
        """Open the gallery and cameras of ``config``; nothing runs until ``start`` (or ``run``).

        ``consumers``: more stages after the tracker, after the built-in ones (sightings and events, doors,
        camera status). ``clock``: what housekeeping intervals and door time-outs are measured by.
        ``frames_per_step``: the most frames detected in one batch (bounds the detector's memory); default
        ``FRAMES_PER_STEP`` on the CPU, every camera's on an accelerator. ``positions``: file cameras start
        after these media times (a camera resumed from its checkpoint). ``deliver``: False leaves the outbox to
        another process (the cluster's driver): no MQTT connection, no dispatcher, no Home Assistant bridge.
        ``embedder``: embeds every face (cameras, doors, high-resolution shots) instead of the engine's
        recogniser, e.g. a cluster's pool of embedding actors; it must be the same model.
        """
        reuse_large_buffers()  # a freed frame's memory serves the next frame (see heap.py)
        cfg.use_pipeline_threads()
        self.clock: Clock = clock or SystemClock()
        self.config = config
        self.actor = actor
        self.run_id = uuid.uuid4().hex[:12]
        self.engine = engine or FaceEngine(cfg.engine_config(config))
        self.gallery = Gallery(GallerySettings(config.data_dir, config.database.url, config.recogniser, config.index),
                               engine=self.engine)
        calibrated = self.engine.threshold
        self.analyzer = FrameAnalyzer(self.engine, embedder=embedder)
        self.matcher = GalleryMatcher(self.gallery, default_threshold=calibrated)
        self.recorder = self._recorder(config, calibrated)
        self.cameras: list[_CameraRuntime] = []
        shot_ids = itertools.count(1)
        for name, camera in config.cameras.items():
            if not camera.enabled:
                continue
            recognition = config.camera_recognition(name)
            named, unknown = recognition.resolve(calibrated)
            tracker = FaceTracker(cfg.tracker_settings(config), cfg.best_shot_settings(config, recognition))
            tracking = CameraTracking(name, tracker, self.matcher,
                                      RecognitionRule(named, unknown, config.tracking.decision),
                                      run_id=self.run_id, model_id=self.gallery.model_id,
                                      embedding_size=self.gallery.dim, shot_ids=shot_ids)
            door = any(d.camera == name for d in config.doors.values())
            reader = Camera(cfg.camera_settings(name, camera, start_time=start_time, watches_door=door,
                                                resume_after=(positions or {}).get(name)))
            record = cfg.record_stream(name, camera)
            self.cameras.append(_CameraRuntime(name, reader, tracking, cfg.low_light(recognition), record))
        self.health = PipelineHealth(runtime.name for runtime in self.cameras)
        if frames_per_step is None:
            frames_per_step = len(self.cameras) if self.engine.on_accelerator else FRAMES_PER_STEP
        self.frames_per_step = max(1, frames_per_step)
        for runtime in self.cameras:
            if runtime.record is not None:
                runtime.tracking.high_resolution = HighResolutionShots(
                    runtime.record, self.analyzer, runtime.low_light, self.health.cameras[runtime.name])
        self.delivery: Delivery | None = None  # MQTT, webhooks, Home Assistant and the outbox dispatcher
        if deliver:
            self.delivery = Delivery(config, self.gallery.db, self.recorder.outlet, [r.name for r in self.cameras])
        self.doors = DoorService(config, self.gallery.db, self.matcher, self.analyzer,
                                 default_threshold=calibrated, outlet=self.recorder.outlet)
        self.sightings = Sightings(self.recorder, self.matcher)
        self.camera_status = CameraStatus(self.gallery.db, self.run_id, [r.camera for r in self.cameras],
                                          self.health)
        names = [runtime.name for runtime in self.cameras]
        self.live_view = LiveView(LiveFrames(config.data_dir), config.live, names, self.clock,
                                  visitor_of=self.sightings.visitor_of)
        self.clips: ClipRecorder | None = None
        if config.clips.enabled:
            announce = partial(announce_clip, self.gallery.db, self.recorder.outlet, self.sightings.open_event)
            self.clips = ClipRecorder(self.gallery.db, ClipFiles(config.data_dir), config.clips, names,
                                      announce=announce)
        self.consumers: list[Consumer] = [self.sightings, Doors(self.doors), self.camera_status, self.live_view,
                                          *([self.clips] if self.clips is not None else []), *consumers]
        self.stats = PipelineStats()
        self._turn = 0
        self._last_purge = -float("inf")
        self._last_trim = -float("inf")  # the first housekeeping hands back what loading the models freed
        self._last_refresh = self.clock.monotonic()
        self._started = False
        self._announced = 0

    def _recorder(self, config: FacetrailConfig, calibrated: float) -> Recorder:
        unknowns = config.unknowns
        keep_unknowns = not config.retention.only_watchlist_hits
        clusters = None
        if unknowns.enabled and keep_unknowns:
            clusters = UnknownClusters(unknowns.threshold(calibrated), unknowns.window)
        recorder = Recorder(self.gallery.db, channels=cfg.channels(config), rules=cfg.event_rules(config),
                            clusters=clusters, keep_unknowns=keep_unknowns)
        recorder.load_visitors(utcnow() - unknowns.window)
        return recorder

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Record the run in the audit log, then start delivery, the consumers and the camera readers."""
        with self.gallery.db.session() as session:
            audit.record(session, actor=self.actor, action="run.start",
                         target="cameras:" + ",".join(c.name for c in self.cameras), purpose=self.config.purpose,
                         details={"run": self.run_id, "recogniser": self.gallery.model_id,
                                  "retention": asdict(self.config.retention)})
        if self.delivery is not None:
            self.delivery.start()
        for consumer in self.consumers:
            consumer.start()
        for runtime in self.cameras:
            runtime.camera.start()
            if runtime.record is not None:
                runtime.record.start()
        self._started = True

    def stop(self) -> None:
        """End every open track, stop cameras, consumers and delivery (after a last drain), close the gallery."""
        for runtime in self.cameras:
            runtime.camera.stop()
            if runtime.record is not None:
                runtime.record.stop()
            self._close_camera(runtime)
        if self._started:
            for consumer in self.consumers:
                self.health.guard(None, f"{consumer.name} (stop)", consumer.stop)
        else:
            self.doors.stop()
        if self.delivery is not None:
            self.delivery.stop()
        if self._started:
            self.stats.events = self.sightings.events
            with self.gallery.db.session() as session:
                audit.record(session, actor=self.actor, action="run.stop", target=f"run:{self.run_id}",
                             details={"frames": self.stats.frames, "tracks": self.stats.tracks,
                                      "events": self.stats.events})
        self.gallery.close()

    @property
    def delivery_elsewhere(self) -> str | None:
        """Who delivers this database's outbox when another process holds the lease (this run then only stores)."""
        return self.delivery.held_by if self.delivery is not None else None

    @property
    def done(self) -> bool:
        """True when every camera has finished or failed and its tracks are closed."""
        return all(runtime.closed for runtime in self.cameras)

    def status(self) -> list[ReaderStatus]:
        """Each camera's reader status."""
        return [runtime.camera.status() for runtime in self.cameras]

    def record_status(self) -> list[RecordStatus]:
        """The status of each camera's record stream (cameras that list one)."""
        return [runtime.record.status() for runtime in self.cameras if runtime.record is not None]

    def run(self, stop: threading.Event | None = None, *, until_done: bool = True,
            overlap: bool = True) -> PipelineStats:
        """Start, process until stopped (or, with ``until_done``, until every camera ended), stop.

        ``overlap``: detect the next frames on a thread of their own while this one tracks, embeds and hands
        on the last ones (:class:`DetectionAhead`), so the two stages use two cores at once; without it, each
        ``step`` does both in turn.
        """
        self.start()
        ahead = DetectionAhead(self) if overlap else None
        try:
            if ahead is not None:
                ahead.start()
            while not (stop is not None and stop.is_set()):
                if ahead is None:
                    self.step()
                else:
                    detected = ahead.next(IDLE_WAIT_S)
                    if detected is None:
                        self._housekeeping()
                    else:
                        self._finish(detected)
                        ahead.done_with(detected)
                    self._close_finished(ahead.finished_cameras())
                if until_done and self.done:
                    break
        finally:
            if ahead is not None:
                ahead.stop()
            self.stop()
        return self.stats

    # -- one step ------------------------------------------------------------------------------------------

    def step(self) -> int:
        """Analyse the frames that are ready (at most one per camera), then track and hand them on; how many."""
        frames = self._take_frames()
        if frames:
            self._finish(_Detected(frames, self._analyse(frames)))
        self._close_finished(self.cameras)
        if not frames:
            time.sleep(IDLE_WAIT_S)
            self._housekeeping()
        return len(frames)

    def _finish(self, detected: _Detected) -> None:
        """Track, embed and hand on the frames of one detected batch."""
        frames, analysed = detected.frames, detected.analysed
        observed: list[tuple[_CameraRuntime, list[EmbedRequest]]] = []
        for runtime, frame in frames:
            result = analysed.get(runtime.name)
            if result is None:
                continue
            requests = self.health.guard(runtime.name, "tracking", partial(runtime.tracking.observe, frame, result))
            if requests is not None:
                observed.append((runtime, requests))
        vectors = self._embed([request for _, requests in observed for request in requests])
        offset = 0
        for runtime, requests in observed:
            mine = vectors[offset:offset + len(requests)]
            offset += len(requests)
            batch = self.health.guard(runtime.name, "tracking", partial(runtime.tracking.complete, requests, mine))
            if batch is not None:
                self._deliver(runtime.name, batch)
        for runtime, _frame in frames:
            self._ended(runtime, runtime.tracking.end_stale)
        self._count(frames)
        self._wake_dispatcher()
        self._housekeeping()

    def _close_finished(self, cameras: Sequence[_CameraRuntime]) -> None:
        """End the tracks of each camera whose reading is over and whose every frame was handled."""
        for runtime in cameras:
            if not runtime.closed and runtime.camera.done:
                self._close_camera(runtime)

    def _analyse(self, frames: list[tuple[_CameraRuntime, Frame]]) -> dict[str, AnalysedFrame]:
        """Detect the faces of every frame in one batch; when that fails, frame by frame to find the culprit."""
        try:
            results = self.analyzer.analyse([f.image for _, f in frames], [r.low_light for r, _ in frames])
            return {runtime.name: result for (runtime, _), result in zip(frames, results, strict=True)}
        except Exception:
            log.warning("the shared detector batch failed; analysing each camera's frame on its own")
        analysed: dict[str, AnalysedFrame] = {}
        for runtime, frame in frames:
            alone = self.health.guard(runtime.name, "analysis",
                                      partial(self.analyzer.analyse, [frame.image], [runtime.low_light]))
            if alone is not None:
                analysed[runtime.name] = alone[0]
        return analysed

    def _embed(self, requests: list[EmbedRequest]) -> np.ndarray:
        """Embed every requested shot in one batch (the requests' order)."""
        return self.analyzer.embed([request.source for request in requests])

    def _deliver(self, camera: str, batch: FrameBatch) -> None:
        for consumer in self.consumers:
            self.health.guard(camera, consumer.name, partial(consumer.on_frame, batch))

    def _ended(self, runtime: _CameraRuntime, end: Callable[[], list[EndedTrack]]) -> None:
        for track in self.health.guard(runtime.name, "tracking", end) or []:
            for consumer in self.consumers:
                self.health.guard(runtime.name, consumer.name, partial(consumer.on_track_ended, track))

    def _count(self, frames: list[tuple[_CameraRuntime, Frame]]) -> None:
        counts = [runtime.tracking.counts for runtime in self.cameras]
        self.stats.frames = sum(c.frames for c in counts)
        self.stats.faces = sum(c.faces for c in counts)
        self.stats.embedded = sum(c.embedded for c in counts)
        self.stats.tracks = sum(c.tracks for c in counts)
        self.stats.named_tracks = sum(c.named_tracks for c in counts)
        self.stats.events = self.sightings.events
        for runtime, _ in frames:
            self.stats.per_camera_frames[runtime.name] = runtime.tracking.counts.frames

    def _wake_dispatcher(self) -> None:
        """Have what was just enqueued delivered now rather than at the dispatcher's next poll."""
        if self.delivery is not None and self.recorder.enqueued != self._announced:
            self._announced = self.recorder.enqueued
            self.delivery.wake()

    def _take_frames(self) -> list[tuple[_CameraRuntime, Frame]]:
        """The ready frames, at most one per camera and ``frames_per_step`` in all, in round-robin order.

        Each step starts after the last camera served, so a camera that had a frame ready but was left out
        (the step was full) comes first next time: under overload every camera gets its share. Nothing here
        waits: a camera whose source is stuck simply has no frame.
        """
        taken: list[tuple[_CameraRuntime, Frame]] = []
        count = len(self.cameras)
        if not count:
            return taken
        start = self._turn % count
        for k in range(count):
            if len(taken) >= self.frames_per_step:
                break
            position = (start + k) % count
            runtime = self.cameras[position]
            if runtime.closed:
                continue
            frame = runtime.camera.get(timeout=0)
            if frame is not None:
                taken.append((runtime, frame))
                self._turn = (position + 1) % count
        if not taken:
            self._turn = (start + 1) % count
        return taken

    def _close_camera(self, runtime: _CameraRuntime) -> None:
        if runtime.closed:
            return
        self._ended(runtime, runtime.tracking.end_all)
        runtime.closed = True
        self._wake_dispatcher()

    def _housekeeping(self) -> None:
        now = self.clock.monotonic()
        for consumer in self.consumers:
            self.health.guard(None, f"{consumer.name} (housekeeping)", partial(consumer.housekeeping, now))
        if now - self._last_refresh >= GALLERY_REFRESH_S:
            self._last_refresh = now
            self.health.guard(None, "gallery refresh", self._refresh_gallery)
        if now - self._last_purge >= self.config.retention.purge_interval_s:
            self._last_purge = now
            self.health.guard(None, "retention", self.purge)
        if now - self._last_trim >= TRIM_EVERY_S:
            self._last_trim = now
            give_memory_back()

    def _refresh_gallery(self) -> None:
        added, removed = self.gallery.refresh()
        if added or removed:
            log.info("gallery changed: %d template(s) added, %d removed", added, removed)

    def report_cameras(self) -> None:
        """Write each camera's status, and its newest analysed frame with the faces boxed, to the store."""
        self.camera_status.report()

    def purge(self) -> None:
        """Apply retention now: video data per class, then expired watchlists and identities (one audit entry)."""
        outcome = apply_retention(self.gallery, self.config.retention, actor=self.actor)
        if outcome.total:
            log.info("retention purge: %s", outcome.counts)


@dataclass
class _Detected:
    """One batch of frames (at most one per camera) and the faces found in each."""

    frames: list[tuple[_CameraRuntime, Frame]]
    analysed: dict[str, AnalysedFrame]


class DetectionAhead:
    """Detection one batch ahead of tracking, on a thread of its own.

    The thread takes the ready frames (the pipeline's round robin), detects their faces and hands the
    batch over through a queue of one, so it never runs more than one batch ahead and a live camera's
    frame is at most that old when tracked. Measured on this project's 2-core machine (bench/video.py,
    capacity): the loop alone used at most 1.4 of the 2 cores, since tracking, embedding and the consumers
    waited for detection and the other way round.
    """

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline
        self._ready: queue.Queue[_Detected] = queue.Queue(maxsize=1)
        self._lock = threading.Lock()
        self._in_flight: collections.Counter[str] = collections.Counter()  # frames taken, not yet tracked
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="detection", daemon=True)

    def start(self) -> None:
        """Start detecting."""
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the batch being detected (frames not yet tracked are dropped)."""
        self._stop.set()
        self._thread.join(timeout)

    def next(self, timeout: float) -> _Detected | None:
        """The next detected batch, or None when none comes within ``timeout`` s."""
        try:
            return self._ready.get(timeout=timeout)
        except queue.Empty:
            return None

    def done_with(self, detected: _Detected) -> None:
        """The batch was tracked and handed on."""
        with self._lock:
            self._in_flight.subtract(runtime.name for runtime, _ in detected.frames)

    def finished_cameras(self) -> list[_CameraRuntime]:
        """Open cameras whose reading is over and none of whose frames is still on its way."""
        with self._lock:  # the thread takes frames under this lock: a camera is never seen done mid-handover
            return [runtime for runtime in self._pipeline.cameras
                    if not runtime.closed and self._in_flight[runtime.name] <= 0 and runtime.camera.done]

    def _run(self) -> None:
        pipeline = self._pipeline
        while not self._stop.is_set():
            with self._lock:
                frames = pipeline._take_frames()
                self._in_flight.update(runtime.name for runtime, _ in frames)
            if not frames:
                self._stop.wait(IDLE_WAIT_S)
                continue
            try:
                detected = _Detected(frames, pipeline._analyse(frames))
            except Exception:  # _analyse guards each camera; this is a bug, and must not end detection
                log.exception("detection failed for a whole batch; its frames are skipped")
                detected = _Detected(frames, {})
            while not self._stop.is_set():
                try:
                    self._ready.put(detected, timeout=0.1)
                    break
                except queue.Full:
                    continue
            # Tracking has the batch now: holding it while the next frames arrive and are detected would keep a
            # batch of pictures alive that tracking has already let go.
            del detected, frames

"""A run's cameras split over worker processes on one machine (``processes:`` / ``facetrail run --processes``).

One Python process uses about 1.5 of 2 cores (its reader, detection and tracking threads share the
interpreter lock); several processes use them all. Each worker runs the pipeline of its camera group
(:func:`~facetrail.pipeline.groups.group_config`) with ``deliver=False``, loading its own engine, and sends its
cameras' status and its counts to the parent about once a second over a pipe of its own (a worker killed
mid-write breaks only its own pipe; a shared queue's lock could be left held). The parent owns the one
:class:`~facetrail.pipeline.delivery.Delivery` that drains every worker's outbox, so each event is delivered once.

A worker that dies does not stop the others. Its cameras are started again in a fresh worker (with
back-off), taking over the watchlist events it left open (:mod:`facetrail.pipeline.orphans`): live cameras
where the stream is now, file cameras from their checkpoints (:mod:`facetrail.pipeline.checkpoints`: the media
time up to which their sightings and events are stored), so nothing is announced twice. A file camera is
resumed ``FILE_RESTARTS`` times at most (a file that crashes its reader would crash it again): after that it
is reported failed, the events its worker left open are ended when the run stops, and the run fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from multiprocessing.synchronize import Event as ProcessEvent
from typing import Any

from facetrail.config.schema import FacetrailConfig
from facetrail.events.outlet import EventOutlet
from facetrail.pipeline import settings as cfg
from facetrail.pipeline.checkpoints import Checkpoints
from facetrail.pipeline.delivery import Delivery
from facetrail.pipeline.groups import camera_groups, group_config
from facetrail.pipeline.orphans import LiveOrphans, open_watchlist_events
from facetrail.pipeline.runner import Pipeline, PipelineStats, summed
from facetrail.store.audit_anchor import AuditAnchor
from facetrail.store.audit_anchor import attach as attach_audit_anchor
from facetrail.store.db import Database, sqlite_url
from facetrail.store.placements import ResumePoint, resume_run, start_afresh
from facetrail.video.camera import CameraStatus
from facetrail.video.record_stream import RecordStatus
from facetrail.video.sources import is_stream

log = logging.getLogger(__name__)
REPORT_EVERY_S = 1.0
STOP_POLL_S = 0.2  # how often a worker looks at the parent's stop event
STOP_TIMEOUT_S = 120.0  # a worker closing its tracks and storing its last events
RESTART_DELAYS_S = (1.0, 2.0, 5.0, 10.0, 30.0)  # back-off between restarts of a worker that keeps dying
STEADY_S = 60.0  # a worker that ran this long before dying starts again at the shortest delay
FILE_RESTARTS = 3  # a file camera is resumed after this many deaths of its worker, not after one more


@dataclass
class WorkerReport:
    """What a worker sends: its cameras' status and its counts; ``done`` once its pipeline stopped."""

    statuses: list[CameraStatus]
    records: list[RecordStatus]
    stats: PipelineStats
    done: bool = False
    error: str | None = None
    sent_at: float = field(default_factory=time.monotonic)  # the machine's monotonic clock, shared by processes


def live_cameras(config: FacetrailConfig, cameras: list[str]) -> list[str]:
    """Those of ``cameras`` that can start again after a crash: streams, and files read in a loop."""
    return [name for name in cameras
            if is_stream(config.cameras[name].detect_input.path) or config.cameras[name].detect_input.loop]


@dataclass(frozen=True)
class WorkerStart:
    """What a worker is started with besides its cameras."""

    run_id: str  # the run's: a restarted worker resumes the checkpoints its predecessor wrote in this run
    origin: datetime  # the wall time media time 0 of every file stands for (one clock for the whole run)
    actor: str
    until_done: bool
    log_level: int
    restarted: bool = False  # its cameras' last worker died: resume, take over the events it left open


def work(config: FacetrailConfig, cameras: list[str], start: WorkerStart, stop: ProcessEvent,
         reports: Connection) -> None:
    """A worker process: run the pipeline of ``cameras`` until done or ``stop``, reporting every second."""
    logging.basicConfig(level=start.log_level, format=f"%(levelname)s %(name)s [{','.join(cameras)}]: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent stops us
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked while starting (see _spawn)
    mine = threading.Event()  # this worker's stop: the parent's, or a SIGTERM sent to this worker alone
    signal.signal(signal.SIGTERM, lambda _signum, _frame: mine.set())
    try:
        pipeline = _worker_pipeline(config, cameras, start)
    except Exception as error:  # a start that fails would fail again: reported as done, not restarted
        log.exception("the pipeline of %s did not start", cameras)
        reports.send(WorkerReport([], [], PipelineStats(), done=True, error=f"{type(error).__name__}: {error}"))
        return
    failure: list[str] = []

    def run() -> None:
        try:
            pipeline.run(mine, until_done=start.until_done)
        except Exception as error:  # reported to the parent; this process's log has the details
            log.exception("the pipeline of %s stopped", cameras)
            failure.append(f"{type(error).__name__}: {error}")

    thread = threading.Thread(target=run, name="pipeline", daemon=True)
    thread.start()
    done, last = False, 0.0
    while not done:
        thread.join(STOP_POLL_S)
        if stop.is_set():
            mine.set()
        done = not thread.is_alive()
        if not done and time.monotonic() - last < REPORT_EVERY_S:
            continue
        last = time.monotonic()
        try:
            reports.send(WorkerReport(pipeline.status(), pipeline.record_status(), pipeline.stats,
                                      done=done, error=failure[0] if failure else None))
        except OSError:  # the parent is gone (killed): stop cleanly, its tracks ended and events stored
            log.warning("the parent process is gone; stopping %s", cameras)
            mine.set()
            thread.join(STOP_TIMEOUT_S)
            break
    with contextlib.suppress(OSError):
        reports.close()


def _worker_pipeline(config: FacetrailConfig, cameras: list[str], start: WorkerStart) -> Pipeline:
    """The worker's pipeline: file cameras from their checkpoints when restarted, each file's position kept."""
    live = live_cameras(config, cameras)
    files = [name for name in cameras if name not in live]
    points: dict[str, ResumePoint] = {}
    if files:
        db = Database(config.database.url or sqlite_url(config.data_dir))
        try:
            with db.session() as session:
                node = f"process {os.getpid()}"
                if start.restarted:
                    points = resume_run(session, files, run_id=start.run_id, node=node, origin=start.origin)
                else:
                    start_afresh(session, files, run_id=start.run_id, node=node, origin=start.origin)
        finally:
            db.dispose()
    resumed = {name: point.position_s for name, point in points.items() if point.position_s is not None}
    if resumed:
        log.info("resuming %s", ", ".join(f"{name} after {position:.2f} s" for name, position in resumed.items()))
    pipeline = Pipeline(group_config(config, cameras), actor=start.actor, deliver=False, start_time=start.origin,
                        positions=resumed)
    checkpoints = Checkpoints(pipeline.gallery.db, [r.camera for r in pipeline.cameras
                                                    if r.camera.settings.name in files],
                              {name: resumed.get(name, 0.0) for name in files})
    pipeline.consumers.append(checkpoints)
    if start.restarted:
        recorder = pipeline.recorder
        recorder.resume(open_watchlist_events(pipeline.gallery.db, cameras))
        checkpoints.end_orphans = recorder.end_orphans  # files: by media time after their checkpoint
        if live:
            pipeline.consumers.append(LiveOrphans(lambda: recorder.end_orphans(live)))  # live: by the clock
    return pipeline


@dataclass
class _Worker:
    cameras: list[str]
    process: SpawnProcess | None = None
    reports: Connection | None = None
    report: WorkerReport | None = None  # the latest of its current life
    shown: dict[str, CameraStatus] = field(default_factory=dict)  # each camera's latest status, of any life
    started_at: float = 0.0
    carried: list[PipelineStats] = field(default_factory=list)  # counts of its earlier lives
    restarts: int = 0
    deaths: int = 0  # in the whole run (restarts is reset after a steady life)
    restart_at: float | None = None  # monotonic: when a dead worker starts again
    failed: dict[str, str] = field(default_factory=dict)  # camera -> why it stopped for good

    @property
    def finished(self) -> bool:
        """Nothing more to wait for: its pipeline stopped, or it died and is not started again."""
        if self.restart_at is not None:
            return False
        return self.process is None or (self.report is not None and self.report.done)


class ProcessRun:
    """The cameras of one configuration in worker processes, and the one delivery of their events."""

    def __init__(self, config: FacetrailConfig, processes: int, *, actor: str = "pipeline",
                 notify: Callable[[str], None] = log.warning) -> None:
        self.config, self.actor, self.notify = config, actor, notify
        cameras = [name for name, camera in config.cameras.items() if camera.enabled]
        per_group = -(-len(cameras) // max(1, processes))
        self.workers = [_Worker(group) for group in camera_groups(config, per_group)]
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.db = Database(config.database.url or sqlite_url(config.data_dir))
        attach_audit_anchor(self.db.engine, AuditAnchor.for_data_dir(config.data_dir))
        self.outlet = EventOutlet(cfg.channels(config))
        self.delivery = Delivery(config, self.db, self.outlet, cameras)
        self.run_id = uuid.uuid4().hex[:12]
        self.origin = datetime.now(UTC)
        self._context = multiprocessing.get_context("spawn")  # no fork: the parent's threads and sessions stay
        self._stop = self._context.Event()
        self._until_done = True
        self._stopped = False

    def start(self, *, until_done: bool = True) -> None:
        """Start delivery and every worker."""
        self._until_done = until_done
        self.delivery.start()
        for worker in self.workers:
            self._spawn(worker)

    def poll(self, timeout: float = 0.5) -> bool:
        """Read the workers' reports (waiting at most ``timeout``), notice deaths; True once every worker is done."""
        pipes = {worker.reports: worker for worker in self.workers if worker.reports is not None}
        for pipe in multiprocessing.connection.wait(list(pipes), timeout):
            self._read(pipes[pipe])  # type: ignore[index]
        now = time.monotonic()
        for worker in self.workers:
            if worker.process is not None and not worker.process.is_alive():
                self._read(worker)  # what it sent before it ended
                if worker.report is None or not worker.report.done:
                    self._died(worker, now)
                self._close(worker)
            if worker.restart_at is not None and now >= worker.restart_at and not self._stop.is_set():
                worker.restart_at = None
                self._spawn(worker)
        return all(worker.finished for worker in self.workers)

    def status(self) -> list[CameraStatus]:
        """Every camera's latest status, in the groups' order (a camera that failed for good says so)."""
        result = []
        for worker in self.workers:
            for status in worker.shown.values():
                reason = worker.failed.get(status.name)
                result.append(dataclasses.replace(status, state="failed", error=reason) if reason else status)
        return result

    def record_status(self) -> list[RecordStatus]:
        """Every record stream's latest status."""
        return [record for worker in self.workers if worker.report is not None for record in worker.report.records]

    @property
    def stats(self) -> PipelineStats:
        """The counts of every worker, summed over their lives."""
        return summed(stats for worker in self.workers
                      for stats in [*worker.carried, *([worker.report.stats] if worker.report else [])])

    @property
    def failures(self) -> dict[str, str]:
        """Why each camera that stopped for good (its worker died, or its pipeline failed) stopped."""
        failed: dict[str, str] = {}
        for worker in self.workers:
            failed.update(worker.failed)
            if worker.report is not None and worker.report.error:
                failed.update(dict.fromkeys(worker.cameras, worker.report.error))
        return failed

    @property
    def delivery_elsewhere(self) -> str | None:
        """Who delivers this database's outbox when another process holds the lease."""
        return self.delivery.held_by

    def stop(self) -> None:
        """Tell the workers to stop (their tracks end, events are stored), wait for them, deliver, disconnect."""
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for worker in self.workers:
            if worker.process is None:
                continue
            while worker.process.is_alive() and time.monotonic() < deadline:
                self.poll(0.2)  # keep reading: a worker blocked on a full pipe would never end
                if worker.process is None:
                    break
            if worker.process is not None and worker.process.is_alive():
                log.warning("cameras %s did not stop in %g s; ending their process", worker.cameras, STOP_TIMEOUT_S)
                worker.process.kill()
                worker.process.join(5)
            self._read(worker)
            self._close(worker)
        orphaned = self._never_restarted()
        self._end_left_open(orphaned)
        self.delivery.stop()
        self.db.dispose()

    def run(self, stop: threading.Event | None = None, *, until_done: bool = True,
            on_poll: Callable[[ProcessRun], None] | None = None) -> PipelineStats:
        """Start, poll until stopped (or, with ``until_done``, every camera ended), stop."""
        self.start(until_done=until_done)
        try:
            while not (stop is not None and stop.is_set()):
                done = self.poll()
                if on_poll is not None:
                    on_poll(self)
                if until_done and done:
                    break
        finally:
            self.stop()
        return self.stats

    # -- internals -----------------------------------------------------------------------------------------

    def _never_restarted(self) -> list[str]:
        """The cameras of workers that died and were waiting to start again when the run stopped.

        Nobody will take over what their worker left open; a file of theirs was not read to its end (failed).
        """
        cameras: list[str] = []
        for worker in self.workers:
            if worker.restart_at is None:
                continue
            worker.restart_at = None
            live = live_cameras(self.config, worker.cameras)
            worker.failed.update(dict.fromkeys(
                [name for name in worker.cameras if name not in live],
                f"its worker process died ({worker.deaths} time(s)) and the run stopped before it started again; "
                "the file was not read to its end"))
            cameras.extend(worker.cameras)
        return cameras

    def _end_left_open(self, also: list[str]) -> None:
        """End the watchlist events left open by the dead workers of failed cameras and of ``also`` (nobody takes
        them over)."""
        failed = sorted({camera for worker in self.workers for camera in worker.failed} | set(also))
        if not failed:
            return
        views = open_watchlist_events(self.db, failed)
        with self.db.session() as session:
            for view in views:
                self.outlet.end_left_open(session, view)
        if views:
            log.info("ended %d event(s) left open by the dead workers of %s", len(views), failed)

    def _spawn(self, worker: _Worker) -> None:
        receive, send = self._context.Pipe(duplex=False)
        start = WorkerStart(self.run_id, self.origin, self.actor, self._until_done, logging.getLogger().level,
                            restarted=worker.deaths > 0)
        process = self._context.Process(
            target=work, name=f"facetrail-{'-'.join(worker.cameras)}"[:60], daemon=True,
            args=(self.config, worker.cameras, start, self._stop, send))
        # Ctrl-C reaches the whole process group; the worker's interpreter must not take it while it starts
        # (before it can ignore it): started with SIGINT blocked, it never sees one. The parent tells it to stop.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        send.close()  # the worker's end: closed here, so its death reads as the pipe's end
        worker.process, worker.reports, worker.report, worker.started_at = process, receive, None, time.monotonic()
        self.notify(f"processes: cameras {', '.join(worker.cameras)} in worker process {process.pid}")

    def _read(self, worker: _Worker) -> None:
        pipe = worker.reports
        if pipe is None:
            return
        try:
            while pipe.poll():
                report: Any = pipe.recv()
                worker.report = report
                worker.shown.update((status.name, status) for status in report.statuses)
        except (EOFError, OSError):
            return

    def _close(self, worker: _Worker) -> None:
        if worker.process is not None:
            worker.process.join(1)
        if worker.reports is not None:
            worker.reports.close()
        worker.process, worker.reports = None, None

    def _died(self, worker: _Worker, now: float) -> None:
        code = worker.process.exitcode if worker.process is not None else None
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        if worker.report is not None:
            worker.carried.append(worker.report.stats)
            worker.report = None
        worker.deaths += 1
        live = live_cameras(self.config, worker.cameras)
        finished = {name for name, status in worker.shown.items() if status.state == "finished"}
        files = [name for name in worker.cameras if name not in live and name not in finished]
        again = [] if self._stop.is_set() else [*live, *(files if worker.deaths <= FILE_RESTARTS else [])]
        lost = [name for name in [*live, *files] if name not in again]
        if lost:
            reason = (f"its worker process died ({how}), {worker.deaths} time(s); not started again "
                      + ("as the run was stopping" if self._stop.is_set()
                         else f"(a file camera is resumed {FILE_RESTARTS} times at most)"))
            worker.failed.update(dict.fromkeys(lost, reason))
            self.notify(f"processes: cameras {', '.join(lost)} failed: their worker process died ({how}), "
                        f"{worker.deaths} time(s); not started again")
        if not again:
            return
        if now - worker.started_at >= STEADY_S:
            worker.restarts = 0
        delay = RESTART_DELAYS_S[min(worker.restarts, len(RESTART_DELAYS_S) - 1)]
        worker.restarts += 1
        worker.cameras, worker.restart_at = again, now + delay
        resumed = [name for name in again if name in files]
        self.notify(f"processes: cameras {', '.join(again)}: their worker process died ({how}); starting it "
                    f"again in {delay:g} s" + (f" (files from their checkpoints: {', '.join(resumed)})"
                                               if resumed else ""))

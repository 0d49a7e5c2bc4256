"""`facetrail run CONFIG`: watch the configured cameras until stopped."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Literal, Protocol

from rich.live import Live
from rich.table import Table

from facetrail.cli.common import CommandError, actor_of, err, out, stdout_is_tty
from facetrail.cli.overload import OverloadNotice
from facetrail.config.cluster import ClusterSettings, RayConnection
from facetrail.config.loader import load_config
from facetrail.config.schema import cluster_database_problem
from facetrail.pipeline.processes import ProcessRun
from facetrail.pipeline.runner import Pipeline, PipelineStats
from facetrail.video.camera import CameraStatus
from facetrail.video.record_stream import RecordStatus

STATUS_EVERY_S = 10.0
log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the subcommand."""
    parser = sub.add_parser("run", help="watch the cameras of a configuration file",
                            description="Run the video pipeline: read every camera, track and recognise faces, "
                                        "store sightings, raise events and deliver them (MQTT, webhooks). "
                                        "Stops on Ctrl-C or SIGTERM, or when every file camera has ended.")
    parser.add_argument("config", type=Path, help="the YAML configuration (see examples/config.yml)")
    parser.add_argument("--forever", action="store_true",
                        help="keep running after every camera ended (default: stop when all have ended)")
    parser.add_argument("--actor", default=None, help="who runs it, for the audit log")
    parser.add_argument("--ray", metavar="ADDRESS", default=None,
                        help="run the cameras on the Ray cluster whose head is at HOST:PORT (as a cluster: "
                             "section with ray.address would; needs a PostgreSQL database)")
    parser.add_argument("--processes", metavar="N|auto", type=processes_arg, default=None,
                        help="split the cameras over N worker processes on this machine (auto: one per CPU); "
                             "overrides the configuration's processes:")
    parser.set_defaults(run=run)


def processes_arg(value: str) -> int | Literal["auto"]:
    """``auto`` or a positive number."""
    if value == "auto":
        return "auto"
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: a number of processes (1 or more) or auto")
    return int(value)


def run(args: argparse.Namespace) -> int:
    """Load, start, show status, stop cleanly."""
    config = load_config(args.config)
    cluster = config.cluster
    if args.ray is not None:
        address = RayConnection(address=args.ray)
        cluster = dataclasses.replace(cluster, ray=address) if cluster else ClusterSettings(ray=address)
    if cluster is not None and (args.processes is not None or config.processes != 1):
        raise CommandError(f"{args.config}: --processes / processes: cannot be used with a cluster (its camera "
                           "groups already are processes)")
    if cluster is not None:
        problem = cluster_database_problem(config.database.url)
        if problem:
            raise CommandError(f"{args.config}: {problem}")
        from facetrail.cli.cluster_run import run_on_cluster  # imports Ray: only for a cluster run

        return run_on_cluster(config, cluster, actor=actor_of(args), forever=args.forever)
    if args.processes is not None:
        config = config.model_copy(update={"processes": args.processes})
        problem = config.processes_problem()
        if problem:
            raise CommandError(f"{args.config}: {problem.replace('processes:', '--processes:', 1)}")
    processes = config.worker_processes()
    pipeline: Running
    if processes > 1:
        pipeline = ProcessRun(config, processes, actor=actor_of(args),
                              notify=lambda line: err.print(line, markup=False))
        err.print(f"running {sum(len(w.cameras) for w in pipeline.workers)} camera(s) in {len(pipeline.workers)} "
                  "worker processes", markup=False)
    else:
        pipeline = Pipeline(config, actor=actor_of(args))
    stop = threading.Event()
    _stop_on_signals(stop)
    failure: list[BaseException] = []

    def work() -> None:
        try:
            pipeline.run(stop, until_done=not args.forever)
        except Exception as error:  # reported as one line below; the log has the details
            log.debug("the pipeline stopped", exc_info=True)
            failure.append(error)

    worker = threading.Thread(target=work, name="pipeline", daemon=True)
    worker.start()
    notice, overload = DeliveryNotice(), OverloadNotice(processes)

    def check_overload() -> None:
        line = overload.check(pipeline.status())
        if line is not None:
            err.print(line, markup=False)

    if stdout_is_tty():
        with Live(status_table(pipeline.status(), pipeline.stats), console=out, refresh_per_second=2) as live:
            while worker.is_alive():
                worker.join(0.5)
                notice.check(pipeline)
                check_overload()
                live.update(status_table(pipeline.status(), pipeline.stats))
    else:
        last = time.monotonic()
        while worker.is_alive():
            worker.join(0.5)
            notice.check(pipeline)
            check_overload()
            if time.monotonic() - last >= STATUS_EVERY_S:
                last = time.monotonic()
                for status in pipeline.status():
                    err.print(status_line(status), markup=False)
                for record in pipeline.record_status():
                    err.print(record_line(record), markup=False)
    if failure:
        raise CommandError(f"the pipeline stopped: {type(failure[0]).__name__}: {failure[0]} "
                           "(run with -vv for details); stored sightings and events are kept")
    stats = pipeline.stats
    for status in pipeline.status():
        out.print(status_line(status), markup=False)
    for record in pipeline.record_status():
        out.print(record_line(record), markup=False)
    out.print(f"analysed {stats.frames} frame(s), {stats.faces} face(s), embedded {stats.embedded}; "
              f"{stats.tracks} track(s), {stats.named_tracks} named; {stats.events} event(s)")
    failures = pipeline.failures if isinstance(pipeline, ProcessRun) else {}
    if failures:
        reasons = "; ".join(f"{camera}: {reason}" for camera, reason in sorted(failures.items()))
        raise CommandError(f"cameras failed: {reasons}; the other cameras ran to the end, stored sightings and "
                           "events are kept")
    return 0


class Running(Protocol):
    """What the status display reads: a one-process pipeline or a run's worker processes."""

    @property
    def stats(self) -> PipelineStats: ...

    @property
    def delivery_elsewhere(self) -> str | None: ...

    def status(self) -> list[CameraStatus]: ...

    def record_status(self) -> list[RecordStatus]: ...

    def run(self, stop: threading.Event | None = None, *, until_done: bool = True) -> PipelineStats: ...


class DeliveryNotice:
    """Says in one line when another run on the same database delivers the events, and when this one takes over."""

    def __init__(self) -> None:
        self._elsewhere = False

    def check(self, pipeline: Running) -> None:
        holder = pipeline.delivery_elsewhere
        if holder is not None and not self._elsewhere:
            err.print(f"delivery: another facetrail run on this database delivers the events ({holder}); this run "
                      "runs its cameras and leaves its messages in the outbox for it", markup=False)
        elif holder is None and self._elsewhere:
            err.print("delivery: the other run stopped delivering; this run delivers the events now", markup=False)
        self._elsewhere = holder is not None


def status_line(status: CameraStatus) -> str:
    """One camera's status as a line."""
    last = f", last frame {status.last_frame_at:%H:%M:%S}" if status.last_frame_at else ""
    error = f", error: {status.error}" if status.error else ""
    return (f"camera {status.name}: {status.state}, {status.frames_analysed} analysed, "
            f"{status.frames_skipped_motion} skipped (no motion){last}{error}")


def record_line(status: RecordStatus) -> str:
    """One camera's record stream as a line."""
    size = f", {status.size[0]}x{status.size[1]}" if status.size else ""
    error = f", error: {status.error}" if status.error and status.state in ("retrying", "failed") else ""
    return (f"camera {status.name} record stream: {status.state}{size}, {status.frames_decoded} decoded, "
            f"{status.ring_bytes / 1e6:.1f} MB kept{error}")


def status_table(statuses: list[CameraStatus], stats: PipelineStats) -> Table:
    """Live view of the cameras and the totals."""
    table = Table(title=f"facetrail: {stats.frames} frames, {stats.tracks} tracks, {stats.named_tracks} named, "
                        f"{stats.events} events", title_justify="left")
    for column in ("camera", "state", "analysed fps", "dropped/s", "analysed", "no motion", "last frame", "error"):
        table.add_column(column)
    for status in statuses:
        table.add_row(status.name, status.state, f"{status.analysed_fps:.1f} of {status.target_fps:g}",
                      f"{status.dropped_fps:.1f}" + (" overloaded" if status.overloaded else ""),
                      str(status.frames_analysed),
                      str(status.frames_skipped_motion),
                      f"{status.last_frame_at:%H:%M:%S}" if status.last_frame_at else "-", status.error or "")
    return table


def _stop_on_signals(stop: threading.Event) -> None:
    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)

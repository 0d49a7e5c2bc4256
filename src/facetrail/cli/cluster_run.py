"""`facetrail run` on a Ray cluster: the driver's progress and its one-line outcome."""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType

from facetrail.cli.common import CommandError, err, out
from facetrail.cli.run_cmd import status_line
from facetrail.config.cluster import ClusterSettings
from facetrail.config.schema import FacetrailConfig
from facetrail.store.models import CameraPlacement, as_utc

STATUS_EVERY_S = 10.0
log = logging.getLogger(__name__)


def run_on_cluster(config: FacetrailConfig, settings: ClusterSettings, *, actor: str, forever: bool) -> int:
    """Run every camera group on the cluster until they end (or Ctrl-C / SIGTERM); print where each ran."""
    try:
        from ray.exceptions import RayError

        from facetrail.cluster.driver import ClusterLost, ClusterRun, PoolNotStarted
    except ImportError as error:
        raise CommandError(f"a cluster run needs Ray ({error}): pip install 'facetrail[cluster]'") from None
    stop = threading.Event()

    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    try:
        driver = ClusterRun(config, settings, actor=actor, notify=lambda line: err.print(line, markup=False))
    except ConnectionError as error:
        raise CommandError(str(error)) from None
    last = [time.monotonic()]

    def progress(run: ClusterRun) -> None:
        if time.monotonic() - last[0] >= STATUS_EVERY_S:
            last[0] = time.monotonic()
            for group in run.stats.groups:
                for status in group.statuses:
                    err.print(f"{status_line(status)} (node {group.node})", markup=False)
            for line in placement_lines(run.placements()):
                err.print(line, markup=False)

    try:
        stats = driver.run(stop, until_done=not forever, on_poll=progress)
    except ClusterLost as error:
        raise CommandError(f"the cluster run stopped: {error}; stored sightings and events are kept, and "
                           "running it again resumes each camera from its checkpoint") from None
    except PoolNotStarted as error:
        raise CommandError(f"the cluster run stopped: {error}; stored sightings and events are kept") from None
    except (RayError, ConnectionError) as error:
        log.debug("the cluster run stopped", exc_info=True)
        raise CommandError(f"the cluster run stopped: {type(error).__name__}: {error} (run with -vv for "
                           "details); stored sightings and events are kept, and running it again resumes "
                           "each camera from its checkpoint") from None
    for group in stats.groups:
        for status in group.statuses:
            out.print(status_line(status), markup=False)
    for line in placement_lines(driver.placements()):
        out.print(line, markup=False)
    failures = driver.failures
    if failures:
        reasons = "; ".join(f"{camera}: {reason}" for camera, reason in sorted(failures.items()))
        raise CommandError(f"the cluster run stopped: {reasons}; stored sightings and events are kept")
    totals = stats.totals
    out.print(f"analysed {totals.frames} frame(s), {totals.faces} face(s), embedded {totals.embedded}; "
              f"{totals.tracks} track(s), {totals.named_tracks} named; {totals.events} event(s) "
              f"(counts since each group's last start)")
    if stats.embedding:
        faces = sum(actor.batches.rows for actor in stats.embedding)
        batches = sum(actor.batches.batches for actor in stats.embedding)
        requests = sum(actor.batches.requests for actor in stats.embedding)
        out.print(f"embedding pool: {len(stats.embedding)} actor(s) embedded {faces} face(s) of {requests} "
                  f"request(s) in {batches} batch(es), {faces / max(1, batches):.2f} faces a batch, largest "
                  f"{max(actor.batches.largest for actor in stats.embedding)} (since each actor's last start); "
                  f"{sum(group.resent for group in stats.groups)} request(s) sent again after an actor failed")
    return 0


def placement_lines(rows: dict[str, CameraPlacement]) -> list[str]:
    """One line per camera: the node running it, and its last move."""
    lines = []
    for name, row in sorted(rows.items()):
        moved = (f", moved from {row.moved_from} at {as_utc(row.moved_at):%H:%M:%S}"
                 if row.moved_from and row.moved_at else "")
        position = f", read to {row.position_s:.1f} s" if row.position_s is not None else ""
        lines.append(f"camera {name}: on node {row.node}{moved}{position}")
    return lines

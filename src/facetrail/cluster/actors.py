"""A camera group: one actor on some node of the cluster running the pipeline for its cameras.

Ray restarts the actor (``max_restarts=-1``) on another node when its node dies, and a restart is a fresh
``__init__``: it records the move, reads each camera's checkpoint and resumes from there. With a pool of
embedding actors (``cluster.embedding.actors``) the group's pipeline embeds its faces through the pool.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from facetrail.cluster.embedding import EmbeddingPool
from facetrail.cluster.nodes import node_label
from facetrail.config.schema import FacetrailConfig
from facetrail.pipeline.checkpoints import Checkpoints
from facetrail.pipeline.groups import group_config
from facetrail.pipeline.orphans import open_watchlist_events
from facetrail.pipeline.runner import Pipeline, PipelineStats
from facetrail.store.db import Database
from facetrail.store.placements import place
from facetrail.video.camera import CameraStatus
from facetrail.vision.registry import RECOGNISERS

log = logging.getLogger(__name__)


@dataclass
class GroupStatus:
    """What the driver learns from one poll of a group."""

    cameras: list[str]
    node: str
    statuses: list[CameraStatus]
    stats: PipelineStats
    done: bool
    error: str | None = None
    resumed: dict[str, float] = field(default_factory=dict)  # camera -> media time it resumed after
    resent: int = 0  # embedding requests sent again after their actor failed them (since the group's start)


class CameraGroup:
    """Runs one group's cameras until they end or the driver stops it."""

    def __init__(self, config: FacetrailConfig, cameras: list[str], run_id: str, origin: datetime,
                 until_done: bool, actor: str, embedding: Sequence[str] = ()) -> None:
        """``embedding``: the names of the pool's embedding actors; empty: the group embeds its own faces."""
        self.cameras = cameras
        self.node = node_label()
        assert config.database.url is not None  # the schema refuses a cluster without PostgreSQL
        db = Database(config.database.url)
        with db.session() as session:
            points = place(session, cameras, run_id=run_id, node=self.node, origin=origin)
        orphans = open_watchlist_events(db, cameras)
        db.dispose()
        self.resumed = {name: point.position_s for name, point in points.items() if point.position_s is not None}
        clock = next((p.clock_origin for p in points.values() if p.clock_origin is not None), origin)
        log.info("group %s on %s: resuming %s", cameras, self.node, self.resumed or "from the start")
        self._error: str | None = None
        self._stop = threading.Event()
        self.embedding = EmbeddingPool(embedding, RECOGNISERS[config.recogniser].model_id) if embedding else None
        self.pipeline = Pipeline(group_config(config, cameras), start_time=clock, actor=actor,
                                 positions=self.resumed, deliver=False, embedder=self.embedding)
        checkpoints = Checkpoints(self.pipeline.gallery.db, [r.camera for r in self.pipeline.cameras],
                                  {name: self.resumed.get(name, 0.0) for name in cameras})
        self.pipeline.consumers.append(checkpoints)
        self.pipeline.recorder.resume(orphans)
        checkpoints.end_orphans = self.pipeline.recorder.end_orphans
        self._thread = threading.Thread(target=self._run, args=(until_done,), name="camera-group", daemon=True)
        self._thread.start()

    def _run(self, until_done: bool) -> None:
        try:
            self.pipeline.run(self._stop, until_done=until_done)
        except Exception as error:  # reported to the driver by status(); the actor's log has the details
            log.exception("group %s: the pipeline stopped", self.cameras)
            self._error = f"{type(error).__name__}: {error}"

    def status(self) -> GroupStatus:
        """The group's cameras, node, counts; ``done`` once its pipeline stopped."""
        return GroupStatus(self.cameras, self.node, self.pipeline.status(), self.pipeline.stats,
                           not self._thread.is_alive(), self._error, self.resumed,
                           self.embedding.resent if self.embedding is not None else 0)

    def abandon(self) -> None:
        """End this process now, as a crash would: what is stored stays, open events stay open for the next run.

        The driver calls it when the cluster's head is lost: the run cannot go on, and closing the tracks here
        would make the next run (resuming from the checkpoints) announce the people still in view again.
        """
        log.warning("group %s: the driver lost the cluster; stopping at once", self.cameras)
        threading.Timer(0.2, os._exit, args=(3,)).start()  # after this call's answer is on its way

    def stop(self, timeout: float = 60.0) -> GroupStatus:
        """Stop the cameras (open tracks end, everything is stored) and report."""
        self._stop.set()
        self._thread.join(timeout)
        return self.status()

"""The driver of a cluster run: places the camera groups, watches them, delivers, and stops cleanly.

``facetrail run`` becomes this when the configuration has a ``cluster:`` section (or ``--ray`` is given).
With ``cluster.embedding.actors`` the driver first starts a pool of embedding actors that every group embeds
through (:mod:`facetrail.cluster.embedding`), and kills it once the groups stopped.
Each group is an actor that Ray restarts elsewhere when its node dies (``max_restarts=-1``); the driver only
notices (a group it cannot reach), reports the move once the group answers from its new node, and warns when
that takes longer than ``restart_deadline_s``. When the head itself dies the driver cannot reach the cluster:
it stops with :class:`ClusterLost`, everything stored stays stored, and the next run resumes from each
camera's checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError

from facetrail.cluster.actors import CameraGroup, GroupStatus
from facetrail.cluster.embedding import ActorStats, actor_names, start_actors
from facetrail.config.cluster import ClusterSettings
from facetrail.config.schema import FacetrailConfig, cluster_database_problem
from facetrail.events.outlet import EventOutlet
from facetrail.pipeline import settings as cfg
from facetrail.pipeline.delivery import Delivery
from facetrail.pipeline.groups import camera_groups
from facetrail.pipeline.runner import PipelineStats, summed
from facetrail.store.db import Database
from facetrail.store.models import CameraPlacement
from facetrail.store.placements import placements
from facetrail.vision.registry import RECOGNISERS

log = logging.getLogger(__name__)
CALL_TIMEOUT_S = 10.0  # one status call; a group that does not answer is counted away, not waited for
STOP_TIMEOUT_S = 120.0
# The head has not answered for this long: stop. It is asked once per poll, and a poll may wait CALL_TIMEOUT_S
# for the groups, so it is more than that; and Ray itself ends a driver that cannot reach the head for
# RAY_gcs_rpc_server_reconnect_timeout_s (60 s by default): the driver must be done before.
HEAD_LOST_S = 20.0
ABANDON_WAIT_S = 5.0


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """ConnectionError when nothing listens at ``address`` (HOST:PORT; ``auto`` is Ray's to find)."""
    host, _, port = address.rpartition(":")
    if address == "auto" or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as error:
        raise ConnectionError(f"no Ray cluster answers at {address} ({error.strerror or error}); start its "
                              "head with `ray start --head --port PORT`") from None


class ClusterLost(RuntimeError):
    """The driver lost the cluster (its head died or is unreachable)."""


class PoolNotStarted(RuntimeError):
    """The pool of embedding actors could not start (no node has what they ask for, or their model failed)."""


@dataclass
class _Group:
    cameras: list[str]
    handle: Any
    status: GroupStatus | None = None
    away_since: float | None = None  # monotonic: since when it does not answer
    failed: str | None = None  # the actor could not start (it is not restarted)
    warned: bool = False


@dataclass
class ClusterStats:
    """Totals of every group, and the groups' latest statuses."""

    totals: PipelineStats = field(default_factory=PipelineStats)
    groups: list[GroupStatus] = field(default_factory=list)
    embedding: list[ActorStats] = field(default_factory=list)  # each embedding actor's, read when the run stops


class ClusterRun:
    """One run of a configuration's cameras on a Ray cluster."""

    def __init__(self, config: FacetrailConfig, settings: ClusterSettings, *, actor: str = "pipeline",
                 notify: Callable[[str], None] = log.warning) -> None:
        problem = cluster_database_problem(config.database.url)
        if problem or config.database.url is None:
            raise ValueError(problem)
        self.config, self.settings, self.actor, self.notify = config, settings, actor, notify
        check_reachable(settings.ray.address)  # before anything is opened: ray.init waits minutes for nobody
        self.run_id = uuid.uuid4().hex[:12]
        self.db = Database(config.database.url)
        cameras = [name for name, camera in config.cameras.items() if camera.enabled]
        self.delivery = Delivery(config, self.db, EventOutlet(cfg.channels(config)), cameras)
        self.groups: list[_Group] = []
        self.pool: list[Any] = []  # the embedding actors' handles (cluster.embedding.actors)
        self._pool_ready: dict[Any, Any] = {}  # their ready() calls not yet answered -> the actor asked
        self.stats = ClusterStats()
        self.lost = False  # the head stopped answering
        self.pool_failed = False  # the embedding actors could not start
        self._probe: threading.Thread | None = None
        self._head_seen = self._started = time.monotonic()

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self, *, until_done: bool = True) -> None:
        """Connect to the cluster, start delivery, place every group."""
        ray.init(address=self.settings.ray.address, namespace="facetrail", logging_level=logging.WARNING,
                 log_to_driver=False)
        self.delivery.start()
        resources = ray.cluster_resources()  # type: ignore[no-untyped-call]
        groups = camera_groups(self.config, self.settings.cameras_per_group)
        pool = self.settings.embedding
        # without a setting, the groups and the embedding actors share the cluster's GPUs equally
        share = min(1.0, resources.get("GPU", 0.0) / max(1, len(groups) + pool.actors))
        gpus = share if self.settings.gpus_per_group is None else self.settings.gpus_per_group
        self._started = self._head_seen = time.monotonic()
        if pool.actors:  # first, so that it is placed before the groups and loading while they start
            names = actor_names(self.run_id, pool)
            self.pool = start_actors(cfg.engine_config(self.config), pool,
                                     gpus if pool.gpus_per_actor is None else pool.gpus_per_actor, names)
            self._pool_ready = {actor.ready.remote(): actor for actor in self.pool}
        remote = ray.remote(CameraGroup).options(
            max_restarts=-1, max_task_retries=0, num_cpus=self.settings.cpus_per_group, num_gpus=gpus,
            resources=dict(self.settings.resources) or None, scheduling_strategy="SPREAD")
        origin = datetime.now(UTC)
        for cameras in groups:
            handle = remote.remote(self.config, cameras, self.run_id, origin, until_done, self.actor,
                                   actor_names(self.run_id, pool) if pool.actors else [])
            self.groups.append(_Group(cameras, handle))

    def poll(self) -> bool:
        """Ask every group for its status (at most ``CALL_TIMEOUT_S``); True once every group is done.

        PoolNotStarted when the embedding actors cannot start: every group would wait on them.
        """
        self._ask_head_aside()
        self._check_pool()
        asking = [group for group in self.groups if group.failed is None]
        calls = [group.handle.status.remote() for group in asking]
        ready, _ = ray.wait(calls, num_returns=len(calls), timeout=CALL_TIMEOUT_S)  # all at once, one wait
        answered = set(ready)
        now = time.monotonic()
        for group, call in zip(asking, calls, strict=True):
            try:
                if call not in answered:
                    raise GetTimeoutError(f"no answer within {CALL_TIMEOUT_S:g} s")
                status: GroupStatus = ray.get(call)
            except (GetTimeoutError, RayError) as error:
                if isinstance(error, RayActorError) and error.actor_init_failed:  # for good: it is not restarted
                    self._fail(group, str(error).strip().splitlines()[-1][:500])
                    continue
                if group.status is None and now - self._started > self.settings.start_timeout_s:
                    self._fail(group, f"not started after {self.settings.start_timeout_s:g} s: does a node have "
                                      f"{self.settings.cpus_per_group:g} CPU(s) and the resources "
                                      f"{dict(self.settings.resources) or '{}'} free?")
                    continue
                if group.away_since is None:
                    group.away_since = now
                    self.notify(f"cluster: cameras {', '.join(group.cameras)} do not answer "
                                f"({type(error).__name__}); waiting for them to restart")
                elif not group.warned and now - group.away_since > self.settings.restart_deadline_s:
                    group.warned = True
                    self.notify(f"cluster: cameras {', '.join(group.cameras)} are not back after "
                                f"{self.settings.restart_deadline_s:g} s: is there a node with the resources they "
                                "need, and does the head notice dead nodes in time (RAY_health_check_*)?")
                continue
            if group.away_since is not None:
                self.notify(f"cluster: cameras {', '.join(group.cameras)} run on {status.node} again, "
                            f"{now - group.away_since:.1f} s after they stopped answering")
                group.away_since, group.warned = None, False
            group.status = status
        if self._head_lost():
            self.lost = True
            raise ClusterLost(f"the Ray cluster's head ({self.settings.ray.address}) has not answered for "
                              f"{HEAD_LOST_S:g} s")
        self._total()
        return all(group.failed is not None or (group.status is not None and group.status.done)
                   for group in self.groups)

    @property
    def failures(self) -> dict[str, str]:
        """Why each failed group's cameras (or group's pipeline) stopped, by camera."""
        failed = {}
        for group in self.groups:
            reason = group.failed or (group.status.error if group.status is not None else None)
            if reason:
                failed.update(dict.fromkeys(group.cameras, reason))
        return failed

    def stop(self) -> None:
        """Stop every group (their tracks end and are stored), deliver what is due, disconnect.

        Once the head is lost the groups are abandoned instead (they end as a crash would, leaving their
        checkpoints and open events for the next run) and Ray is left alone: every call needing the head hangs.
        """
        if self.pool_failed:
            # every group waits on the pool (its first face never embedded, so nothing of it was stored): a clean
            # stop would wait for that; end them and the pool at once
            for handle in [group.handle for group in self.groups] + self.pool:
                with contextlib.suppress(RayError):
                    ray.kill(handle, no_restart=True)
            self.delivery.stop()
            ray.shutdown()
            self.db.dispose()
            return
        if self.lost:
            for group in self.groups:
                group.handle.abandon.remote()  # reaches the worker directly: no head needed
            ray.wait([group.handle.status.remote() for group in self.groups], num_returns=len(self.groups),
                     timeout=ABANDON_WAIT_S)
            self.delivery.stop()
            self.db.dispose()
            return
        try:
            pending = [group.handle.stop.remote() for group in self.groups]
            if pending:
                ready, _ = ray.wait(pending, num_returns=len(pending), timeout=STOP_TIMEOUT_S)
                for ref in ready:
                    try:
                        ray.get(ref)
                    except RayError as error:
                        log.warning("a camera group did not stop cleanly: %s", error)
            for group in self.groups:
                ray.kill(group.handle, no_restart=True)
            self._pool_stats()
            for actor in self.pool:  # after the groups: a group stopping embeds its last shots
                ray.kill(actor, no_restart=True)
        except RayError as error:
            log.warning("the cluster did not answer while stopping: %s", error)
        finally:
            self.delivery.stop()
            ray.shutdown()
            self.db.dispose()

    def run(self, stop: threading.Event | None = None, *, until_done: bool = True,
            on_poll: Callable[[ClusterRun], None] | None = None) -> ClusterStats:
        """Start, poll every ``poll_s`` until stopped (or every camera ended), stop."""
        self.start(until_done=until_done)
        try:
            while not (stop is not None and stop.is_set()):
                done = self.poll()
                if on_poll is not None:
                    on_poll(self)
                if until_done and done:
                    break
                if stop is not None:
                    stop.wait(self.settings.poll_s)
                else:
                    time.sleep(self.settings.poll_s)
        finally:
            self.stop()
        return self.stats

    # -- internals -----------------------------------------------------------------------------------------

    def _check_pool(self) -> None:
        """Raise PoolNotStarted when an embedding actor failed to start, or is not up after start_timeout_s."""
        try:
            self._check_pool_started()
        except PoolNotStarted:
            self.pool_failed = True
            raise

    def _check_pool_started(self) -> None:
        if not self._pool_ready:
            return
        ready, _ = ray.wait(list(self._pool_ready), num_returns=len(self._pool_ready), timeout=0)
        for ref in ready:
            actor = self._pool_ready.pop(ref)
            try:
                model_id = ray.get(ref)
            except RayActorError as error:
                if error.actor_init_failed:
                    raise PoolNotStarted("an embedding actor failed to start: "
                                         f"{str(error).strip().splitlines()[-1][:500]}") from None
                self._pool_ready[actor.ready.remote()] = actor  # it died before answering: ask it once restarted
                continue
            expected = RECOGNISERS[self.config.recogniser].model_id
            if model_id != expected:
                raise PoolNotStarted(f"an embedding actor runs {model_id}, not the groups' {expected}")
        pool = self.settings.embedding
        if self._pool_ready and time.monotonic() - self._started > self.settings.start_timeout_s:
            raise PoolNotStarted(f"{len(self._pool_ready)} embedding actor(s) not started after "
                                 f"{self.settings.start_timeout_s:g} s: does a node have "
                                 f"{pool.cpus_per_actor:g} CPU(s) and the resources "
                                 f"{dict(pool.resources) or '{}'} free?")

    def _pool_stats(self) -> None:
        """Read each embedding actor's batches into ``stats.embedding`` (those that answer in time)."""
        if not self.pool:
            return
        calls = [actor.stats.remote() for actor in self.pool]
        ready, _ = ray.wait(calls, num_returns=len(calls), timeout=CALL_TIMEOUT_S)
        answers: list[ActorStats] = []
        for call in ready:
            with contextlib.suppress(RayError):
                answers.append(ray.get(call))
        self.stats.embedding = answers

    def _fail(self, group: _Group, reason: str) -> None:
        if group.failed is None:
            group.failed = reason
            self.notify(f"cluster: cameras {', '.join(group.cameras)} failed to start: {reason}")
            ray.kill(group.handle, no_restart=True)

    def placements(self) -> dict[str, CameraPlacement]:
        """Where each camera runs and where it ran before, as the groups recorded it."""
        with self.db.session() as session:
            rows = placements(session)
            for row in rows.values():
                session.expunge(row)
            return rows

    def _ask_head_aside(self) -> None:
        """Ask the head for the cluster's resources on a thread of its own (a call to a dead head hangs)."""
        if self._probe is None or not self._probe.is_alive():
            self._probe = threading.Thread(target=self._ask_head, name="head-probe", daemon=True)
            self._probe.start()

    def _head_lost(self) -> bool:
        """True once the head has not answered for ``HEAD_LOST_S``."""
        return time.monotonic() - self._head_seen > HEAD_LOST_S

    def _ask_head(self) -> None:
        try:
            ray.cluster_resources()  # type: ignore[no-untyped-call]
        except Exception:  # any failure to reach the head means the same here
            return
        self._head_seen = time.monotonic()

    def _total(self) -> None:
        statuses = [group.status for group in self.groups if group.status is not None]
        self.stats = ClusterStats(summed(status.stats for status in statuses), statuses, self.stats.embedding)

"""Doors in the pipeline: per-frame shots of the tracks at each door, the decisions, their log and the commands.

For a door's camera, every analysed frame of every confirmed track inside the
door's zone is judged (size, pose, sharpness), embedded and matched, and its
106 landmarks go to the track's liveness check. Decisions are written to the
door log with their evidence; a grant sends the door command on a worker
thread (so a slow controller never holds the cameras), and the command's
fate is written back to the decision. A second factor arrives through the
API, which turns a pending decision into a grant in the store; this service
sees it there and sends the command, or denies it when the time is up.
Tailgating, a failed command and a forced door are events, raised through the
:class:`~facetrail.events.outlet.EventOutlet` like every other event.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import select, update

from facetrail.clock import Clock, SystemClock
from facetrail.config.doors import DoorConfig
from facetrail.config.schema import FacetrailConfig
from facetrail.door.commands import (
    DoorCommand,
    DoorCommandSender,
    HttpDoorSender,
    HttpDoorSettings,
    MqttDoorChannel,
    MqttDoorSender,
    MqttDoorSettings,
)
from facetrail.door.decision import DoorDecider, DoorDecision, DoorRule, Shot
from facetrail.events.messages import EventView
from facetrail.events.outlet import EventOutlet, new_uid
from facetrail.pipeline.analyzer import AnalysedFrame, FrameAnalyzer
from facetrail.pipeline.matcher import GalleryMatcher
from facetrail.pipeline.pictures import jpeg
from facetrail.pipeline.settings import values_of
from facetrail.store.db import Database
from facetrail.store.doors import FORCED, active_consents, record_door_state
from facetrail.store.models import DoorDecisionRecord, Watchlist, WatchlistMember
from facetrail.vision.landmarks106 import Landmarks106

log = logging.getLogger(__name__)
ALLOWED_REFRESH_S = 5.0
FACTOR_POLL_S = 0.25
FACTOR_GRACE_S = 5.0  # a second factor's grant is still acted on this long after its time-out
TIMINGS_KEPT = 1000  # the newest decisions' timings (for the benchmark); older ones are dropped


@dataclass(frozen=True)
class DoorFace:
    """A confirmed track's face in this frame, at a door's camera."""

    track_id: int
    track_uid: str
    index: int  # the face's index in the analysed frame


@dataclass
class DoorTiming:
    """Moments (the service's monotonic clock) of one decision, for the benchmark: first usable shot, decision,
    command done."""

    door: str
    outcome: str
    first_usable: float
    decided: float
    command_done: float | None = None


@dataclass
class _Door:
    name: str
    config: DoorConfig
    decider: DoorDecider
    senders: list[DoorCommandSender]
    uids: dict[int, str] = field(default_factory=dict)  # track id -> track uid
    first_usable: dict[int, float] = field(default_factory=dict)  # track id -> monotonic time
    best: dict[int, tuple[float, bytes]] = field(default_factory=dict)  # track id -> (quality, thumbnail JPEG)


class DoorService:
    """Every configured door of one pipeline."""

    def __init__(self, config: FacetrailConfig, db: Database, matcher: GalleryMatcher, analyzer: FrameAnalyzer,
                 *, default_threshold: float, outlet: EventOutlet | None = None, clock: Clock | None = None) -> None:
        """``outlet``: where door events go (share the recorder's so the runner sees what was enqueued);
        default: one of its own on ``config``'s channels. ``clock``: what time-outs and refreshes are measured by
        (default: the system's; tests pass a ``ManualClock``)."""
        self.db, self.matcher, self.analyzer = db, matcher, analyzer
        self.clock: Clock = clock or SystemClock()
        self.outlet = outlet if outlet is not None else EventOutlet.for_config(config)
        self.default_threshold = default_threshold
        self.snapshot_quality = config.events.snapshot_quality  # the best shots' JPEG quality, as for events
        self.landmarks = Landmarks106() if config.doors else None
        self._mqtt: dict[tuple[str, int, str], MqttDoorSender] = {}
        self.doors: dict[str, _Door] = {}
        for name, door in config.doors.items():
            self.doors[name] = _Door(name, door, DoorDecider(self._rule(name, door, frozenset())),
                                     self._senders(config, name, door))
        self.timings: deque[DoorTiming] = deque(maxlen=TIMINGS_KEPT)
        self._commands = ThreadPoolExecutor(max_workers=2, thread_name_prefix="door-command")
        self._last_allowed = -float("inf")
        self._last_factor_poll = -float("inf")
        self._lock = threading.Lock()

    @property
    def cameras(self) -> set[str]:
        """Cameras that watch a door."""
        return {door.config.camera for door in self.doors.values()}

    def start(self) -> None:
        """Connect the MQTT senders, load who may pass, and close the log of commands a stopped run left open."""
        for sender in self._mqtt.values():
            sender.start()
        self.refresh_allowed()
        with self.db.session() as session:
            session.execute(update(DoorDecisionRecord).where(
                DoorDecisionRecord.door.in_(list(self.doors)), DoorDecisionRecord.command == "sending").values(
                command="failed", command_error="facetrail stopped before the command's outcome was known"))

    def stop(self) -> None:
        """Let commands in flight finish (each has a deadline), then disconnect."""
        self._commands.shutdown(wait=True)
        for mqtt in self._mqtt.values():
            mqtt.stop()
        for door in self.doors.values():
            for sender in door.senders:
                if isinstance(sender, HttpDoorSender):
                    sender.close()

    # -- per frame ----------------------------------------------------------------------------------------

    def frame(self, camera: str, at: datetime, result: AnalysedFrame, faces: Sequence[DoorFace],
              embedded: Mapping[int, np.ndarray] | None = None) -> None:
        """Judge the faces at this camera's doors in one frame and act on what is decided.

        ``embedded``: face index -> embedding the pipeline already made of this frame (not made again).
        """
        doors = [d for d in self.doors.values() if d.config.camera == camera]
        if not doors:
            return
        height, width = result.image.shape[:2]
        inside = {door.name: [f for f in faces if door.decider.rule.in_zone(result.faces.xyxy[f.index], width,
                                                                               height)] for door in doors}
        wanted = sorted({f.index for found in inside.values() for f in found})
        shots = {i: result.shot(i) for i in wanted}
        usable = [i for i in wanted if shots[i].usable]
        matches: dict[int, tuple[int | None, float]] = {}
        if usable:
            ready = embedded or {}
            missing = [i for i in usable if i not in ready]
            made = dict(zip(missing, self.analyzer.embed([(result, i) for i in missing]), strict=True))
            vectors = np.stack([ready[i] if i in ready else made[i] for i in usable])
            matches = dict(zip(usable, self.matcher(vectors), strict=True))
        points = {}
        if usable and self.landmarks is not None:
            found = self.landmarks.predict_many(result.image, result.faces.xyxy[usable])
            points = dict(zip(usable, found, strict=True))
        now = self.clock.monotonic()
        for door in doors:
            door_shots = []
            for face in inside[door.name]:
                quality = shots[face.index].quality
                identity, score = matches.get(face.index, (None, -1.0))
                door.uids[face.track_id] = face.track_uid
                if face.index in matches and quality.face_px >= door.decider.rule.min_face_px:
                    door.first_usable.setdefault(face.track_id, now)
                    if quality.score > door.best.get(face.track_id, (-1.0, b""))[0]:
                        door.best[face.track_id] = (quality.score, jpeg(result.thumbnail(face.index),
                                                                         self.snapshot_quality))
                door_shots.append(Shot(face.track_id, at, quality.face_px, quality.score, quality.yaw,
                                       face.index in matches, identity, score, points.get(face.index)))
            for decision in door.decider.observe(at, door_shots):
                self._record(door, decision)

    def ended(self, camera: str, track_id: int, at: datetime) -> None:
        """A track left the camera: an undecided approach is logged as no decision."""
        for door in self.doors.values():
            if door.config.camera == camera:
                decision = door.decider.ended(track_id, at)
                if decision is not None:
                    self._record(door, decision)
                door.uids.pop(track_id, None)
                door.first_usable.pop(track_id, None)
                door.best.pop(track_id, None)

    def merged(self, camera: str, survivor_id: int, absorbed_id: int) -> None:
        """The tracker joined track ``absorbed_id`` to ``survivor_id`` (the same person): one approach, not two."""
        for door in self.doors.values():
            if door.config.camera != camera:
                continue
            door.decider.merge(survivor_id, absorbed_id)
            door.uids.pop(absorbed_id, None)
            first = door.first_usable.pop(absorbed_id, None)
            if first is not None:
                door.first_usable[survivor_id] = min(first, door.first_usable.get(survivor_id, first))
            best = door.best.pop(absorbed_id, None)
            if best is not None and best[0] > door.best.get(survivor_id, (-1.0, b""))[0]:
                door.best[survivor_id] = best

    # -- housekeeping -------------------------------------------------------------------------------------

    def housekeeping(self) -> None:
        """Refresh who may pass; send the commands of decisions a second factor granted; expire the others."""
        now = self.clock.monotonic()
        if now - self._last_allowed >= ALLOWED_REFRESH_S:
            self.refresh_allowed()
        if now - self._last_factor_poll >= FACTOR_POLL_S and any(d.config.second_factor
                                                                  for d in self.doors.values()):
            self._last_factor_poll = now
            self._settle_factors()

    def refresh_allowed(self) -> None:
        """Members of each door's watchlists who have a consent in force for it."""
        self._last_allowed = self.clock.monotonic()
        with self.db.session() as session:
            for door in self.doors.values():
                members = set(session.scalars(
                    select(WatchlistMember.identity_id).join(Watchlist, Watchlist.id == WatchlistMember.watchlist_id)
                    .where(Watchlist.name.in_(door.config.allow))))
                consented = {c.identity_id for c in active_consents(session, door.name)}
                allowed = frozenset(members & consented)
                if allowed != door.decider.rule.allowed:
                    door.decider.rule = self._rule(door.name, door.config, allowed)

    def _settle_factors(self) -> None:
        with self.db.session() as session:
            for door in self.doors.values():
                if not door.config.second_factor:
                    continue
                now = self.clock.now()
                expired = now - timedelta(seconds=door.config.factor_timeout_s)
                lapsed = session.execute(select(DoorDecisionRecord.id, DoorDecisionRecord.track_uid).where(
                    DoorDecisionRecord.door == door.name, DoorDecisionRecord.outcome == "pending",
                    DoorDecisionRecord.decided_at < expired)).all()
                if lapsed:
                    session.execute(update(DoorDecisionRecord).where(
                        DoorDecisionRecord.id.in_([row.id for row in lapsed])).values(
                        outcome="deny", reason=f"no second factor within {door.config.factor_timeout_s:g} s"))
                    # Whoever is still at the door gets a new decision (and a new chance to type the code).
                    tracks = {uid: track for track, uid in door.uids.items()}
                    for row in lapsed:
                        if row.track_uid in tracks:
                            door.decider.reopen(tracks[row.track_uid])
                # A grant found long after its face (this service was stopped meanwhile) must not open the door.
                stale = expired - timedelta(seconds=FACTOR_GRACE_S)
                session.execute(update(DoorDecisionRecord).where(
                    DoorDecisionRecord.door == door.name, DoorDecisionRecord.outcome == "grant",
                    DoorDecisionRecord.command.is_(None), DoorDecisionRecord.decided_at < stale).values(
                    command="failed", command_error="not sent: the second factor's grant was seen too late"))
                granted = session.execute(select(DoorDecisionRecord.id).where(
                    DoorDecisionRecord.door == door.name, DoorDecisionRecord.outcome == "grant",
                    DoorDecisionRecord.command.is_(None))).scalars().all()
                for decision_id in granted:
                    session.execute(update(DoorDecisionRecord).where(DoorDecisionRecord.id == decision_id)
                                    .values(command="sending"))
                    self._send(door, decision_id, None)

    # -- recording and commands ---------------------------------------------------------------------------

    def _record(self, door: _Door, decision: DoorDecision) -> None:
        liveness = decision.liveness
        best = door.best.get(decision.track_id)
        row = DoorDecisionRecord(
            door=door.name, camera=door.config.camera, track_uid=door.uids.get(decision.track_id, "?"),
            outcome=decision.outcome, reason=decision.reason, rule=_describe(door.config),
            identity_id=decision.identity_id,
            score=decision.score, matched_shots=decision.matched_shots,
            liveness=liveness.state if liveness else None, liveness_reason=liveness.reason if liveness else None,
            blinks=liveness.blinks if liveness else None, depth_residual=liveness.depth_residual if liveness else None,
            tailgating=decision.tailgating, others_present=decision.others_present,
            snapshot_jpeg=best[1] if best else None, decided_at=decision.at,
            command="sending" if decision.outcome == "grant" else None)
        with self.db.session() as session:
            session.add(row)
            session.flush()
            decision_id = row.id
            if decision.tailgating and door.config.tailgating == "event":
                self.outlet.new(session, EventView(
                    uid=new_uid(), kind="tailgating", camera=door.config.camera, start_time=decision.at,
                    identity_id=decision.identity_id, score=decision.score, frame_time=decision.at,
                    snapshot_quality=best[0] if best else None,
                    extra={"door": door.name, "decision_id": decision_id, "others_present": decision.others_present}),
                    snapshot=best[1] if best else None)
        log.info("door %s: %s (%s)", door.name, decision.outcome, decision.reason)
        now = self.clock.monotonic()
        timing = DoorTiming(door.name, decision.outcome, door.first_usable.get(decision.track_id, now), now)
        with self._lock:
            self.timings.append(timing)
        if decision.outcome == "grant":
            self._send(door, decision_id, timing)

    def _send(self, door: _Door, decision_id: int, timing: DoorTiming | None) -> None:
        command = DoorCommand(door.name, "open", reason=f"decision {decision_id}",
                              deadline_s=door.config.command.deadline_s)
        self._commands.submit(self._deliver, door, decision_id, command, timing)

    def _deliver(self, door: _Door, decision_id: int, command: DoorCommand, timing: DoorTiming | None) -> None:
        # Every channel at once: one slow channel must not eat the other's deadline.
        with ThreadPoolExecutor(max_workers=max(1, len(door.senders)), thread_name_prefix="door-channel") as pool:
            results = list(pool.map(lambda sender: _send_one(sender, command), door.senders))
        errors = [error for _attempts, error in results if error is not None]
        attempts = sum(n for n, _error in results)
        delivered = bool(door.senders) and not errors
        if not door.senders:
            errors.append("no command channel configured for this door")
        if timing is not None:
            timing.command_done = self.clock.monotonic()
        if not delivered:
            log.warning("door %s: the open command of decision %d failed: %s", door.name, decision_id,
                        "; ".join(errors))
        with self.db.session() as session:
            row = session.get(DoorDecisionRecord, decision_id)
            if row is None:  # deleted meanwhile (the person was forgotten): nothing left to report on
                return
            row.command = "delivered" if delivered else "failed"
            row.command_error, row.command_attempts = "; ".join(errors) or None, attempts
            if not delivered:  # someone is standing at a door that did not open: tell a person, not just the log
                now = self.clock.now()
                self.outlet.new(session, EventView(
                    uid=new_uid(), kind="door_command_failed", camera=row.camera, start_time=now,
                    identity_id=row.identity_id, score=row.score, frame_time=now,
                    extra={"door": door.name, "decision_id": decision_id, "error": row.command_error}),
                    snapshot=row.snapshot_jpeg)

    def _on_state(self, door: str, state: str, at: datetime) -> None:
        """A controller reported its door's state over MQTT (on paho's thread): keep it; 'forced' is an event."""
        known = self.doors.get(door)
        if known is None:
            return
        if state == FORCED:
            log.warning("door %s reports it was forced open", door)
        with self.db.session() as session:
            if record_door_state(session, door, state, source="mqtt", at=at).became_forced:
                self.outlet.door_forced(session, door=door, camera=known.config.camera, at=at)

    # -- set-up -------------------------------------------------------------------------------------------

    def _rule(self, name: str, door: DoorConfig, allowed: frozenset[int]) -> DoorRule:
        return DoorRule.for_door(name, door, allowed=allowed, calibrated=self.default_threshold)

    def _senders(self, config: FacetrailConfig, name: str, door: DoorConfig) -> list[DoorCommandSender]:
        senders: list[DoorCommandSender] = []
        command = door.command
        if command.mqtt:
            key = (config.mqtt.host, config.mqtt.port, command.topic_prefix)
            if key not in self._mqtt:
                self._mqtt[key] = MqttDoorSender(MqttDoorSettings(
                    **values_of(command, MqttDoorChannel), host=config.mqtt.host, port=config.mqtt.port,
                    client_id=f"{config.mqtt.client_id}-doors-{uuid.uuid4().hex[:6]}", username=config.mqtt.user,
                    password=config.mqtt.password, tls=config.mqtt.tls), on_state=self._on_state)
            senders.append(self._mqtt[key])
        if command.http_url:
            senders.append(HttpDoorSender(HttpDoorSettings(command.http_url, secret=command.http_secret,
                                                           timeout_s=command.deadline_s)))
        return senders


def _send_one(sender: DoorCommandSender, command: DoorCommand) -> tuple[int, str | None]:
    """(attempts, why it failed or None) of one channel."""
    try:
        result = sender.send(command)
    except Exception as error:  # a stopped sender or a bug: reported like a failed delivery
        return 0, f"{type(error).__name__}: {error}"
    return result.attempts, None if result.delivered else (result.error or "not delivered")


def _describe(door: DoorConfig) -> str:
    """The rule as it was applied, for the decision log."""
    parts = [f"camera {door.camera}", f"allow {', '.join(door.allow)}", f"{door.consecutive} shots in a row",
             f"threshold {door.threshold if door.threshold is not None else 'calibrated'}",
             f"tailgating {door.tailgating}"]
    if door.hours:
        parts.append(f"hours {', '.join(door.hours)} {door.timezone}")
    if door.second_factor:
        parts.append(f"second factor within {door.factor_timeout_s:g} s")
    if door.liveness.require_blink or door.liveness.require_depth:
        parts.append("requires " + " and ".join(n for n, on in (("a blink", door.liveness.require_blink),
                                                               ("depth", door.liveness.require_depth)) if on))
    return "; ".join(parts)


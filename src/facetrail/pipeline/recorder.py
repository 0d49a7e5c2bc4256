"""Writing what the cameras saw: sightings, anonymous visitors, events and their messages.

Each change is one transaction: the sighting, the events it raises and the
outbox messages announcing them commit together, so a crash can lose a
frame's work but never leave an event without its message, or a message
about an event that does not exist. Events are written through the
:class:`~facetrail.events.outlet.EventOutlet`, as every other producer's are.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from facetrail.events.messages import Channels, EventView
from facetrail.events.outlet import EventOutlet, new_uid
from facetrail.events.rules import EventRules
from facetrail.pipeline.matcher import WatchlistRule
from facetrail.pipeline.pictures import boxed_jpeg, jpeg
from facetrail.store.db import Database
from facetrail.store.models import Sighting, Visitor, as_utc
from facetrail.store.sealed import keys_of, open_column, owner_of, reseal, seal_into
from facetrail.track.unknowns import UnknownClusters
from facetrail.track.unknowns import Visitor as Cluster

log = logging.getLogger(__name__)
# Channels and EventRules: from facetrail.events
__all__ = ["Channels", "EventRules", "Evidence", "Recorder", "TrackRecord"]


@dataclass
class TrackRecord:
    """What the pipeline knows and has stored about one track."""

    uid: str
    camera: str
    first_seen: datetime
    last_seen: datetime
    frames: int = 0
    status: str = "pending"  # pending, named, uncertain or unknown
    identity_id: int | None = None
    identity_name: str | None = None
    score: float | None = None
    quality: float = 0.0
    visitor_id: int | None = None
    sighting_id: int | None = None
    watchlist_hit: bool = False
    events: dict[str, EventView] = field(default_factory=dict)
    dirty: bool = False  # frames or times changed since the last write


@dataclass(frozen=True)
class Evidence:
    """The best shot of a decision: its frame (for the snapshot), thumbnail, embedding and quality."""

    frame: np.ndarray
    box: tuple[float, float, float, float]
    thumbnail: np.ndarray
    embedding: np.ndarray
    quality: float
    model_id: str


class Recorder:
    """Turns track decisions into rows, events and outbox messages."""

    def __init__(self, db: Database, *, channels: Channels, rules: EventRules, clusters: UnknownClusters | None,
                 keep_unknowns: bool = True) -> None:
        self.db = db
        self.channels = channels
        self.outlet = EventOutlet(channels)  # the door service shares it: one count of what was enqueued
        self.rules = rules
        self.clusters = clusters
        self.keep_unknowns = keep_unknowns
        self._present: dict[tuple[str, int], int] = {}  # (camera, identity) -> active named tracks
        self._in_view: dict[str, set[int]] = {}  # camera -> visitors of its open tracks
        # (camera, identity, watchlist) -> an event a stopped run left open (its camera resumed here)
        self._orphans: dict[tuple[str, int | None, str | None], EventView] = {}

    @property
    def enqueued(self) -> int:
        """Outbox messages written so far through the outlet (the runner wakes the dispatcher when it grows)."""
        return self.outlet.enqueued

    def load_visitors(self, since: datetime) -> int:
        """Seed the unknown clusters with the visitors seen since ``since``; returns how many."""
        if self.clusters is None:
            return 0
        with self.db.session() as session:
            rows = list(session.scalars(select(Visitor).where(Visitor.last_seen >= since)))
            centroids = open_column(keys_of(self.db), session, "visitors", "centroid",
                                    [(r.id, r.centroid) for r in rows])
        self.clusters.load(Cluster(r.id, np.frombuffer(c, np.float32).copy(), r.sightings, as_utc(r.first_seen),
                                   as_utc(r.last_seen)) for r, c in zip(rows, centroids, strict=True))
        return len(rows)

    def resume(self, open_events: Iterable[EventView]) -> None:
        """Take over the watchlist events a stopped run of these cameras left open (it died mid-track).

        The first track of the same person on the same camera, for the same watchlist, continues such an event
        (its updates and its end) instead of raising a new one: a camera resumed on another node does not
        announce twice the person it was following. :meth:`end_orphans` closes those nobody took over.
        """
        for view in open_events:
            self._orphans[(view.camera, view.identity_id, view.watchlist)] = view

    def end_orphans(self, cameras: Iterable[str] | None = None) -> int:
        """End the events taken over by no track (of ``cameras``, default all) when their sighting was last seen."""
        chosen = set(cameras) if cameras is not None else None
        due = [key for key in self._orphans if chosen is None or key[0] in chosen]
        if not due:
            return 0
        with self.db.session() as session:
            for key in due:
                self.outlet.end_left_open(session, self._orphans.pop(key))
        return len(due)

    def decided(self, record: TrackRecord, *, status: str, identity_id: int | None, identity_name: str | None,
                score: float | None, rules: list[WatchlistRule], evidence: Evidence, frame_time: datetime) -> None:
        """Store a track's (new or changed) identity decision and raise the events it calls for."""
        became_named = status == "named" and (record.status != "named" or record.identity_id != identity_id)
        improved = score is not None and (record.score is None or score > record.score + 1e-6)
        if not became_named and status == record.status and not improved and record.sighting_id is not None:
            return
        was_named = (record.camera, record.identity_id) if record.status == "named" and record.identity_id else None
        record.status, record.identity_id, record.identity_name = status, identity_id, identity_name
        record.score = score if status == "named" else None
        record.quality = max(record.quality, evidence.quality)
        with self.db.session() as session:
            visit = None
            if status == "unknown" and record.visitor_id is None and self.clusters is not None and self.keep_unknowns:
                visit = self._assign_visitor(session, record, evidence, frame_time)
            if status != "unknown" and record.visitor_id is not None:
                self._in_view.get(record.camera, set()).discard(record.visitor_id)
                record.visitor_id = None
            sighting = self._write_sighting(session, record, evidence)
            if visit is not None:  # after the sighting, so the event points at it
                kind, visits = visit
                self._visitor_event(session, record, kind, evidence, frame_time, count=visits)
            if status == "named" and self.rules.watchlist_hit:
                for rule in rules:
                    if score is not None and score >= rule.threshold:
                        self._watchlist_event(session, record, sighting, rule, evidence, frame_time)
            if became_named and identity_id is not None:
                if was_named:
                    self._presence(session, was_named, -1, frame_time)
                self._presence(session, (record.camera, identity_id), +1, frame_time)
                if self.channels.mqtt_prefix is not None:
                    self.outlet.face_named(session, camera=record.camera, track_id=record.uid,
                                           identity_id=identity_id, name=self._name_of(session, identity_id),
                                           score=score, at=frame_time, snapshot=self._snapshot(evidence))
        record.dirty = False

    def touch(self, record: TrackRecord, at: datetime) -> None:
        """One more frame of the track (stored with the next write)."""
        record.frames += 1
        record.last_seen = max(record.last_seen, at)
        record.dirty = True

    def ended(self, record: TrackRecord, at: datetime) -> None:
        """Close a track: final times, events ended; under only-watchlist-hits, other faces are deleted."""
        if record.visitor_id is not None:
            self._in_view.get(record.camera, set()).discard(record.visitor_id)
        if record.sighting_id is None:
            return
        with self.db.session() as session:
            if not self.keep_unknowns and not record.watchlist_hit:
                session.execute(delete(Sighting).where(Sighting.id == record.sighting_id))
            else:
                sighting = session.get(Sighting, record.sighting_id)
                if sighting is not None:
                    sighting.last_seen, sighting.frames = record.last_seen, record.frames
            for view in record.events.values():
                view.frame_time = at
                self.outlet.end(session, view, at=record.last_seen)
            if record.status == "named" and record.identity_id is not None:
                self._presence(session, (record.camera, record.identity_id), -1, at)

    def flush(self, records: Iterable[TrackRecord]) -> None:
        """Write the frame counts and last-seen times that changed, all in one transaction."""
        due = [r for r in records if r.dirty and r.sighting_id is not None]
        if not due:
            return
        with self.db.session() as session:
            for record in due:
                sighting = session.get(Sighting, record.sighting_id)
                if sighting is not None:
                    sighting.last_seen, sighting.frames = record.last_seen, record.frames
        for record in due:
            record.dirty = False

    # -- internals -------------------------------------------------------------------------------------------

    def _write_sighting(self, session: Session, record: TrackRecord, evidence: Evidence) -> Sighting:
        sighting = session.get(Sighting, record.sighting_id) if record.sighting_id is not None else None
        if sighting is None:
            sighting = Sighting(track_uid=record.uid, camera=record.camera, first_seen=record.first_seen,
                                last_seen=record.last_seen, frames=record.frames, quality=evidence.quality)
            session.add(sighting)
            session.flush()
        previous = owner_of(sighting)
        sighting.identity_id = record.identity_id if record.status == "named" else None
        sighting.visitor_id = record.visitor_id
        sighting.score = record.score
        sighting.last_seen, sighting.frames = record.last_seen, record.frames
        sighting.watchlist_hit = record.watchlist_hit
        keys = keys_of(self.db)  # faces are sealed: a named sighting's under the identity's key, else its own
        if evidence.quality >= sighting.quality or sighting.embedding is None:
            sighting.quality = evidence.quality
            seal_into(keys, session, sighting, "embedding", np.asarray(evidence.embedding, np.float32).tobytes())
            sighting.dim = int(evidence.embedding.shape[-1])
            sighting.model_id = evidence.model_id
            seal_into(keys, session, sighting, "thumbnail_jpeg", jpeg(evidence.thumbnail, self.rules.snapshot_quality))
        else:
            reseal(keys, session, sighting, ("embedding", "thumbnail_jpeg"), previous)
        session.flush()
        record.sighting_id = sighting.id
        return sighting

    def _assign_visitor(self, session: Session, record: TrackRecord, evidence: Evidence,
                        at: datetime) -> tuple[str, int] | None:
        """Give the track a visitor (a known one or a new one); the visitor event to raise and the visit count."""
        assert self.clusters is not None
        vector = np.asarray(evidence.embedding, np.float32)
        in_view = self._in_view.setdefault(record.camera, set())
        match = self.clusters.match(vector, at, exclude=in_view)
        if match is None:
            row = Visitor(model_id=evidence.model_id, centroid=b"", dim=int(vector.shape[-1]),
                          sightings=1, first_seen=at, last_seen=at)
            session.add(row)
            session.flush()
            seal_into(keys_of(self.db), session, row, "centroid", vector.tobytes())
            self.clusters.add(row.id, vector, at)
            record.visitor_id = row.id
            in_view.add(row.id)
            return ("unknown_visitor", 1) if self.rules.unknown_visitor else None
        previous = match.last_seen
        cluster = self.clusters.update(match, vector, at)
        existing = session.get(Visitor, cluster.key)
        if existing is None:  # purged meanwhile: start again under a new id
            row = Visitor(model_id=evidence.model_id, centroid=b"", dim=int(vector.shape[-1]),
                          sightings=1, first_seen=at, last_seen=at)
            session.add(row)
            session.flush()
            seal_into(keys_of(self.db), session, row, "centroid", vector.tobytes())
        else:
            row = existing
            seal_into(keys_of(self.db), session, row, "centroid", np.asarray(cluster.centroid, np.float32).tobytes())
            row.sightings, row.last_seen = cluster.count, at
        record.visitor_id = row.id
        in_view.add(row.id)
        if self.rules.seen_again and at - previous >= self.rules.seen_again_after:
            return "seen_again", row.sightings
        return ("unknown_visitor", row.sightings) if self.rules.unknown_visitor else None

    def _watchlist_event(self, session: Session, record: TrackRecord, sighting: Sighting, rule: WatchlistRule,
                         evidence: Evidence, at: datetime) -> None:
        key = f"watchlist:{rule.watchlist_id}:{record.identity_id}"
        record.watchlist_hit = sighting.watchlist_hit = True
        view = record.events.get(key)
        if view is None and self._orphans:
            view = self._orphans.pop((record.camera, record.identity_id, rule.name), None)
            if view is not None:
                record.events[key] = view
        if view is None:
            view = EventView(uid=new_uid(), kind="watchlist_hit", camera=record.camera, start_time=at,
                             identity_id=record.identity_id, identity_name=record.identity_name,
                             watchlist=rule.name, score=record.score, frame_time=at,
                             reviewers_required=rule.reviewers_required, sighting_id=sighting.id,
                             snapshot_quality=evidence.quality, box=evidence.box)
            self.outlet.new(session, view, snapshot=self._snapshot(evidence), watchlist_id=rule.watchlist_id)
            record.events[key] = view
            log.info("%s: %s on watchlist %s (score %.3f)", record.camera, record.identity_name, rule.name,
                     record.score or 0.0)
            return
        # An update says what changed: a higher score, a better best shot; the outlet sends nothing otherwise.
        before = view.as_dict()
        view.frame_time = at
        if record.score is not None and (view.score is None or record.score > view.score):
            view.score = record.score
        snapshot = None
        if view.snapshot_quality is None or evidence.quality > view.snapshot_quality:
            snapshot, view.snapshot_quality, view.box = self._snapshot(evidence), evidence.quality, evidence.box
        self.outlet.update(session, view, before=before, snapshot=snapshot)

    def _visitor_event(self, session: Session, record: TrackRecord, kind: str, evidence: Evidence, at: datetime,
                       *, count: int) -> None:
        view = EventView(uid=new_uid(), kind=kind, camera=record.camera, start_time=at,
                         visitor_id=record.visitor_id, frame_time=at, sighting_id=record.sighting_id,
                         snapshot_quality=evidence.quality, box=evidence.box, extra={"visits": count})
        self.outlet.new(session, view, snapshot=self._snapshot(evidence))
        record.events[kind] = view

    def _presence(self, session: Session, key: tuple[str, int], delta: int, at: datetime) -> None:
        count = max(0, self._present.get(key, 0) + delta)
        self._present[key] = count
        if self.channels.mqtt_prefix is None:
            return
        camera, identity_id = key
        self.outlet.presence(session, camera, self._name_of(session, identity_id), count, identity_id=identity_id)

    def _name_of(self, session: Session, identity_id: int) -> str:
        from facetrail.store.models import Identity

        return session.scalar(select(Identity.display_name).where(Identity.id == identity_id)) or str(identity_id)

    def _snapshot(self, evidence: Evidence) -> bytes:
        return boxed_jpeg(evidence.frame, [evidence.box], quality=self.rules.snapshot_quality)


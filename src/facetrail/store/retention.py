"""Retention per data class: how long sightings, thumbnails and events are kept.

``delete_expired`` deletes what is past its time in the caller's transaction;
``purge_data`` does the same and writes one audit entry with the counts, so
every automatic deletion is on record. Identities and watchlists have their
own expiry (``people.purge_expired``); ``facetrail.gallery.retention`` applies
both and is what ``run``, the API and ``facetrail purge`` call.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from datetime import datetime, timedelta
from typing import ClassVar

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass
from sqlalchemy import ColumnElement, delete, exists, select, update
from sqlalchemy.orm import Session

from facetrail.store import audit
from facetrail.store.cameras import blank_frames
from facetrail.store.crypto import sweep_orphans
from facetrail.store.models import DoorDecisionRecord, Event, EventReview, OutboxMessage, Sighting, Visitor, utcnow


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class RetentionPolicy:
    """How long each class of data is kept; ``only_watchlist_hits`` deletes every other face."""

    unknown_sightings_days: float = Field(default=7, gt=0, title="Unknown sightings",
                                          description="Days sightings of unknown faces (and visitor ids) are kept.")
    known_sightings_days: float = Field(default=30, gt=0, title="Known sightings",
                                        description="Days sightings of enrolled people are kept.")
    thumbnails_days: float = Field(default=7, gt=0, title="Thumbnails",
                                   description="Days best-shot thumbnails and event snapshots keep their image.")
    events_days: float = Field(default=90, gt=0, title="Events",
                               description="Days events and their reviews are kept.")
    only_watchlist_hits: bool = Field(default=False, title="Only watchlist hits",
                                      description="Keep only sightings that hit a watchlist: every other face is "
                                                  "deleted when its track ends, and no visitor ids are made.")
    # Not settings: delivered outbox messages are kept a day, for looking into a delivery; sightings without a
    # watchlist hit survive this long under only_watchlist_hits (a track still running).
    delivered_messages: ClassVar[timedelta] = timedelta(days=1)
    open_track_grace: ClassVar[timedelta] = timedelta(minutes=2)

    @property
    def unknown_sightings(self) -> timedelta:
        """How long sightings of unknown faces (and visitor ids) are kept."""
        return timedelta(days=self.unknown_sightings_days)

    @property
    def known_sightings(self) -> timedelta:
        """How long sightings of enrolled people are kept."""
        return timedelta(days=self.known_sightings_days)

    @property
    def thumbnails(self) -> timedelta:
        """How long thumbnails and snapshots keep their image."""
        return timedelta(days=self.thumbnails_days)

    @property
    def events(self) -> timedelta:
        """How long events, their reviews and door decisions are kept."""
        return timedelta(days=self.events_days)


@dataclasses.dataclass(frozen=True)
class RetentionReport:
    """Rows removed (or images blanked) per data class."""

    counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Everything the purge touched."""
        return sum(self.counts.values())


def purge_data(session: Session, policy: RetentionPolicy, *, now: datetime | None = None,
               actor: str = "retention") -> RetentionReport:
    """Delete sightings, visitors, events, thumbnails and delivered messages past their retention (audited)."""
    report = delete_expired(session, policy, now=now)
    record_purge(session, report.counts, actor=actor)
    return report


def record_purge(session: Session, counts: dict[str, int], *, actor: str) -> None:
    """The one audit entry of a purge, with its counts; a purge that removed nothing is not logged."""
    total = sum(counts.values())
    if total:
        audit.record(session, actor=actor, action="retention.purge", target="expired data", purpose="retention",
                     result_count=total, details=counts)


def delete_expired(session: Session, policy: RetentionPolicy, *, now: datetime | None = None) -> RetentionReport:
    """Delete sightings, visitors, events, thumbnails and delivered messages past their retention (not audited)."""
    moment = now or utcnow()
    counts: dict[str, int] = {}
    unknown_before = moment - policy.unknown_sightings
    known_before = moment - policy.known_sightings
    expired_sightings = ((Sighting.identity_id.is_(None) & (Sighting.last_seen < unknown_before))
                         | (Sighting.identity_id.is_not(None) & (Sighting.last_seen < known_before)))
    if policy.only_watchlist_hits:
        expired_sightings = expired_sightings | (
            ~Sighting.watchlist_hit & (Sighting.last_seen < moment - policy.open_track_grace))
    counts["sightings"] = _delete_sightings(session, expired_sightings)
    orphaned = ~exists().where(Sighting.visitor_id == Visitor.id)
    visitors_before = moment if policy.only_watchlist_hits else unknown_before
    counts["visitors"] = _rowcount(session.execute(
        delete(Visitor).where(Visitor.last_seen < visitors_before, orphaned)))
    old_events = select(Event.id).where(Event.started_at < moment - policy.events)
    session.execute(delete(EventReview).where(EventReview.event_id.in_(old_events)))
    counts["events"] = _rowcount(session.execute(
        delete(Event).where(Event.started_at < moment - policy.events)))
    thumbs_before = moment - policy.thumbnails
    counts["thumbnails"] = _rowcount(session.execute(
        update(Sighting).where(Sighting.last_seen < thumbs_before, Sighting.thumbnail_jpeg.is_not(None))
        .values(thumbnail_jpeg=None)))
    counts["snapshots"] = _rowcount(session.execute(
        update(Event).where(Event.started_at < thumbs_before, Event.snapshot_jpeg.is_not(None))
        .values(snapshot_jpeg=None)))
    counts["camera_frames"] = blank_frames(session, thumbs_before)
    counts["door_decisions"] = _rowcount(session.execute(
        delete(DoorDecisionRecord).where(DoorDecisionRecord.decided_at < moment - policy.events)))
    counts["door_snapshots"] = _rowcount(session.execute(
        update(DoorDecisionRecord).where(DoorDecisionRecord.decided_at < thumbs_before,
                                         DoorDecisionRecord.snapshot_jpeg.is_not(None)).values(snapshot_jpeg=None)))
    counts["messages"] = _rowcount(session.execute(
        delete(OutboxMessage).where(OutboxMessage.delivered_at.is_not(None),
                                    OutboxMessage.delivered_at < moment - policy.delivered_messages)))
    sweep_orphans(session)  # the data keys of deleted sightings and visitors: their faces are gone for good
    return RetentionReport({k: v for k, v in counts.items() if v})


def _delete_sightings(session: Session, condition: ColumnElement[bool]) -> int:
    doomed = select(Sighting.id).where(condition)
    session.execute(update(Event).where(Event.sighting_id.in_(doomed)).values(sighting_id=None))
    return _rowcount(session.execute(delete(Sighting).where(condition)))


def _rowcount(result: object) -> int:
    return int(getattr(result, "rowcount", 0) or 0)

"""Retention per data class: how long sightings, thumbnails and events are kept.

``delete_expired`` deletes what is past its time in the caller's transaction;
``purge_data`` does the same and writes one audit entry with the counts, so
every automatic deletion is on record. Identities and watchlists have their
own expiry (``people.purge_expired``); ``facetrail.gallery.retention`` applies
both and is what ``run``, the API and ``facetrail purge`` call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, exists, select, update
from sqlalchemy.orm import Session

from facetrail.store import audit
from facetrail.store.cameras import blank_frames
from facetrail.store.models import DoorDecisionRecord, Event, EventReview, OutboxMessage, Sighting, Visitor, utcnow


@dataclass(frozen=True)
class RetentionPolicy:
    """How long each class of data is kept; ``only_watchlist_hits`` deletes every other face."""

    unknown_sightings: timedelta = timedelta(days=7)
    known_sightings: timedelta = timedelta(days=30)
    thumbnails: timedelta = timedelta(days=7)
    events: timedelta = timedelta(days=90)
    only_watchlist_hits: bool = False
    delivered_messages: timedelta = timedelta(days=1)
    # Sightings without a watchlist hit survive this long under only_watchlist_hits (a track still running).
    open_track_grace: timedelta = timedelta(minutes=2)


@dataclass(frozen=True)
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
    return RetentionReport({k: v for k, v in counts.items() if v})


def _delete_sightings(session: Session, condition: ColumnElement[bool]) -> int:
    doomed = select(Sighting.id).where(condition)
    session.execute(update(Event).where(Event.sighting_id.in_(doomed)).values(sighting_id=None))
    return _rowcount(session.execute(delete(Sighting).where(condition)))


def _rowcount(result: object) -> int:
    return int(getattr(result, "rowcount", 0) or 0)

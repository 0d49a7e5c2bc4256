"""Deleting people on request, and the retention purge.

Both return the ids of the face templates they removed, so the caller can
drop them from the vector index after the transaction commits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from facetrail.store import audit
from facetrail.store.crypto import IDENTITY, destroy_keys, sweep_orphans
from facetrail.store.models import (
    DoorConsent,
    DoorDecisionRecord,
    Event,
    EventReview,
    FaceTemplate,
    Identity,
    NegativeExample,
    OutboxMessage,
    Sighting,
    Watchlist,
    WatchlistMember,
    utcnow,
)


@dataclass(frozen=True)
class Forgotten:
    """What forgetting one person removed."""

    identity_id: int
    template_ids: list[int]
    negatives: int
    memberships: int
    sightings: int = 0
    events: int = 0


@dataclass(frozen=True)
class PurgeReport:
    """What one retention purge removed."""

    expired_watchlists: list[str] = field(default_factory=list)
    forgotten: list[Forgotten] = field(default_factory=list)

    @property
    def template_ids(self) -> list[int]:
        """Every template id the purge removed."""
        return [t for f in self.forgotten for t in f.template_ids]


def forget_identity(session: Session, identity_id: int, *, actor: str, reason: str) -> Forgotten:
    """Remove a person completely: templates, negatives, memberships, sightings, events, door records, the identity.

    The audit log keeps a tombstone with the identity id and counts only: no
    name, no image, no embedding. The identity's data key is destroyed with
    the rows, so a copy of them (a backup made afterwards, a page not yet
    overwritten) can no longer be opened.
    """
    template_ids = list(session.scalars(
        select(FaceTemplate.id).where(FaceTemplate.identity_id == identity_id)))
    negatives = session.scalar(select(func.count()).select_from(NegativeExample)
                               .where(NegativeExample.identity_id == identity_id)) or 0
    memberships = session.scalar(select(func.count()).select_from(WatchlistMember)
                                 .where(WatchlistMember.identity_id == identity_id)) or 0
    sightings = session.scalar(select(func.count()).select_from(Sighting)
                               .where(Sighting.identity_id == identity_id)) or 0
    events = session.scalar(select(func.count()).select_from(Event).where(Event.identity_id == identity_id)) or 0
    # Explicit deletes rather than relying on ON DELETE CASCADE alone: nothing may be left if a
    # database was created with foreign keys off.
    session.execute(delete(EventReview).where(EventReview.event_id.in_(
        select(Event.id).where(Event.identity_id == identity_id))))
    session.execute(delete(Event).where(Event.identity_id == identity_id))
    session.execute(delete(Sighting).where(Sighting.identity_id == identity_id))
    session.execute(delete(DoorDecisionRecord).where(DoorDecisionRecord.identity_id == identity_id))
    session.execute(delete(DoorConsent).where(DoorConsent.identity_id == identity_id))
    session.execute(delete(FaceTemplate).where(FaceTemplate.identity_id == identity_id))
    session.execute(delete(NegativeExample).where(NegativeExample.identity_id == identity_id))
    session.execute(delete(WatchlistMember).where(WatchlistMember.identity_id == identity_id))
    session.execute(delete(Identity).where(Identity.id == identity_id))
    # Messages naming or showing them that a broker or receiver has not taken yet are withdrawn.
    undelivered = (OutboxMessage.identity_id == identity_id, OutboxMessage.delivered_at.is_(None))
    withdrawn = session.scalar(select(func.count()).select_from(OutboxMessage).where(*undelivered)) or 0
    session.execute(delete(OutboxMessage).where(*undelivered))
    destroy_keys(session, IDENTITY, [identity_id])
    sweep_orphans(session)  # the keys of its sightings sealed while they were still unknown
    audit.record(session, actor=actor, action="forget", target=f"identity:{identity_id}", purpose=reason,
                 result_count=len(template_ids),
                 details={"templates": len(template_ids), "negatives": negatives, "memberships": memberships,
                          "sightings": sightings, "events": events, "undelivered_messages": withdrawn})
    return Forgotten(identity_id, template_ids, negatives, memberships, sightings, events)


def purge_expired(session: Session, *, now: datetime | None = None, actor: str = "retention") -> PurgeReport:
    """Delete watchlists past their expiry and forget identities past ``retain_until``; log each."""
    moment = now or utcnow()
    expired = list(session.scalars(select(Watchlist).where(Watchlist.expires_at.is_not(None),
                                                           Watchlist.expires_at <= moment)))
    names = []
    for watchlist in expired:
        members = session.scalar(select(func.count()).select_from(WatchlistMember)
                                 .where(WatchlistMember.watchlist_id == watchlist.id)) or 0
        session.execute(delete(WatchlistMember).where(WatchlistMember.watchlist_id == watchlist.id))
        session.delete(watchlist)
        audit.record(session, actor=actor, action="watchlist.expire", target=f"watchlist:{watchlist.name}",
                     purpose="retention", result_count=members)
        names.append(watchlist.name)
    due = list(session.scalars(select(Identity.id).where(Identity.retain_until.is_not(None),
                                                         Identity.retain_until <= moment)))
    forgotten = [forget_identity(session, identity_id, actor=actor, reason="retention period ended")
                 for identity_id in due]
    return PurgeReport(names, forgotten)

"""Human review of events: facetrail reports, a person confirms or dismisses.

An event on a watchlist with ``reviewers_required=2`` (the four-eyes rule of
the EU AI Act for remote biometric identification) is confirmed only when two
different people confirmed it; one dismissal settles it as dismissed. Every
review is written to the audit log with the reviewer and the note, and
announced through the outlet in the same transaction: an MQTT ``update`` whose
``before.review`` / ``after.review`` show the state and confirmations, and a
``<kind>.reviewed`` webhook to receivers of the event's kind and of ``review``.

Bulk review (``review_many``) is the same review, once per event: each gets
its own review record, audit entry and announcement, all marked with one
``batch`` id in the audit details. Dismissing may name events by a filter;
confirming needs their ids, because a confirmation says someone compared the
faces of each event.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from facetrail.events.outlet import EventOutlet, view_of
from facetrail.events.queries import EventFilter, matching_ids
from facetrail.store import audit
from facetrail.store.models import Event, EventReview, utcnow

Verdict = Literal["confirm", "dismiss"]
PENDING, CONFIRMED, DISMISSED = "pending", "confirmed", "dismissed"
MAX_BULK = 1000  # events one bulk review may touch: beyond that, narrow the filter


class ReviewError(Exception):
    """A review that cannot be recorded (unknown event, already settled, same reviewer twice)."""


@dataclass(frozen=True)
class ReviewOutcome:
    """The event's state after a review, and how many confirmations it still needs."""

    event_id: int
    state: str
    confirmations: int
    required: int

    @property
    def waiting(self) -> int:
        """Further confirmations needed before the event counts as confirmed."""
        return 0 if self.state != PENDING else max(0, self.required - self.confirmations)


def review_event(session: Session, event_id: int, *, reviewer: str, verdict: Verdict, note: str | None = None,
                 at: datetime | None = None, outlet: EventOutlet | None = None,
                 batch: str | None = None) -> ReviewOutcome:
    """Record one reviewer's verdict, settle the event when the rule is met, and announce it through ``outlet``.

    Without an ``outlet`` the review is stored and audited but announced nowhere. ``batch``: the id of the bulk
    review this one is part of, kept in the audit entry.
    """
    if verdict not in ("confirm", "dismiss"):
        raise ReviewError(f"a review is 'confirm' or 'dismiss', not {verdict!r}")
    if not reviewer.strip():
        raise ReviewError("a review needs the reviewer's name")
    event = session.get(Event, event_id)
    if event is None:
        raise ReviewError(f"no event with id {event_id}")
    if event.state != PENDING:
        raise ReviewError(f"event {event_id} is already {event.state}")
    earlier = session.scalar(select(EventReview).where(EventReview.event_id == event_id,
                                                       EventReview.reviewer == reviewer))
    if earlier is not None:
        raise ReviewError(f"{reviewer} already reviewed event {event_id}; a second confirmation must come from "
                          "someone else")
    moment = at or utcnow()
    before = view_of(session, event).as_dict()
    session.add(EventReview(event_id=event_id, reviewer=reviewer, decision=verdict, note=note, at=moment))
    session.flush()
    confirmations = len(list(session.scalars(select(EventReview.id).where(
        EventReview.event_id == event_id, EventReview.decision == "confirm"))))
    if verdict == "dismiss":
        event.state = DISMISSED
    elif confirmations >= event.reviewers_required:
        event.state = CONFIRMED
    details: dict[str, object] = {"state": event.state, "confirmations": confirmations,
                                  "required": event.reviewers_required, "note": note or ""}
    if batch is not None:
        details["batch"] = batch
    audit.record(session, actor=reviewer, action=f"event.{verdict}", target=f"event:{event_id}", details=details)
    if outlet is not None:
        outlet.update(session, view_of(session, event), before=before, reviewed=True, at=moment)
    return ReviewOutcome(event_id, event.state, confirmations, event.reviewers_required)


@dataclass(frozen=True)
class Skipped:
    """An event a bulk review left alone, and why."""

    event_id: int
    reason: str


@dataclass(frozen=True)
class BulkOutcome:
    """What a bulk review did: the events reviewed, those skipped, and the batch id in their audit entries."""

    batch: str
    reviewed: list[ReviewOutcome] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def pending_ids(session: Session, wanted: EventFilter) -> list[int]:
    """Ids of the pending events ``wanted`` matches, newest first; ReviewError when more than MAX_BULK match."""
    if wanted.state not in (None, PENDING):
        raise ReviewError(f"only pending events can be reviewed; the filter asks for {wanted.state} ones")
    ids = matching_ids(session, replace(wanted, state=PENDING), limit=MAX_BULK + 1)
    if len(ids) > MAX_BULK:
        raise ReviewError(f"more than {MAX_BULK} pending events match; narrow the filter (kind, camera, time)")
    return ids


def review_many(session: Session, event_ids: Sequence[int], *, reviewer: str, verdict: Verdict,
                note: str | None = None, outlet: EventOutlet | None = None, by_filter: bool = False) -> BulkOutcome:
    """Review each event in turn, as ``review_event`` does; events that cannot be reviewed are skipped with why.

    ``by_filter``: the ids came from a filter rather than from a person's selection, which only a dismissal may
    use. ReviewError for a bad verdict or reviewer, a confirmation by filter, or more than MAX_BULK ids.
    """
    if verdict not in ("confirm", "dismiss"):
        raise ReviewError(f"a review is 'confirm' or 'dismiss', not {verdict!r}")
    if verdict == "confirm" and by_filter:
        raise ReviewError("confirming needs the events' ids (each one someone compared); only a dismissal may use "
                          "a filter")
    if not reviewer.strip():
        raise ReviewError("a review needs the reviewer's name")
    unique = list(dict.fromkeys(event_ids))
    if len(unique) > MAX_BULK:
        raise ReviewError(f"at most {MAX_BULK} events at once; {len(unique)} were given")
    outcome = BulkOutcome(batch=uuid.uuid4().hex[:16])
    for event_id in unique:
        try:
            outcome.reviewed.append(review_event(session, event_id, reviewer=reviewer, verdict=verdict, note=note,
                                                 outlet=outlet, batch=outcome.batch))
        except ReviewError as error:
            outcome.skipped.append(Skipped(event_id, str(error)))
    return outcome

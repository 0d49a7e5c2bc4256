"""Human review of events: facetrail reports, a person confirms or dismisses.

An event on a watchlist with ``reviewers_required=2`` (the four-eyes rule of
the EU AI Act for remote biometric identification) is confirmed only when two
different people confirmed it; one dismissal settles it as dismissed. Every
review is written to the audit log with the reviewer and the note, and
announced through the outlet in the same transaction: an MQTT ``update`` whose
``before.review`` / ``after.review`` show the state and confirmations, and a
``<kind>.reviewed`` webhook to receivers of the event's kind and of ``review``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from facetrail.events.outlet import EventOutlet, view_of
from facetrail.store import audit
from facetrail.store.models import Event, EventReview, utcnow

Verdict = Literal["confirm", "dismiss"]
PENDING, CONFIRMED, DISMISSED = "pending", "confirmed", "dismissed"


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
                 at: datetime | None = None, outlet: EventOutlet | None = None) -> ReviewOutcome:
    """Record one reviewer's verdict, settle the event when the rule is met, and announce it through ``outlet``.

    Without an ``outlet`` the review is stored and audited but announced nowhere.
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
    audit.record(session, actor=reviewer, action=f"event.{verdict}", target=f"event:{event_id}",
                 details={"state": event.state, "confirmations": confirmations,
                          "required": event.reviewers_required, "note": note or ""})
    if outlet is not None:
        outlet.update(session, view_of(session, event), before=before, reviewed=True, at=moment)
    return ReviewOutcome(event_id, event.state, confirmations, event.reviewers_required)

"""/events: list with their review state, review (confirm or dismiss), the evidence snapshot."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from facetrail.api import pagination
from facetrail.api.deps import GalleryDep, Operator, Viewer
from facetrail.api.errors import ApiError
from facetrail.api.schemas import EventOut, ReviewIn, ReviewOut
from facetrail.events.review import review_event
from facetrail.store.models import Event

router = APIRouter(prefix="/events", tags=["events"])


@router.get("", response_model=pagination.Page[EventOut])
def list_events(store: GalleryDep, _who: Viewer, limit: Annotated[int, Query(ge=1, le=200)] = 50,
                cursor: str | None = None,
                state: Literal["pending", "confirmed", "dismissed"] | None = None) -> pagination.Page[EventOut]:
    """Events, newest first."""
    after = pagination.decode(cursor)
    with store.db.session() as session:
        query = session.query(Event).order_by(Event.id.desc())
        if state:
            query = query.filter(Event.state == state)
        if after is not None:
            query = query.filter(Event.id < after)
        return pagination.page(query.limit(limit + 1).all(), limit, _event)


@router.post("/{event_id}/review", response_model=ReviewOut)
def review(event_id: int, body: ReviewIn, store: GalleryDep, who: Operator) -> ReviewOut:
    """Confirm or dismiss (audited); a four-eyes watchlist needs two different reviewers to confirm."""
    with store.db.session() as session:
        outcome = review_event(session, event_id, reviewer=who.name, verdict=body.verdict, note=body.note)
    return ReviewOut(event_id=outcome.event_id, state=outcome.state, confirmations=outcome.confirmations,
                     required=outcome.required)


@router.get("/{event_id}/snapshot", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}, "description": "the evidence frame, face boxed"}})
def snapshot(event_id: int, store: GalleryDep, _who: Viewer) -> Response:
    """The evidence snapshot (JPEG), while retention keeps it."""
    with store.db.session() as session:
        row = session.get(Event, event_id)
        if row is None:
            raise ApiError(404, "not_found", f"no event with id {event_id}")
        if row.snapshot_jpeg is None:
            raise ApiError(404, "not_found", f"event {event_id} has no snapshot (retention removed it)")
        return Response(row.snapshot_jpeg, media_type="image/jpeg")


def _event(row: Event) -> EventOut:
    return EventOut(id=row.id, kind=row.kind, camera=row.camera, identity_id=row.identity_id,
                    visitor_id=row.visitor_id, watchlist_id=row.watchlist_id, score=row.score,
                    started_at=row.started_at, ended_at=row.ended_at, state=row.state,
                    reviewers_required=row.reviewers_required, has_snapshot=row.snapshot_jpeg is not None)

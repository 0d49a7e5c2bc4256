"""/events: list with their review state, a live stream, review (confirm or dismiss), the evidence snapshot."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.sse import EventSourceResponse, ServerSentEvent
from sqlalchemy import func, select

from facetrail.api import pagination
from facetrail.api.deps import GalleryDep, Operator, RowId, Viewer
from facetrail.api.door_views import server_config
from facetrail.api.errors import ApiError
from facetrail.api.schemas import EventOut, ReviewIn, ReviewOut
from facetrail.api.views import event_out
from facetrail.events.outlet import EventOutlet
from facetrail.events.review import review_event
from facetrail.gallery.gallery import Gallery
from facetrail.store.models import Event

router = APIRouter(prefix="/events", tags=["events"])
STREAM_POLL_S = 1.0  # the store is polled, so events recorded by a pipeline in another process arrive too


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
        return pagination.page(query.limit(limit + 1).all(), limit, lambda row: event_out(session, row))


@router.get("/stream", response_class=EventSourceResponse)
async def stream(request: Request, store: GalleryDep, _who: Viewer,
                 after: Annotated[int | None, Query(ge=0, le=2**63 - 1, description="start after this event id")]
                 = None,
                 last_event_id: Annotated[str | None, Header(description="resume after this event id")] = None,
                 ) -> AsyncIterator[ServerSentEvent]:
    """Server-sent events: each new event as it is recorded (``event: event``, JSON ``EventOut``).

    Starts after ``Last-Event-ID`` (a browser reconnecting), else after ``?after=``, else with what is recorded
    from now on.
    """
    if last_event_id and last_event_id.isdigit():
        after = int(last_event_id)
    if after is None:
        after = await run_in_threadpool(_latest_id, store)
    while not await request.is_disconnected():
        for row in await run_in_threadpool(_events_after, store, after):
            after = row.id
            yield ServerSentEvent(data=row, event="event", id=str(row.id))
        await asyncio.sleep(STREAM_POLL_S)


@router.post("/{event_id}/review", response_model=ReviewOut)
def review(event_id: RowId, body: ReviewIn, request: Request, store: GalleryDep, who: Operator) -> ReviewOut:
    """Confirm or dismiss (audited); a four-eyes watchlist needs two different reviewers to confirm."""
    # Announced (MQTT update, webhooks) on the channels of the server's --config; without one, only stored.
    outlet = EventOutlet.for_config(server_config(request))
    with store.db.session() as session:
        outcome = review_event(session, event_id, reviewer=who.name, verdict=body.verdict, note=body.note,
                               outlet=outlet)
    return ReviewOut(event_id=outcome.event_id, state=outcome.state, confirmations=outcome.confirmations,
                     required=outcome.required)


@router.get("/{event_id}/snapshot", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}, "description": "the evidence frame, face boxed"}})
def snapshot(event_id: RowId, store: GalleryDep, _who: Viewer) -> Response:
    """The evidence snapshot (JPEG), while retention keeps it."""
    with store.db.session() as session:
        row = session.get(Event, event_id)
        if row is None:
            raise ApiError(404, "not_found", f"no event with id {event_id}")
        if row.snapshot_jpeg is None:
            raise ApiError(404, "not_found", f"event {event_id} has no snapshot (retention removed it)")
        return Response(row.snapshot_jpeg, media_type="image/jpeg")


def _latest_id(store: Gallery) -> int:
    with store.db.session() as session:
        return int(session.scalar(select(func.max(Event.id))) or 0)


def _events_after(store: Gallery, after: int) -> list[EventOut]:
    with store.db.session() as session:
        rows = session.scalars(select(Event).where(Event.id > after).order_by(Event.id).limit(100))
        return [event_out(session, row) for row in rows]

"""/events: a filtered list with totals and repeats folded, a live stream, review one or many, snapshot and face."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy import func, select

from facetrail.api import pagination
from facetrail.api.deps import GalleryDep, Operator, RowId, Viewer
from facetrail.api.door_views import server_config
from facetrail.api.errors import ApiError
from facetrail.api.event_views import events_out, face_sighting
from facetrail.api.schemas import BulkReviewIn, BulkReviewOut, EventOut, ReviewIn, ReviewOut, SkippedOut
from facetrail.api.strings import Name, Token
from facetrail.events import queries
from facetrail.events.outlet import EventOutlet
from facetrail.events.queries import REPEAT_WINDOW, EventFilter, EventFilterError, EventKindName, ReviewState
from facetrail.events.review import ReviewError, pending_ids, review_event, review_many
from facetrail.gallery.gallery import Gallery
from facetrail.store.media import ClipFiles
from facetrail.store.models import Event
from facetrail.store.sealed import open_from

router = APIRouter(prefix="/events", tags=["events"])
STREAM_POLL_S = 1.0  # the store is polled, so events recorded by a pipeline in another process arrive too


class EventQuery(BaseModel):
    """The list's query: a filter, grouping and paging. Any other parameter is refused (422), not ignored."""

    model_config = ConfigDict(extra="forbid")

    limit: int = Field(50, ge=1, le=pagination.MAX_LIMIT, description="events per page")
    cursor: Token | None = Field(None, description="next_cursor of the previous page")
    kind: EventKindName | None = None
    camera: Name | None = None
    person: Name | None = Field(None, description="an identity's id or name (as enrolled), or visitor:ID")
    watchlist: Name | None = Field(None, description="a watchlist's id or name")
    state: ReviewState | None = None
    since: AwareDatetime | None = Field(None, description="started at or after (ISO 8601 with zone)")
    until: AwareDatetime | None = Field(None, description="started before (ISO 8601 with zone)")
    group: Literal["none", "visitor"] = Field(
        "none", description="visitor: fold each person's or visitor's repeats on a page into one item (repeats)")
    window_s: int = Field(int(REPEAT_WINDOW.total_seconds()), ge=1, le=86_400,
                          description="with group=visitor: the longest gap between two repeats, in seconds")

    def event_filter(self) -> EventFilter:
        """The store's filter; 422 when it is inconsistent."""
        return filter_of(kind=self.kind, camera=self.camera, person=self.person, watchlist=self.watchlist,
                         state=self.state, since=self.since, until=self.until)


@router.get("", response_model=pagination.CountedPage[EventOut])
def list_events(query: Annotated[EventQuery, Query()], store: GalleryDep,
                _who: Viewer) -> pagination.CountedPage[EventOut]:
    """Events, newest first, narrowed by the filter; ``total`` counts every matching event.

    With ``group=visitor`` a page still holds up to ``limit`` events, but each person's or visitor's repeats
    (same kind, camera, watchlist and state, each within ``window_s`` of the next) are one item with the earlier
    ones in ``repeats``; a group never spans pages.
    """
    after = pagination.decode(query.cursor)
    wanted = query.event_filter()
    with store.db.session() as session:
        try:
            rows = queries.list_events(session, wanted, limit=query.limit + 1, before_id=after)
            total = queries.count_events(session, wanted)
        except EventFilterError as error:
            raise ApiError(422, "invalid_filter", str(error)) from None
        items = events_out(session, rows[:query.limit], group=query.group == "visitor",
                           window=timedelta(seconds=query.window_s), clips=ClipFiles(store.settings.data_dir))
        return pagination.CountedPage(items=items, next_cursor=pagination.next_cursor(rows, query.limit), total=total)


@router.post("/review", response_model=BulkReviewOut)
def review_many_events(body: BulkReviewIn, request: Request, store: GalleryDep, who: Operator) -> BulkReviewOut:
    """One verdict and note for many events, by ``ids`` or (dismiss only) by ``filter``; each audited alone.

    Every event gets its own review record and audit entry (with the note and the batch id) and is announced
    as a single review is. Events that cannot be reviewed (already settled; your second confirmation) are
    listed in ``skipped`` with the reason. A filter touches pending events only, at most 1000.
    """
    if (body.ids is None) == (body.filter is None):
        raise ApiError(422, "invalid_request", "give either ids (the events chosen) or filter (dismiss every "
                                               "pending event it matches), not both or neither")
    outlet = EventOutlet.for_config(server_config(request))
    with store.db.session() as session:
        if body.filter is not None:
            chosen = body.filter
            wanted = filter_of(kind=chosen.kind, camera=chosen.camera, person=chosen.person,
                               watchlist=chosen.watchlist, since=chosen.since, until=chosen.until,
                               max_id=chosen.max_id)
            try:
                ids = pending_ids(session, wanted)
            except (EventFilterError, ReviewError) as error:
                raise ApiError(422, "invalid_filter", str(error)) from None
        else:
            ids = list(body.ids or [])
        try:
            outcome = review_many(session, ids, reviewer=who.name, verdict=body.verdict, note=body.note,
                                  outlet=outlet, by_filter=body.filter is not None)
        except ReviewError as error:
            raise ApiError(422, "review_rejected", str(error)) from None
    return BulkReviewOut(batch=outcome.batch,
                         reviewed=[ReviewOut(event_id=r.event_id, state=r.state, confirmations=r.confirmations,
                                             required=r.required) for r in outcome.reviewed],
                         skipped=[SkippedOut(event_id=s.event_id, reason=s.reason) for s in outcome.skipped])


def filter_of(**given: Any) -> EventFilter:
    """An EventFilter from request values; 422 naming what is wrong."""
    try:
        return EventFilter(**given)
    except EventFilterError as error:
        raise ApiError(422, "invalid_filter", str(error)) from None


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


@router.get("/{event_id}/clip", response_class=FileResponse,
            responses={200: {"content": {"video/mp4": {}}, "description": "the recording around the event"},
                       206: {"description": "the part of the recording a Range header asked for"}})
def clip(event_id: RowId, request: Request, store: GalleryDep, _who: Viewer) -> FileResponse:
    """The recording from ``clips.pre_s`` before the event to ``clips.post_s`` after (MP4, H.264).

    Range requests are answered (a video element seeks with them). 404 while clips are off, while the clip
    is still being recorded, and after retention removed it.
    """
    with store.db.session() as session:
        if session.get(Event, event_id) is None:
            raise ApiError(404, "not_found", f"no event with id {event_id}")
    path = ClipFiles(request.app.state.settings.data_dir).path(event_id)
    if not path.is_file():
        raise ApiError(404, "not_found", f"event {event_id} has no clip (clips are off in the pipeline's "
                                         "configuration, it is still being recorded, or retention removed it)")
    return FileResponse(path, media_type="video/mp4", headers={"Cache-Control": "private, no-cache"})


@router.get("/{event_id}/face", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}, "description": "the face of the best shot, cropped"}})
def face(event_id: RowId, store: GalleryDep, _who: Viewer) -> Response:
    """The face of the event's best shot (JPEG, a square crop with a margin), beside the whole frame.

    The event's box is not stored, so the crop is its sighting's best shot (a square around the face box with a
    margin, sealed like every stored face); door events, and events whose crop retention removed, have none (404).
    """
    with store.db.session() as session:
        row = session.get(Event, event_id)
        if row is None:
            raise ApiError(404, "not_found", f"no event with id {event_id}")
        sighting = face_sighting(session, row)
        if sighting is None or sighting.thumbnail_jpeg is None:
            raise ApiError(404, "not_found", f"event {event_id} has no face crop (not a face event, or retention "
                                             "removed it); its snapshot shows the whole frame")
        data = open_from(store.keys, session, "sightings", "thumbnail_jpeg", sighting.id, sighting.thumbnail_jpeg)
        return Response(data, media_type="image/jpeg")


def _latest_id(store: Gallery) -> int:
    with store.db.session() as session:
        return int(session.scalar(select(func.max(Event.id))) or 0)


def _events_after(store: Gallery, after: int) -> list[EventOut]:
    with store.db.session() as session:
        rows = session.scalars(select(Event).where(Event.id > after).order_by(Event.id).limit(100))
        return events_out(session, list(rows), clips=ClipFiles(store.settings.data_dir))

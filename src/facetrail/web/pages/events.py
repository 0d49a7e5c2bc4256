"""Live events: the newest first, new ones pushed by the event stream; confirm or dismiss with a note."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import func, select

from facetrail.api.deps import GalleryDep, RowId
from facetrail.api.door_views import server_config
from facetrail.api.strings import FreeText
from facetrail.api.views import event_out
from facetrail.events.outlet import EventOutlet
from facetrail.events.review import ReviewError, review_event
from facetrail.store.models import Event, EventReview
from facetrail.web.auth import PageOperator, PageViewer
from facetrail.web.render import back, page

router = APIRouter()
SHOWN = 50


@router.get("/", response_class=HTMLResponse)
def live(request: Request, store: GalleryDep, who: PageViewer,
         state: Literal["pending", "confirmed", "dismissed"] | None = None) -> Response:
    """The newest events with their evidence; the page adds new ones as they happen."""
    with store.db.session() as session:
        query = select(Event).order_by(Event.id.desc()).limit(SHOWN)
        if state:
            query = query.where(Event.state == state)
        rows = list(session.scalars(query))
        events = [event_out(session, row) for row in rows]
        reviews: dict[int, list[EventReview]] = {row.id: [] for row in rows}
        for review in session.scalars(select(EventReview).where(EventReview.event_id.in_(reviews))
                                      .order_by(EventReview.at)):
            reviews[review.event_id].append(review)
        last_id = session.scalar(select(func.max(Event.id))) or 0
        notes = {event_id: [(r.reviewer, r.decision, r.note) for r in found] for event_id, found in reviews.items()}
    return page(request, "events.html", who, events=events, notes=notes, state=state, last_id=last_id,
                may_review=who.may("operator"))


@router.get("/events/{event_id}/card", response_class=HTMLResponse)
def card(request: Request, event_id: RowId, store: GalleryDep, who: PageViewer) -> Response:
    """One event's card, for the live page to insert when the stream announces it."""
    with store.db.session() as session:
        row = session.get(Event, event_id)
        if row is None:
            return page(request, "error.html", who, status_code=404, message=f"No event {event_id}.")
        shown = event_out(session, row)
    return page(request, "event_card.html", who, e=shown, notes=[], may_review=who.may("operator"))


@router.post("/events/{event_id}/review")
def review(request: Request, event_id: RowId, store: GalleryDep, who: PageOperator,
           verdict: Annotated[Literal["confirm", "dismiss"], Form()],
           note: Annotated[FreeText, Form()] = "") -> Response:
    """Confirm or dismiss (audited with the reviewer), then back to the event."""
    outlet = EventOutlet.for_config(server_config(request))  # announced as the API's review is
    try:
        with store.db.session() as session:
            outcome = review_event(session, event_id, reviewer=who.name, verdict=verdict, note=note.strip() or None,
                                   outlet=outlet)
    except ReviewError as error:
        return back(f"/#event-{event_id}", problem=str(error))
    done = "confirmed" if verdict == "confirm" else "dismissed"
    waiting = f" ({outcome.confirmations} of {outcome.required} confirmations)" if outcome.state == "pending" else ""
    return back(f"/#event-{event_id}", notice=f"Event {event_id} {done}{waiting}.")

"""Live events: a filter the URL holds, repeats folded into one card, a face crop beside the frame, bulk review.

The filter form is a GET form, so a filtered page can be bookmarked; times
without a zone are read as UTC, the zone the dashboard shows. A card stands
for a person's or visitor's repeats (``facetrail.events.queries``), and its
checkbox selects all of them. "All matching" reviews every pending event the
filter matches up to the newest one the page showed, so an event that
arrives meanwhile is never dismissed unseen.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import func, select

from facetrail.api.deps import GalleryDep, RowId
from facetrail.api.door_views import server_config
from facetrail.api.event_views import events_out
from facetrail.api.strings import FreeName, FreeText, Token
from facetrail.events.outlet import EventOutlet
from facetrail.events.queries import (
    EVENT_KINDS,
    STATES,
    EventFilter,
    EventFilterError,
    conditions,
    count_events,
    list_events,
)
from facetrail.events.review import ReviewError, pending_ids, review_event, review_many
from facetrail.store.media import ClipFiles
from facetrail.store.models import Event, EventReview, Watchlist
from facetrail.web.auth import PageOperator, PageViewer
from facetrail.web.render import back, page

router = APIRouter()
SHOWN = 100  # events per page; repeats fold into fewer cards
FILTER_FIELDS = ("kind", "camera", "person", "watchlist", "state", "since", "until")


def filter_of(values: dict[str, str]) -> EventFilter:
    """The filter in a page's query or form values (blank fields ignored); EventFilterError saying what is wrong."""
    given = {name: values.get(name, "").strip() or None for name in FILTER_FIELDS}
    moments = {name: _moment(given.pop(name), name) for name in ("since", "until")}
    return EventFilter(**given, **moments)  # type: ignore[arg-type]


def _moment(text: str | None, name: str) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise EventFilterError(f"{name} {text!r} is not a date and time; pick one, e.g. 2026-03-01T08:00") from None
    return moment if moment.utcoffset() is not None else moment.replace(tzinfo=UTC)


def link(wanted: EventFilter, **more: str) -> str:
    """The events page URL for ``wanted`` (and more parameters)."""
    params = {**wanted.as_params(), **more}
    return "/" + (f"?{urlencode(params)}" if params else "")


@router.get("/", response_class=HTMLResponse)
def live(request: Request, store: GalleryDep, who: PageViewer,
         group: Literal["visitor", "none"] = "visitor",
         before: Annotated[int | None, Query(ge=1, le=2**63 - 1, description="older than this id")] = None,
         ) -> Response:
    """The newest matching events with their evidence; the page adds new ones as they happen."""
    values = dict(request.query_params)
    problem = None
    try:
        wanted = filter_of(values)
    except EventFilterError as error:
        wanted, problem = EventFilter(), str(error)
    with store.db.session() as session:
        try:
            conditions(session, wanted)
        except EventFilterError as error:
            wanted, problem = EventFilter(), str(error)
        rows = list_events(session, wanted, limit=SHOWN + 1, before_id=before)
        total = count_events(session, wanted)
        pending = count_events(session, replace(wanted, state="pending"))
        shown = rows[:SHOWN]
        events = events_out(session, shown, group=group == "visitor", clips=ClipFiles(store.settings.data_dir))
        notes: dict[int, list[tuple[str, str, str | None]]] = {row.id: [] for row in shown}
        for review in session.scalars(select(EventReview).where(EventReview.event_id.in_(notes))
                                      .order_by(EventReview.at)):
            notes[review.event_id].append((review.reviewer, review.decision, review.note))
        last_id = session.scalar(select(func.max(Event.id))) or 0
        cameras = sorted(set(session.scalars(select(Event.camera).distinct())))
        watchlists = sorted(session.scalars(select(Watchlist.name)))
    older = link(wanted, group=group, before=str(shown[-1].id)) if len(rows) > SHOWN else None
    return page(request, "events.html", who, status_code=422 if problem else 200, filter_problem=problem,
                events=events, notes=notes, filter=wanted.as_params(), group=group, total=total, pending=pending,
                count=len(shown), last_id=last_id, older=older, paged=before is not None, kinds=EVENT_KINDS,
                states=STATES, cameras=cameras, watchlists=watchlists, may_review=who.may("operator"),
                back_to=link(wanted, group=group))


@router.get("/events/{event_id}/card", response_class=HTMLResponse)
def card(request: Request, event_id: RowId, store: GalleryDep, who: PageViewer) -> Response:
    """One event's card, for the live page to insert when the stream announces it.

    Given the page's filter (its query), an event the filter does not match answers 204: nothing to insert.
    """
    try:
        wanted = filter_of(dict(request.query_params))
    except EventFilterError:
        wanted = EventFilter()
    with store.db.session() as session:
        row = session.get(Event, event_id)
        if row is None:
            return page(request, "error.html", who, status_code=404, message=f"No event {event_id}.")
        try:
            matches = wanted.is_empty() or session.scalar(
                select(func.count()).select_from(Event).where(Event.id == event_id, *conditions(session, wanted)))
        except EventFilterError:
            matches = True
        if not matches:
            return Response(status_code=204)
        shown = events_out(session, [row], clips=ClipFiles(store.settings.data_dir))[0]
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


@router.post("/events/review")
def review_selected(request: Request, store: GalleryDep, who: PageOperator,
                    verdict: Annotated[Literal["confirm", "dismiss"], Form()],
                    note: Annotated[FreeText, Form()] = "",
                    ids: Annotated[list[Token] | None, Form()] = None,
                    everything: Annotated[FreeName, Form(alias="all")] = "",
                    max_id: Annotated[int | None, Form(ge=1, le=2**63 - 1)] = None,
                    back_to: Annotated[Token, Form()] = "/",
                    kind: Annotated[FreeName, Form()] = "", camera: Annotated[FreeName, Form()] = "",
                    person: Annotated[FreeName, Form()] = "", watchlist: Annotated[FreeName, Form()] = "",
                    state: Annotated[FreeName, Form()] = "", since: Annotated[FreeName, Form()] = "",
                    until: Annotated[FreeName, Form()] = "") -> Response:
    """Review the ticked cards (each with its repeats), or every pending event the filter matches; one note."""
    home = back_to if back_to.startswith("/") and not back_to.startswith("//") else "/"
    outlet = EventOutlet.for_config(server_config(request))
    try:
        chosen = [int(part) for value in ids or [] for part in value.split(",") if part.strip()]
    except ValueError:
        chosen = [0]
    if not all(0 < i < 2**63 for i in chosen):
        return back(home, problem="The selection was not a list of event ids; tick the cards again.")
    by_filter = everything == "yes"
    try:
        with store.db.session() as session:
            if by_filter:
                values = {"kind": kind, "camera": camera, "person": person, "watchlist": watchlist,
                          "state": state, "since": since, "until": until}
                wanted = filter_of(values)
                if max_id is not None:
                    wanted = replace(wanted, max_id=max_id)
                chosen = pending_ids(session, wanted)
            if not chosen:
                return back(home, problem="Nothing selected: tick the cards to review, or “all matching”.")
            outcome = review_many(session, chosen, reviewer=who.name, verdict=verdict, note=note.strip() or None,
                                  outlet=outlet, by_filter=by_filter)
    except (ReviewError, EventFilterError) as error:
        return back(home, problem=str(error))
    done = "Confirmed" if verdict == "confirm" else "Dismissed"
    skipped = ""
    if outcome.skipped:
        first = outcome.skipped[0]
        skipped = f" Skipped {len(outcome.skipped)}: event {first.event_id}: {first.reason}" + (
            " …" if len(outcome.skipped) > 1 else ".")
    return back(home, notice=f"{done} {len(outcome.reviewed)} event(s) with one note.{skipped}")

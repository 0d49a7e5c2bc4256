"""Doors: each door's rule and last reported state, and the decision log with its evidence."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from facetrail.api import pagination
from facetrail.api.deps import GalleryDep
from facetrail.api.door_views import decisions_page, doors_out, server_config
from facetrail.api.errors import ApiError
from facetrail.api.schemas import DoorOutcome
from facetrail.api.strings import FreeName
from facetrail.web.auth import PageViewer
from facetrail.web.render import page

router = APIRouter()
PAGE_SIZE = 25
OUTCOMES: tuple[tuple[str, str], ...] = (("grant", "granted"), ("deny", "denied"), ("pending", "pending"),
                                         ("no_decision", "no decision"))


@router.get("/doors", response_class=HTMLResponse)
def doors(request: Request, store: GalleryDep, who: PageViewer,
          door: Annotated[FreeName | None, Query()] = None, outcome: DoorOutcome | None = None,
          cursor: str | None = None) -> Response:
    """The doors, and their decisions newest first (filtered by door and outcome, older ones a page at a time)."""
    try:
        after = pagination.decode(cursor)
    except ApiError as error:
        return page(request, "error.html", who, status_code=error.status, message=error.message)
    door = door or None
    with store.db.session() as session:
        shown = doors_out(session, server_config(request))
        listed = decisions_page(session, limit=PAGE_SIZE, after=after, door=door, outcome=outcome)
    older = link(door, outcome, listed.next_cursor) if listed.next_cursor else None
    return page(request, "doors.html", who, doors=shown, decisions=listed.items, door=door, outcome=outcome,
                outcomes=OUTCOMES, link=link, older=older, newest=cursor is not None)


def link(door: str | None, outcome: str | None, cursor: str | None = None) -> str:
    """The address of the door page with these filters (unset ones left out)."""
    query = urlencode({k: v for k, v in (("door", door), ("outcome", outcome), ("cursor", cursor)) if v})
    return "/doors" + (f"?{query}" if query else "")

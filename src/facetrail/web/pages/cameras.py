"""Cameras: live status, the latest analysed frame with its faces boxed, and a camera's live view on request."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from facetrail.api.deps import GalleryDep
from facetrail.api.views import cameras_out
from facetrail.config.schema import SLUG
from facetrail.web.auth import PageViewer
from facetrail.web.render import page

router = APIRouter()


@router.get("/cameras", response_class=HTMLResponse)
def cameras(request: Request, store: GalleryDep, who: PageViewer,
            live: Annotated[str | None, Query(max_length=200)] = None) -> Response:
    """Every camera's state (refreshed every few seconds); ``live``: the camera whose live view plays."""
    with store.db.session() as session:
        shown = cameras_out(session, request.app.state.settings.config)
    watched = live if live is not None and SLUG.match(live) and any(c.name == live for c in shown) else None
    return page(request, "cameras.html", who, cameras=shown, live=watched)

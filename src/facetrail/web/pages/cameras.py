"""Cameras: live status and the latest analysed frame with its faces boxed."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from facetrail.api.deps import GalleryDep
from facetrail.api.views import cameras_out
from facetrail.web.auth import PageViewer
from facetrail.web.render import page

router = APIRouter()


@router.get("/cameras", response_class=HTMLResponse)
def cameras(request: Request, store: GalleryDep, who: PageViewer) -> Response:
    """Every camera's state; the page refreshes itself every few seconds."""
    with store.db.session() as session:
        shown = cameras_out(session, request.app.state.settings.config)
    return page(request, "cameras.html", who, cameras=shown)

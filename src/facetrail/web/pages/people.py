"""People: the enrolled list, and a person's page with photos, watchlists and timeline across cameras."""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select

from facetrail.api.deps import GalleryDep, PersonId
from facetrail.api.views import identity_out
from facetrail.gallery.errors import GalleryError
from facetrail.gallery.history import SightingView, timeline
from facetrail.gallery.people import forget
from facetrail.store.models import FaceTemplate, Identity
from facetrail.web.auth import PageAdmin, PageViewer
from facetrail.web.render import back, page

router = APIRouter()


@router.get("/people", response_class=HTMLResponse)
def people(request: Request, store: GalleryDep, who: PageViewer) -> Response:
    """Everyone enrolled, by name."""
    with store.db.session() as session:
        rows = [identity_out(session, row) for row in session.scalars(select(Identity).order_by(Identity.display_name))]
    return page(request, "people.html", who, people=rows)


@router.get("/people/{identity_id}", response_class=HTMLResponse)
def person(request: Request, identity_id: PersonId, store: GalleryDep, who: PageViewer,
           purpose: str | None = None) -> Response:
    """A person's photos and watchlists; with a purpose, their timeline (the look-up is audited)."""
    with store.db.session() as session:
        row = session.get(Identity, identity_id)
        if row is None:
            return page(request, "error.html", who, status_code=404, message=f"No person with id {identity_id}.")
        shown = identity_out(session, row)
        photos = list(session.scalars(select(FaceTemplate.id).where(FaceTemplate.identity_id == identity_id,
                                                                    FaceTemplate.thumbnail_jpeg.is_not(None))
                                      .order_by(FaceTemplate.quality.desc())))
    sightings: list[SightingView] | None = None
    lanes: dict[str, list[SightingView]] = defaultdict(list)
    purpose = (purpose or "").strip() or None
    if purpose:
        sightings = timeline(store, str(identity_id), purpose=purpose, actor=who.name)
        for sighting in sightings:
            lanes[sighting.camera].append(sighting)
    return page(request, "person.html", who, person=shown, photos=photos, purpose=purpose, sightings=sightings,
                lanes=dict(sorted(lanes.items())), chart=_chart(sightings or []))


@router.post("/people/{identity_id}/forget")
def forget_person(identity_id: PersonId, store: GalleryDep, who: PageAdmin,
                  reason: Annotated[str, Form()] = "") -> Response:
    """Delete the person on request (audited with the reason; the audit log keeps a tombstone)."""
    try:
        forget(store, str(identity_id), actor=who.name, reason=reason)
    except GalleryError as error:
        return back(f"/people/{identity_id}", problem=str(error))
    return back("/people", notice=f"Person {identity_id} and all their data were deleted.")


def _chart(sightings: list[SightingView]) -> list[dict[str, object]]:
    """Bars for the time line: one lane per camera, each sighting placed between the first and last moment."""
    if not sightings:
        return []
    start = min(s.first_seen for s in sightings)
    span = max((max(s.last_seen for s in sightings) - start).total_seconds(), 1.0)
    cameras = sorted({s.camera for s in sightings})
    return [{"lane": cameras.index(s.camera), "camera": s.camera,
             "x": 100 * (s.first_seen - start).total_seconds() / span,
             "width": max(100 * (s.last_seen - s.first_seen).total_seconds() / span, 0.8),
             "id": s.id, "title": f"{s.camera} {s.first_seen:%H:%M:%S}-{s.last_seen:%H:%M:%S}"} for s in sightings]

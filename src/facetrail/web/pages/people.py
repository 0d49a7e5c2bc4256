"""People: the enrolled list, and a person's page with photos, watchlists, timeline and door consents."""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select

from facetrail.api.deps import ConsentId, GalleryDep, PersonId
from facetrail.api.door_views import configured_door, consent_out, server_config
from facetrail.api.errors import ApiError
from facetrail.api.strings import FreeCode, FreeName, FreeText
from facetrail.api.views import identity_out
from facetrail.gallery.errors import GalleryError
from facetrail.gallery.history import SightingView, timeline
from facetrail.gallery.people import forget, withdraw_door_consent
from facetrail.store.doors import ANY_DOOR, consents_of, record_consent
from facetrail.store.errors import StoreError
from facetrail.store.models import DoorConsent, FaceTemplate, Identity
from facetrail.web.auth import PageAdmin, PageOperator, PageViewer
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
           purpose: Annotated[FreeText | None, Query()] = None) -> Response:
    """A person's photos and watchlists; with a purpose, their timeline (the look-up is audited); for operators,
    their door consents."""
    with store.db.session() as session:
        row = session.get(Identity, identity_id)
        if row is None:
            return page(request, "error.html", who, status_code=404, message=f"No person with id {identity_id}.")
        shown = identity_out(session, row)
        faces = session.execute(select(FaceTemplate.id, FaceTemplate.thumbnail_jpeg.is_not(None),
                                       FaceTemplate.source_name, FaceTemplate.quality)
                                .where(FaceTemplate.identity_id == identity_id)
                                .order_by(FaceTemplate.quality.desc())).all()
        photos = [face.id for face in faces if face[1]]
        templates = [{"id": face.id, "has_photo": bool(face[1]), "source": face.source_name or "",
                      "quality": round(face.quality, 2)} for face in faces]
        others = (session.execute(select(Identity.id, Identity.display_name).where(Identity.id != identity_id)
                                  .order_by(Identity.display_name)).all() if who.may("admin") else [])
        consents = [consent_out(c) for c in consents_of(session, identity_id)] if who.may("operator") else None
    sightings: list[SightingView] | None = None
    lanes: dict[str, list[SightingView]] = defaultdict(list)
    purpose = (purpose or "").strip() or None
    if purpose:
        sightings = timeline(store, str(identity_id), purpose=purpose, actor=who.name)
        for sighting in sightings:
            lanes[sighting.camera].append(sighting)
    config = server_config(request)
    return page(request, "person.html", who, person=shown, photos=photos, templates=templates, others=others,
                purpose=purpose, sightings=sightings,
                lanes=dict(sorted(lanes.items())), chart=_chart(sightings or []), consents=consents,
                doors=sorted(config.doors) if config else [])


@router.post("/people/{identity_id}/forget")
def forget_person(identity_id: PersonId, store: GalleryDep, who: PageAdmin,
                  reason: Annotated[FreeText, Form()] = "") -> Response:
    """Delete the person on request (audited with the reason; the audit log keeps a tombstone)."""
    try:
        forget(store, str(identity_id), actor=who.name, reason=reason)
    except GalleryError as error:
        return back(f"/people/{identity_id}", problem=str(error))
    return back("/people", notice=f"Person {identity_id} and all their data were deleted.")


@router.post("/people/{identity_id}/consents")
def add_consent(request: Request, identity_id: PersonId, store: GalleryDep, who: PageOperator,
                door: Annotated[FreeName, Form()] = "", method: Annotated[FreeText, Form()] = "",
                factor: Annotated[FreeCode, Form()] = "") -> Response:
    """Record the person's consent for a configured door (or ``*``), with their PIN or card if given (audited)."""
    here, door = f"/people/{identity_id}#consents", door.strip()
    if not door:
        return back(here, problem="Give a door's name, or * for every door.")
    try:
        if door != ANY_DOOR:
            configured_door(request, door)
        with store.db.session() as session:
            record_consent(session, identity_id, door, method=method, actor=who.name, factor=factor.strip() or None)
    except ApiError as error:
        return back(here, problem=error.message)
    except StoreError as error:
        return back(here, problem=str(error))
    where = "every door" if door == ANY_DOOR else f"door {door!r}"
    return back(here, notice=f"Consent for {where} recorded{' with a second factor' if factor.strip() else ''}.")


@router.post("/people/{identity_id}/consents/{consent_id}/withdraw")
def withdraw_consent(identity_id: PersonId, consent_id: ConsentId, store: GalleryDep, who: PageOperator,
                     confirm: Annotated[str, Form()] = "") -> Response:
    """Withdraw a consent (audited); without another consent in force, the person's face templates go with it."""
    here = f"/people/{identity_id}#consents"
    if confirm != "yes":
        return back(here, problem="Tick the box to confirm the withdrawal.")
    with store.db.session() as session:
        consent = session.get(DoorConsent, consent_id)
        if consent is None or consent.identity_id != identity_id:
            return back(here, problem=f"This person has no consent {consent_id}.")
    try:
        withdrawal = withdraw_door_consent(store, consent_id, actor=who.name)
    except (StoreError, GalleryError) as error:
        return back(here, problem=str(error))
    removed, others = len(withdrawal.template_ids), withdrawal.other_consents
    if removed:
        outcome = (f"{removed} face template{'s' if removed != 1 else ''} deleted: no door or camera recognises "
                   "this person any more")
    elif others:
        outcome = f"{others} other consent{'s' if others != 1 else ''} still in force, so the face templates stay"
    else:
        outcome = "there were no face templates left to delete"
    return back(here, notice=f"Consent {consent_id} withdrawn; {outcome}.")


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

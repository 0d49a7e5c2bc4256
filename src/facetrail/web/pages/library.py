"""The face library on the dashboard: the person page's forms and the event cards' "this is" / "not" buttons.

Each form posts here, calls the same ``facetrail.gallery.library`` function
the API calls (so it is audited the same way) and redirects back with a
notice or the problem in one line.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import Response
from sqlalchemy import select

from facetrail.api.deps import GalleryDep, PersonId, RowId
from facetrail.api.errors import ApiError
from facetrail.api.heavy import heavy_work
from facetrail.api.routers.uploads import read_upload
from facetrail.api.strings import FreeName, FreeText, upload_name
from facetrail.gallery import library
from facetrail.gallery.enrol import Outcome
from facetrail.gallery.errors import GalleryError
from facetrail.gallery.gallery import Gallery
from facetrail.gallery.people import resolve_identity
from facetrail.store.models import Identity
from facetrail.web.auth import PageAdmin, PageOperator
from facetrail.web.render import back

router = APIRouter()
MAX_PHOTOS = 20


def _confirmed(confirm: str) -> bool:
    return confirm == "yes"


def _person(store: Gallery, reference: str) -> int | None:
    """The identity a name or id means (None when empty); GalleryError when unknown or ambiguous."""
    if not reference.strip():
        return None
    with store.db.session() as session:
        return int(resolve_identity(session, reference.strip()).id)


@router.post("/people/{identity_id}/rename")
def rename(identity_id: PersonId, store: GalleryDep, who: PageOperator,
           display_name: Annotated[FreeName, Form()] = "", purpose: Annotated[FreeText, Form()] = "") -> Response:
    """Rename a person (audited with the old and new name and the purpose)."""
    here = f"/people/{identity_id}#library"
    try:
        old = library.rename(store, identity_id, display_name, actor=who.name, purpose=purpose)
    except GalleryError as error:
        return back(here, problem=str(error))
    return back(here, notice=f"Renamed {old!r} to {' '.join(display_name.split())!r}.")


@router.post("/people/{identity_id}/merge")
def merge(identity_id: PersonId, store: GalleryDep, who: PageAdmin, other_id: Annotated[int, Form(ge=0)] = 0,
          purpose: Annotated[FreeText, Form()] = "", confirm: Annotated[str, Form()] = "") -> Response:
    """Merge another identity into this person (admins; the other identity is deleted)."""
    here = f"/people/{identity_id}#library"
    if not other_id:
        return back(here, problem="Choose the person to merge into this one.")
    if not _confirmed(confirm):
        return back(here, problem="Tick the box to confirm the merge.")
    try:
        merged = library.merge(store, identity_id, other_id, actor=who.name, purpose=purpose)
    except GalleryError as error:
        return back(here, problem=str(error))
    return back(here, notice=f"Merged identity {merged.merged_id} into this person: {merged.templates} face "
                             f"template(s), {merged.sightings} sighting(s), {merged.events} event(s) moved.")


@router.post("/people/{identity_id}/photos")
def add_photos(request: Request, identity_id: PersonId, store: GalleryDep, who: PageOperator,
               images: Annotated[list[UploadFile], File()], purpose: Annotated[FreeText, Form()] = "") -> Response:
    """Add photos to a person through the ordinary enrolment checks."""
    here = f"/people/{identity_id}#library"
    uploads = [image for image in images if image.filename]
    if not uploads:
        return back(here, problem="Choose one or more photos to add.")
    if len(uploads) > MAX_PHOTOS:
        return back(here, problem=f"At most {MAX_PHOTOS} photos at a time.")
    try:
        with tempfile.TemporaryDirectory(prefix="facetrail-upload-") as folder:
            paths = []
            for number, image in enumerate(uploads):
                path = Path(folder) / f"{number:02d}-{upload_name(image.filename)}"
                path.write_bytes(read_upload(request, image))
                paths.append(path)
            job = functools.partial(library.add_photos, actor=who.name, purpose=purpose)
            report = heavy_work(request).call(job, store, identity_id, paths)
    except ApiError as error:
        return back(here, problem=error.message)
    except GalleryError as error:
        return back(here, problem=str(error))
    added = report.count(Outcome.ENROLLED)
    refused = [f"{f.path.name.partition('-')[2]}: {f.outcome}" for f in report.files
               if f.outcome is not Outcome.ENROLLED]
    text = f"{added} photo{'s' if added != 1 else ''} added."
    if refused:
        text += f" Not added: {'; '.join(refused)}."
    return back(here, notice=text) if added else back(here, problem=text)


@router.post("/people/{identity_id}/templates/{template_id}/delete")
def delete_template(identity_id: PersonId, template_id: RowId, store: GalleryDep, who: PageOperator,
                    purpose: Annotated[FreeText, Form()] = "") -> Response:
    """Delete one face template of a person."""
    here = f"/people/{identity_id}#library"
    try:
        library.delete_template(store, identity_id, template_id, actor=who.name, purpose=purpose)
    except GalleryError as error:
        return back(here, problem=str(error))
    return back(here, notice=f"Face template {template_id} deleted.")


@router.post("/events/{event_id}/face")
def event_face(event_id: RowId, store: GalleryDep, who: PageOperator, verdict: Annotated[str, Form()] = "",
               person: Annotated[FreeName, Form()] = "", purpose: Annotated[FreeText, Form()] = "",
               confirm: Annotated[str, Form()] = "") -> Response:
    """"This is X" (the event's best shot becomes X's template) or "not X" (a negative example of X); ``person``
    is a name or an id (empty for "not": the person the event named)."""
    here = f"/#event-{event_id}"
    if not _confirmed(confirm):
        return back(here, problem="Tick the box to confirm what this face teaches the gallery.")
    try:
        identity_id = _person(store, person)
        if verdict == "is":
            if identity_id is None:
                return back(here, problem="Say who this is (a name or an id).")
            library.confirm_event_face(store, event_id, identity_id, actor=who.name, purpose=purpose)
            return back(here, notice=f"Event {event_id}'s face added as a face template of {person.strip()}.")
        if verdict == "not":
            _, target = library.reject_event_face(store, event_id, identity_id, actor=who.name, purpose=purpose)
            with store.db.session() as session:
                name = session.scalar(select(Identity.display_name).where(Identity.id == target))
            return back(here, notice=f"Noted: this face is not {name} (person {target}); it will not name them "
                                     "again.")
    except GalleryError as error:
        return back(here, problem=str(error))
    return back(here, problem="Choose 'this is' or 'not'.")


@router.post("/visitors/{visitor_id}/enrol")
def enrol_visitor(visitor_id: RowId, store: GalleryDep, who: PageOperator, name: Annotated[FreeName, Form()] = "",
                  purpose: Annotated[FreeText, Form()] = "") -> Response:
    """Enrol an unknown visitor from their best shots."""
    try:
        identity_id, templates = library.enrol_visitor(store, visitor_id, name, actor=who.name, purpose=purpose)
    except GalleryError as error:
        return back("/", problem=str(error))
    return back(f"/people/{identity_id}", notice=f"Visitor {visitor_id} enrolled with {len(templates)} face "
                                                 f"template{'s' if len(templates) != 1 else ''}.")

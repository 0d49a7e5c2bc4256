"""The face library: add photos to a person, rename, merge, delete one template; teach from events and visitors.

Each action needs a purpose and is audited (``facetrail.gallery.library``).
Operators curate faces; merging (which deletes an identity) is for admins.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Request, UploadFile

from facetrail.api.deps import Admin, GalleryDep, Operator, PersonId, RowId
from facetrail.api.errors import ApiError
from facetrail.api.heavy import heavy_work
from facetrail.api.routers.uploads import read_upload
from facetrail.api.schemas import (
    EnrolmentOut,
    EventFaceIn,
    EventFaceOut,
    IdentityOut,
    MergeIn,
    MergeOut,
    PhotosOut,
    RenameIn,
    VisitorEnrolIn,
    VisitorEnrolOut,
)
from facetrail.api.strings import Text, upload_name
from facetrail.api.views import identity_out
from facetrail.gallery import library
from facetrail.gallery.enrol import Outcome
from facetrail.gallery.gallery import Gallery
from facetrail.store.models import Identity

router = APIRouter(tags=["library"])
MAX_PHOTOS = 20


def _identity(store: Gallery, identity_id: int) -> IdentityOut:
    with store.db.session() as session:
        row = session.get(Identity, identity_id)
        if row is None:
            raise ApiError(404, "not_found", f"no identity with id {identity_id}")
        return identity_out(session, row)


@router.post("/identities/{identity_id}/photos", response_model=PhotosOut, status_code=201)
def add_photos(request: Request, identity_id: PersonId, store: GalleryDep, who: Operator,
               images: Annotated[list[UploadFile], File(description=f"photos with one face each (at most "
                                                                    f"{MAX_PHOTOS})")],
               purpose: Annotated[Text, Form(description="why (stored in the audit log)")],
               confirm_duplicate: Annotated[bool, Form(description="add a face even if it is enrolled under "
                                                                   "another identity")] = False) -> PhotosOut:
    """Enrol more photos of an existing person; each photo is checked as at enrolment (one usable face)."""
    _identity(store, identity_id)
    if len(images) > MAX_PHOTOS:
        raise ApiError(422, "too_many", f"at most {MAX_PHOTOS} photos at a time; send the rest in another request")
    with tempfile.TemporaryDirectory(prefix="facetrail-upload-") as folder:
        paths = []
        for number, image in enumerate(images):
            path = Path(folder) / f"{number:02d}-{upload_name(image.filename)}"
            path.write_bytes(read_upload(request, image))
            paths.append(path)
        job = functools.partial(library.add_photos, actor=who.name, purpose=purpose,
                                allow_duplicate_face=confirm_duplicate)
        report = heavy_work(request).call(job, store, identity_id, paths)
    added = [f.template_id for f in report.files if f.outcome is Outcome.ENROLLED and f.template_id is not None]
    refused = [EnrolmentOut(identity_id=None, outcome=str(f.outcome), detail=f"{f.path.name.partition('-')[2]}: "
                            f"{f.detail}".rstrip(": ")) for f in report.files if f.outcome is not Outcome.ENROLLED]
    return PhotosOut(identity_id=identity_id, added=added, refused=refused)


@router.patch("/identities/{identity_id}", response_model=IdentityOut)
def rename(identity_id: PersonId, body: RenameIn, store: GalleryDep, who: Operator) -> IdentityOut:
    """Give a person another display name (audited with the old and new name)."""
    library.rename(store, identity_id, body.display_name, actor=who.name, purpose=body.purpose)
    return _identity(store, identity_id)


@router.post("/identities/{identity_id}/merge", response_model=MergeOut)
def merge(identity_id: PersonId, body: MergeIn, store: GalleryDep, who: Admin) -> MergeOut:
    """Fold ``other_id`` into this person: templates, negative examples, sightings, events, watchlists and door
    records move here; the other identity and its data key are deleted."""
    merged = library.merge(store, identity_id, body.other_id, actor=who.name, purpose=body.purpose)
    return MergeOut(survivor=_identity(store, identity_id), merged_id=merged.merged_id, templates=merged.templates,
                    negatives=merged.negatives, sightings=merged.sightings, events=merged.events,
                    memberships=merged.memberships)


@router.delete("/identities/{identity_id}/templates/{template_id}", status_code=204)
def delete_template(identity_id: PersonId, template_id: RowId, store: GalleryDep, who: Operator,
                    purpose: Annotated[Text, Query(description="why, e.g. 'blurred photo'")]) -> None:
    """Delete one face template of a person (not the last: forget the person instead)."""
    library.delete_template(store, identity_id, template_id, actor=who.name, purpose=purpose)


@router.post("/events/{event_id}/face/is", response_model=EventFaceOut, status_code=201)
def this_is(event_id: RowId, body: EventFaceIn, store: GalleryDep, who: Operator) -> EventFaceOut:
    """"This is X": the event's best shot becomes a face template of ``identity_id``."""
    if body.identity_id is None:
        raise ApiError(422, "invalid", "say who this is: identity_id")
    template_id = library.confirm_event_face(store, event_id, body.identity_id, actor=who.name,
                                             purpose=body.purpose)
    return EventFaceOut(event_id=event_id, identity_id=body.identity_id, template_id=template_id)


@router.post("/events/{event_id}/face/is-not", response_model=EventFaceOut, status_code=201)
def is_not(event_id: RowId, body: EventFaceIn, store: GalleryDep, who: Operator) -> EventFaceOut:
    """"Not X": the event's face (and faces closer to it than to X's templates) no longer names X (default: the
    person the event named)."""
    negative, target = library.reject_event_face(store, event_id, body.identity_id, actor=who.name,
                                                 purpose=body.purpose)
    return EventFaceOut(event_id=event_id, identity_id=target, negative_example_id=negative)


@router.post("/visitors/{visitor_id}/enrol", response_model=VisitorEnrolOut, status_code=201)
def enrol_visitor(visitor_id: RowId, body: VisitorEnrolIn, store: GalleryDep, who: Operator) -> VisitorEnrolOut:
    """Enrol an unknown visitor as ``name`` from their best shots; their sightings are named."""
    identity_id, templates = library.enrol_visitor(store, visitor_id, body.name, actor=who.name,
                                                   purpose=body.purpose)
    return VisitorEnrolOut(visitor_id=visitor_id, identity_id=identity_id, templates=templates)

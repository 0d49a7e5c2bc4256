"""/identities: list, read, enrol a photo, delete on request."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile
from sqlalchemy import select

from facetrail.api import pagination
from facetrail.api.deps import Admin, GalleryDep, Operator, PersonId, RowId, Viewer
from facetrail.api.errors import ApiError
from facetrail.api.heavy import heavy_work
from facetrail.api.routers.uploads import read_upload
from facetrail.api.schemas import EnrolmentOut, IdentityOut, PhotoFaceOut, TemplateOut
from facetrail.api.strings import Name, Text, upload_name
from facetrail.api.views import identity_out
from facetrail.gallery.enrol import EnrolOptions, Outcome, PhotoFace, enrol_person
from facetrail.gallery.enrol_faces import FacePick, parse_face_choice
from facetrail.gallery.people import forget
from facetrail.store.models import FaceTemplate, Identity
from facetrail.store.sealed import open_from

router = APIRouter(prefix="/identities", tags=["identities"])
FACE_CHOICE = r"^(\d{1,3}|largest|centre|center)$"  # a face number, or how to pick one


@router.get("", response_model=pagination.Page[IdentityOut])
def list_identities(store: GalleryDep, _who: Viewer, limit: Annotated[int, Query(ge=1, le=200)] = 50,
                    cursor: str | None = None) -> pagination.Page[IdentityOut]:
    """Enrolled people, newest first."""
    after = pagination.decode(cursor)
    with store.db.session() as session:
        query = select(Identity).order_by(Identity.id.desc()).limit(limit + 1)
        if after is not None:
            query = query.where(Identity.id < after)
        return pagination.page(list(session.scalars(query)), limit, lambda row: identity_out(session, row))


@router.get("/{identity_id}", response_model=IdentityOut)
def get_identity(identity_id: PersonId, store: GalleryDep, _who: Viewer) -> IdentityOut:
    """One person."""
    with store.db.session() as session:
        row = session.get(Identity, identity_id)
        if row is None:
            raise ApiError(404, "not_found", f"no identity with id {identity_id}")
        return identity_out(session, row)


@router.get("/{identity_id}/photo", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}, "description": "the best enrolment photo's face"}})
def photo(identity_id: PersonId, store: GalleryDep, _who: Viewer) -> Response:
    """The face of the person's best enrolment photo (JPEG), to set beside a sighting."""
    with store.db.session() as session:
        best = session.execute(select(FaceTemplate.id, FaceTemplate.thumbnail_jpeg)
                               .where(FaceTemplate.identity_id == identity_id, FaceTemplate.thumbnail_jpeg.is_not(None))
                               .order_by(FaceTemplate.quality.desc()).limit(1)).first()
        data = open_from(store.keys, session, "face_templates", "thumbnail_jpeg", best.id,
                         best.thumbnail_jpeg) if best is not None else None
    if data is None:
        raise ApiError(404, "not_found", f"no enrolment photo for identity {identity_id}")
    return Response(data, media_type="image/jpeg")


@router.get("/{identity_id}/templates", response_model=list[TemplateOut])
def templates(identity_id: PersonId, store: GalleryDep, _who: Viewer) -> list[TemplateOut]:
    """The person's face templates, best quality first."""
    with store.db.session() as session:
        if session.get(Identity, identity_id) is None:
            raise ApiError(404, "not_found", f"no identity with id {identity_id}")
        rows = session.scalars(select(FaceTemplate).where(FaceTemplate.identity_id == identity_id)
                               .order_by(FaceTemplate.quality.desc()))
        return [TemplateOut(id=t.id, model_id=t.model_id, quality=round(t.quality, 3), source_name=t.source_name,
                            has_photo=t.thumbnail_jpeg is not None, created_at=t.created_at) for t in rows]


@router.get("/{identity_id}/templates/{template_id}/photo", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}, "description": "the enrolment photo's aligned face"}})
def template_photo(identity_id: PersonId, template_id: RowId, store: GalleryDep, _who: Viewer) -> Response:
    """One template's enrolment face (JPEG)."""
    with store.db.session() as session:
        row = session.get(FaceTemplate, template_id)
        if row is None or row.identity_id != identity_id or row.thumbnail_jpeg is None:
            raise ApiError(404, "not_found", f"no photo for template {template_id} of identity {identity_id}")
        data = open_from(store.keys, session, "face_templates", "thumbnail_jpeg", row.id, row.thumbnail_jpeg)
        return Response(data, media_type="image/jpeg")


@router.post("/enrolments", response_model=EnrolmentOut, status_code=201)
def enrol(request: Request, store: GalleryDep, who: Operator,
          name: Annotated[Name, Form(description="the person's name")],
          image: Annotated[UploadFile, File(description="a photo with one face")],
          confirm_duplicate: Annotated[bool, Form(description="enrol even if the face is already enrolled under "
                                                              "another identity")] = False,
          face: Annotated[str | None, Form(pattern=FACE_CHOICE, description="on a photo with several faces, which to "
                                           "enrol: its number (as the 422 'several_faces' lists them), 'largest', or "
                                           "'centre' (nearest the centre, weighted by size)")] = None) -> EnrolmentOut:
    """Enrol one photo as ``name`` (created if new). Nothing is written unless a usable face is found.

    409 ``duplicate_face`` when the face is already enrolled under another identity (named in the details),
    unless ``confirm_duplicate`` is true. 422 ``several_faces`` when the photo shows several faces and ``face``
    does not say which: the details list every face (number, box, size). A small or blurred face above the
    measured floors is enrolled with a ``warning``.
    """
    data = read_upload(request, image)
    with tempfile.TemporaryDirectory(prefix="facetrail-upload-") as folder:
        path = Path(folder) / upload_name(image.filename)
        path.write_bytes(data)
        number, pick = parse_face_choice(face)
        options = EnrolOptions(actor=who.name, allow_duplicate_face=confirm_duplicate, face=number,
                               take_largest=pick is FacePick.LARGEST, take_centre=pick is FacePick.CENTRE)
        report = heavy_work(request).call(enrol_person, store, name, [path], options)
    result = report.files[0]
    if result.outcome is Outcome.DUPLICATE_FACE and result.other is not None:
        raise ApiError(409, "duplicate_face", f"{result.detail}; send confirm_duplicate=true to enrol it anyway",
                       {"identity_id": result.other.identity_id, "display_name": result.other.display_name,
                        "similarity": round(result.other.score, 4)})
    if result.outcome is Outcome.SEVERAL_FACES:
        raise ApiError(422, "several_faces", f"{result.outcome}: {result.detail}; send face=N, face=largest or "
                       "face=centre", {"faces": [_face_out(f).model_dump() for f in result.faces]})
    if result.outcome is not Outcome.ENROLLED:
        raise ApiError(422, "not_enrolled", f"{result.outcome}: {result.detail}".rstrip(": "))
    return EnrolmentOut(identity_id=report.identities.get(name.strip()), outcome=str(result.outcome),
                        detail=result.detail, face=_face_out(result.face) if result.face else None,
                        quality=round(result.quality.score, 3) if result.quality else None,
                        warning=result.warning or None)


def _face_out(face: PhotoFace) -> PhotoFaceOut:
    return PhotoFaceOut(index=face.index, box=face.box, size_px=face.size_px)


@router.delete("/{identity_id}", status_code=204)
def delete_identity(identity_id: PersonId, store: GalleryDep, who: Admin,
                    reason: Annotated[Text, Query(description="why, e.g. 'deletion request'")]) -> None:
    """Forget a person: templates, sightings, events, memberships; the audit log keeps a tombstone."""
    forget(store, str(identity_id), actor=who.name, reason=reason)

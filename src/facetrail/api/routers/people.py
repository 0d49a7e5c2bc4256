"""Sightings: a person's or a visitor's timeline across cameras (audited), and a sighting's thumbnail."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Query, Response

from facetrail.api.deps import GalleryDep, PersonId, RowId, Viewer
from facetrail.api.errors import ApiError
from facetrail.api.schemas import SightingOut
from facetrail.api.strings import Text
from facetrail.gallery.history import timeline
from facetrail.store.models import Sighting
from facetrail.store.sealed import open_from

router = APIRouter(tags=["sightings"])
Purpose = Annotated[Text, Query(description="why you are looking (stored in the audit log)")]


@router.get("/identities/{identity_id}/sightings", response_model=list[SightingOut])
def identity_timeline(identity_id: PersonId, purpose: Purpose, store: GalleryDep, who: Viewer) -> list[SightingOut]:
    """An enrolled person's sightings across cameras, oldest first."""
    rows = timeline(store, str(identity_id), purpose=purpose, actor=who.name)
    return [SightingOut.model_validate(asdict(row)) for row in rows]


@router.get("/sightings/{sighting_id}/thumbnail", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}, "description": "the sighting's best shot"}})
def thumbnail(sighting_id: RowId, store: GalleryDep, _who: Viewer) -> Response:
    """A sighting's best-shot face (JPEG), while retention keeps it."""
    with store.db.session() as session:
        row = session.get(Sighting, sighting_id)
        if row is None or row.thumbnail_jpeg is None:
            raise ApiError(404, "not_found", f"no thumbnail for sighting {sighting_id} (unknown, or retention "
                                             "removed it)")
        data = open_from(store.keys, session, "sightings", "thumbnail_jpeg", row.id, row.thumbnail_jpeg)
        return Response(data, media_type="image/jpeg")


@router.get("/visitors/{visitor_id}/sightings", response_model=list[SightingOut])
def visitor_timeline(visitor_id: RowId, purpose: Purpose, store: GalleryDep, who: Viewer) -> list[SightingOut]:
    """An anonymous visitor's visits, oldest first."""
    rows = timeline(store, f"visitor:{visitor_id}", purpose=purpose, actor=who.name)
    return [SightingOut.model_validate(asdict(row)) for row in rows]

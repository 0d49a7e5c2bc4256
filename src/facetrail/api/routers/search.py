"""/search: who is the face in this photo, among enrolled people or among all stored sightings."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile

from facetrail.api.deps import Admin, GalleryDep, Operator
from facetrail.api.heavy import heavy_work
from facetrail.api.routers.uploads import face_of_upload
from facetrail.api.schemas import MatchOut, SearchOut, SightingOut
from facetrail.api.strings import Name, Text
from facetrail.gallery.history import SightingView, search_history
from facetrail.gallery.search import SearchResult, search_embedding

router = APIRouter(prefix="/search", tags=["search"])
Purpose = Annotated[Text, Form(description="why you are searching (stored in the audit log)")]


@router.post("/gallery", response_model=SearchOut)
async def search_gallery(request: Request, store: GalleryDep, who: Operator, purpose: Purpose,
                         image: Annotated[UploadFile, File()], top: Annotated[int, Form(ge=1, le=50)] = 5,
                         watchlist: Annotated[Name | None, Form()] = None) -> SearchOut:
    """1:N search of the photo's main face among enrolled people (open set, audited)."""

    def run() -> SearchResult:
        vector, model_id = face_of_upload(request, store, image)
        return search_embedding(store, vector, purpose=purpose, actor=who.name, top=top, watchlist=watchlist,
                                model_id=model_id)

    result = await heavy_work(request).run(run)
    return SearchOut(known=result.known, threshold=result.threshold,
                     matches=[MatchOut(identity_id=m.identity_id, display_name=m.display_name, score=m.score)
                              for m in result.matches])


@router.post("/sightings", response_model=list[SightingOut])
async def search_sightings(request: Request, store: GalleryDep, who: Admin, purpose: Purpose,
                           image: Annotated[UploadFile, File()], top: Annotated[int, Form(ge=1, le=100)] = 10,
                           ) -> list[SightingOut]:
    """The photo's main face among every stored sighting, enrolled or not (admins; audited).

    It finds people who never enrolled, so it needs the admin role, not the operator's.
    """

    def run() -> list[SightingView]:
        vector, model_id = face_of_upload(request, store, image)
        return search_history(store, vector, purpose=purpose, actor=who.name, top=top, model_id=model_id)

    hits = await heavy_work(request).run(run)
    return [SightingOut.model_validate(asdict(hit)) for hit in hits]

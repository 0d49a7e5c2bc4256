"""Search by photo: drop an image, say why, see the matches (enrolled people; all sightings for admins)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, Response

from facetrail.api.deps import GalleryDep
from facetrail.api.errors import ApiError
from facetrail.api.heavy import heavy_work
from facetrail.api.routers.uploads import face_of_upload
from facetrail.api.strings import FreeText
from facetrail.gallery.errors import GalleryError
from facetrail.gallery.history import search_history
from facetrail.gallery.search import search_embedding
from facetrail.vision.errors import VisionError
from facetrail.web.auth import PageOperator
from facetrail.web.render import page

router = APIRouter()


@router.get("/search", response_class=HTMLResponse)
def search_form(request: Request, who: PageOperator) -> Response:
    """The search form."""
    return page(request, "search.html", who)


@router.post("/search", response_class=HTMLResponse)
def search(request: Request, store: GalleryDep, who: PageOperator,
           image: Annotated[UploadFile, File()], purpose: Annotated[FreeText, Form()] = "",
           scope: Annotated[Literal["gallery", "sightings"], Form()] = "gallery") -> Response:
    """Run the search (audited with the purpose) and show the matches."""
    purpose = purpose.strip()
    if not purpose:
        return page(request, "search.html", who, status_code=422, scope=scope,
                    error="Say why you are searching: the purpose is stored in the audit log with the search.")
    if scope == "sightings" and not who.may("admin"):
        return page(request, "search.html", who, status_code=403, scope=scope, purpose=purpose,
                    error="Searching every sighting (people who never enrolled) needs the admin role.")
    try:
        vector, model_id = heavy_work(request).call(face_of_upload, request, store, image)
        if scope == "sightings":
            hits = search_history(store, vector, purpose=purpose, actor=who.name, top=20, model_id=model_id)
            return page(request, "search.html", who, scope=scope, purpose=purpose, sightings=hits)
        result = search_embedding(store, vector, purpose=purpose, actor=who.name, top=5, model_id=model_id)
    except ApiError as error:
        return page(request, "search.html", who, status_code=error.status, scope=scope, purpose=purpose,
                    error=error.message)
    except (VisionError, GalleryError) as error:
        return page(request, "search.html", who, status_code=422, scope=scope, purpose=purpose, error=str(error))
    return page(request, "search.html", who, scope=scope, purpose=purpose, result=result)

"""/cameras: each camera's configuration and the status its pipeline last reported, and its latest frame."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from facetrail.api.deps import GalleryDep, Viewer
from facetrail.api.errors import ApiError
from facetrail.api.schemas import CameraOut
from facetrail.api.strings import Name
from facetrail.api.views import cameras_out
from facetrail.config.schema import FacetrailConfig
from facetrail.store.models import CameraState

router = APIRouter(prefix="/cameras", tags=["cameras"])


@router.get("", response_model=list[CameraOut])
def list_cameras(request: Request, store: GalleryDep, _who: Viewer) -> list[CameraOut]:
    """Configured cameras and every camera a pipeline reported, by name."""
    config: FacetrailConfig | None = request.app.state.settings.config
    with store.db.session() as session:
        return cameras_out(session, config)


@router.get("/{name}/frame", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}, "description": "latest analysed frame, faces boxed"}})
def latest_frame(name: Annotated[Name, Path(description="the camera's name")], store: GalleryDep,
                 _who: Viewer) -> Response:
    """The camera's latest analysed frame with its faces boxed (JPEG), while retention keeps it."""
    with store.db.session() as session:
        row = session.get(CameraState, name)
        if row is None or row.frame_jpeg is None:
            raise ApiError(404, "not_found", f"no frame from camera {name!r} yet; is its pipeline running?")
        return Response(row.frame_jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

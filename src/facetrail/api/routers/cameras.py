"""/cameras: each camera's configuration and the status its pipeline last reported, and its latest frame."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request, Response

from facetrail.api.deps import GalleryDep, Viewer
from facetrail.api.errors import ApiError
from facetrail.api.schemas import CameraOut
from facetrail.config.schema import FacetrailConfig
from facetrail.store.cameras import camera_states
from facetrail.store.models import CameraState, as_utc, utcnow
from facetrail.video.errors import mask_credentials

router = APIRouter(prefix="/cameras", tags=["cameras"])
SILENT_AFTER = timedelta(seconds=30)  # a pipeline reports every 2 s; this long without one means it is gone
RUNNING = {"connecting", "connected", "retrying"}


@router.get("", response_model=list[CameraOut])
def list_cameras(request: Request, store: GalleryDep, _who: Viewer) -> list[CameraOut]:
    """Configured cameras and every camera a pipeline reported, by name."""
    config: FacetrailConfig | None = request.app.state.settings.config
    with store.db.session() as session:
        states = {row.camera: row for row in camera_states(session)}
        names = sorted(set(states) | set(config.cameras if config else ()))
        return [_camera(name, config, states.get(name)) for name in names]


@router.get("/{name}/frame", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}, "description": "latest analysed frame, faces boxed"}})
def latest_frame(name: str, store: GalleryDep, _who: Viewer) -> Response:
    """The camera's latest analysed frame with its faces boxed (JPEG), while retention keeps it."""
    with store.db.session() as session:
        row = session.get(CameraState, name)
        if row is None or row.frame_jpeg is None:
            raise ApiError(404, "not_found", f"no frame from camera {name!r} yet; is its pipeline running?")
        return Response(row.frame_jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


def _camera(name: str, config: FacetrailConfig | None, row: CameraState | None) -> CameraOut:
    configured = config is not None and name in config.cameras
    source = detect_fps = None
    if config is not None and configured:
        camera = config.cameras[name]
        source, detect_fps = mask_credentials(camera.detect_input.path), camera.detect.fps
    if row is None:
        return CameraOut(name=name, configured=configured, source=source, detect_fps=detect_fps,
                         state="disabled" if configured and config and not config.cameras[name].enabled
                         else "not running", error=None, attempts=0, last_frame_at=None, analysed_fps=0.0,
                         frames_analysed=0, frames_skipped_motion=0, frames_dropped=0, faces_in_frame=0,
                         frame_at=None, reported_at=None)
    state = row.state
    if state in RUNNING and utcnow() - as_utc(row.updated_at) > SILENT_AFTER:
        state = "silent"
    return CameraOut(name=name, configured=configured, source=source or row.source, detect_fps=detect_fps,
                     state=state, error=row.error, attempts=row.attempts, last_frame_at=row.last_frame_at,
                     analysed_fps=round(row.analysed_fps, 2), frames_analysed=row.frames_analysed,
                     frames_skipped_motion=row.frames_skipped_motion, frames_dropped=row.frames_dropped,
                     faces_in_frame=row.faces_in_frame, frame_at=row.frame_at, reported_at=row.updated_at)

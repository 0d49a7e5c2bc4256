"""/cameras: each camera's configuration and the status its pipeline last reported, its latest frame, its live view."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import StreamingResponse

from facetrail.api.deps import GalleryDep, Viewer
from facetrail.api.errors import ApiError
from facetrail.api.schemas import CameraOut
from facetrail.api.strings import Name
from facetrail.api.views import cameras_out
from facetrail.config.schema import SLUG, FacetrailConfig
from facetrail.store.media import LiveFrames
from facetrail.store.models import CameraState

router = APIRouter(prefix="/cameras", tags=["cameras"])

BOUNDARY = "facetrail-live-frame"
WATCH_EVERY_S = 1.0  # how often an open stream tells the pipeline that someone watches
POLL_S = 0.05  # how often an open stream looks for a newer frame
watching: Counter[str] = Counter()  # live streams open now, per camera (this process)


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


@router.get("/{name}/live.mjpeg", response_class=StreamingResponse,
            responses={200: {"content": {f"multipart/x-mixed-replace; boundary={BOUNDARY}": {}},
                             "description": "the analysed frames, boxes and names drawn, as they come (MJPEG)"}})
def live_view(name: Annotated[Name, Path(description="the camera's name")], request: Request, store: GalleryDep,
              _who: Viewer) -> StreamingResponse:
    """The camera's analysed frames with boxes and names, as an MJPEG stream (plays in an ``<img>``).

    While the stream is open, the camera's pipeline (``facetrail run`` on the same data folder) draws and
    encodes at most ``live.fps`` frames a second; each viewer gets the newest frame, a slow one skips frames.
    The stream starts with the camera's latest still frame when there is one.
    """
    config: FacetrailConfig | None = request.app.state.settings.config
    with store.db.session() as session:
        row = session.get(CameraState, name)
        still = row.frame_jpeg if row is not None else None
        known = row is not None or (config is not None and name in config.cameras)
    if not known or not SLUG.match(name):
        raise ApiError(404, "not_found", f"no camera {name!r}: it is neither configured nor reported by a pipeline")
    frames = LiveFrames(request.app.state.settings.data_dir)
    return StreamingResponse(_parts(frames, name, still), media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def _parts(frames: LiveFrames, camera: str, still: bytes | None) -> AsyncIterator[bytes]:
    """The MJPEG parts: the still, then each new frame; ends when the client goes (Starlette cancels it)."""
    version, touched = 0, -float("inf")
    watching[camera] += 1
    try:
        yield f"--{BOUNDARY}\r\n".encode()
        if still is not None:
            yield _part(still)
        while True:
            now = time.monotonic()
            if now - touched >= WATCH_EVERY_S:
                frames.watch(camera)
                touched = now
            newest = frames.newest(camera, after=version)
            if newest is None:
                await asyncio.sleep(POLL_S)
                continue
            version, picture = newest
            yield _part(picture)  # waits while the client's socket is full: a slow viewer holds one frame at most
    finally:
        watching[camera] -= 1


def _part(picture: bytes) -> bytes:
    """One frame, and the next boundary at once: a browser shows a part when the boundary after it arrives."""
    head = f"Content-Type: image/jpeg\r\nContent-Length: {len(picture)}\r\n\r\n".encode()
    return head + picture + f"\r\n--{BOUNDARY}\r\n".encode()

"""/session: the dashboard's login (an API key opens a session cookie), who am I, log out."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from facetrail.api.auth import log_in, log_out
from facetrail.api.deps import GalleryDep, Viewer
from facetrail.api.schemas import LoginIn, WhoOut

router = APIRouter(prefix="/session", tags=["session"])


@router.post("", response_model=WhoOut, responses={401: {}, 429: {"description": "too many failed logins"}})
def login(body: LoginIn, request: Request, response: Response, store: GalleryDep) -> WhoOut:
    """Log in with an API key; sets an HttpOnly session cookie (12 h). Failed attempts are rate-limited."""
    caller = log_in(request, store, body.key, response)
    return WhoOut(name=caller.name, role=caller.role)


@router.get("", response_model=WhoOut)
def whoami(who: Viewer) -> WhoOut:
    """The caller behind this key or session."""
    return WhoOut(name=who.name, role=who.role)


@router.delete("", status_code=204)
def logout(request: Request, response: Response, store: GalleryDep) -> None:
    """End this session (audited) and clear its cookie."""
    log_out(request, store, response)

"""Logging in with an API key, and out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from facetrail.api.auth import authenticate, log_in, log_out
from facetrail.api.deps import GalleryDep
from facetrail.api.errors import ApiError
from facetrail.api.strings import FreeName, Token
from facetrail.web.render import back, page

router = APIRouter()


def safe_next(path: str | None) -> str:
    """Only a path on this server (never another site) is followed after login."""
    return path if path and path.startswith("/") and not path.startswith("//") else "/"


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, store: GalleryDep, next: Annotated[Token | None, Query()] = None) -> Response:
    """The login page (straight on to the dashboard when already logged in)."""
    try:
        who = authenticate(request, store, None)
    except ApiError:
        who = None
    if who is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return page(request, "login.html", None, next=safe_next(next))


@router.post("/login", response_class=HTMLResponse)
def login(request: Request, store: GalleryDep, key: Annotated[FreeName, Form()] = "",
          next: Annotated[Token, Form()] = "/") -> Response:
    """Open a session with the key; wrong keys are rate-limited per address."""
    response = RedirectResponse(safe_next(next), status_code=303)
    try:
        log_in(request, store, key, response)
    except ApiError as error:
        return page(request, "login.html", None, status_code=error.status, next=safe_next(next),
                    error=error.message)
    return response


@router.post("/logout")
def logout(request: Request, store: GalleryDep) -> Response:
    """End the session."""
    response = back("/login", notice="You are logged out.")
    log_out(request, store, response)
    return response

"""What every route needs: the gallery, the caller (API key or session), and a role check."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Header, Path, Request

from facetrail.api.auth import COOKIE, authenticate
from facetrail.api.errors import ApiError
from facetrail.gallery.gallery import Gallery
from facetrail.store.keys import Caller, Role


def gallery(request: Request) -> Gallery:
    """The gallery the app was started on."""
    found: Gallery = request.app.state.gallery
    return found


GalleryDep = Annotated[Gallery, Depends(gallery)]


def caller(request: Request, store: GalleryDep,
           authorization: Annotated[str | None, Header(description="Bearer ft_...")] = None,
           x_api_key: Annotated[str | None, Header(description="ft_... (instead of Authorization)")] = None) -> Caller:
    """The caller behind the API key (or the dashboard's session cookie); 401 without one."""
    checked: Caller | None = getattr(request.state, "caller", None)  # the request guard's, found before the body
    if checked is not None:
        return checked
    key = x_api_key
    if key is None and authorization and authorization.lower().startswith("bearer "):
        key = authorization[7:].strip()
    found = authenticate(request, store, key)
    if found is None:
        if key or request.cookies.get(COOKIE):
            raise ApiError(401, "unauthenticated", "this API key or session is unknown, expired or revoked")
        raise ApiError(401, "unauthenticated", "send an API key as 'Authorization: Bearer ft_...' (an admin makes "
                                               "one with `facetrail keys create NAME --role ROLE`)")
    return found


def require(role: Role) -> Callable[[Caller], Caller]:
    """A dependency that lets callers with ``role`` (or a higher one) through; 403 for the others."""

    def check(who: Annotated[Caller, Depends(caller)]) -> Caller:
        if not who.may(role):
            raise ApiError(403, "forbidden", f"this needs the {role} role; your key {who.name!r} is {who.role}")
        return who

    return check


Viewer = Annotated[Caller, Depends(require("viewer"))]
Operator = Annotated[Caller, Depends(require("operator"))]
Admin = Annotated[Caller, Depends(require("admin"))]

# Row ids as the database can hold them: 32-bit for people and watchlists, 64-bit for video data.
PersonId = Annotated[int, Path(ge=1, le=2**31 - 1, description="an identity's id")]
RowId = Annotated[int, Path(ge=1, le=2**63 - 1)]
ConsentId = Annotated[int, Path(ge=1, le=2**31 - 1, description="a door consent's id")]

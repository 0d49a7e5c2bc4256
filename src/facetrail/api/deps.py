"""What every route needs: the gallery, the caller behind the API key, and a role check."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Header, Request

from facetrail.api.errors import ApiError
from facetrail.gallery.gallery import Gallery
from facetrail.store.keys import Caller, Role, check_key


def gallery(request: Request) -> Gallery:
    """The gallery the app was started on."""
    found: Gallery = request.app.state.gallery
    return found


GalleryDep = Annotated[Gallery, Depends(gallery)]


def caller(store: GalleryDep,
           authorization: Annotated[str | None, Header(description="Bearer ft_...")] = None,
           x_api_key: Annotated[str | None, Header(description="ft_... (instead of Authorization)")] = None) -> Caller:
    """The API key's owner; 401 without a valid key."""
    key = x_api_key
    if key is None and authorization and authorization.lower().startswith("bearer "):
        key = authorization[7:].strip()
    if not key:
        raise ApiError(401, "unauthenticated", "send an API key as 'Authorization: Bearer ft_...' (an admin makes "
                                               "one with `facetrail keys create NAME --role ROLE`)")
    with store.db.session() as session:
        found = check_key(session, key)
    if found is None:
        raise ApiError(401, "unauthenticated", "this API key is unknown or revoked")
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

"""Pages need a dashboard session (the cookie); without one they send the browser to the login page."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request

from facetrail.api.auth import authenticate
from facetrail.api.deps import GalleryDep
from facetrail.api.errors import ApiError
from facetrail.store.keys import Caller, Role


class LoginRequired(Exception):
    """No valid session: the page answers with a redirect to /login."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class PageForbidden(Exception):
    """A session without the role the page needs."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def page_caller(request: Request, store: GalleryDep) -> Caller:
    """The session's caller; LoginRequired without a live session."""
    try:
        found = authenticate(request, store, None)
    except ApiError as error:
        raise PageForbidden(error.message) from None
    if found is None:
        raise LoginRequired(request.url.path)
    return found


def page_require(role: Role) -> Callable[[Caller], Caller]:
    """A page dependency letting ``role`` (or a higher one) through."""

    def check(who: Annotated[Caller, Depends(page_caller)]) -> Caller:
        if not who.may(role):
            raise PageForbidden(f"This page needs the {role} role; you are signed in as {who.name} ({who.role}).")
        return who

    return check


PageViewer = Annotated[Caller, Depends(page_require("viewer"))]
PageOperator = Annotated[Caller, Depends(page_require("operator"))]
PageAdmin = Annotated[Caller, Depends(page_require("admin"))]

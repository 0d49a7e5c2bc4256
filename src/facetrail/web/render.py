"""Rendering a page: the templates, and what every page knows (the caller, the menu, a notice)."""

from __future__ import annotations

from contextvars import ContextVar
from datetime import datetime
from importlib.resources import files
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from facetrail.store.keys import Caller
from facetrail.store.models import as_utc
from facetrail.vision.registry import Calibration

templates = Jinja2Templates(directory=str(files("facetrail.web") / "templates"))

MENU: tuple[tuple[str, str, str], ...] = (  # path, label, role needed
    ("/", "Live events", "viewer"),
    ("/people", "People", "viewer"),
    ("/search", "Search", "operator"),
    ("/cameras", "Cameras", "viewer"),
    ("/doors", "Doors", "viewer"),
    ("/watchlists", "Watchlists", "viewer"),
    ("/enrol", "Enrol", "operator"),
    ("/audit", "Audit log", "admin"),
    ("/retention", "Retention", "admin"),
)


def when(moment: datetime | None) -> str:
    """A time as people read it on the dashboard (UTC)."""
    return "-" if moment is None else f"{as_utc(moment):%Y-%m-%d %H:%M:%S} UTC"


templates.env.filters["when"] = when


# The recogniser calibration of the page being rendered: set by ``page`` so that the ``meaning`` filter works in
# macros imported without context too (the event card).
_calibration: ContextVar[Calibration | None] = ContextVar("calibration", default=None)


def meaning(score: float | None) -> str:
    """A similarity with what it means for the server's recogniser: "0.41 - fewer than 1 in 1,000,000 strangers
    score this high" (the calibration table of ``facetrail.vision.registry``)."""
    if score is None:
        return "-"
    calibration = _calibration.get()
    return f"{score:.2f}" if calibration is None else f"{score:.2f} - {calibration.meaning(score)}"


templates.env.filters["meaning"] = meaning


def page(request: Request, template: str, who: Caller | None, status_code: int = 200, **context: Any) -> HTMLResponse:
    """Render ``template`` with the menu the caller may use and any ``?notice=`` / ``?problem=`` message."""
    menu = [(path, label) for path, label, role in MENU if who is not None and who.may(role)]  # type: ignore[arg-type]
    _calibration.set(request.app.state.gallery.spec.calibration)
    return templates.TemplateResponse(request, template, {
        "who": who, "menu": menu, "path": request.url.path,
        "notice": request.query_params.get("notice"), "problem": request.query_params.get("problem"),
        **context}, status_code=status_code)


def back(path: str, *, notice: str | None = None, problem: str | None = None) -> RedirectResponse:
    """Post/redirect/get: back to ``path`` with a message shown once."""
    path, _, fragment = path.partition("#")
    if notice or problem:
        key, text = ("notice", notice) if notice else ("problem", problem)
        path += ("&" if "?" in path else "?") + f"{key}={quote(text or '')}"
    return RedirectResponse(path + (f"#{fragment}" if fragment else ""), status_code=303)

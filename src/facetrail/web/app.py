"""Mounting the dashboard on the API's app: its pages, its static files, and where a page without a session goes."""

from __future__ import annotations

from importlib.resources import files
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from facetrail.api.app import PREFIX
from facetrail.api.errors import invalid_request, problems
from facetrail.api.guard import GuardRules
from facetrail.web.auth import LoginRequired, PageForbidden
from facetrail.web.pages import admin, cameras, doors, events, library, login, people, search, watchlists
from facetrail.web.render import page


def install_dashboard(app: FastAPI) -> None:
    """Add the dashboard's pages (outside the OpenAPI schema) and /static to ``app`` (made by ``create_app``)."""
    app.mount("/static", StaticFiles(directory=str(files("facetrail.web") / "static")), name="static")
    guard: GuardRules = app.state.guard  # the login page and static files are open; other pages need a session
    guard.public |= {("*", "/login"), ("POST", "/logout")}
    guard.public_folders.append("/static/")
    guard.login_page = "/login"
    for module in (login, events, people, library, search, cameras, doors, watchlists, admin):
        app.include_router(module.router, include_in_schema=False)

    @app.exception_handler(LoginRequired)
    async def to_login(_request: Request, error: LoginRequired) -> Response:
        return RedirectResponse(f"/login?next={quote(error.next_path)}", status_code=303)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> Response:
        if request.url.path.startswith(PREFIX):
            return invalid_request(error)
        fields = "; ".join(f"{p['field'].split('.')[-1]}: {p['problem']}" for p in problems(error))
        return page(request, "error.html", None, status_code=422, message=f"The form is not filled in right: {fields}.")

    @app.exception_handler(PageForbidden)
    async def forbidden(request: Request, error: PageForbidden) -> Response:
        return page(request, "error.html", None, status_code=403, title="Not allowed", message=error.message)

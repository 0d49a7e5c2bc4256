"""The FastAPI application: settings, routers under /api/v1, the error envelope."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline

from facetrail import __version__
from facetrail.api import errors
from facetrail.api.auth import LoginLimiter, recording_key_use
from facetrail.api.guard import GuardRules, RequestGuard
from facetrail.api.heavy import Busy, HeavyWork
from facetrail.api.routers import (
    audit,
    cameras,
    doors,
    events,
    identities,
    library,
    people,
    retention,
    search,
    session,
    watchlists,
)
from facetrail.config.schema import FacetrailConfig
from facetrail.gallery.backends import FAISS
from facetrail.gallery.gallery import Gallery, GallerySettings
from facetrail.vision.image import load_image
from facetrail.vision.samples import sample_image

PREFIX = "/api/v1"


@dataclass(frozen=True)
class ApiSettings:
    """Where the data is, the largest upload and request body accepted, and how many searches run at once."""

    data_dir: Path
    db_url: str | None = None
    recogniser: str = "arcface"
    max_upload_bytes: int = 10_000_000
    config: FacetrailConfig | None = None  # the cameras and retention this server shows, when it was given them
    login_attempts: int = 5  # failed logins per client address per minute
    factor_attempts: int = 5  # wrong second factors per door per minute
    max_body_bytes: int | None = None  # any request's whole body; None: the upload limit + 1 MB (multipart's overhead)
    search_workers: int = 2  # searches and enrolments analysed at once
    search_queue: int = 8  # more waiting for a worker; beyond that, 503 with Retry-After

    @property
    def body_limit(self) -> int:
        """The largest request body accepted, in bytes."""
        return self.max_body_bytes if self.max_body_bytes is not None else self.max_upload_bytes + 1_000_000


def create_app(settings: ApiSettings, *, gallery: Gallery | None = None) -> FastAPI:
    """The API over one gallery (opened here unless given)."""
    # The docs page loads Swagger UI from an installed package, never from a CDN: it works offline. No ReDoc:
    # its page fetches a logo from its vendor's CDN whatever the options.
    app = FastAPIOffline(title="facetrail", version=__version__, openapi_url=f"{PREFIX}/openapi.json",
                         docs_url=f"{PREFIX}/docs", redoc_url=None, static_url=f"{PREFIX}/docs-assets",
                         swagger_ui_oauth2_redirect_url=f"{PREFIX}/docs/oauth2-redirect",
                         lifespan=recording_key_use,  # key uses still in memory are written at shutdown
                         description="Self-hosted face recognition, accountable by design. Every route needs an API "
                                     "key (or the dashboard's session cookie); "
                                     "every search, enrolment, review and deletion is audited with the caller.")
    app.state.settings = settings
    index = settings.config.index if settings.config is not None else FAISS  # the configured index backend
    app.state.gallery = gallery or Gallery(GallerySettings(settings.data_dir, settings.db_url,
                                                           settings.recogniser, index))
    app.state.login_limiter = LoginLimiter(settings.login_attempts)
    app.state.factor_limiter = LoginLimiter(settings.factor_attempts, what="wrong codes at this door")
    app.state.heavy = HeavyWork(settings.search_workers, settings.search_queue)
    errors.install(app)
    app.add_exception_handler(Busy, _busy)
    # Before any body byte is read: the caller's key or session is checked, and the body's size bounded.
    app.state.guard = GuardRules(PREFIX, settings.body_limit, public={
        ("POST", f"{PREFIX}/session"), ("DELETE", f"{PREFIX}/session"), ("*", f"{PREFIX}/openapi.json"),
        ("*", f"{PREFIX}/docs"), ("*", f"{PREFIX}/docs/oauth2-redirect")}, public_folders=[f"{PREFIX}/docs-assets/"])
    app.add_middleware(RequestGuard, rules=app.state.guard)
    for router in (session.router, identities.router, watchlists.router, search.router, people.router,
                   events.router, cameras.router, doors.router, retention.router, audit.router,
                   library.router):
        app.include_router(router, prefix=PREFIX)
    return app


def warm_up(app: FastAPI) -> None:
    """Load the models and bring every search worker to its working memory before the first request.

    Without it the first search waits for the models, and memory grows during the first burst of searches
    and stays there; with it the level is reached at start and a burst returns to it.
    """
    gallery: Gallery = app.state.gallery

    def analyse_sample() -> None:
        gallery.engine.analyze(load_image(sample_image("gdp.jpg")))  # three faces

    heavy: HeavyWork = app.state.heavy
    heavy.prepare(analyse_sample)


async def _busy(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, Busy)
    response = errors.envelope(error.status, error.code, error.message, error.details)
    response.headers["retry-after"] = str(error.retry_after_s)
    return response

"""The FastAPI application: settings, routers under /api/v1, the error envelope."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from facetrail import __version__
from facetrail.api import errors
from facetrail.api.auth import LoginLimiter
from facetrail.api.routers import (
    audit,
    cameras,
    doors,
    events,
    identities,
    people,
    retention,
    search,
    session,
    watchlists,
)
from facetrail.config.schema import FacetrailConfig
from facetrail.gallery.gallery import Gallery, GallerySettings

PREFIX = "/api/v1"


@dataclass(frozen=True)
class ApiSettings:
    """Where the data is, and the largest upload accepted."""

    data_dir: Path
    db_url: str | None = None
    recogniser: str = "arcface"
    max_upload_bytes: int = 10_000_000
    config: FacetrailConfig | None = None  # the cameras and retention this server shows, when it was given them
    login_attempts: int = 5  # failed logins per client address per minute
    factor_attempts: int = 5  # wrong second factors per door per minute


def create_app(settings: ApiSettings, *, gallery: Gallery | None = None) -> FastAPI:
    """The API over one gallery (opened here unless given)."""
    # The docs page loads Swagger UI from an installed package, never from a CDN: it works offline. No ReDoc:
    # its page fetches a logo from its vendor's CDN whatever the options.
    app = FastAPIOffline(title="facetrail", version=__version__, openapi_url=f"{PREFIX}/openapi.json",
                         docs_url=f"{PREFIX}/docs", redoc_url=None, static_url=f"{PREFIX}/docs-assets",
                         swagger_ui_oauth2_redirect_url=f"{PREFIX}/docs/oauth2-redirect",
                         description="Self-hosted face recognition, accountable by design. Every route needs an API "
                                     "key (or the dashboard's session cookie); "
                                     "every search, enrolment, review and deletion is audited with the caller.")
    app.state.settings = settings
    app.state.gallery = gallery or Gallery(GallerySettings(settings.data_dir, settings.db_url,
                                                           settings.recogniser))
    app.state.login_limiter = LoginLimiter(settings.login_attempts)
    app.state.factor_limiter = LoginLimiter(settings.factor_attempts, what="wrong codes at this door")
    errors.install(app)
    for router in (session.router, identities.router, watchlists.router, search.router, people.router,
                   events.router, cameras.router, doors.router, retention.router, audit.router):
        app.include_router(router, prefix=PREFIX)
    return app

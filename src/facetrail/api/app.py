"""The FastAPI application: settings, routers under /api/v1, the error envelope."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI

from facetrail import __version__
from facetrail.api import errors
from facetrail.api.routers import audit, events, identities, people, search, watchlists
from facetrail.gallery.gallery import Gallery, GallerySettings

PREFIX = "/api/v1"


@dataclass(frozen=True)
class ApiSettings:
    """Where the data is, and the largest upload accepted."""

    data_dir: Path
    db_url: str | None = None
    recogniser: str = "arcface"
    max_upload_bytes: int = 10_000_000


def create_app(settings: ApiSettings, *, gallery: Gallery | None = None) -> FastAPI:
    """The API over one gallery (opened here unless given)."""
    app = FastAPI(title="facetrail", version=__version__, openapi_url=f"{PREFIX}/openapi.json",
                  docs_url=f"{PREFIX}/docs", redoc_url=None,
                  description="Self-hosted face recognition, accountable by design. Every route needs an API key; "
                              "every search, enrolment, review and deletion is audited with the caller.")
    app.state.settings = settings
    app.state.gallery = gallery or Gallery(GallerySettings(settings.data_dir, settings.db_url,
                                                           settings.recogniser))
    errors.install(app)
    for router in (identities.router, watchlists.router, search.router, people.router, events.router,
                   audit.router):
        app.include_router(router, prefix=PREFIX)
    return app

"""/retention: how long each class of data is kept, what is held now, and a purge on demand (admins)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from facetrail.api.deps import Admin, GalleryDep
from facetrail.api.schemas import PurgeOut, RetentionOut
from facetrail.api.views import purge, retention_out

router = APIRouter(prefix="/retention", tags=["retention"])


@router.get("", response_model=RetentionOut)
def settings(request: Request, store: GalleryDep, _who: Admin) -> RetentionOut:
    """The retention in effect (this server's configuration, else the last pipeline run's) and what is stored.

    Retention is changed in the configuration file, where cameras are; the pipeline applies it.
    """
    with store.db.session() as session:
        return retention_out(session, request.app.state.settings.config)


@router.post("/purge", response_model=PurgeOut)
def purge_now(request: Request, store: GalleryDep, who: Admin) -> PurgeOut:
    """Apply the retention in effect now, and expire identities and watchlists past their date (audited)."""
    return purge(store, request.app.state.settings.config, actor=who.name)

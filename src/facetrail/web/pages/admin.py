"""For admins: the audit log (its keyed chain checked against the last checkpoint) and the retention settings."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select

from facetrail.api import pagination
from facetrail.api.deps import GalleryDep
from facetrail.api.views import purge, retention_out
from facetrail.store.audit import verify_chain
from facetrail.store.models import AuditEntry
from facetrail.web.auth import PageAdmin
from facetrail.web.render import back, page

router = APIRouter()
PAGE_SIZE = 50


@router.get("/audit", response_class=HTMLResponse)
def audit_log(request: Request, store: GalleryDep, who: PageAdmin, cursor: str | None = None) -> Response:
    """Audit entries, newest first, and whether the chain is intact."""
    after = pagination.decode(cursor)
    with store.db.session() as session:
        query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(PAGE_SIZE + 1)
        if after is not None:
            query = query.where(AuditEntry.id < after)
        rows = list(session.scalars(query))
        chain = verify_chain(session)
        entries = [{"id": r.id, "at": r.at, "actor": r.actor, "action": r.action, "target": r.target,
                    "purpose": r.purpose, "count": r.result_count} for r in rows[:PAGE_SIZE]]
    more = pagination.encode(rows[PAGE_SIZE - 1].id) if len(rows) > PAGE_SIZE else None
    return page(request, "audit.html", who, entries=entries, chain=chain, next_cursor=more)


@router.get("/retention", response_class=HTMLResponse)
def retention(request: Request, store: GalleryDep, who: PageAdmin) -> Response:
    """How long each class of data is kept, and what is held now."""
    with store.db.session() as session:
        shown = retention_out(session, request.app.state.settings.config)
    return page(request, "retention.html", who, retention=shown)


@router.post("/retention/purge")
def purge_now(request: Request, store: GalleryDep, who: PageAdmin) -> Response:
    """Apply the retention now (audited)."""
    report = purge(store, request.app.state.settings.config, actor=who.name)
    removed = ", ".join(f"{n} {kind}" for kind, n in report.counts.items()) or "nothing was past its time"
    return back("/retention", notice=f"Purged: {removed}.")

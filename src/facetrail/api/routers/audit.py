"""/audit: the audit log, for admins."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from facetrail.api import pagination
from facetrail.api.deps import Admin, GalleryDep
from facetrail.api.schemas import AuditOut
from facetrail.store.models import AuditEntry

router = APIRouter(prefix="/audit", tags=["audit"])


@router.get("", response_model=pagination.Page[AuditOut])
def list_entries(store: GalleryDep, _who: Admin, limit: Annotated[int, Query(ge=1, le=200)] = 50,
                 cursor: str | None = None) -> pagination.Page[AuditOut]:
    """Audit entries, newest first."""
    after = pagination.decode(cursor)
    with store.db.session() as session:
        query = session.query(AuditEntry).order_by(AuditEntry.id.desc())
        if after is not None:
            query = query.filter(AuditEntry.id < after)
        return pagination.page(query.limit(limit + 1).all(), limit, lambda r: AuditOut(
            id=r.id, at=r.at, actor=r.actor, action=r.action, target=r.target, purpose=r.purpose,
            result_count=r.result_count))

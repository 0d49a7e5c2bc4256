"""/identities/{id}/sightings and /visitors/{id}/sightings: where and when someone was seen (audited)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Query

from facetrail.api.deps import GalleryDep, Operator
from facetrail.api.schemas import SightingOut
from facetrail.gallery.history import timeline

router = APIRouter(tags=["sightings"])
Purpose = Annotated[str, Query(min_length=1, description="why you are looking (stored in the audit log)")]


@router.get("/identities/{identity_id}/sightings", response_model=list[SightingOut])
def identity_timeline(identity_id: int, purpose: Purpose, store: GalleryDep, who: Operator) -> list[SightingOut]:
    """An enrolled person's sightings across cameras, oldest first."""
    rows = timeline(store, str(identity_id), purpose=purpose, actor=who.name)
    return [SightingOut.model_validate(asdict(row)) for row in rows]


@router.get("/visitors/{visitor_id}/sightings", response_model=list[SightingOut])
def visitor_timeline(visitor_id: int, purpose: Purpose, store: GalleryDep, who: Operator) -> list[SightingOut]:
    """An anonymous visitor's visits, oldest first."""
    rows = timeline(store, f"visitor:{visitor_id}", purpose=purpose, actor=who.name)
    return [SightingOut.model_validate(asdict(row)) for row in rows]

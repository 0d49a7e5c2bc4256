"""Where and when was someone seen? Timelines of sightings and search among them (audited).

A timeline follows an enrolled identity or an anonymous visitor across
cameras, in time order. ``search_history`` compares a face with the best
shot of every stored sighting, enrolled or not, through the sightings index
(``sighting_index.py``: same backend as the gallery's). Both need a purpose
and are written to the audit log, like every other search.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from facetrail.gallery.errors import GalleryError
from facetrail.gallery.gallery import Gallery
from facetrail.gallery.people import resolve_identity
from facetrail.store import audit
from facetrail.store.models import Identity, Sighting, Visitor, as_utc
from facetrail.store.sealed import open_from

VISITOR_PREFIX = "visitor:"


@dataclass(frozen=True)
class SightingView:
    """One sighting as people read it."""

    id: int
    camera: str
    first_seen: datetime
    last_seen: datetime
    identity_id: int | None
    identity_name: str | None
    visitor_id: int | None
    score: float | None
    quality: float
    frames: int
    watchlist_hit: bool
    has_thumbnail: bool
    similarity: float | None = None  # to the searched face, for history searches


def timeline(gallery: Gallery, reference: str, *, purpose: str, actor: str, limit: int = 1000) -> list[SightingView]:
    """Every sighting of a person (id, name, or ``visitor:N``), oldest first, across cameras."""
    _need_purpose(purpose)
    with gallery.db.session() as session:
        if reference.startswith(VISITOR_PREFIX):
            key = reference[len(VISITOR_PREFIX):]
            if not key.isdigit() or session.get(Visitor, int(key)) is None:
                raise GalleryError(f"no anonymous visitor {reference!r} (see `facetrail sightings --unknown`)")
            condition = Sighting.visitor_id == int(key)
            target = reference
        else:
            identity = resolve_identity(session, reference)
            condition = Sighting.identity_id == identity.id
            target = f"identity:{identity.id}"
        rows = _views(session, select(Sighting).where(condition).order_by(Sighting.first_seen, Sighting.id)
                      .limit(limit))
        audit.record(session, actor=actor, action="sightings.timeline", target=target, purpose=purpose.strip(),
                     result_count=len(rows))
    return rows


def search_history(gallery: Gallery, vector: np.ndarray, *, purpose: str, actor: str, top: int = 10,
                   min_score: float | None = None, model_id: str | None = None) -> list[SightingView]:
    """Stored sightings whose best shot looks like ``vector``, most similar first."""
    _need_purpose(purpose)
    if model_id is not None and model_id != gallery.model_id:
        raise GalleryError(f"embedding made by {model_id!r} cannot be compared with sightings of {gallery.model_id!r}")
    threshold = min_score if min_score is not None else (
        gallery.spec.calibration.threshold if gallery.spec.calibration else 0.5)
    query = np.asarray(vector, np.float32).reshape(-1)
    sightings = gallery.sightings
    sightings.sync()  # the database is the source of truth: catch up with sightings stored or deleted since
    scored: list[tuple[float, int]] = []
    if top >= 1:
        found = sightings.index.search(query / (np.linalg.norm(query) or 1.0), top)
        scored = [(float(score), int(i)) for score, i in zip(found.scores[0], found.ids[0], strict=True)
                  if i >= 0 and score >= threshold]
    with gallery.db.session() as session:
        by_id = {view.id: view for view in _views(session, select(Sighting).where(
            Sighting.id.in_([sighting_id for _, sighting_id in scored])))}
        hits = [_with_similarity(by_id[sighting_id], score) for score, sighting_id in scored if sighting_id in by_id]
        audit.record(session, actor=actor, action="search.history", target="sightings", purpose=purpose.strip(),
                     result_count=len(hits), details={"top": top, "threshold": round(threshold, 4)})
    return hits


def thumbnail(gallery: Gallery, sighting_id: int) -> bytes | None:
    """The best-shot JPEG of a sighting (decrypted), if retention has not removed it."""
    with gallery.db.session() as session:
        blob = session.scalar(select(Sighting.thumbnail_jpeg).where(Sighting.id == sighting_id))
        return open_from(gallery.keys, session, "sightings", "thumbnail_jpeg", sighting_id, blob)


def _views(session: Session, query: Select[Sighting]) -> list[SightingView]:
    rows = list(session.scalars(query))
    names = dict(session.execute(select(Identity.id, Identity.display_name).where(
        Identity.id.in_({r.identity_id for r in rows if r.identity_id is not None}))).all())
    return [SightingView(r.id, r.camera, as_utc(r.first_seen), as_utc(r.last_seen), r.identity_id,
                         names.get(r.identity_id) if r.identity_id is not None else None,
                         r.visitor_id, r.score, r.quality, r.frames, r.watchlist_hit, r.thumbnail_jpeg is not None)
            for r in rows]



def _with_similarity(view: SightingView, score: float) -> SightingView:
    from dataclasses import replace

    return replace(view, similarity=score)


def _need_purpose(purpose: str) -> None:
    if not purpose or not purpose.strip():
        raise GalleryError("a search needs a purpose (why are you searching?); give --purpose TEXT")

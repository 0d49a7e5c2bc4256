"""1:N search: who is this face? Open-set, purpose-bound and audited.

Every search needs a purpose and writes an audit entry (who, why, against
what, how many results) in the same transaction that reads the candidates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from facetrail.gallery.errors import GalleryError
from facetrail.gallery.gallery import Gallery
from facetrail.gallery.index import SearchHits
from facetrail.store import audit
from facetrail.store.crypto import KeyRing
from facetrail.store.models import (
    FaceTemplate,
    Identity,
    NegativeExample,
    Watchlist,
    WatchlistMember,
    as_utc,
    utcnow,
)
from facetrail.store.sealed import open_column

# Templates fetched per requested identity: one person may hold several templates.
_OVERSAMPLE = 10
_MIN_CANDIDATES = 50


@dataclass(frozen=True)
class Match:
    """One candidate identity: best template score (cosine) and that template."""

    identity_id: int
    display_name: str
    score: float
    template_id: int


@dataclass(frozen=True)
class SearchResult:
    """Candidates best first; ``known`` when the best clears ``threshold``."""

    matches: list[Match]
    threshold: float
    watchlist: str | None
    suppressed: list[int]  # identities left out because of a negative example

    @property
    def known(self) -> bool:
        """True when the best candidate is at or above the threshold."""
        return bool(self.matches) and self.matches[0].score >= self.threshold

    @property
    def best(self) -> Match | None:
        """The best candidate if it is a match, else None (an unknown face)."""
        return self.matches[0] if self.known else None


def search_embedding(gallery: Gallery, vector: np.ndarray, *, purpose: str, actor: str, top: int = 5,
                     watchlist: str | None = None, model_id: str | None = None) -> SearchResult:
    """Top identities for one embedding; raises GalleryError without a purpose or on a model mismatch."""
    if not purpose or not purpose.strip():
        raise GalleryError("a search needs a purpose (why are you searching?); give --purpose TEXT")
    if model_id is not None and model_id != gallery.model_id:
        raise GalleryError(f"embedding made by {model_id!r} cannot be searched in a gallery of "
                           f"{gallery.model_id!r}")
    if top < 1:
        raise GalleryError("top must be at least 1")
    query = np.asarray(vector, np.float32).reshape(1, -1)
    wanted = min(len(gallery.index), max(_MIN_CANDIDATES, top * _OVERSAMPLE))
    hits = gallery.index.search(query, wanted) if wanted else None
    with gallery.db.session() as session:
        threshold, members = _scope(session, gallery, watchlist)
        best_per_identity = _best_per_identity(session, hits, members) if hits is not None else {}
        suppressed = _negatives(session, gallery.keys, query[0], best_per_identity, gallery.model_id)
        names = dict(session.execute(select(Identity.id, Identity.display_name)
                                     .where(Identity.id.in_(list(best_per_identity)))).all())
        matches = sorted((Match(identity_id, names.get(identity_id, "?"), score, template_id)
                          for identity_id, (score, template_id) in best_per_identity.items()
                          if identity_id not in suppressed),
                         key=lambda m: -m.score)[:top]
        audit.record(session, actor=actor, action="search", target=f"watchlist:{watchlist}" if watchlist
                     else "gallery", purpose=purpose.strip(), result_count=len(matches),
                     details={"known": bool(matches) and matches[0].score >= threshold, "top": top})
    return SearchResult(matches, threshold, watchlist, sorted(suppressed))


def match_many(gallery: Gallery, vectors: np.ndarray) -> list[Match | None]:
    """Best identity (any score) for each row of ``vectors``, negatives applied; not audited.

    For callers that audit at a higher level (the video pipeline records one
    audit entry per run with its purpose, not one per face).
    """
    queries = np.asarray(vectors, np.float32).reshape(len(vectors), -1)
    wanted = min(len(gallery.index), _MIN_CANDIDATES)
    if not wanted or not len(queries):
        return [None] * len(queries)
    hits = gallery.index.search(queries, wanted)
    out: list[Match | None] = []
    with gallery.db.session() as session:
        for row in range(len(queries)):
            one = SearchHits(hits.scores[row:row + 1], hits.ids[row:row + 1])
            best = _best_per_identity(session, one, None)
            suppressed = _negatives(session, gallery.keys, queries[row], best, gallery.model_id)
            ranked = sorted(((score, template_id, identity_id) for identity_id, (score, template_id) in best.items()
                             if identity_id not in suppressed), reverse=True)
            if not ranked:
                out.append(None)
                continue
            score, template_id, identity_id = ranked[0]
            name = session.scalar(select(Identity.display_name).where(Identity.id == identity_id)) or "?"
            out.append(Match(identity_id, name, score, template_id))
    return out


def _scope(session: Session, gallery: Gallery, watchlist: str | None) -> tuple[float, set[int] | None]:
    """Threshold to apply and the identities allowed (None: everyone)."""
    calibrated = gallery.spec.calibration.threshold if gallery.spec.calibration else 0.5
    if watchlist is None:
        return calibrated, None
    row = session.scalar(select(Watchlist).where(Watchlist.name == watchlist))
    if row is None:
        raise GalleryError(f"no watchlist called {watchlist!r}")
    if row.expires_at is not None and as_utc(row.expires_at) <= utcnow():
        raise GalleryError(f"watchlist {watchlist!r} expired on {row.expires_at:%Y-%m-%d}; it is no longer "
                           "searchable")
    members = set(session.scalars(select(WatchlistMember.identity_id)
                                  .where(WatchlistMember.watchlist_id == row.id)))
    return (row.threshold if row.threshold is not None else calibrated), members


def _best_per_identity(session: Session, hits: SearchHits, members: set[int] | None) -> dict[int, tuple[float, int]]:
    scores = hits.scores[0]
    ids = hits.ids[0]
    valid = ids >= 0
    template_ids = [int(i) for i in ids[valid]]
    owners = dict(session.execute(select(FaceTemplate.id, FaceTemplate.identity_id)
                                  .where(FaceTemplate.id.in_(template_ids))).all())
    best: dict[int, tuple[float, int]] = {}
    for template_id, score in zip(template_ids, scores[valid], strict=True):
        identity_id = owners.get(template_id)
        if identity_id is None or (members is not None and identity_id not in members):
            continue
        if identity_id not in best or score > best[identity_id][0]:
            best[identity_id] = (float(score), template_id)
    return best


def _negatives(session: Session, keys: KeyRing, query: np.ndarray, candidates: dict[int, tuple[float, int]],
               model_id: str) -> set[int]:
    """Candidates the query must not match: it is closer to a face known NOT to be them than to them."""
    if not candidates:
        return set()
    rows = session.execute(select(NegativeExample.id, NegativeExample.identity_id, NegativeExample.embedding)
                           .where(NegativeExample.identity_id.in_(list(candidates)),
                                  NegativeExample.model_id == model_id)).all()
    plain = open_column(keys, session, "negative_examples", "embedding", [(r.id, r.embedding) for r in rows])
    suppressed = set()
    for (_, identity_id, _), blob in zip(rows, plain, strict=True):
        if float(np.frombuffer(blob, np.float32) @ query) >= candidates[identity_id][0]:
            suppressed.add(identity_id)
    return suppressed

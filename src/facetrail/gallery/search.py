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
_IN_CHUNK = 500  # ids per IN (...) list, well under any database's limit on bound parameters


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
    # No len(gallery.index) first: it is a count query on Milvus, and missing results come back as id -1.
    hits = gallery.index.search(query, max(_MIN_CANDIDATES, top * _OVERSAMPLE))
    with gallery.db.session() as session:
        threshold, members = _scope(session, gallery, watchlist)
        best_per_identity = _best_per_identity(session, hits, members)
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
    audit entry per run with its purpose, not one per face). Three queries for
    all the rows together (template owners, negative examples, names): a
    track's decision matches all of its shots at once.
    """
    queries = np.asarray(vectors, np.float32).reshape(len(vectors), -1)
    if not len(queries):
        return []
    hits = gallery.index.search(queries, _MIN_CANDIDATES)
    with gallery.db.session() as session:
        owners = _owners(session, [int(i) for i in np.unique(hits.ids[hits.ids >= 0])])
        bests = [_best_of(owners, hits.scores[row], hits.ids[row], None) for row in range(len(queries))]
        negatives = _negative_vectors(session, gallery.keys, {i for best in bests for i in best}, gallery.model_id)
        ranked: list[tuple[float, int, int] | None] = []
        for row, best in enumerate(bests):
            suppressed = _suppressed(queries[row], best, negatives)
            kept = [(score, template_id, identity_id) for identity_id, (score, template_id) in best.items()
                    if identity_id not in suppressed]
            ranked.append(max(kept) if kept else None)
        winners = list({top[2] for top in ranked if top is not None})
        names = dict(session.execute(select(Identity.id, Identity.display_name)
                                     .where(Identity.id.in_(winners))).all()) if winners else {}
    return [None if top is None else Match(top[2], names.get(top[2]) or "?", top[0], top[1]) for top in ranked]


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
    valid = hits.ids[0][hits.ids[0] >= 0]
    return _best_of(_owners(session, [int(i) for i in valid]), hits.scores[0], hits.ids[0], members)


def _owners(session: Session, template_ids: list[int]) -> dict[int, int]:
    """Template id -> identity id, for the templates that still exist."""
    owners: dict[int, int] = {}
    for start in range(0, len(template_ids), _IN_CHUNK):
        chunk = template_ids[start:start + _IN_CHUNK]
        owners.update(dict(session.execute(select(FaceTemplate.id, FaceTemplate.identity_id)
                                           .where(FaceTemplate.id.in_(chunk))).all()))
    return owners


def _best_of(owners: dict[int, int], scores: np.ndarray, ids: np.ndarray,
             members: set[int] | None) -> dict[int, tuple[float, int]]:
    """Identity -> (best score, its template) among one query's hits (``members``: the identities allowed)."""
    valid = ids >= 0
    best: dict[int, tuple[float, int]] = {}
    for template_id, score in zip((int(i) for i in ids[valid]), scores[valid], strict=True):
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
    return _suppressed(query, candidates, _negative_vectors(session, keys, set(candidates), model_id))


def _negative_vectors(session: Session, keys: KeyRing, identities: set[int],
                      model_id: str) -> list[tuple[int, np.ndarray]]:
    """(identity id, embedding) of every negative example of these identities under ``model_id``."""
    if not identities:
        return []
    rows = session.execute(select(NegativeExample.id, NegativeExample.identity_id, NegativeExample.embedding)
                           .where(NegativeExample.identity_id.in_(sorted(identities)),
                                  NegativeExample.model_id == model_id)).all()
    plain = open_column(keys, session, "negative_examples", "embedding", [(r.id, r.embedding) for r in rows])
    return [(row.identity_id, np.frombuffer(blob, np.float32)) for row, blob in zip(rows, plain, strict=True)]


def _suppressed(query: np.ndarray, candidates: dict[int, tuple[float, int]],
                negatives: list[tuple[int, np.ndarray]]) -> set[int]:
    """The candidates whose negative example is at least as close to ``query`` as their best template."""
    return {identity_id for identity_id, vector in negatives
            if identity_id in candidates and float(vector @ query) >= candidates[identity_id][0]}

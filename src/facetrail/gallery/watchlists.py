"""Watchlists: a name, a stated purpose, a threshold, an expiry, and their members."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from facetrail.gallery.errors import GalleryError
from facetrail.gallery.gallery import Gallery
from facetrail.gallery.people import resolve_identity
from facetrail.store import audit
from facetrail.store.models import Watchlist, WatchlistMember


def cosine_for(gallery: Gallery, threshold: float | None, false_match_rate: float | None) -> float | None:
    """The cosine a watchlist stores: ``threshold`` as given, or the one of ``false_match_rate`` in the
    recogniser's calibration table (None: the calibrated threshold); GalleryError saying what to give instead."""
    calibration = gallery.spec.calibration
    if threshold is not None and false_match_rate is not None:
        raise GalleryError("give a watchlist's threshold as a cosine or as a false match rate, not both")
    if false_match_rate is not None:
        if calibration is None or calibration.fmr_table is None:
            raise GalleryError(f"the {gallery.settings.recogniser} recogniser has no false-match-rate calibration; "
                               "give the threshold as a cosine similarity instead")
        try:
            return calibration.fmr_table.cosine_at(false_match_rate)
        except ValueError as error:
            raise GalleryError(str(error)) from None
    if threshold is not None and not -1.0 <= threshold <= 1.0:
        raise GalleryError("a watchlist threshold is a cosine similarity between -1 and 1")
    if threshold is not None and calibration is not None and threshold > calibration.ceiling:
        raise GalleryError(f"a threshold of {threshold} would match nobody: two photos of the same person almost "
                           f"never score above {calibration.ceiling}; give a false match rate (e.g. 1e-4) instead")
    return threshold


def create_watchlist(gallery: Gallery, name: str, *, purpose: str, actor: str, threshold: float | None = None,
                     expires_at: datetime | None = None, reviewers_required: int = 1,
                     false_match_rate: float | None = None) -> int:
    """Create a watchlist; its threshold is ``threshold`` (cosine) or the cosine of ``false_match_rate``, else
    the model's calibrated one.

    ``reviewers_required=2`` applies the four-eyes rule: an alert on this list
    counts as confirmed only when two different people confirmed it.
    """
    if not purpose.strip():
        raise GalleryError("a watchlist needs a purpose (--purpose TEXT)")
    threshold = cosine_for(gallery, threshold, false_match_rate)
    if reviewers_required not in (1, 2):
        raise GalleryError("an alert is confirmed by one reviewer, or two under the four-eyes rule")
    with gallery.db.session() as session:
        if session.scalar(select(Watchlist.id).where(Watchlist.name == name)) is not None:
            raise GalleryError(f"a watchlist called {name!r} already exists")
        watchlist = Watchlist(name=name, purpose=purpose.strip(), threshold=threshold, expires_at=expires_at,
                              created_by=actor, reviewers_required=reviewers_required)
        session.add(watchlist)
        session.flush()
        audit.record(session, actor=actor, action="watchlist.create", target=f"watchlist:{name}",
                     purpose=purpose.strip(),
                     details={"threshold": threshold, "false_match_rate": false_match_rate,
                              "reviewers_required": reviewers_required,
                              "expires_at": expires_at.isoformat() if expires_at else None})
        return watchlist.id


def add_member(gallery: Gallery, watchlist: str, reference: str, *, actor: str) -> None:
    """Put an enrolled identity on a watchlist (no-op if already there)."""
    with gallery.db.session() as session:
        row = session.scalar(select(Watchlist).where(Watchlist.name == watchlist))
        if row is None:
            raise GalleryError(f"no watchlist called {watchlist!r}")
        identity = resolve_identity(session, reference)
        if session.get(WatchlistMember, (row.id, identity.id)) is None:
            session.add(WatchlistMember(watchlist_id=row.id, identity_id=identity.id, added_by=actor))
            audit.record(session, actor=actor, action="watchlist.add", target=f"watchlist:{watchlist}",
                         details={"identity": identity.id})

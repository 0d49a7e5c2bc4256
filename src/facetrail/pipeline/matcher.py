"""Who is this track? The gallery as a matcher, and the watchlists a match can hit.

Watchlist membership is read from the database and cached for a few seconds,
so a person put on a list while the pipeline runs is alerted on shortly after.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select

from facetrail.gallery.gallery import Gallery
from facetrail.gallery.search import match_many
from facetrail.store.models import Watchlist, WatchlistMember, as_utc, utcnow

WATCHLIST_REFRESH_S = 5.0


@dataclass(frozen=True)
class WatchlistRule:
    """An active watchlist as the event rules need it."""

    watchlist_id: int
    name: str
    threshold: float
    reviewers_required: int


class GalleryMatcher:
    """Best identity and score per embedding, plus watchlist rules per identity."""

    def __init__(self, gallery: Gallery, *, default_threshold: float) -> None:
        self.gallery = gallery
        self.default_threshold = default_threshold
        self._names: dict[int, str] = {}
        self._rules: dict[int, list[WatchlistRule]] = {}
        self._loaded_at = -float("inf")

    def __call__(self, vectors: np.ndarray) -> list[tuple[int | None, float]]:
        """(identity id, score) of the best candidate per row; (None, -1) when the gallery is empty."""
        out: list[tuple[int | None, float]] = []
        for match in match_many(self.gallery, vectors):
            if match is None:
                out.append((None, -1.0))
            else:
                self._names[match.identity_id] = match.display_name
                out.append((match.identity_id, match.score))
        return out

    def name(self, identity_id: int) -> str:
        """Display name of an identity this matcher has returned."""
        return self._names.get(identity_id, f"identity {identity_id}")

    def watchlists_of(self, identity_id: int) -> list[WatchlistRule]:
        """Active (unexpired) watchlists the identity is on."""
        if time.monotonic() - self._loaded_at > WATCHLIST_REFRESH_S:
            self._reload()
        return self._rules.get(identity_id, [])

    def _reload(self) -> None:
        now = utcnow()
        rules: dict[int, list[WatchlistRule]] = {}
        with self.gallery.db.session() as session:
            rows = session.execute(select(WatchlistMember.identity_id, Watchlist)
                                   .join(Watchlist, Watchlist.id == WatchlistMember.watchlist_id)).all()
            for identity_id, watchlist in rows:
                expires = watchlist.expires_at
                if expires is not None and as_utc(expires) <= now:
                    continue
                threshold = watchlist.threshold if watchlist.threshold is not None else self.default_threshold
                rules.setdefault(identity_id, []).append(
                    WatchlistRule(watchlist.id, watchlist.name, threshold, watchlist.reviewers_required))
        self._rules = rules
        self._loaded_at = time.monotonic()

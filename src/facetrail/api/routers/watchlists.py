"""/watchlists: list, create, add a member."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from sqlalchemy import func, select

from facetrail.api.deps import Admin, GalleryDep, PersonId, Viewer
from facetrail.api.schemas import WatchlistIn, WatchlistOut
from facetrail.api.strings import Name
from facetrail.gallery.watchlists import add_member, cosine_for, create_watchlist
from facetrail.store.models import Watchlist, WatchlistMember

router = APIRouter(prefix="/watchlists", tags=["watchlists"])


@router.get("", response_model=list[WatchlistOut])
def list_watchlists(store: GalleryDep, _who: Viewer) -> list[WatchlistOut]:
    """Every watchlist with its purpose, threshold, review rule and member count."""
    with store.db.session() as session:
        counts = dict(session.execute(select(WatchlistMember.watchlist_id, func.count())
                                      .group_by(WatchlistMember.watchlist_id)).all())
        return [WatchlistOut(id=w.id, name=w.name, purpose=w.purpose, threshold=w.threshold,
                             reviewers_required=w.reviewers_required, expires_at=w.expires_at,
                             members=int(counts.get(w.id, 0)))
                for w in session.scalars(select(Watchlist).order_by(Watchlist.name))]


@router.post("", response_model=WatchlistOut, status_code=201)
def create(body: WatchlistIn, store: GalleryDep, who: Admin) -> WatchlistOut:
    """Create a watchlist (audited with its purpose)."""
    watchlist_id = create_watchlist(store, body.name, purpose=body.purpose, actor=who.name, threshold=body.threshold,
                                    expires_at=body.expires_at, reviewers_required=body.reviewers_required,
                                    false_match_rate=body.false_match_rate)
    threshold = cosine_for(store, body.threshold, body.false_match_rate)
    return WatchlistOut(id=watchlist_id, name=body.name, purpose=body.purpose.strip(), threshold=threshold,
                        reviewers_required=body.reviewers_required, expires_at=body.expires_at, members=0)


@router.put("/{name}/members/{identity_id}", status_code=204)
def add(name: Annotated[Name, Path(description="the watchlist's name")], identity_id: PersonId, store: GalleryDep,
        who: Admin) -> None:
    """Put an enrolled person on a watchlist (audited)."""
    add_member(store, name, str(identity_id), actor=who.name)

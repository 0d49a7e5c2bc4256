"""Operations on people: find, forget on request, correct a wrong match, run the retention purge."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from facetrail.gallery.errors import GalleryError
from facetrail.gallery.gallery import Gallery
from facetrail.store import audit
from facetrail.store.doors import Withdrawal, withdraw_consent
from facetrail.store.media import ClipFiles
from facetrail.store.models import FaceTemplate, Identity, NegativeExample, Watchlist, WatchlistMember
from facetrail.store.people import Forgotten, forget_identity
from facetrail.store.sealed import seal_into


@dataclass(frozen=True)
class IdentitySummary:
    """A line of `facetrail identities`."""

    id: int
    display_name: str
    templates: int
    watchlists: list[str]
    created_at: datetime


def resolve_identity(session: Session, reference: str) -> Identity:
    """The identity a user means: a numeric id, or an unambiguous display name."""
    if reference.isdigit():
        found = session.get(Identity, int(reference))
        if found is None:
            raise GalleryError(f"no identity with id {reference}")
        return found
    matches = list(session.scalars(select(Identity).where(Identity.display_name == reference)))
    if not matches:
        raise GalleryError(f"no identity called {reference!r} (see `facetrail identities`)")
    if len(matches) > 1:
        ids = ", ".join(str(m.id) for m in matches)
        raise GalleryError(f"{len(matches)} identities are called {reference!r} (ids {ids}); use the id")
    return matches[0]


def list_identities(gallery: Gallery) -> list[IdentitySummary]:
    """Every identity with its template count and watchlists, by name."""
    with gallery.db.session() as session:
        counts = dict(session.execute(select(FaceTemplate.identity_id, func.count())
                                      .group_by(FaceTemplate.identity_id)).all())
        lists: dict[int, list[str]] = {}
        for identity_id, name in session.execute(
                select(WatchlistMember.identity_id, Watchlist.name)
                .join(Watchlist, Watchlist.id == WatchlistMember.watchlist_id)):
            lists.setdefault(identity_id, []).append(name)
        return [IdentitySummary(i.id, i.display_name, int(counts.get(i.id, 0)), sorted(lists.get(i.id, [])),
                                i.created_at)
                for i in session.scalars(select(Identity).order_by(Identity.display_name, Identity.id))]


def forget(gallery: Gallery, reference: str, *, actor: str, reason: str) -> Forgotten:
    """Remove a person from the database and the index, destroying their data key; the audit log keeps a
    tombstone only."""
    if not reason.strip():
        raise GalleryError("say why this person is forgotten (--reason), e.g. 'deletion request'")
    with gallery.db.session() as session:
        identity = resolve_identity(session, reference)
        forgotten = forget_identity(session, identity.id, actor=actor, reason=reason.strip())
    with gallery.db.session() as session:  # the clips of the events that went with the person
        ClipFiles(gallery.settings.data_dir).sweep(session)
    gallery.remove_from_index(forgotten.template_ids)
    gallery.save_index()
    gallery.sync_sightings()  # their sightings leave the history search's index too
    return forgotten


def withdraw_door_consent(gallery: Gallery, consent_id: int, *, actor: str) -> Withdrawal:
    """Withdraw a door consent; the person's templates leave the database and the index unless another consent
    is in force."""
    with gallery.db.session() as session:
        withdrawal = withdraw_consent(session, consent_id, actor=actor)
    if withdrawal.template_ids:
        gallery.remove_from_index(withdrawal.template_ids)
        gallery.save_index()
    return withdrawal


def add_negative(gallery: Gallery, reference: str, vector: np.ndarray, *, actor: str,
                 image_sha256: str | None = None) -> int:
    """Record that the face ``vector`` is NOT ``reference``; returns the negative example's id."""
    with gallery.db.session() as session:
        identity = resolve_identity(session, reference)
        negative = NegativeExample(identity_id=identity.id, embedding=b"", dim=int(vector.shape[-1]),
                                   model_id=gallery.model_id, image_sha256=image_sha256, created_by=actor)
        session.add(negative)
        session.flush()
        seal_into(gallery.keys, session, negative, "embedding", np.asarray(vector, np.float32).tobytes())
        audit.record(session, actor=actor, action="correct.not_match", target=f"identity:{identity.id}",
                     result_count=1, details={"negative_example": negative.id})
        return negative.id

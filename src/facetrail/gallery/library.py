"""The face library's everyday actions: add photos, rename, merge, delete one template, and teach from events.

Every action needs a purpose and is audited in the transaction that makes the
change. Faces stay sealed under their owner's data key: a face that changes
owner (a merged person's templates, a visitor's sightings) is opened and
sealed again under the new owner's key, and keys whose owner is gone are
destroyed. The vector index holds template ids only (the owner is read from
the database at search time), so a merge or rename leaves it as it is; added
and deleted templates enter and leave it after the commit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from facetrail.gallery.enrol import EnrolOptions, EnrolReport, Outcome, enrol_person
from facetrail.gallery.errors import GalleryError
from facetrail.gallery.gallery import Gallery
from facetrail.store import audit
from facetrail.store.crypto import IDENTITY, SIGHTING, destroy_keys
from facetrail.store.models import (
    DoorConsent,
    DoorDecisionRecord,
    Event,
    FaceTemplate,
    Identity,
    NegativeExample,
    Sighting,
    WatchlistMember,
)
from facetrail.store.sealed import open_from, reseal, seal_into

MAX_NAME = 200
VISITOR_SHOTS = 5  # best sightings of a visitor that become templates when the visitor is enrolled


@dataclass(frozen=True)
class Merged:
    """What moved from the merged identity to the survivor."""

    survivor_id: int
    merged_id: int
    templates: int
    negatives: int
    sightings: int
    events: int
    memberships: int


@dataclass(frozen=True)
class EventFace:
    """The best shot behind an event: its sighting, embedding and aligned face (JPEG)."""

    sighting_id: int
    vector: np.ndarray
    thumbnail: bytes | None
    quality: float
    identity_id: int | None


def _purpose(purpose: str) -> str:
    if not purpose or not purpose.strip():
        raise GalleryError("say why (a purpose), e.g. 'two enrolments of the same resident'; it goes into the "
                           "audit log")
    return purpose.strip()


def _identity(session: Session, identity_id: int) -> Identity:
    row = session.get(Identity, identity_id)
    if row is None:
        raise GalleryError(f"no identity with id {identity_id}")
    return row


def _name(name: str) -> str:
    cleaned = " ".join(name.split())
    if not cleaned:
        raise GalleryError("a person needs a non-empty name")
    if len(cleaned) > MAX_NAME:
        raise GalleryError(f"a name is at most {MAX_NAME} characters")
    return cleaned


def add_photos(gallery: Gallery, identity_id: int, images: Sequence[Path], *, actor: str, purpose: str,
               allow_duplicate_face: bool = False) -> EnrolReport:
    """Enrol more photos of an existing person (through the ordinary enrolment, so the same checks apply)."""
    why = _purpose(purpose)
    with gallery.db.session() as session:
        name = _identity(session, identity_id).display_name
        namesakes = session.scalars(select(Identity.id).where(Identity.display_name == name)).all()
    if len(namesakes) > 1:
        raise GalleryError(f"{len(namesakes)} people are called {name!r}; rename one of them first so the photos "
                           "go to the right person")
    report = enrol_person(gallery, name, images, EnrolOptions(actor=actor, allow_duplicate_face=allow_duplicate_face))
    added = [f.template_id for f in report.files if f.outcome is Outcome.ENROLLED and f.template_id is not None]
    with gallery.db.session() as session:
        audit.record(session, actor=actor, action="identity.add_photos", target=f"identity:{identity_id}",
                     purpose=why, result_count=len(added), details={"templates": added, "files": len(images)})
    return report


def rename(gallery: Gallery, identity_id: int, new_name: str, *, actor: str, purpose: str) -> str:
    """Give a person another display name; returns the old one."""
    why, name = _purpose(purpose), _name(new_name)
    with gallery.db.session() as session:
        row = _identity(session, identity_id)
        old, row.display_name = row.display_name, name
        audit.record(session, actor=actor, action="identity.rename", target=f"identity:{identity_id}",
                     purpose=why, result_count=1, details={"from": old, "to": name})
    return old


def merge(gallery: Gallery, survivor_id: int, other_id: int, *, actor: str, purpose: str) -> Merged:
    """Fold ``other_id`` into ``survivor_id``: templates, negatives, sightings, events, watchlists, door records
    move (faces resealed under the survivor's key); the other identity and its data key are deleted."""
    why = _purpose(purpose)
    if survivor_id == other_id:
        raise GalleryError("pick two different people to merge")
    with gallery.db.session() as session:
        survivor, other = _identity(session, survivor_id), _identity(session, other_id)
        previous = (IDENTITY, other_id)
        templates = _move_sealed(gallery, session, FaceTemplate, other_id, survivor_id, previous,
                                 ("embedding", "thumbnail_jpeg"))
        negatives = _move_sealed(gallery, session, NegativeExample, other_id, survivor_id, previous, ("embedding",))
        sightings = _move_sealed(gallery, session, Sighting, other_id, survivor_id, previous,
                                 ("embedding", "thumbnail_jpeg"))
        events = _move(session, Event, other_id, survivor_id)
        _move(session, DoorConsent, other_id, survivor_id)
        _move(session, DoorDecisionRecord, other_id, survivor_id)
        memberships = _merge_memberships(session, other_id, survivor_id, actor)
        if survivor.external_ref is None and other.external_ref is not None:
            reference, other.external_ref = other.external_ref, None
            session.flush()  # the reference is unique: free it before the survivor takes it
            survivor.external_ref = reference
        if other.notes:
            survivor.notes = f"{survivor.notes}\n{other.notes}" if survivor.notes else other.notes
        other_name = other.display_name
        session.delete(other)
        session.flush()
        destroy_keys(session, IDENTITY, [other_id])
        merged = Merged(survivor_id, other_id, templates, negatives, sightings, events, memberships)
        audit.record(session, actor=actor, action="identity.merge", target=f"identity:{survivor_id}", purpose=why,
                     result_count=1, details={"merged": other_id, "merged_name": other_name, "templates": templates,
                                              "negatives": negatives, "sightings": sightings, "events": events,
                                              "memberships": memberships})
    return merged


def _move_sealed(gallery: Gallery, session: Session, model: Any,
                 source: int, target: int, previous: tuple[str, int], columns: tuple[str, ...]) -> int:
    rows = list(session.scalars(select(model).where(model.identity_id == source)))
    for row in rows:
        row.identity_id = target
        reseal(gallery.keys, session, row, columns, previous)
    session.flush()
    return len(rows)


def _move(session: Session, model: Any, source: int, target: int) -> int:
    result = session.execute(update(model).where(model.identity_id == source).values(identity_id=target))
    return int(getattr(result, "rowcount", 0) or 0)


def _merge_memberships(session: Session, source: int, target: int, actor: str) -> int:
    theirs = set(session.scalars(select(WatchlistMember.watchlist_id).where(WatchlistMember.identity_id == source)))
    ours = set(session.scalars(select(WatchlistMember.watchlist_id).where(WatchlistMember.identity_id == target)))
    session.execute(delete(WatchlistMember).where(WatchlistMember.identity_id == source))
    for watchlist_id in sorted(theirs - ours):
        session.add(WatchlistMember(watchlist_id=watchlist_id, identity_id=target, added_by=actor))
    return len(theirs - ours)


def delete_template(gallery: Gallery, identity_id: int, template_id: int, *, actor: str, purpose: str) -> None:
    """Delete one face template of a person (not their last one: forget the person instead)."""
    why = _purpose(purpose)
    with gallery.db.session() as session:
        _identity(session, identity_id)
        row = session.get(FaceTemplate, template_id)
        if row is None or row.identity_id != identity_id:
            raise GalleryError(f"no face template {template_id} of identity {identity_id}")
        left = session.scalars(select(FaceTemplate.id).where(FaceTemplate.identity_id == identity_id)).all()
        if len(left) == 1:
            raise GalleryError("this is the person's last face template; forget the person instead, or add "
                               "another photo first")
        session.delete(row)
        audit.record(session, actor=actor, action="identity.delete_template", target=f"identity:{identity_id}",
                     purpose=why, result_count=1, details={"template": template_id})
    gallery.remove_from_index([template_id])


def event_face(gallery: Gallery, session: Session, event_id: int) -> EventFace:
    """The event's best shot as an embedding of this gallery's model; GalleryError when there is none."""
    event = session.get(Event, event_id)
    if event is None:
        raise GalleryError(f"no event with id {event_id}")
    sighting = session.get(Sighting, event.sighting_id) if event.sighting_id is not None else None
    if sighting is None or sighting.embedding is None:
        raise GalleryError(f"event {event_id} has no stored face (its sighting was removed by retention, or it "
                           "is a door event)")
    if sighting.model_id != gallery.model_id:
        raise GalleryError(f"event {event_id}'s face was made by {sighting.model_id!r}, not this gallery's "
                           f"{gallery.model_id!r}")
    plain = open_from(gallery.keys, session, "sightings", "embedding", sighting.id, sighting.embedding)
    thumbnail = open_from(gallery.keys, session, "sightings", "thumbnail_jpeg", sighting.id, sighting.thumbnail_jpeg)
    assert plain is not None  # the blob was checked above
    return EventFace(sighting.id, np.frombuffer(plain, np.float32).copy(), thumbnail, float(sighting.quality),
                     sighting.identity_id if sighting.identity_id is not None else event.identity_id)


def _template_from(gallery: Gallery, session: Session, identity_id: int, vector: np.ndarray,
                   thumbnail: bytes | None, quality: float, source: str) -> FaceTemplate:
    digest = hashlib.sha256(np.asarray(vector, np.float32).tobytes()).hexdigest()
    if session.scalar(select(FaceTemplate.id).where(FaceTemplate.image_sha256 == digest,
                                                    FaceTemplate.model_id == gallery.model_id)) is not None:
        raise GalleryError(f"this face ({source}) is already a face template")
    template = FaceTemplate(identity_id=identity_id, embedding=b"", dim=int(vector.shape[-1]),
                            model_id=gallery.model_id, quality=quality, image_sha256=digest, source_name=source)
    session.add(template)
    session.flush()
    seal_into(gallery.keys, session, template, "embedding", np.asarray(vector, np.float32).tobytes())
    seal_into(gallery.keys, session, template, "thumbnail_jpeg", thumbnail)
    return template


def confirm_event_face(gallery: Gallery, event_id: int, identity_id: int, *, actor: str, purpose: str) -> int:
    """"This is X": the event's best shot becomes a face template of ``identity_id``; returns the template id."""
    why = _purpose(purpose)
    with gallery.db.session() as session:
        _identity(session, identity_id)
        face = event_face(gallery, session, event_id)
        template = _template_from(gallery, session, identity_id, face.vector, face.thumbnail, face.quality,
                                  f"event {event_id}")
        audit.record(session, actor=actor, action="identity.confirm_face", target=f"identity:{identity_id}",
                     purpose=why, result_count=1, details={"event": event_id, "template": template.id})
        template_id = int(template.id)
    gallery.add_to_index([template_id], face.vector[None, :])
    return template_id


def reject_event_face(gallery: Gallery, event_id: int, identity_id: int | None = None, *, actor: str,
                      purpose: str) -> tuple[int, int]:
    """"Not X": the event's best shot (and faces closer to it than to X's templates) no longer names X.

    ``identity_id`` defaults to the person the event named. Returns (negative example id, X's identity id).
    """
    why = _purpose(purpose)
    with gallery.db.session() as session:
        face = event_face(gallery, session, event_id)
        target = identity_id if identity_id is not None else face.identity_id
        if target is None:
            raise GalleryError(f"event {event_id} names nobody; say who this face is not")
        _identity(session, target)
        negative = NegativeExample(identity_id=target, embedding=b"", dim=int(face.vector.shape[-1]),
                                   model_id=gallery.model_id, created_by=actor)
        session.add(negative)
        session.flush()
        seal_into(gallery.keys, session, negative, "embedding", face.vector.tobytes())
        audit.record(session, actor=actor, action="correct.not_match", target=f"identity:{target}", purpose=why,
                     result_count=1, details={"event": event_id, "negative_example": negative.id})
        return int(negative.id), int(target)


def enrol_visitor(gallery: Gallery, visitor_id: int, name: str, *, actor: str, purpose: str,
                  shots: int = VISITOR_SHOTS) -> tuple[int, list[int]]:
    """Enrol an unknown visitor as ``name`` (an existing person of that name, else a new one) from the best
    ``shots`` of their sightings; those sightings are named. Returns (identity id, template ids)."""
    why, name = _purpose(purpose), _name(name)
    with gallery.db.session() as session:
        rows = list(session.scalars(select(Sighting).where(Sighting.visitor_id == visitor_id,
                                                           Sighting.identity_id.is_(None),
                                                           Sighting.embedding.is_not(None),
                                                           Sighting.model_id == gallery.model_id)
                                    .order_by(Sighting.quality.desc())))
        if not rows:
            raise GalleryError(f"visitor {visitor_id} has no unnamed sighting with a stored face to enrol from")
        namesakes = list(session.scalars(select(Identity).where(Identity.display_name == name)))
        if len(namesakes) > 1:
            raise GalleryError(f"{len(namesakes)} people are called {name!r}; use a distinct name")
        identity = namesakes[0] if namesakes else Identity(display_name=name, created_by=actor)
        session.add(identity)
        session.flush()
        made: list[tuple[int, np.ndarray]] = []
        for sighting in rows[:shots]:
            plain = open_from(gallery.keys, session, "sightings", "embedding", sighting.id, sighting.embedding)
            thumb = open_from(gallery.keys, session, "sightings", "thumbnail_jpeg", sighting.id,
                              sighting.thumbnail_jpeg)
            vector = np.frombuffer(plain or b"", np.float32).copy()
            template = _template_from(gallery, session, identity.id, vector, thumb, float(sighting.quality),
                                      f"visitor {visitor_id}, sighting {sighting.id}")
            made.append((int(template.id), vector))
        for sighting in rows:
            sighting.identity_id = identity.id
            reseal(gallery.keys, session, sighting, ("embedding", "thumbnail_jpeg"), (SIGHTING, int(sighting.id)))
        session.execute(update(Event).where(Event.visitor_id == visitor_id, Event.identity_id.is_(None))
                        .values(identity_id=identity.id))
        destroy_keys(session, SIGHTING, [int(s.id) for s in rows])
        audit.record(session, actor=actor, action="visitor.enrol", target=f"identity:{identity.id}", purpose=why,
                     result_count=len(made), details={"visitor": visitor_id, "templates": [t for t, _ in made],
                                                      "sightings": len(rows)})
        identity_id = int(identity.id)
    gallery.add_to_index([t for t, _ in made], np.stack([v for _, v in made]))
    return identity_id, [t for t, _ in made]

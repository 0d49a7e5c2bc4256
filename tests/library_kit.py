"""Helpers of the face library tests: enrol through the API, and store an event with a face as the pipeline does."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import numpy as np

from api_kit import Server
from facetrail.store.models import Event, Sighting, utcnow
from facetrail.store.sealed import seal_into
from facetrail.vision.image import load_image


def enrol(client: httpx.Client, name: str, photo: Path, *, duplicate: bool = False) -> int:
    with photo.open("rb") as stream:
        answer = client.post("/identities/enrolments", data={"name": name, "confirm_duplicate": str(duplicate).lower()},
                             files={"image": (photo.name, stream, "image/jpeg")})
    assert answer.status_code == 201, answer.text
    identity_id: int = answer.json()["identity_id"]
    return identity_id


def seen(server: Server, photo: Path, *, identity_id: int | None = None, visitor_id: int | None = None,
         kind: str = "watchlist_hit", score: float | None = None) -> int:
    """A sighting of ``photo``'s main face and its event, stored (and sealed) as the pipeline's recorder does."""
    gallery = server.gallery
    found = gallery.engine.analyze(load_image(photo))
    index = found.primary()
    assert index is not None, f"{photo} has no face"
    vector = np.asarray(found.embeddings.vectors[index], np.float32)
    with gallery.db.session() as session:
        sighting = Sighting(track_uid=uuid.uuid4().hex, camera="door", identity_id=identity_id,
                            visitor_id=visitor_id, first_seen=utcnow(), last_seen=utcnow(),
                            quality=float(found.qualities[index].score), frames=5, dim=int(vector.shape[0]),
                            model_id=gallery.model_id, embedding=b"")
        session.add(sighting)
        session.flush()
        seal_into(gallery.keys, session, sighting, "embedding", vector.tobytes())
        seal_into(gallery.keys, session, sighting, "thumbnail_jpeg", photo.read_bytes())
        event = Event(uid=uuid.uuid4().hex, kind=kind, camera="door", sighting_id=sighting.id,
                      identity_id=identity_id, visitor_id=visitor_id, score=score, started_at=utcnow(), state="pending",
                      reviewers_required=1)
        session.add(event)
        session.flush()
        return int(event.id)

"""Events as the list shows them: with whether a face crop exists, and repeats folded in on request."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from facetrail.api.schemas import EventOut
from facetrail.api.views import event_out
from facetrail.events.queries import REPEAT_WINDOW, group_repeats
from facetrail.store.media import ClipFiles
from facetrail.store.models import Event, Sighting


def events_out(session: Session, rows: Sequence[Event], *, group: bool = False,
               window: timedelta = REPEAT_WINDOW, clips: ClipFiles | None = None) -> list[EventOut]:
    """``rows`` (newest first) as the API shows them; with ``group``, repeats folded into their newest event.

    ``clips``: where event clips are kept, to say which events have one.
    """
    with_face = {row.id for row in rows if face_sighting(session, row) is not None}

    def shown(row: Event) -> EventOut:
        out = event_out(session, row)
        out.has_face = row.id in with_face
        out.has_clip = clips is not None and clips.exists(row.id)
        return out

    if not group:
        return [shown(row) for row in rows]
    listed = []
    for found in group_repeats(rows, window):
        head = shown(found.head)
        head.repeats = [shown(row) for row in found.repeats]
        listed.append(head)
    return listed


def face_sighting(session: Session, event: Event) -> Sighting | None:
    """The sighting whose best-shot face crop shows the event's face, while retention keeps the crop.

    Every event names its sighting, except visitor events stored before the recorder wrote the sighting first:
    for those it is the visitor's sighting on that camera whose time span holds the event's start.
    """
    if event.sighting_id is not None:
        sighting = session.get(Sighting, event.sighting_id)
    elif event.visitor_id is not None:
        sighting = session.scalar(
            select(Sighting).where(Sighting.visitor_id == event.visitor_id, Sighting.camera == event.camera,
                                   Sighting.first_seen <= event.started_at, Sighting.last_seen >= event.started_at)
            .order_by(Sighting.first_seen.desc()).limit(1))
    else:
        sighting = None
    return sighting if sighting is not None and sighting.thumbnail_jpeg is not None else None

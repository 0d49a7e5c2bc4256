"""The one outlet for events: the row, its snapshot and its outbox messages, in the caller's transaction.

Every producer goes through :class:`EventOutlet`: the recorder (watchlist hit,
unknown visitor, seen again, their updates and ends), the doors (tailgating,
door command failed, door forced, from the pipeline or the API) and reviews.
So every kind reaches MQTT (``<prefix>/events``, Frigate's ``new`` / ``update``
/ ``end`` with ``before`` and ``after``) and the webhooks subscribed to it, and
a crash can never keep an event without its messages, or the reverse. The
other messages go out here too: a named track's Frigate ``tracked_object_update``
face message and its retained snapshot JPEG, the per-person counts, and what
Home Assistant's entities read (:mod:`facetrail.events.homeassistant`).

An outlet holds no session and no database: it writes with the session it is
given, so threads may share one. ``enqueued`` counts the messages it wrote,
for whoever wakes the dispatcher.
"""

from __future__ import annotations

import base64
import threading
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from facetrail.events import homeassistant as ha
from facetrail.events.messages import (
    Change,
    Channels,
    EventView,
    WebhookChange,
    face_update,
    iso,
    mqtt_event,
    same,
    slug,
    snapshot_url,
    webhook_event,
)
from facetrail.events.outbox import enqueue
from facetrail.store.models import (
    CameraState,
    Event,
    EventReview,
    Identity,
    Sighting,
    Visitor,
    Watchlist,
    as_utc,
)

if TYPE_CHECKING:
    from facetrail.config.schema import FacetrailConfig


def new_uid() -> str:
    """A fresh event uid."""
    return uuid.uuid4().hex


class EventOutlet:
    """Stores events and announces them on the configured channels (thread-safe)."""

    def __init__(self, channels: Channels | None = None) -> None:
        self.channels = channels or Channels()
        self._lock = threading.Lock()
        self._enqueued = 0

    @classmethod
    def for_config(cls, config: FacetrailConfig | None) -> EventOutlet:
        """The outlet of a configuration's channels; without one, events are stored and announced nowhere."""
        return cls(Channels.from_config(config))

    @property
    def enqueued(self) -> int:
        """Outbox messages written so far (wake the dispatcher when it grows)."""
        with self._lock:
            return self._enqueued

    def new(self, session: Session, view: EventView, *, snapshot: bytes | None,
            watchlist_id: int | None = None) -> Event:
        """Store a new event (row and snapshot) and announce it (``new``); returns the row."""
        if view.identity_id is not None and view.identity_name is None:
            view.identity_name = _name_of(session, view.identity_id)
        view.has_snapshot = snapshot is not None
        view.public_url = self.channels.public_url
        row = Event(uid=view.uid, kind=view.kind, camera=view.camera, sighting_id=view.sighting_id,
                    identity_id=view.identity_id, visitor_id=view.visitor_id, watchlist_id=watchlist_id,
                    score=view.score, started_at=view.start_time, ended_at=view.end_time, snapshot_jpeg=snapshot,
                    state=view.review_state, reviewers_required=view.reviewers_required)
        session.add(row)
        session.flush()
        view.row_id = row.id
        self._announce(session, "new", view, before=None, snapshot=snapshot)
        return row

    def update(self, session: Session, view: EventView, *, before: dict[str, Any],
               snapshot: bytes | None = None, reviewed: bool = False, at: datetime | None = None) -> bool:
        """Store what changed (score, a better ``snapshot``) and announce it (``update``).

        ``before``: ``view.as_dict()`` before the change. Nothing is announced when nothing a receiver sees
        changed (the frame time aside); returns whether an update went out. ``reviewed``: the change is a
        review, also sent to webhooks subscribed to ``review``. ``at``: when it changed (default: the frame time).
        """
        row = session.scalar(select(Event).where(Event.uid == view.uid))
        if row is not None:
            row.score = view.score
            view.row_id = row.id
            if snapshot is not None:
                row.snapshot_jpeg = snapshot
                view.has_snapshot = True
        if view.public_url != self.channels.public_url:  # a view rebuilt from its row: links as every message has them
            view.public_url = self.channels.public_url
            if before.get("snapshot_url") and view.row_id is not None:
                before = {**before, "snapshot_url": snapshot_url(view.row_id, view.public_url)}
        if same(before, view.as_dict()):
            return False
        self._announce(session, "update", view, before=before, reviewed=reviewed, at=at, snapshot=snapshot)
        return True

    def end(self, session: Session, view: EventView, *, at: datetime) -> None:
        """Close the event at ``at`` and announce it (``end``)."""
        before = view.as_dict()
        view.end_time = view.frame_time = at
        row = session.scalar(select(Event).where(Event.uid == view.uid))
        if row is not None:
            row.ended_at = at
        self._announce(session, "end", view, before=before)

    def end_left_open(self, session: Session, view: EventView) -> None:
        """End an event a dead process left open, when its sighting was last seen (else when it started)."""
        seen = session.scalar(select(Sighting.last_seen).where(Sighting.id == view.sighting_id)) \
            if view.sighting_id is not None else None
        at = as_utc(seen) if seen is not None else view.start_time
        view.frame_time = at
        self.end(session, view, at=at)

    def door_forced(self, session: Session, *, door: str, camera: str, at: datetime) -> Event:
        """A door opened without a command: an event for review, the door camera's latest frame as evidence."""
        latest = session.get(CameraState, camera)
        view = EventView(uid=new_uid(), kind="door_forced", camera=camera, start_time=at, frame_time=at,
                         extra={"door": door})
        return self.new(session, view, snapshot=latest.frame_jpeg if latest is not None else None)

    def presence(self, session: Session, camera: str, name: str, count: int, *, identity_id: int) -> None:
        """``<prefix>/<camera>/<person>``: how many tracks of that person the camera sees now (MQTT only)."""
        if self.channels.mqtt_prefix is not None:
            enqueue(session, channel="mqtt", destination=f"{self.channels.mqtt_prefix}/{camera}/{slug(name)}",
                    payload=str(count), identity_id=identity_id)
            self._count(1)

    def face_named(self, session: Session, *, camera: str, track_id: str, identity_id: int, name: str,
                   score: float | None, at: datetime, snapshot: bytes | None) -> None:
        """A track was named: Frigate's ``<prefix>/tracked_object_update`` face message, and the shot as
        ``<prefix>/<camera>/<person>/snapshot`` (JPEG, retained), as Frigate publishes per label (MQTT only)."""
        prefix = self.channels.mqtt_prefix
        if prefix is None:
            return
        enqueue(session, channel="mqtt", destination=f"{prefix}/tracked_object_update",
                payload=face_update(track_id=track_id, name=name, score=score, camera=camera, at=at),
                identity_id=identity_id)
        written = 1
        if snapshot is not None:
            enqueue(session, channel="mqtt", destination=ha.snapshot_topic(prefix, camera, name), payload=snapshot,
                    retain=True, identity_id=identity_id)
            written += 1
        self._count(written)

    def publish(self, session: Session, topic: str, payload: dict[str, Any] | str, *, retain: bool = False) -> None:
        """Any other MQTT message (Home Assistant's discovery and states), through the outbox like the rest."""
        if self.channels.mqtt_prefix is not None:
            enqueue(session, channel="mqtt", destination=topic, payload=payload, retain=retain)
            self._count(1)

    def _announce(self, session: Session, change: Change, view: EventView, *, before: dict[str, Any] | None,
                  reviewed: bool = False, at: datetime | None = None, snapshot: bytes | None = None) -> None:
        after = view.as_dict()
        written = 0
        moment = at or view.frame_time or view.start_time
        prefix = self.channels.mqtt_prefix
        if prefix is not None:
            enqueue(session, channel="mqtt", destination=f"{prefix}/events",
                    payload=mqtt_event(change, before, after), identity_id=view.identity_id)
            written += 1
            entity_topic = ha.event_entity_topic(prefix, view.kind, view.camera, view.extra.get("door"))
            if self.channels.home_assistant and change == "new" and entity_topic is not None:
                enqueue(session, channel="mqtt", destination=entity_topic, payload={
                    "event_type": view.kind, "id": view.uid, "camera": view.camera, "name": view.identity_name,
                    "watchlist": view.watchlist, "score": after["score"], "time": iso(moment),
                    "snapshot_url": after["snapshot_url"]}, identity_id=view.identity_id)
                written += 1
        hook_change: WebhookChange = "reviewed" if reviewed else change
        names = self.channels.webhooks_for(view.kind, reviewed=reviewed)
        with_jpeg = [name for name in names if name in self.channels.webhooks_with_snapshot]
        jpeg = (snapshot or self._stored_snapshot(session, view.uid)) if with_jpeg and view.has_snapshot else None
        for name in names:
            data = after
            if jpeg is not None and name in with_jpeg:
                data = {**after, "snapshot_base64": base64.b64encode(jpeg).decode("ascii")}
            enqueue(session, channel="webhook", destination=name, payload=webhook_event(hook_change, data, moment),
                    identity_id=view.identity_id)
            written += 1
        self._count(written)

    @staticmethod
    def _stored_snapshot(session: Session, uid: str) -> bytes | None:
        return session.scalar(select(Event.snapshot_jpeg).where(Event.uid == uid))

    def _count(self, written: int) -> None:
        with self._lock:
            self._enqueued += written


def view_of(session: Session, row: Event) -> EventView:
    """The public description of a stored event (names, review state and confirmations read from the store).

    What the row does not keep is absent: the snapshot's quality, the frame time, and the extras a producer
    added to its first message (a door event's ``door``).
    """
    confirmations = session.scalar(select(func.count()).select_from(EventReview).where(
        EventReview.event_id == row.id, EventReview.decision == "confirm")) or 0
    extra: dict[str, Any] = {}
    if row.visitor_id is not None:
        extra["visits"] = session.scalar(select(Visitor.sightings).where(Visitor.id == row.visitor_id))
    return EventView(
        uid=row.uid, kind=row.kind, camera=row.camera, start_time=as_utc(row.started_at),
        identity_id=row.identity_id,
        identity_name=_name_of(session, row.identity_id) if row.identity_id is not None else None,
        visitor_id=row.visitor_id,
        watchlist=session.scalar(select(Watchlist.name).where(Watchlist.id == row.watchlist_id))
        if row.watchlist_id is not None else None,
        score=row.score, end_time=as_utc(row.ended_at) if row.ended_at is not None else None,
        reviewers_required=row.reviewers_required, sighting_id=row.sighting_id,
        has_snapshot=row.snapshot_jpeg is not None, review_state=row.state, confirmations=int(confirmations),
        row_id=row.id, extra=extra)


def _name_of(session: Session, identity_id: int) -> str:
    return session.scalar(select(Identity.display_name).where(Identity.id == identity_id)) or str(identity_id)

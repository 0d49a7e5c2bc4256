"""Home Assistant MQTT discovery: entities for cameras, doors and enrolled people, kept in line with the database.

Opt-in (``mqtt.home_assistant: true``; the settings are
:class:`~facetrail.events.mqtt.MqttSettings`'s). What Home Assistant gets, under
``<discovery_prefix>/<component>/<node>/<object>/config`` (``<node>``: the slug
of the topic prefix), every payload per https://www.home-assistant.io/integrations/mqtt/:

* a device per camera, per door, and one for the facetrail server;
* per enrolled person a ``sensor`` "last seen" (state: the camera's name;
  attributes: ``time``, ``timestamp``, ``score``) on the server device, and per
  camera a ``binary_sensor`` "present" (``presence``) on the camera's device:
  on while the person was seen there within ``presence_timeout_s``, off after;
* an ``event`` entity per camera for watchlist hits, and per door for its
  events (tailgating, door forced, door command failed), sent by the outlet;
* availability from ``<prefix>/available`` (``online`` / ``offline``).

The database is the truth, and it changes in other processes (the API, the
CLI), so a :class:`HomeAssistantBridge` reconciles on every (re)connection and
every ``poll_s``: it publishes the configurations and states that are missing
or changed, and an empty retained message (Home Assistant's way to delete an
entity, and the broker's to drop a retained message) for every entity, state
and snapshot JPEG whose person is gone. What the broker holds it learns by
subscribing to its own retained topics. Every message goes through the outlet
into the outbox, so delivery stays at-least-once.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from facetrail import __version__
from facetrail.events.messages import iso, slug
from facetrail.store.models import Identity, Sighting, as_utc, utcnow

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from facetrail.events.mqtt import MqttPublisher, MqttSettings
    from facetrail.events.outlet import EventOutlet
    from facetrail.store.db import Database

log = logging.getLogger(__name__)

DOOR_KINDS = ("tailgating", "door_forced", "door_command_failed")
WATCHLIST_KIND = "watchlist_hit"
ON, OFF = "ON", "OFF"
# A sighting's last_seen is written at the pipeline's next flush (seconds later, in any order across cameras):
# each poll looks this far behind the newest time it has seen, so a late write is not missed.
_LATE_WRITES = timedelta(seconds=30)
_COMPARED_BYTES = 16_384


# -- topics ---------------------------------------------------------------------------------------------------


def snapshot_topic(prefix: str, camera: str, name: str) -> str:
    """``<prefix>/<camera>/<person>/snapshot``: a person's latest named shot at a camera (JPEG, retained)."""
    return f"{prefix}/{camera}/{slug(name)}/snapshot"


def event_entity_topic(prefix: str, kind: str, camera: str, door: str | None) -> str | None:
    """Where an ``event`` entity reads events of ``kind``: per camera for watchlist hits, per door for door
    events; None for kinds no entity shows."""
    if kind == WATCHLIST_KIND:
        return f"{prefix}/{camera}/{WATCHLIST_KIND}"
    if kind in DOOR_KINDS and door:
        return door_event_topic(prefix, door)
    return None


def door_event_topic(prefix: str, door: str) -> str:
    """``<prefix>/door_events/<door>``: a door's events for its ``event`` entity (apart from the door command
    channel's ``<prefix>/doors/...``, which a controller listens to)."""
    return f"{prefix}/door_events/{door}"


def last_seen_topic(prefix: str, identity_id: int) -> str:
    """``<prefix>/people/<id>/last_seen``: JSON ``{camera, time, timestamp, score}``, retained."""
    return f"{prefix}/people/{identity_id}/last_seen"


def presence_topic(prefix: str, identity_id: int, camera: str) -> str:
    """``<prefix>/people/<id>/<camera>/presence``: ``ON`` / ``OFF``, retained."""
    return f"{prefix}/people/{identity_id}/{camera}/presence"


# -- discovery payloads ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Site:
    """What is announced besides the people: the MQTT prefixes, the cameras and the doors (door -> camera)."""

    prefix: str
    discovery_prefix: str
    cameras: Sequence[str]
    doors: Mapping[str, str]

    @property
    def node(self) -> str:
        """The discovery node id (and the start of every unique id): the topic prefix as a slug."""
        return slug(self.prefix)

    def config_topic(self, component: str, object_id: str) -> str:
        """``<discovery_prefix>/<component>/<node>/<object_id>/config``."""
        return f"{self.discovery_prefix}/{component}/{self.node}/{object_id}/config"

    def _device(self, kind: str, name: str | None = None) -> dict[str, Any]:
        server = f"{self.node}_server"
        if name is None:
            return {"identifiers": [server], "name": "facetrail", "manufacturer": "facetrail",
                    "model": "Face recognition server", "sw_version": __version__}
        return {"identifiers": [f"{self.node}_{kind}_{name}"], "name": f"facetrail {kind} {name}",
                "manufacturer": "facetrail", "model": kind.capitalize(), "via_device": server}

    def _entity(self, component: str, object_id: str, name: str, device: dict[str, Any]) -> dict[str, Any]:
        unique = f"{self.node}_{object_id}"
        return {"name": name, "unique_id": unique, "default_entity_id": f"{component}.{unique}",
                "device": device, "origin": {"name": "facetrail", "sw_version": __version__},
                "availability_topic": f"{self.prefix}/available",
                "payload_available": "online", "payload_not_available": "offline"}

    def configs(self, people: Mapping[int, str]) -> dict[str, str]:
        """Every discovery topic and its payload (JSON text) for these people (id -> display name)."""
        out: dict[str, dict[str, Any]] = {}
        server = self._device("server")
        for camera in self.cameras:
            object_id = f"{camera}_{WATCHLIST_KIND}"
            out[self.config_topic("event", object_id)] = {
                **self._entity("event", object_id, "Watchlist hit", self._device("camera", camera)),
                "state_topic": f"{self.prefix}/{camera}/{WATCHLIST_KIND}", "event_types": [WATCHLIST_KIND],
                "icon": "mdi:account-alert"}
        for door in self.doors:
            object_id = f"door_{door}_event"
            out[self.config_topic("event", object_id)] = {
                **self._entity("event", object_id, "Door event", self._device("door", door)),
                "state_topic": door_event_topic(self.prefix, door), "event_types": list(DOOR_KINDS),
                "icon": "mdi:door"}
        for identity_id, name in people.items():
            object_id = f"person_{identity_id}_last_seen"
            out[self.config_topic("sensor", object_id)] = {
                **self._entity("sensor", object_id, f"{name} last seen", server),
                "state_topic": last_seen_topic(self.prefix, identity_id), "value_template": "{{ value_json.camera }}",
                "json_attributes_topic": last_seen_topic(self.prefix, identity_id), "icon": "mdi:account-eye"}
            for camera in self.cameras:
                object_id = f"person_{identity_id}_{camera}_presence"
                out[self.config_topic("binary_sensor", object_id)] = {
                    **self._entity("binary_sensor", object_id, f"{name} present", self._device("camera", camera)),
                    "state_topic": presence_topic(self.prefix, identity_id, camera), "device_class": "presence",
                    "payload_on": ON, "payload_off": OFF}
        return {topic: json.dumps(body, separators=(",", ":"), ensure_ascii=False) for topic, body in out.items()}

    def states(self, people: Mapping[int, str]) -> set[str]:
        """Every state topic of these people: last seen, and presence at each camera."""
        return {last_seen_topic(self.prefix, identity_id) for identity_id in people} | {
            presence_topic(self.prefix, identity_id, camera) for identity_id in people for camera in self.cameras}

    def owned(self, topic: str) -> bool:
        """Whether a retained topic is one facetrail announces per person or for Home Assistant."""
        return self._person_of(topic) is not None or self.config_pattern.fullmatch(topic) is not None

    def person_gone(self, topic: str, people: Mapping[int, str], slugs: set[str] | None = None) -> bool:
        """Whether ``topic`` belongs to a person who is not (or no longer) enrolled (``slugs``: of their names)."""
        person = self._person_of(topic)
        if isinstance(person, int):
            return person not in people
        if slugs is None:
            slugs = {slug(name) for name in people.values()}
        return person is not None and person not in slugs

    @property
    def config_pattern(self) -> re.Pattern[str]:
        """Discovery topics under this node."""
        return re.compile(rf"{re.escape(self.discovery_prefix)}/[^/]+/{re.escape(self.node)}/[^/]+/config")

    def _person_of(self, topic: str) -> int | str | None:
        """The identity id (config and state topics) or the name's slug (snapshots) a topic is about."""
        node, prefix = re.escape(self.node), re.escape(self.prefix)
        found = (re.fullmatch(rf"{re.escape(self.discovery_prefix)}/[^/]+/{node}/person_(\d+)_[^/]+/config", topic)
                 or re.fullmatch(rf"{prefix}/people/(\d+)/.+", topic))
        if found:
            return int(found.group(1))
        found = re.fullmatch(rf"{prefix}/[^/]+/([^/]+)/snapshot", topic)
        return found.group(1) if found else None


# -- the bridge -----------------------------------------------------------------------------------------------


class HomeAssistantBridge:
    """Publishes discovery configurations and people's states, and removes those of forgotten people.

    ``sync`` does one reconciliation (thread-safe); ``start`` runs it every ``poll_s`` on a thread of its own
    and right after every (re)connection. With ``settings.home_assistant`` off only removals are made (the
    entities of an earlier run, and the snapshots of forgotten people).
    """

    def __init__(self, db: Database, outlet: EventOutlet, site: Site, settings: MqttSettings, *,
                 poll_s: float = 2.0, clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.outlet = outlet
        self.site = site
        self.settings = settings
        self.poll_s = poll_s
        self.clock = clock
        self._lock = threading.Lock()  # one sync at a time, and the maps below
        self._retained: dict[str, bytes] = {}  # what the broker holds on our topics, as far as we heard
        self._sent: dict[str, str] = {}  # what we enqueued (text payloads) and have not heard back yet
        self._watermark: datetime | None = None
        self._people: dict[int, str] | None = None
        self._configs: dict[str, str] = {}
        self._ours: set[str] = set()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def attach(self, publisher: MqttPublisher) -> None:
        """Learn the broker's retained state from ``publisher``'s subscriptions, and sync after each connection."""
        site = self.site
        for topic_filter in (f"{site.discovery_prefix}/+/{site.node}/+/config", f"{site.prefix}/+/+/snapshot",
                             f"{site.prefix}/people/#"):
            publisher.subscribe(topic_filter, self.heard)
        publisher.subscribe(f"{site.discovery_prefix}/status", self._home_assistant_status)
        publisher.add_connect_callback(self._wake.set)

    def heard(self, topic: str, payload: bytes, _retained: bool = True) -> None:
        """A message on one of our topics came from the broker: it holds ``payload`` now (empty: nothing)."""
        if not self.site.owned(topic):
            return
        with self._lock:
            if payload:
                # Only the small payloads (configs, states) are ever compared; a snapshot JPEG just has to exist.
                self._retained[topic] = payload if len(payload) <= _COMPARED_BYTES else b"(large)"
            else:
                self._retained.pop(topic, None)
            if self._sent.get(topic, "").encode() == payload:
                self._sent.pop(topic, None)

    def start(self) -> None:
        """Sync now and every ``poll_s`` on a thread of its own, until :meth:`stop`."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="facetrail-home-assistant", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread after the sync in hand."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def sync(self) -> int:
        """One reconciliation in one transaction; returns how many messages were enqueued."""
        now = as_utc(self.clock())
        with self._lock, self.db.session() as session:
            people = {identity_id: name for identity_id, name in
                      session.execute(select(Identity.id, Identity.display_name))}
            if people != self._people:  # the payloads only change with the people
                self._people, self._configs = people, self.site.configs(people)
                self._ours = set(self._configs) | self.site.states(people)
            configs, ours, slugs = self._configs, self._ours, {slug(name) for name in people.values()}
            wanted: dict[str, str] = {}
            if self.settings.home_assistant:
                wanted.update(configs)
                wanted.update(self._states(session, people, now))
            known = self._known()
            # Removed: what belongs to a person no longer enrolled, and our entities when discovery is off.
            # Not removed: what another process announces for its own cameras (it shares the database).
            removals = [topic for topic in sorted(known) if self.site.person_gone(topic, people, slugs)
                        or (not self.settings.home_assistant and topic in ours)]
            messages = [(topic, "") for topic in removals]
            messages += [(topic, body) for topic, body in wanted.items() if known.get(topic) != body.encode()]
            for topic, body in messages:
                self.outlet.publish(session, topic, body, retain=True)
                self._sent[topic] = body
            gone = len(removals)
        if gone:
            log.info("removed %d retained messages (Home Assistant entities, states, snapshots)", gone)
        return len(messages)

    def _known(self) -> dict[str, bytes]:
        known = dict(self._retained)
        for topic, body in self._sent.items():
            if body:
                known[topic] = body.encode()
            else:
                known.pop(topic, None)
        return known

    def _states(self, session: Session, people: Mapping[int, str], now: datetime) -> dict[str, str]:
        """Last-seen states of those seen since the last poll, and every presence (``ON`` / ``OFF``)."""
        states: dict[str, str] = {}
        query = select(Sighting.identity_id, Sighting.camera, Sighting.last_seen, Sighting.score).where(
            Sighting.identity_id.is_not(None))
        if self._watermark is None:
            newest = select(Sighting.identity_id, func.max(Sighting.last_seen).label("at")).where(
                Sighting.identity_id.is_not(None)).group_by(Sighting.identity_id).subquery()
            query = query.join(newest, (newest.c.identity_id == Sighting.identity_id)
                               & (newest.c.at == Sighting.last_seen))
        else:
            query = query.where(Sighting.last_seen >= min(self._watermark, now) - _LATE_WRITES)
        latest: dict[int, tuple[str, datetime, float | None]] = {}
        for identity_id, camera, seen, score in session.execute(query):
            if identity_id is None or identity_id not in people:
                continue
            seen = as_utc(seen)
            if identity_id not in latest or seen > latest[identity_id][1]:
                latest[identity_id] = (camera, seen, score)
        for identity_id, (camera, seen, score) in latest.items():
            self._watermark = max(self._watermark or seen, seen)
            states[last_seen_topic(self.site.prefix, identity_id)] = json.dumps(
                {"camera": camera, "name": people[identity_id], "time": iso(seen), "timestamp": seen.timestamp(),
                 "score": round(score, 4) if score is not None else None}, separators=(",", ":"), ensure_ascii=False)
        if self._watermark is None:
            self._watermark = now
        recent = {(identity_id, camera) for identity_id, camera in session.execute(
            select(Sighting.identity_id, Sighting.camera).where(
                Sighting.identity_id.is_not(None),
                Sighting.last_seen >= now - timedelta(seconds=self.settings.presence_timeout_s)))}
        for identity_id in people:
            for camera in self.site.cameras:
                states[presence_topic(self.site.prefix, identity_id, camera)] = (
                    ON if (identity_id, camera) in recent else OFF)
        return states

    def _home_assistant_status(self, _topic: str, payload: bytes, _retained: bool) -> None:
        if payload == b"online":  # Home Assistant (re)started: announce everything again
            with self._lock:
                self._retained = {t: b for t, b in self._retained.items() if not t.endswith("/config")}
                self._sent.clear()
            self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync()
            except Exception:  # the database or broker may be away for a while; keep reconciling
                log.exception("Home Assistant discovery could not reconcile")
            self._wake.wait(self.poll_s)
            self._wake.clear()


def site_of(prefix: str, discovery_prefix: str, cameras: Sequence[str], doors: Mapping[str, str]) -> Site:
    """The :class:`Site` of a configuration's prefixes, cameras and doors."""
    return Site(prefix=prefix, discovery_prefix=discovery_prefix, cameras=tuple(cameras), doors=dict(doors))

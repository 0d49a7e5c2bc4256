"""Which events a person wants to work through: one filter for the API, the dashboard and the CLI, and repeats.

``EventFilter`` narrows by kind, camera, person (identity id, name or
``visitor:ID``), watchlist (id or name), review state and time (``since``
inclusive, ``until`` exclusive, on the event's start). Lists are newest first
by id, so a cursor (the last id shown) pages through them.

Repeats. A loitering visitor raises a new event with every new track. With
grouping, the events of one page are folded: an event joins the newest group
on the page with the same kind, camera, person or visitor, watchlist and state
when the group's oldest event started at most ``window`` after it. The group
shows its newest event; the others are its ``repeats``. Events with neither a
person nor a visitor (door events) are never grouped. A group never spans two
pages, so paging stays a plain cursor over event ids and ``total`` counts events.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Literal, get_args

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from facetrail.store.models import Event, Identity, Watchlist, as_utc

# Every kind an event can have (config's EventKind less "review", which names webhooks of reviews, not events).
EventKindName = Literal["watchlist_hit", "unknown_visitor", "seen_again", "tailgating", "door_forced",
                        "door_command_failed"]
ReviewState = Literal["pending", "confirmed", "dismissed"]
EVENT_KINDS: tuple[str, ...] = get_args(EventKindName)
STATES: tuple[str, ...] = get_args(ReviewState)
REPEAT_WINDOW = timedelta(minutes=10)
VISITOR_PREFIX = "visitor:"
NAME_MAX = 200  # the longest camera, person or watchlist name stored


class EventFilterError(ValueError):
    """A filter that is malformed or names nothing that exists; the message says what to change."""


@dataclass(frozen=True)
class EventFilter:
    """What to show; every field left None lets every event through. Times must carry a zone."""

    kind: str | None = None
    camera: str | None = None
    person: str | None = None  # an identity's id, its display name, or "visitor:ID"
    watchlist: str | None = None  # a watchlist's id or name
    state: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    max_id: int | None = None  # only events up to this id: what a page showed when someone chose "all matching"

    def __post_init__(self) -> None:
        if self.kind is not None and self.kind not in EVENT_KINDS:
            raise EventFilterError(f"unknown event kind {self.kind!r}; use one of {', '.join(EVENT_KINDS)}")
        if self.state is not None and self.state not in STATES:
            raise EventFilterError(f"unknown review state {self.state!r}; use one of {', '.join(STATES)}")
        for name in ("camera", "person", "watchlist"):
            text = getattr(self, name)
            if text is not None and (len(text) > NAME_MAX or "\x00" in text):
                raise EventFilterError(f"{name} must be at most {NAME_MAX} characters, without NUL bytes")
        for name in ("since", "until"):
            moment = getattr(self, name)
            if moment is not None and moment.utcoffset() is None:
                raise EventFilterError(f"{name} needs a time zone, e.g. 2026-03-01T08:00:00Z or "
                                       "2026-03-01T09:00:00+01:00")
            if moment is not None and not _representable(moment):
                raise EventFilterError(f"{name} is out of range: give a time between the years 1 and 9999 UTC")
        if self.since is not None and self.until is not None and self.until <= self.since:
            raise EventFilterError("until must be later than since")

    def is_empty(self) -> bool:
        """True when the filter lets every event through."""
        return all(getattr(self, f.name) is None for f in fields(self))

    def as_params(self) -> dict[str, str]:
        """The filter as query parameters (times in ISO 8601 with their zone), for links and bookmarks."""
        params: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                params[f.name] = value.isoformat() if isinstance(value, datetime) else str(value)
        return params


def _representable(moment: datetime) -> bool:
    try:
        as_utc(moment)
    except OverflowError:
        return False
    return True


def parse_moment(text: str, name: str) -> datetime:
    """An ISO 8601 time with its zone (``Z`` or ``+01:00``); EventFilterError naming ``name`` otherwise."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise EventFilterError(f"{name} {text!r} is not an ISO 8601 time; write e.g. 2026-03-01T08:00:00Z") from None
    if moment.utcoffset() is None:
        raise EventFilterError(f"{name} {text!r} needs a time zone, e.g. 2026-03-01T08:00:00Z")
    return moment


def conditions(session: Session, wanted: EventFilter) -> list[ColumnElement[bool]]:
    """SQL conditions for ``wanted``; EventFilterError when its person or watchlist does not exist."""
    where: list[ColumnElement[bool]] = []
    if wanted.kind is not None:
        where.append(Event.kind == wanted.kind)
    if wanted.camera is not None:
        where.append(Event.camera == wanted.camera)
    if wanted.state is not None:
        where.append(Event.state == wanted.state)
    if wanted.since is not None:
        where.append(Event.started_at >= as_utc(wanted.since))
    if wanted.until is not None:
        where.append(Event.started_at < as_utc(wanted.until))
    if wanted.max_id is not None:
        where.append(Event.id <= wanted.max_id)
    if wanted.person is not None:
        where.append(_person_condition(session, wanted.person.strip()))
    if wanted.watchlist is not None:
        where.append(Event.watchlist_id == _watchlist_id(session, wanted.watchlist.strip()))
    return where


def count_events(session: Session, wanted: EventFilter) -> int:
    """How many events match (across all pages)."""
    return int(session.scalar(select(func.count()).select_from(Event).where(*conditions(session, wanted))) or 0)


def list_events(session: Session, wanted: EventFilter, *, limit: int, before_id: int | None = None) -> list[Event]:
    """Up to ``limit`` matching events, newest first, older than ``before_id`` when given."""
    query = select(Event).where(*conditions(session, wanted))
    if before_id is not None:
        query = query.where(Event.id < before_id)
    return list(session.scalars(query.order_by(Event.id.desc()).limit(limit)))


def matching_ids(session: Session, wanted: EventFilter, *, limit: int) -> list[int]:
    """Ids of up to ``limit`` matching events, newest first."""
    query = select(Event.id).where(*conditions(session, wanted)).order_by(Event.id.desc()).limit(limit)
    return [int(i) for i in session.scalars(query)]


@dataclass
class EventGroup:
    """An event and the earlier repeats folded into it (newest first)."""

    head: Event
    repeats: list[Event] = field(default_factory=list)

    @property
    def events(self) -> list[Event]:
        """The head and its repeats, newest first."""
        return [self.head, *self.repeats]


def repeat_key(event: Event) -> tuple[object, ...] | None:
    """What two events must share to be repeats of each other; None for events that are never grouped."""
    if event.identity_id is None and event.visitor_id is None:
        return None
    return event.kind, event.camera, event.identity_id, event.visitor_id, event.watchlist_id, event.state


def group_repeats(events: Sequence[Event], window: timedelta = REPEAT_WINDOW) -> list[EventGroup]:
    """Fold ``events`` (newest first) into groups of repeats, in the order of their newest event."""
    groups: list[EventGroup] = []
    open_groups: dict[tuple[object, ...], EventGroup] = {}
    for event in events:
        key = repeat_key(event)
        group = open_groups.get(key) if key is not None else None
        if group is not None and as_utc(group.events[-1].started_at) - as_utc(event.started_at) <= window:
            group.repeats.append(event)
            continue
        group = EventGroup(event)
        groups.append(group)
        if key is not None:
            open_groups[key] = group
    return groups


def _person_condition(session: Session, person: str) -> ColumnElement[bool]:
    if person.lower().startswith(VISITOR_PREFIX):
        number = person[len(VISITOR_PREFIX):].strip()
        if not number.isdigit() or not 0 < int(number) < 2**63:
            raise EventFilterError(f"person {person!r}: a visitor is written visitor:ID, e.g. visitor:12")
        return Event.visitor_id == int(number)
    if person.isdigit():
        if not 0 < int(person) < 2**31 or session.get(Identity, int(person)) is None:
            raise EventFilterError(f"no person with id {person} (see `facetrail identities`)")
        return Event.identity_id == int(person)
    ids = list(session.scalars(select(Identity.id).where(func.lower(Identity.display_name) == person.lower())))
    if not ids:
        raise EventFilterError(f"no person named {person!r}; give the name as enrolled, the id, or visitor:ID")
    return Event.identity_id.in_(ids)


def _watchlist_id(session: Session, watchlist: str) -> int:
    if watchlist.isdigit() and 0 < int(watchlist) < 2**31 and session.get(Watchlist, int(watchlist)) is not None:
        return int(watchlist)
    found = session.scalar(select(Watchlist.id).where(Watchlist.name == watchlist))
    if found is None:
        raise EventFilterError(f"no watchlist {watchlist!r}; give its name or id (see `facetrail watchlist list`)")
    return int(found)

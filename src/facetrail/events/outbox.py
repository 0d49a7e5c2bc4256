"""The durable outbox: messages are written in the transaction that caused them, and delivered later.

Whoever records an event calls :func:`enqueue` with the same session, so the
event row and its MQTT/webhook messages commit (or roll back) together. The
:class:`~facetrail.events.dispatcher.Dispatcher` then drains the table.

Delivery guarantees:

* A message is marked delivered only after the broker's PUBACK or the
  receiver's 2xx. A crash between sending and marking sends it again after the
  restart, so delivery is *at-least-once*. Webhook receivers deduplicate on the
  ``webhook-id`` header (the Standard Webhooks spec asks them to); JSON object
  payloads on MQTT carry the same id as ``"message_id"`` for subscribers that
  need to deduplicate. Plain-text MQTT payloads (counts, availability) and
  binary ones (snapshot JPEGs) are retained state, for which a repeat is harmless.
* Binary payloads (``bytes``) are kept in the text column as ``base64:`` and
  their base64; :func:`wire_payload` turns them back into bytes for sending.
  A text payload may therefore not start with ``base64:``.
* While the process lives a message is never sent twice.
* Per destination (MQTT topic, webhook name) messages go out in id order: while
  one waits for a retry, the later ones to the same destination wait too.

One dispatcher per database: two processes draining the same outbox would
both send every message, so a dispatcher delivers only while it holds the
database's lease (:mod:`facetrail.events.lease`).
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any, Literal, get_args

from sqlalchemy import delete, exists, func, select, update
from sqlalchemy.orm import Session, aliased

from facetrail.store.models import OutboxMessage, as_utc, utcnow

Channel = Literal["mqtt", "webhook"]
CHANNELS: tuple[str, ...] = get_args(Channel)

# last_error is Text, but a receiver's whole error page is not worth keeping.
_MAX_ERROR_CHARS = 1000
ABANDONED_PREFIX = "abandoned: "
BINARY_PREFIX = "base64:"  # how a bytes payload is kept in the (text) payload column


def new_message_id() -> str:
    """A fresh, unique message id: ``msg_`` and 32 hex digits."""
    return f"msg_{uuid.uuid4().hex}"


def enqueue(
    session: Session,
    *,
    channel: Channel,
    destination: str,
    payload: Mapping[str, Any] | str | bytes,
    retain: bool = False,
    message_id: str | None = None,
    identity_id: int | None = None,
) -> OutboxMessage:
    """Add a message to the outbox in the caller's transaction; it is due at once.

    ``destination``: the full MQTT topic, or the name of a configured webhook.
    A mapping ``payload`` is stored as compact JSON (datetimes as ISO 8601); on
    the ``mqtt`` channel a ``"message_id"`` key is added unless present.
    ``bytes`` (MQTT only) are stored as base64 and sent as they were.
    ``identity_id``: the enrolled person the message names or shows; forgetting them withdraws it while it is
    not delivered.
    """
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}; expected one of {', '.join(CHANNELS)}")
    if not destination:
        raise ValueError("destination must not be empty")
    mid = message_id or new_message_id()
    if isinstance(payload, bytes):
        if channel != "mqtt":
            raise ValueError("a binary payload goes to MQTT only; a webhook's body is JSON")
        text = BINARY_PREFIX + base64.b64encode(payload).decode("ascii")
    elif isinstance(payload, str):
        if payload.startswith(BINARY_PREFIX):
            raise ValueError(f"a text payload must not start with {BINARY_PREFIX!r}; pass bytes for binary data")
        text = payload
    else:
        body = dict(payload)
        if channel == "mqtt":
            body.setdefault("message_id", mid)
        text = json.dumps(body, separators=(",", ":"), ensure_ascii=False, default=_json_default)
    now = utcnow()
    message = OutboxMessage(
        message_id=mid, channel=channel, destination=destination, payload=text, retain=retain,
        created_at=now, attempts=0, next_attempt_at=now, identity_id=identity_id)
    session.add(message)
    session.flush()
    return message


def wire_payload(stored: str) -> str | bytes:
    """What is sent for a stored payload: the text, or the bytes a binary payload was stored from."""
    if not stored.startswith(BINARY_PREFIX):
        return stored
    try:
        return base64.b64decode(stored[len(BINARY_PREFIX):], validate=True)
    except binascii.Error as exc:
        raise ValueError(f"a stored binary payload is not valid base64: {exc}") from exc


def due(
    session: Session, *, channel: str, now: datetime, limit: int = 100, destination: str | None = None,
) -> list[OutboxMessage]:
    """Undelivered messages of ``channel`` (to ``destination``, if given) whose time has come, in id order.

    A message is held back while an earlier undelivered message to the same
    destination is waiting for its retry, so retries never reorder a destination.
    """
    now = as_utc(now)
    earlier = aliased(OutboxMessage)
    waiting_before = exists().where(
        earlier.channel == OutboxMessage.channel,
        earlier.destination == OutboxMessage.destination,
        earlier.delivered_at.is_(None),
        earlier.id < OutboxMessage.id,
        earlier.next_attempt_at > now,
    )
    query = (
        select(OutboxMessage)
        .where(
            OutboxMessage.channel == channel,
            OutboxMessage.delivered_at.is_(None),
            OutboxMessage.next_attempt_at <= now,
            ~waiting_before,
        )
        .order_by(OutboxMessage.id)
        .limit(limit)
    )
    if destination is not None:
        query = query.where(OutboxMessage.destination == destination)
    return list(session.scalars(query))


def mark_delivered(session: Session, message_id: str) -> bool:
    """Record a successful attempt; False when no undelivered message has this id."""
    result = session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.message_id == message_id, OutboxMessage.delivered_at.is_(None))
        .values(delivered_at=utcnow(), attempts=OutboxMessage.attempts + 1))
    return _changed(result)


def mark_failed(session: Session, message_id: str, error: str, *, retry_at: datetime) -> bool:
    """Record a failed attempt and when to try again; False when no undelivered message has this id."""
    result = session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.message_id == message_id, OutboxMessage.delivered_at.is_(None))
        .values(attempts=OutboxMessage.attempts + 1, last_error=error[:_MAX_ERROR_CHARS],
                next_attempt_at=as_utc(retry_at)))
    return _changed(result)


def mark_abandoned(session: Session, message_id: str, error: str) -> bool:
    """Take a message the receiver refused for good out of the queue.

    It counts as done (``delivered_at`` is set, so it no longer blocks its
    destination and is pruned like the rest); ``last_error`` starts with
    ``"abandoned: "`` to tell it from a real delivery.
    """
    result = session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.message_id == message_id, OutboxMessage.delivered_at.is_(None))
        .values(delivered_at=utcnow(), attempts=OutboxMessage.attempts + 1,
                last_error=(ABANDONED_PREFIX + error)[:_MAX_ERROR_CHARS]))
    return _changed(result)


def pending_count(session: Session, channel: str | None = None) -> int:
    """How many messages (of ``channel``, or of all) are not delivered yet."""
    query = select(func.count()).select_from(OutboxMessage).where(OutboxMessage.delivered_at.is_(None))
    if channel is not None:
        query = query.where(OutboxMessage.channel == channel)
    return int(session.scalar(query) or 0)


def prune_delivered(session: Session, older_than: datetime) -> int:
    """Delete messages delivered (or abandoned) before ``older_than``; returns how many."""
    result = session.execute(
        delete(OutboxMessage)
        .where(OutboxMessage.delivered_at.is_not(None), OutboxMessage.delivered_at < as_utc(older_than)))
    return int(getattr(result, "rowcount", 0) or 0)


def _changed(result: Any) -> bool:
    return int(getattr(result, "rowcount", 0) or 0) > 0


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return as_utc(value).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")

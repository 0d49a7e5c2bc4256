"""The dispatcher: one daemon thread that drains the outbox to MQTT and webhooks.

See :mod:`facetrail.events.outbox` for the guarantees (at-least-once across
crashes, never twice while the process lives, id order per destination).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from facetrail.events import outbox
from facetrail.events.errors import ChannelUnavailableError, DeliveryError, PermanentDeliveryError
from facetrail.events.mqtt import MqttPublisher
from facetrail.events.webhooks import WebhookSender
from facetrail.store.db import Database
from facetrail.store.models import OutboxMessage, utcnow

log = logging.getLogger(__name__)


@dataclass
class DispatcherStats:
    """Counters since the dispatcher was made; ``last_error``: the latest failure per channel."""

    delivered: int = 0
    failed: int = 0
    abandoned: int = 0
    last_error: dict[str, str] = field(default_factory=dict)


def backoff_delay(attempts: int, initial_s: float, max_s: float) -> float:
    """Seconds to wait after the ``attempts``-th failure: ``initial_s`` doubling each time, capped at ``max_s``."""
    return float(min(max_s, initial_s * 2 ** max(0, min(attempts - 1, 32))))


class Dispatcher:
    """Delivers due outbox messages; channels without a sender (``None``) are left alone.

    Per destination, messages go out in id order: a failure holds back the
    later messages to that destination until the retry (exponential back-off
    on the message's ``attempts``) succeeds, while other destinations go on.
    While the MQTT broker is not connected the ``mqtt`` channel is skipped
    without counting attempts; the dispatcher wakes up when it reconnects.
    """

    def __init__(
        self,
        db: Database,
        *,
        mqtt: MqttPublisher | None,
        webhooks: WebhookSender | None,
        poll_s: float = 0.2,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 60.0,
        batch_size: int = 100,
        mqtt_ack_timeout_s: float = 5.0,
    ) -> None:
        self.db = db
        self.mqtt = mqtt
        self.webhooks = webhooks
        self.poll_s = poll_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.batch_size = batch_size
        self.mqtt_ack_timeout_s = mqtt_ack_timeout_s
        self.stats = DispatcherStats()
        # One drain at a time: the thread and a direct drain_once() call must not send the same message.
        self._drain_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the delivery thread (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        if self.mqtt is not None:
            self.mqtt.add_connect_callback(self.wake)
        self._thread = threading.Thread(target=self._run, name="facetrail-dispatcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread after the message in hand; undelivered messages stay in the outbox.

        The publisher and the sender belong to the caller, who stops/closes them after this.
        """
        self._stop.set()
        self._wake.set()
        if self.mqtt is not None:
            self.mqtt.remove_connect_callback(self.wake)
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("the dispatcher thread did not stop within %g s", timeout)
            self._thread = None

    def wake(self) -> None:
        """Deliver now rather than at the next poll; call it after enqueuing."""
        self._wake.set()

    def drain_once(self) -> int:
        """Try every message that is due now, once; returns how many were delivered."""
        with self._drain_lock:
            delivered = 0
            if self.mqtt is not None:
                delivered += self._drain_channel("mqtt", self._send_mqtt)
            if self.webhooks is not None:
                delivered += self._drain_channel("webhook", self._send_webhook)
            return delivered

    def _send_mqtt(self, message: OutboxMessage) -> None:
        assert self.mqtt is not None
        self.mqtt.publish(message.destination, message.payload, retain=message.retain,
                          timeout=self.mqtt_ack_timeout_s, message_id=message.message_id)

    def _send_webhook(self, message: OutboxMessage) -> None:
        assert self.webhooks is not None
        self.webhooks.send(message.destination, message.message_id, message.payload)

    def _drain_channel(self, channel: str, send: Callable[[OutboxMessage], None]) -> int:
        if channel == "mqtt" and self.mqtt is not None and not self.mqtt.connected:
            return 0  # nothing to try until the broker is back; its reconnection wakes us
        with self.db.session() as session:
            batch = outbox.due(session, channel=channel, now=utcnow(), limit=self.batch_size)
        delivered = 0
        held: set[str] = set()  # destinations whose earlier message failed in this round
        for message in batch:
            if self._stop.is_set():
                break
            if message.destination in held:
                continue
            try:
                send(message)
            except ChannelUnavailableError as exc:
                self.stats.last_error[channel] = str(exc)
                break
            except PermanentDeliveryError as exc:
                self._abandon(channel, message, str(exc))
            except Exception as exc:  # DeliveryError, or a bug/bad row that must not stop the thread
                if not isinstance(exc, DeliveryError):
                    log.exception("delivering %s to %s %s", message.message_id, channel, message.destination)
                held.add(message.destination)
                self._fail(channel, message, str(exc) or type(exc).__name__)
            else:
                with self.db.session() as session:
                    outbox.mark_delivered(session, message.message_id)
                self.stats.delivered += 1
                delivered += 1
        return delivered

    def _fail(self, channel: str, message: OutboxMessage, error: str) -> None:
        delay = backoff_delay(message.attempts + 1, self.backoff_initial_s, self.backoff_max_s)
        with self.db.session() as session:
            outbox.mark_failed(session, message.message_id, error, retry_at=utcnow() + timedelta(seconds=delay))
        self.stats.failed += 1
        self.stats.last_error[channel] = f"{message.destination}: {error}"
        log.warning("%s to %s %s failed (attempt %d, retry in %g s): %s",
                    message.message_id, channel, message.destination, message.attempts + 1, delay, error)

    def _abandon(self, channel: str, message: OutboxMessage, error: str) -> None:
        with self.db.session() as session:
            outbox.mark_abandoned(session, message.message_id, error)
        self.stats.abandoned += 1
        self.stats.last_error[channel] = f"{message.destination}: {error}"
        log.error("%s to %s %s abandoned, the receiver refused it for good: %s",
                  message.message_id, channel, message.destination, error)

    def _run(self) -> None:
        errors = 0
        while not self._stop.is_set():
            self._wake.clear()
            try:
                delivered = self.drain_once()
            except Exception:  # the database may be away for a while; keep the thread alive
                errors += 1
                log.exception("the dispatcher could not read the outbox")
                self._wake.wait(backoff_delay(errors, self.backoff_initial_s, self.backoff_max_s))
                continue
            errors = 0
            if delivered == 0:
                self._wake.wait(self.poll_s)

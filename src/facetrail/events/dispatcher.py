"""The dispatcher: drains the outbox to MQTT and webhooks, one worker thread per destination.

See :mod:`facetrail.events.outbox` for the guarantees (at-least-once across
crashes, never twice while the process lives, id order per destination).

Each destination (the MQTT broker, and each configured webhook receiver) has
a worker of its own and its own back-off, so a slow or dead receiver delays
only its own messages. A webhook attempt has a total deadline (see
:class:`~facetrail.events.webhooks.Deadline`), an MQTT publish waits at most
``mqtt_ack_timeout_s`` for its acknowledgement. Messages to a webhook that is
no longer configured wait in the outbox until it is configured again.

Only the holder of the database's delivery lease (:mod:`facetrail.events.lease`)
delivers: a second process on the same database leaves the outbox to the first,
and takes over when the first one's lease lapses.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from facetrail.events import outbox
from facetrail.events.errors import ChannelUnavailableError, DeliveryError, PermanentDeliveryError
from facetrail.events.lease import Lease, open_lease
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


@dataclass
class _Worker:
    """One destination and its thread: the MQTT broker (``destination`` None: every topic) or one webhook."""

    channel: str
    destination: str | None
    send: Callable[[OutboxMessage], None]
    wake: threading.Event = field(default_factory=threading.Event)
    # One drain at a time: the thread and a direct drain_once() call must not send the same message.
    lock: threading.Lock = field(default_factory=threading.Lock)
    thread: threading.Thread | None = None

    @property
    def name(self) -> str:
        return self.channel if self.destination is None else f"{self.channel}-{self.destination}"


class Dispatcher:
    """Delivers due outbox messages; channels without a sender (``None``) are left alone.

    Per destination, messages go out in id order: a failure holds back the
    later messages to that destination until the retry (exponential back-off
    on the message's ``attempts``) succeeds, while other destinations go on.
    While the MQTT broker is not connected the ``mqtt`` channel is skipped
    without counting attempts; its worker wakes up when it reconnects.
    ``lease``: who may deliver (default: the database's own, see
    :func:`~facetrail.events.lease.open_lease`).
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
        lease: Lease | None = None,
    ) -> None:
        self.db = db
        self.mqtt = mqtt
        self.webhooks = webhooks
        self.poll_s = poll_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.batch_size = batch_size
        self.mqtt_ack_timeout_s = mqtt_ack_timeout_s
        self.lease = lease if lease is not None else open_lease(db)
        self.stats = DispatcherStats()
        self._stats_lock = threading.Lock()
        self._workers: list[_Worker] = []
        if mqtt is not None:
            self._workers.append(_Worker("mqtt", None, self._send_mqtt))
        for name in webhooks.names if webhooks is not None else []:
            self._workers.append(_Worker("webhook", name, self._send_webhook))
        self._stop = threading.Event()
        self._lease_wake = threading.Event()
        self._lease_thread: threading.Thread | None = None

    # -- public API --------------------------------------------------------------------------------------

    @property
    def delivering(self) -> bool:
        """Whether this process holds the delivery lease now."""
        return self.lease.held

    @property
    def held_by(self) -> str | None:
        """While started without the lease: who delivers instead (as far as the database tells); else None."""
        if self._lease_thread is None or self.lease.held:
            return None
        return self.lease.other or "another process"

    def start(self) -> None:
        """Try to take the lease, then start the workers and the lease keeper (idempotent)."""
        if self._lease_thread is not None and self._lease_thread.is_alive():
            return
        self._stop.clear()
        self._lease_wake.clear()
        if not self.lease.acquire():
            log.warning("another facetrail process (%s) delivers this database's outbox; this one leaves its "
                        "messages to it and takes over if it stops", self.lease.other or "unknown")
        if self.mqtt is not None:
            self.mqtt.add_connect_callback(self._wake_mqtt)
        for worker in self._workers:
            worker.wake.clear()
            worker.thread = threading.Thread(target=self._run, args=(worker,),
                                             name=f"facetrail-delivery-{worker.name}", daemon=True)
            worker.thread.start()
        self._lease_thread = threading.Thread(target=self._keep_lease, name="facetrail-delivery-lease", daemon=True)
        self._lease_thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the workers after the message in hand, then give the lease up; undelivered messages stay.

        The publisher and the sender belong to the caller, who stops/closes them after this.
        """
        self._stop.set()
        self._lease_wake.set()
        for worker in self._workers:
            worker.wake.set()
        if self.mqtt is not None:
            self.mqtt.remove_connect_callback(self._wake_mqtt)
        stuck = []
        for thread in [w.thread for w in self._workers] + [self._lease_thread]:
            if thread is not None:
                thread.join(timeout)
                if thread.is_alive():
                    stuck.append(thread.name)
        for worker in self._workers:
            worker.thread = None
        self._lease_thread = None
        if stuck:
            # Releasing now could let another process send what a stuck worker is sending; let it lapse.
            log.warning("delivery threads did not stop within %g s: %s", timeout, ", ".join(stuck))
        else:
            self.lease.release()

    def wake(self) -> None:
        """Deliver now rather than at the next poll; call it after enqueuing."""
        for worker in self._workers:
            worker.wake.set()

    def drain_once(self) -> int:
        """Try every message that is due now, once, if this process holds the lease; returns how many were delivered."""
        if not self.lease.held and not self.lease.acquire():
            return 0
        delivered = 0
        for worker in self._workers:
            with worker.lock:
                delivered += self._drain(worker)
        return delivered

    # -- sending -----------------------------------------------------------------------------------------

    def _send_mqtt(self, message: OutboxMessage) -> None:
        assert self.mqtt is not None
        self.mqtt.publish(message.destination, message.payload, retain=message.retain,
                          timeout=self.mqtt_ack_timeout_s, message_id=message.message_id)

    def _send_webhook(self, message: OutboxMessage) -> None:
        assert self.webhooks is not None
        self.webhooks.send(message.destination, message.message_id, message.payload)

    def _wake_mqtt(self) -> None:
        for worker in self._workers:
            if worker.channel == "mqtt":
                worker.wake.set()

    def _drain(self, worker: _Worker) -> int:
        channel = worker.channel
        if channel == "mqtt" and self.mqtt is not None and not self.mqtt.connected:
            return 0  # nothing to try until the broker is back; its reconnection wakes the worker
        with self.db.session() as session:
            batch = outbox.due(session, channel=channel, now=utcnow(), limit=self.batch_size,
                               destination=worker.destination)
        delivered = 0
        held: set[str] = set()  # destinations (MQTT topics) whose earlier message failed in this round
        for message in batch:
            if self._stop.is_set() or not self.lease.held:
                break
            if message.destination in held:
                continue
            try:
                worker.send(message)
            except ChannelUnavailableError as exc:
                self._count(channel, error=str(exc))
                break
            except PermanentDeliveryError as exc:
                self._abandon(channel, message, str(exc))
            except Exception as exc:  # DeliveryError, or a bug/bad row that must not stop the worker
                if not isinstance(exc, DeliveryError):
                    log.exception("delivering %s to %s %s", message.message_id, channel, message.destination)
                held.add(message.destination)
                self._fail(channel, message, str(exc) or type(exc).__name__)
            else:
                with self.db.session() as session:
                    outbox.mark_delivered(session, message.message_id)
                self._count(channel, delivered=1)
                delivered += 1
        return delivered

    def _count(self, channel: str, *, delivered: int = 0, failed: int = 0, abandoned: int = 0,
               error: str | None = None) -> None:
        with self._stats_lock:
            self.stats.delivered += delivered
            self.stats.failed += failed
            self.stats.abandoned += abandoned
            if error is not None:
                self.stats.last_error[channel] = error

    def _fail(self, channel: str, message: OutboxMessage, error: str) -> None:
        delay = backoff_delay(message.attempts + 1, self.backoff_initial_s, self.backoff_max_s)
        with self.db.session() as session:
            outbox.mark_failed(session, message.message_id, error, retry_at=utcnow() + timedelta(seconds=delay))
        self._count(channel, failed=1, error=f"{message.destination}: {error}")
        log.warning("%s to %s %s failed (attempt %d, retry in %g s): %s",
                    message.message_id, channel, message.destination, message.attempts + 1, delay, error)

    def _abandon(self, channel: str, message: OutboxMessage, error: str) -> None:
        with self.db.session() as session:
            outbox.mark_abandoned(session, message.message_id, error)
        self._count(channel, abandoned=1, error=f"{message.destination}: {error}")
        log.error("%s to %s %s abandoned, the receiver refused it for good: %s",
                  message.message_id, channel, message.destination, error)

    # -- threads -----------------------------------------------------------------------------------------

    def _run(self, worker: _Worker) -> None:
        errors = 0
        while not self._stop.is_set():
            worker.wake.clear()
            if not self.lease.held:
                worker.wake.wait(self.lease.renew_s)  # the lease keeper wakes every worker when it takes over
                continue
            try:
                with worker.lock:
                    delivered = self._drain(worker)
            except Exception:  # the database may be away for a while; keep the worker alive
                errors += 1
                log.exception("the %s delivery worker could not read the outbox", worker.name)
                worker.wake.wait(backoff_delay(errors, self.backoff_initial_s, self.backoff_max_s))
                continue
            errors = 0
            if delivered == 0:
                worker.wake.wait(self.poll_s)

    def _keep_lease(self) -> None:
        while not self._stop.is_set():
            was_held = self.lease.held
            held = self.lease.acquire()
            if held and not was_held:
                log.warning("this process now delivers the database's outbox")
                self.wake()
            elif was_held and not held:
                log.warning("lost the delivery lease (%s has it now); delivery stops here",
                            self.lease.other or "unknown")
            self._lease_wake.wait(self.lease.renew_s)

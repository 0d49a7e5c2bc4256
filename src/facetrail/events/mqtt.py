"""Publishing to an MQTT broker in Frigate's style.

Topics (``facetrail`` is ``topic_prefix``):

* ``facetrail/available``: ``online`` / ``offline``, retained; ``offline`` is
  also the Last Will, so a crash or a lost network says so too.
* ``facetrail/events``: JSON ``{"type": "new" | "update" | "end", ...}``.
* ``facetrail/<camera>/<person>``: per camera and person, how many tracks of them
  the camera sees now, as Frigate counts per object (``<person>``: the slug of the
  name, see :func:`~facetrail.events.messages.slug`).
* ``facetrail/<camera>/<person>/snapshot``: the JPEG of the latest named shot, retained.
* ``facetrail/tracked_object_update``: Frigate's ``{"type": "face", ...}`` when a track is named.
* Home Assistant's discovery and state topics: :mod:`facetrail.events.homeassistant`.

The outbox stores full topics; :meth:`MqttPublisher.topic` builds them.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from collections.abc import Callable
from typing import Any, Literal

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import ConfigDict, Field, field_validator, model_validator
from pydantic.dataclasses import dataclass

from facetrail.events.errors import ChannelUnavailableError, DeliveryError
from facetrail.events.outbox import wire_payload

log = logging.getLogger(__name__)

_FORBIDDEN_IN_LEVEL = ("/", "+", "#", "\0")


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class MqttSettings:
    """MQTT delivery, in Frigate's topic style: where and how to connect (the ``mqtt:`` section of the configuration,
    less ``enabled``)."""

    host: str = Field(default="127.0.0.1", title="Host", description="Broker host name or address.")
    port: int = Field(default=1883, ge=1, le=65535, title="Port", description="Broker port.")
    user: str | None = Field(default=None, title="User", description="User name, if the broker needs one.")
    password: str | None = Field(default=None, title="Password",
                                 description="Password; write {FACETRAIL_MQTT_PASSWORD} to take it from the "
                                             "environment.")
    topic_prefix: str = Field(default="facetrail", title="Topic prefix", description="First level of every topic.")
    client_id: str = Field(default="facetrail", title="Client id",
                           description="MQTT client id; each publisher adds -<pid>-<random> to it (see "
                                       "unique_client_id), so that two processes never share one.")
    unique_client_id: bool = Field(default=True, title="Unique client id",
                                   description="Add -<pid>-<random> to client_id. Turn off only when the broker "
                                               "needs a fixed id, and then run one process per id: a broker "
                                               "drops a client when another connects with its id.")
    qos: Literal[0, 1, 2] = Field(default=1, title="QoS", description="MQTT quality of service for events.")
    tls: bool = Field(default=False, title="TLS", description="Connect with TLS.")
    keepalive: int = Field(default=30, ge=1, le=65535, title="Keep-alive",
                           description="Seconds between pings when nothing else is sent; the broker drops a client "
                                       "silent for 1.5 times this.")
    reconnect_min_s: int = Field(default=1, ge=1, title="First reconnection wait",
                                 description="Seconds before the first reconnection attempt; doubled after each "
                                             "failed one.")
    reconnect_max_s: int = Field(default=30, ge=1, title="Longest reconnection wait",
                                 description="Reconnection attempts never wait longer than this (seconds).")
    home_assistant: bool = Field(default=False, title="Home Assistant discovery",
                                 description="Announce cameras, doors and enrolled people to Home Assistant "
                                             "(MQTT discovery): last seen, presence per camera, watchlist and door "
                                             "events. Off: entities announced before are removed.")
    discovery_prefix: str = Field(default="homeassistant", title="Discovery prefix",
                                  description="Home Assistant's MQTT discovery prefix.")
    presence_timeout_s: float = Field(default=60, ge=1, le=86400, title="Presence timeout",
                                      description="A person's presence sensor at a camera is on while they were "
                                                  "seen there within this many seconds, and off after.")

    @field_validator("topic_prefix", "discovery_prefix")
    @classmethod
    def _topic(cls, value: str) -> str:
        if not value or any(c in value for c in "+#\0") or value.startswith("/") or value.endswith("/"):
            raise ValueError("a topic prefix has no +, # or leading/trailing /")
        return value

    @model_validator(mode="after")
    def _backoff(self) -> MqttSettings:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError(f"reconnect_max_s ({self.reconnect_max_s}) must not be below reconnect_min_s "
                             f"({self.reconnect_min_s})")
        return self


def process_client_id(settings: MqttSettings) -> str:
    """The client id one publisher connects with: ``client_id``, plus ``-<pid>-<random>`` unless turned off."""
    if not settings.unique_client_id:
        return settings.client_id
    return f"{settings.client_id}-{os.getpid()}-{secrets.token_hex(2)}"


class MqttPublisher:
    """A paho client with its own network thread that reconnects by itself.

    ``start`` never fails because the broker is down; ``publish`` raises
    :class:`ChannelUnavailableError` until it is up. A publisher cannot be
    started again after ``stop``.
    """

    def __init__(self, settings: MqttSettings) -> None:
        self.settings = settings
        self.last_error: str | None = None
        self.client_id = process_client_id(settings)
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=True)
        if settings.user is not None:
            self._client.username_pw_set(settings.user, settings.password)
        if settings.tls:
            self._client.tls_set()
        self._client.will_set(self.availability_topic, "offline", qos=settings.qos, retain=True)
        self._client.reconnect_delay_set(settings.reconnect_min_s, settings.reconnect_max_s)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._lock = threading.Lock()
        # Messages sent (or queued by paho) but not yet acknowledged, by outbox message id: a retry
        # waits for the copy paho already holds, and resends on reconnect, instead of sending a second one.
        self._pending: dict[str, paho.MQTTMessageInfo] = {}
        self._connect_callbacks: list[Callable[[], None]] = []
        self._subscriptions: set[str] = set()
        self._started = False
        self._stopped = False

    @property
    def availability_topic(self) -> str:
        """``<prefix>/available``."""
        return self.topic("available")

    def topic(self, *parts: str) -> str:
        """The full topic ``<prefix>/<part>/...``; a part must be one non-empty level without wildcards."""
        for part in parts:
            if not part or any(c in part for c in _FORBIDDEN_IN_LEVEL):
                raise ValueError(f"invalid MQTT topic level {part!r}")
        return "/".join((self.settings.topic_prefix, *parts))

    @property
    def connected(self) -> bool:
        """Whether the broker accepted the connection and it is up now."""
        return self._started and not self._stopped and self._client.is_connected()

    def add_connect_callback(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (on paho's thread; keep it short) after every successful (re)connection."""
        with self._lock:
            self._connect_callbacks.append(callback)

    def remove_connect_callback(self, callback: Callable[[], None]) -> None:
        """Undo :meth:`add_connect_callback`."""
        with self._lock:
            if callback in self._connect_callbacks:
                self._connect_callbacks.remove(callback)

    def subscribe(self, topic_filter: str, callback: Callable[[str, bytes, bool], None]) -> None:
        """Receive ``topic_filter``'s messages as ``callback(topic, payload, retained)`` (on paho's thread).

        Subscribed again after every (re)connection, so retained messages arrive each time.
        """
        def on_message(_client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
            callback(message.topic, bytes(message.payload), bool(message.retain))

        self._client.message_callback_add(topic_filter, on_message)
        with self._lock:
            self._subscriptions.add(topic_filter)
        if self.connected:
            self._client.subscribe(topic_filter, qos=1)

    def start(self) -> None:
        """Connect in the background, and keep reconnecting while the broker is away."""
        if self._stopped:
            raise RuntimeError("a stopped MqttPublisher cannot be started again")
        if self._started:
            return
        self._started = True
        self._client.connect_async(self.settings.host, self.settings.port, keepalive=self.settings.keepalive)
        self._client.loop_start()

    def publish(
        self, topic: str, payload: str | bytes, *, retain: bool = False, timeout: float = 5.0,
        message_id: str | None = None,
    ) -> None:
        """Publish and wait until the broker acknowledged it (PUBACK for QoS 1).

        ``payload``: text, bytes, or an outbox payload as stored (a binary one is
        sent as its bytes, see :func:`~facetrail.events.outbox.wire_payload`).
        Raises :class:`ChannelUnavailableError` when not connected (nothing
        sent) and :class:`DeliveryError` when no acknowledgement came within
        ``timeout``. Pass the outbox ``message_id`` so that a retry of a message
        paho still holds waits for that copy rather than sending another.
        """
        if isinstance(payload, str):
            try:
                payload = wire_payload(payload)
            except ValueError as exc:
                raise DeliveryError(str(exc)) from exc
        with self._lock:
            info = self._pending.get(message_id) if message_id else None
        if info is None:
            if not self.connected:
                raise ChannelUnavailableError(self._unavailable_reason())
            info = self._client.publish(topic, payload, qos=self.settings.qos, retain=retain)
            if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and self.settings.qos > 0:
                # The connection dropped just now. paho keeps QoS>0 messages and sends them on reconnect,
                # but leaves rc at NO_CONN, which would make is_published() raise once it is sent.
                info.rc = MQTTErrorCode.MQTT_ERR_SUCCESS
                if message_id:
                    with self._lock:
                        self._pending[message_id] = info
                raise ChannelUnavailableError(self._unavailable_reason())
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                raise DeliveryError(f"MQTT publish failed: {paho.error_string(info.rc)}")
            if message_id:
                with self._lock:
                    self._pending[message_id] = info
        elif not info.is_published() and not self.connected:
            raise ChannelUnavailableError(self._unavailable_reason())
        try:
            info.wait_for_publish(timeout)
            published = info.is_published()
        except (RuntimeError, ValueError) as exc:
            self._forget(message_id)
            raise DeliveryError(f"MQTT publish failed: {exc}") from exc
        if not published:
            raise DeliveryError(f"no acknowledgement from the MQTT broker within {timeout:g} s")
        self._forget(message_id)

    def stop(self, timeout: float = 5.0) -> None:
        """Publish ``offline`` (retained) and disconnect cleanly."""
        if not self._started or self._stopped:
            self._stopped = True
            return
        if self._client.is_connected():
            info = self._client.publish(self.availability_topic, "offline", qos=self.settings.qos, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError):
                log.warning("could not publish offline to %s", self.availability_topic)
        self._stopped = True
        self._client.disconnect()
        self._client.loop_stop()

    def _forget(self, message_id: str | None) -> None:
        if message_id:
            with self._lock:
                self._pending.pop(message_id, None)

    def _unavailable_reason(self) -> str:
        reason = f"not connected to the MQTT broker at {self.settings.host}:{self.settings.port}"
        return f"{reason} ({self.last_error})" if self.last_error else reason

    def _on_connect(
        self, client: paho.Client, _userdata: Any, _flags: Any, reason_code: ReasonCode, _properties: Any,
    ) -> None:
        if reason_code.is_failure:
            self.last_error = f"broker refused the connection: {reason_code}"
            log.warning("MQTT broker %s:%d refused the connection: %s",
                        self.settings.host, self.settings.port, reason_code)
            return
        self.last_error = None
        log.info("connected to MQTT broker %s:%d", self.settings.host, self.settings.port)
        client.publish(self.availability_topic, "online", qos=self.settings.qos, retain=True)
        with self._lock:
            callbacks = list(self._connect_callbacks)
            subscriptions = sorted(self._subscriptions)
        for topic_filter in subscriptions:
            client.subscribe(topic_filter, qos=1)
        for callback in callbacks:
            callback()

    def _on_disconnect(
        self, _client: paho.Client, _userdata: Any, _flags: Any, reason_code: ReasonCode, _properties: Any,
    ) -> None:
        if self._stopped:
            return
        self.last_error = f"connection lost: {reason_code}"
        log.warning("lost the MQTT broker %s:%d (%s); reconnecting",
                    self.settings.host, self.settings.port, reason_code)

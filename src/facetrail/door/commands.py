"""Door commands: tell a relay controller or a home-automation system to open a door, within a deadline.

Safety rules, and how they are kept:

* A command is acknowledged before its deadline or reported as failed. It is
  retried until then, and never delivered later: an ``open`` replayed a minute
  late would open the door for someone else. So there is no durable queue, and
  the MQTT sender never lets paho send a message again on a later connection
  (see :class:`MqttDoorSender`).
* Every payload carries ``expires_at``, so a controller can drop a command that
  reaches it late anyway: a broker that froze with the command already in its
  socket buffer delivers it when it wakes, and an HTTP server may act on a
  request it answers after ``send`` gave up. With MQTT 5 the broker also drops
  the command once it expires (message expiry), instead of keeping it for a
  controller whose persistent session is offline.
* A failed, rejected or unacknowledged command is a :class:`CommandResult`
  with the reason, never silence; only misuse (a stopped sender) raises.

MQTT topics (``facetrail/doors`` is the default prefix):

* ``<prefix>/<door>/command``: JSON ``{"command_id", "door", "action", "reason", "issued_at", "expires_at"}``, QoS 1.
* ``<prefix>/<door>/state``: the controller's JSON ``{"state": "open", "command_id": ...}``; ``command_id``
  only when it answers a command. Over HTTP the API passes such a report (with ``door``) to
  :func:`parse_state_report`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, NamedTuple, Protocol
from uuid import uuid4

import httpx
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import ConfigDict, Field, field_validator, model_validator
from pydantic.dataclasses import dataclass as pydantic_dataclass
from standardwebhooks import Webhook

from facetrail import __version__
from facetrail.store.models import as_utc, utcnow

log = logging.getLogger(__name__)

DoorAction = Literal["open", "deny"]
ACTIONS: tuple[DoorAction, ...] = ("open", "deny")
MAX_NAME = 64
MAX_STATE = 32
MAX_REASON = 500
MAX_DEADLINE_S = 60.0
MAX_REPORT_BYTES = 4096
_COMMAND_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_NO_MATCHING_SUBSCRIBERS = 0x10  # MQTT 5 PUBACK: accepted, but nobody is subscribed to the topic
_POLL_S = 0.05  # how often a waiting send looks at the connection and at stop()
_FIRST_BACKOFF_S = 0.05
_MAX_BACKOFF_S = 0.5


def check_door_name(door: object) -> str:
    """``door`` if it can name a door: one MQTT topic level of 1-64 printable characters, none of ``/ + #``."""
    if not isinstance(door, str) or not door:
        raise ValueError(f"a door name must be a non-empty string, not {door!r}")
    if len(door) > MAX_NAME or not door.isprintable() or any(c in door for c in "/+#"):
        raise ValueError(f"invalid door name {door!r}: at most {MAX_NAME} printable characters, none of / + #")
    return door


def _check_command_id(command_id: object) -> str:
    if not isinstance(command_id, str) or not _COMMAND_ID.fullmatch(command_id):
        raise ValueError(f"invalid command_id {command_id!r}: 1-64 letters, digits, '-' or '_'")
    return command_id


@dataclass(frozen=True)
class DoorCommand:
    """One command for one door, to be acknowledged within ``deadline_s`` seconds of ``issued_at`` or never delivered.

    ``action``: ``open``, or ``deny`` (a notification, e.g. a red light). ``reason``: the decision id or a short
    text saying why. ``issued_at`` must be timezone-aware; it is kept in UTC.
    """

    door: str
    action: DoorAction = "open"
    reason: str = ""
    command_id: str = field(default_factory=lambda: uuid4().hex)
    issued_at: datetime = field(default_factory=utcnow)
    deadline_s: float = 2.0

    def __post_init__(self) -> None:
        check_door_name(self.door)
        if self.action not in ACTIONS:
            raise ValueError(f"door action must be one of {', '.join(ACTIONS)}, not {self.action!r}")
        if not isinstance(self.reason, str) or len(self.reason) > MAX_REASON:
            raise ValueError(f"reason must be text of at most {MAX_REASON} characters")
        _check_command_id(self.command_id)
        if self.issued_at.tzinfo is None:
            raise ValueError("issued_at must be timezone-aware (UTC)")
        object.__setattr__(self, "issued_at", as_utc(self.issued_at))
        if not (math.isfinite(self.deadline_s) and 0 < self.deadline_s <= MAX_DEADLINE_S):
            raise ValueError(f"deadline_s must be in (0, {MAX_DEADLINE_S:g}] seconds, not {self.deadline_s}")

    @property
    def expires_at(self) -> datetime:
        """``issued_at + deadline_s``: a controller should ignore the command after this moment."""
        return self.issued_at + timedelta(seconds=self.deadline_s)

    def time_left(self) -> float:
        """Seconds left before the deadline by the wall clock now (negative once past), never above ``deadline_s``."""
        elapsed = (utcnow() - self.issued_at).total_seconds()
        return min(self.deadline_s, self.deadline_s - elapsed)

    def to_json(self) -> str:
        """The payload sent over MQTT and HTTP."""
        return json.dumps({
            "command_id": self.command_id,
            "door": self.door,
            "action": self.action,
            "reason": self.reason,
            "issued_at": self.issued_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
        })


@dataclass(frozen=True)
class CommandResult:
    """What became of one command.

    ``delivered``: acknowledged before the deadline (PUBACK, plus the controller's state if required; or HTTP 2xx).
    ``attempts``: PUBLISH packets or POST requests sent. ``latency_s``: from the start of ``send`` to the
    acknowledgement, or to giving up. ``error``: why it was not delivered. ``state``: the door state the
    controller reported in answer, if any.
    """

    command_id: str
    delivered: bool
    attempts: int
    latency_s: float
    error: str | None = None
    state: str | None = None


@dataclass(frozen=True)
class DoorState:
    """The latest state a controller reported for a door; ``at``: when facetrail received it (UTC)."""

    door: str
    state: str
    at: datetime
    command_id: str | None = None


class StateReport(NamedTuple):
    """A validated state report: ``(door, state, command_id)``; ``state`` is lower-case."""

    door: str
    state: str
    command_id: str | None


class DoorCommandError(Exception):
    """Base class of the errors this module raises on purpose. A failed delivery is a result, not an error."""


class SenderStoppedError(DoorCommandError):
    """``send`` on a sender that is not started, or was stopped or closed."""


class DoorCommandSender(Protocol):
    """Sends one command and blocks at most until its deadline."""

    def send(self, command: DoorCommand) -> CommandResult:
        """Deliver ``command``, or say why not."""
        ...


def parse_state_report(body: bytes, *, door: str | None = None) -> StateReport:
    """Validate a controller's state report, JSON ``{"door": ..., "state": ..., "command_id": ...}``.

    ``door``: the door the report came for (from the MQTT topic); the body may then leave ``door`` out, and if it
    names one, it must be the same. ``command_id`` is optional. Other keys are ignored. Raises ValueError
    saying what is wrong.
    """
    if len(body) > MAX_REPORT_BYTES:
        raise ValueError(f"state report too large: {len(body)} bytes, at most {MAX_REPORT_BYTES}")
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError("state report is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"state report is not JSON: {exc.msg} at position {exc.pos}") from None
    if not isinstance(data, dict):
        raise ValueError(f"state report must be a JSON object, not {type(data).__name__}")
    named = data.get("door")
    if named is not None:
        check_door_name(named)
        if door is not None and named != door:
            raise ValueError(f"state report names door {named!r} but came for door {door!r}")
    elif door is None:
        raise ValueError("state report has no door")
    state = data.get("state")
    if not isinstance(state, str) or not state.strip():
        raise ValueError("state report needs a non-empty string 'state' (open, closed, forced, ...)")
    state = state.strip().lower()
    if len(state) > MAX_STATE or not state.isprintable():
        raise ValueError(f"state {state[:MAX_STATE]!r}...: at most {MAX_STATE} printable characters")
    command_id = data.get("command_id")
    return StateReport(
        check_door_name(named if named is not None else door), state,
        None if command_id is None else _check_command_id(command_id))


def _result(command: DoorCommand, started: float, attempts: int, error: str | None,
            state: str | None = None) -> CommandResult:
    if error is not None:
        log.warning("door %s: %s command %s failed after %d attempt(s): %s",
                    command.door, command.action, command.command_id, attempts, error)
    return CommandResult(command.command_id, error is None, attempts, time.monotonic() - started, error, state)


def _pause(delay: float, deadline: float) -> float:
    """Sleep ``delay`` seconds, or until ``deadline`` if sooner; the next, doubled delay."""
    time.sleep(max(0.0, min(delay, deadline - time.monotonic())))
    return min(delay * 2, _MAX_BACKOFF_S)


# --- MQTT -----------------------------------------------------------------------------------------------------


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class MqttDoorChannel:
    """A door's MQTT topics, and what counts as delivered (settings of a door's ``command:``)."""

    topic_prefix: str = Field(default="facetrail/doors", min_length=1, title="Topic prefix",
                              description="Commands on <prefix>/<door>/command, states on <prefix>/<door>/state.")
    require_state_ack: bool = Field(default=False, title="Wait for the door's state",
                                    description="Count a command delivered only when the controller reports the "
                                                "door's state back.")

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, prefix: str) -> str:
        if prefix.endswith("/") or any(c in prefix for c in "+#\0"):
            raise ValueError(f"invalid MQTT topic prefix {prefix!r}")
        return prefix


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class MqttDoorSettings(MqttDoorChannel):
    """Where and how to reach the broker.

    ``qos``: 1 or 2 (0 has no acknowledgement). ``require_state_ack``: a command counts as delivered only once
    the controller published a state naming its ``command_id``. ``mqtt_v5``: MQTT 5, so that the broker drops
    a command it could not hand on before ``expires_at`` (rounded up to whole seconds) and says when nobody
    is subscribed to the door (a failure, retried until the deadline); with MQTT 3.1.1 such a command counts
    as delivered unless ``require_state_ack``. ``reconnect_*_s``: paho's back-off between connection attempts.
    """

    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str = "facetrail-doors"
    username: str | None = None
    password: str | None = None
    qos: int = 1
    mqtt_v5: bool = True
    tls: bool = False
    keepalive: int = 10
    reconnect_min_s: int = 1
    reconnect_max_s: int = 4

    @model_validator(mode="after")
    def _consistent(self) -> MqttDoorSettings:
        if self.qos not in (1, 2):
            raise ValueError(f"door commands need MQTT QoS 1 or 2 (an acknowledgement), not {self.qos}")
        if not 1 <= self.reconnect_min_s <= self.reconnect_max_s:
            raise ValueError("reconnect delays must satisfy 1 <= reconnect_min_s <= reconnect_max_s")
        return self


@dataclass(eq=False)
class _Waiter:
    door: str
    event: threading.Event = field(default_factory=threading.Event)
    state: str | None = None


class MqttDoorSender:
    """Door commands over MQTT, on one persistent connection that reconnects by itself.

    Also keeps the latest state each controller reports (:meth:`state_of`) and calls ``on_state(door, state,
    at)`` on paho's thread for every report, except a retained one that repeats the known state (each
    reconnection replays them). ``send`` is thread-safe; commands go on the wire one at a time.

    Late delivery: paho keeps unacknowledged QoS>0 messages and resends them after reconnecting. This sender
    publishes only while connected, drops whatever paho still holds when ``send`` returns and on every new
    connection (``drop_out_messages``), and resends by itself within the deadline instead.
    """

    def __init__(self, settings: MqttDoorSettings,
                 on_state: Callable[[str, str, datetime], None] | None = None) -> None:
        self.settings = settings
        self.last_error: str | None = None
        self._on_state = on_state
        if settings.mqtt_v5:
            self._client = paho.Client(
                CallbackAPIVersion.VERSION2, client_id=settings.client_id, protocol=paho.MQTTv5)
        else:
            self._client = paho.Client(
                CallbackAPIVersion.VERSION2, client_id=settings.client_id, protocol=paho.MQTTv311,
                clean_session=True)
        if settings.username is not None:
            self._client.username_pw_set(settings.username, settings.password)
        if settings.tls:
            self._client.tls_set()
        self._client.reconnect_delay_set(settings.reconnect_min_s, settings.reconnect_max_s)
        # No in-flight limit: a message dropped while connected would otherwise keep its slot until reconnection.
        self._client.max_inflight_messages_set(0)
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.on_publish = self._on_publish
        self._client.on_socket_open = self._on_socket_open
        self._lock = threading.Lock()  # states, waiters, PUBACK codes, generation
        self._send_lock = threading.Lock()  # one command on the wire, so dropping paho's queue drops only it
        self._ready = threading.Event()  # connected and subscribed to the states
        self._generation = 0  # connections made so far
        self._subscription_error: str | None = None
        self._states: dict[str, DoorState] = {}
        self._waiters: dict[str, _Waiter] = {}
        self._puback_codes: dict[int, ReasonCode] = {}
        self._started = False
        self._stopped = False

    def command_topic(self, door: str) -> str:
        """``<prefix>/<door>/command``."""
        return f"{self.settings.topic_prefix}/{check_door_name(door)}/command"

    def state_topic(self, door: str) -> str:
        """``<prefix>/<door>/state``."""
        return f"{self.settings.topic_prefix}/{check_door_name(door)}/state"

    @property
    def connected(self) -> bool:
        """Connected to the broker and subscribed to the door states."""
        return self._started and not self._stopped and self._ready.is_set()

    def state_of(self, door: str) -> DoorState | None:
        """The latest state reported for ``door``, or None if none was."""
        with self._lock:
            return self._states.get(door)

    def start(self) -> None:
        """Connect in the background and keep reconnecting; never fails because the broker is down."""
        if self._stopped:
            raise SenderStoppedError("a stopped MqttDoorSender cannot be started again")
        if self._started:
            return
        self._started = True
        s = self.settings
        if s.mqtt_v5:
            self._client.connect_async(s.host, s.port, keepalive=s.keepalive, clean_start=True)
        else:
            self._client.connect_async(s.host, s.port, keepalive=s.keepalive)
        self._client.loop_start()

    def stop(self) -> None:
        """Disconnect; sends in progress end as failed, later ones raise :class:`SenderStoppedError`."""
        already = self._stopped
        self._stopped = True
        self._ready.clear()
        if self._started and not already:
            self._client.disconnect()
            self._client.loop_stop()
            self._client.drop_out_messages()

    def send(self, command: DoorCommand) -> CommandResult:
        """Publish ``command``; wait for the broker's PUBACK and, if required, the controller's state.

        Blocks at most until the command's deadline. Raises :class:`SenderStoppedError` if not started or
        stopped; every other failure is in the result.
        """
        if not self._started or self._stopped:
            raise SenderStoppedError("the MQTT door sender is " + ("stopped" if self._stopped else "not started"))
        started = time.monotonic()
        left = command.time_left()
        if left <= 0:
            return _result(command, started, 0, f"expired {-left:.3f} s before it could be sent")
        deadline = started + left
        waiter = _Waiter(command.door) if self.settings.require_state_ack else None
        if waiter is not None:
            with self._lock:
                self._waiters[command.command_id] = waiter
        try:
            attempts, error = self._publish(command, deadline)
            if error is None and waiter is not None:
                error = self._await_state(command, waiter, deadline)
        finally:
            if waiter is not None:
                with self._lock:
                    self._waiters.pop(command.command_id, None)
        return _result(command, started, attempts, error, waiter.state if waiter is not None else None)

    def _publish(self, command: DoorCommand, deadline: float) -> tuple[int, str | None]:
        """Publish until the broker acknowledges or the deadline passes: (attempts, error or None)."""
        s = self.settings
        topic = self.command_topic(command.door)
        payload = command.to_json()
        if not self._send_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return 0, "another command held the broker connection until the deadline"
        attempts = 0
        error: str | None = None
        backoff = _FIRST_BACKOFF_S
        try:
            while True:
                if self._stopped:
                    return attempts, "the sender was stopped"
                if time.monotonic() >= deadline:
                    break
                if not self._ready.wait(min(_POLL_S, max(0.0, deadline - time.monotonic()))):
                    continue  # paho is (re)connecting on its own thread
                generation = self._generation
                info = self._client.publish(topic, payload, qos=s.qos, properties=self._expiry(deadline))
                attempts += 1
                if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    # The connection dropped just now; paho would keep the message for the next one.
                    self._client.drop_out_messages()
                    error = f"publish failed: {paho.error_string(info.rc)}"
                    backoff = _pause(backoff, deadline)
                    continue
                if not self._await_puback(info, generation, deadline):
                    self._client.drop_out_messages()
                    error = (f"connection to broker {s.host}:{s.port} lost before it acknowledged"
                             if not self._stopped and time.monotonic() < deadline else
                             f"no acknowledgement from broker {s.host}:{s.port}")
                    continue
                with self._lock:
                    code = self._puback_codes.pop(info.mid, None)
                if code is None or (not code.is_failure and code.value != _NO_MATCHING_SUBSCRIBERS):
                    return attempts, None
                if code.is_failure:
                    return attempts, f"broker refused the command: {code}"
                error = f"no controller is subscribed to {topic}"
                backoff = _pause(backoff, deadline)
            if error is None:
                error = f"broker {s.host}:{s.port} unreachable: {self.last_error or 'not connected'}"
            return attempts, f"{error} (deadline {command.deadline_s:g} s)"
        finally:
            # Whatever is still unacknowledged was due by now: it must never go out on a later connection.
            self._client.drop_out_messages()
            self._send_lock.release()

    def _await_puback(self, info: paho.MQTTMessageInfo, generation: int, deadline: float) -> bool:
        """Whether the broker acknowledged before the deadline, on the connection the message went out on."""
        while True:
            info.wait_for_publish(min(_POLL_S, max(0.0, deadline - time.monotonic())))
            if info.is_published():
                return True
            lost = not self._ready.is_set() or self._generation != generation
            if lost or self._stopped or time.monotonic() >= deadline:
                return False

    def _await_state(self, command: DoorCommand, waiter: _Waiter, deadline: float) -> str | None:
        while not waiter.event.wait(min(_POLL_S, max(0.0, deadline - time.monotonic()))):
            if self._stopped:
                return "the sender was stopped"
            if time.monotonic() >= deadline:
                missing = (f"no state acknowledgement from the controller on {self.state_topic(command.door)} "
                           f"within the deadline ({command.deadline_s:g} s)")
                return f"{missing}; {self._subscription_error}" if self._subscription_error else missing
        return None

    def _expiry(self, deadline: float) -> Properties | None:
        if not self.settings.mqtt_v5:
            return None
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho leaves it untyped
        properties.MessageExpiryInterval = max(1, math.ceil(deadline - time.monotonic()))
        return properties

    # paho's callbacks, on its network thread.

    def _on_connect(
        self, client: paho.Client, _userdata: Any, _flags: Any, reason_code: ReasonCode, _properties: Any,
    ) -> None:
        # Anything paho still holds was meant for an earlier connection and is past its deadline by now.
        dropped = client.drop_out_messages()
        if dropped:
            log.info("dropped %d stale door command(s) on reconnection", len(dropped))
        s = self.settings
        if reason_code.is_failure:
            self.last_error = f"broker refused the connection: {reason_code}"
            log.warning("MQTT broker %s:%d refused the door sender: %s", s.host, s.port, reason_code)
            return
        self.last_error = None
        with self._lock:
            self._generation += 1
        log.info("door sender connected to MQTT broker %s:%d", s.host, s.port)
        client.subscribe(f"{s.topic_prefix}/+/state", qos=1)

    def _on_socket_open(self, _client: paho.Client, _userdata: Any, sock: Any) -> None:
        # Without TCP_NODELAY, Nagle's algorithm holds a small packet back behind an unacknowledged one for the
        # peer's delayed ACK (~40 ms on Linux): measured on loopback, a state round trip took 88 ms, not 44.
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _on_connect_fail(self, _client: paho.Client, _userdata: Any) -> None:
        # paho swallows the OSError; one plain TCP connection tells what it was (refused, unknown host, timeout).
        s = self.settings
        try:
            with socket.create_connection((s.host, s.port), timeout=1.0):
                self.last_error = "the MQTT connection failed"
        except OSError as exc:
            self.last_error = str(exc) or type(exc).__name__

    def _on_disconnect(
        self, _client: paho.Client, _userdata: Any, _flags: Any, reason_code: ReasonCode, _properties: Any,
    ) -> None:
        self._ready.clear()
        if self._stopped:
            return
        self.last_error = f"connection lost: {reason_code}"
        log.warning("door sender lost MQTT broker %s:%d (%s); reconnecting",
                    self.settings.host, self.settings.port, reason_code)

    def _on_subscribe(
        self, _client: paho.Client, _userdata: Any, _mid: int, reason_codes: list[ReasonCode], _properties: Any,
    ) -> None:
        refused = [code for code in reason_codes if code.is_failure]
        self._subscription_error = (
            f"the broker refused the subscription to door states: {refused[0]}" if refused else None)
        if refused:
            log.warning("door sender: %s", self._subscription_error)
        self._ready.set()

    def _on_publish(
        self, _client: paho.Client, _userdata: Any, mid: int, reason_code: ReasonCode, _properties: Any,
    ) -> None:
        with self._lock:
            self._puback_codes[mid] = reason_code

    def _on_message(self, _client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        door = message.topic[len(self.settings.topic_prefix) + 1:].rsplit("/", 1)[0]
        try:
            report = parse_state_report(bytes(message.payload), door=door)
        except ValueError as exc:
            log.warning("ignored a door state report on %s: %s", message.topic, exc)
            return
        at = utcnow()
        with self._lock:
            previous = self._states.get(report.door)
            self._states[report.door] = DoorState(report.door, report.state, at, report.command_id)
            waiter = self._waiters.get(report.command_id) if report.command_id else None
        if waiter is not None and waiter.door == report.door:
            waiter.state = report.state
            waiter.event.set()
        if self._on_state is None or (message.retain and previous is not None and previous.state == report.state):
            return
        try:
            self._on_state(report.door, report.state, at)
        except Exception:  # a caller's bug must not stop paho's network thread
            log.exception("on_state callback failed for door %s", report.door)


# --- HTTP -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HttpDoorSettings:
    """Where to POST commands. ``timeout_s``: the most one request may take (never past the deadline).

    ``secret``: if set (``whsec_`` and base64), requests are signed per Standard Webhooks, with the
    command id as ``webhook-id``, as facetrail's event webhooks are.
    """

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float = 2.0
    secret: str | None = None

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"door command URL must be http:// or https://, not {self.url!r}")
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise ValueError(f"timeout_s must be positive, not {self.timeout_s}")


class HttpDoorSender:
    """Door commands as HTTP POSTs of the command's JSON.

    2xx is a delivery; a network error, 5xx, 408 or 429 is retried with a short back-off until the deadline;
    any other answer is a rejection, not retried. Each request runs on a worker thread so that ``send``
    returns at the deadline even when the server is slow. Thread-safe.
    """

    def __init__(self, settings: HttpDoorSettings, client: httpx.Client | None = None) -> None:
        self.settings = settings
        self._signer: Webhook | None = None
        if settings.secret is not None:
            try:
                self._signer = Webhook(settings.secret)
            except Exception as exc:  # the library raises binascii.Error, its own errors or RuntimeError
                raise ValueError(f"unusable door command secret ({exc})") from None
        self._owns_client = client is None
        self._client = client if client is not None else httpx.Client(
            headers={"user-agent": f"facetrail/{__version__}"}, follow_redirects=False)
        self._workers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="door-http")
        self._closed = False

    def send(self, command: DoorCommand) -> CommandResult:
        """POST ``command`` until a 2xx, a rejection or the deadline. Raises :class:`SenderStoppedError` if closed."""
        if self._closed:
            raise SenderStoppedError("the HTTP door sender is closed")
        started = time.monotonic()
        left = command.time_left()
        if left <= 0:
            return _result(command, started, 0, f"expired {-left:.3f} s before it could be sent")
        deadline = started + left
        content = command.to_json().encode()
        url = self.settings.url
        attempts = 0
        error = f"no answer from {url}"
        backoff = _FIRST_BACKOFF_S
        while (left := deadline - time.monotonic()) > 0:
            attempts += 1
            request = self._workers.submit(self._post, command.command_id, content, deadline)
            try:
                response = request.result(timeout=left)
            except FutureTimeout:
                request.cancel()  # if it is still queued behind abandoned requests, it must not start late
                error = f"no answer from {url}"
                break
            except httpx.TimeoutException as exc:
                error = f"no answer from {url} ({type(exc).__name__})"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                status = response.status_code
                if 200 <= status < 300:
                    return _result(command, started, attempts, None)
                error = f"HTTP {status} {response.reason_phrase} from {url}"
                if status < 500 and status not in (httpx.codes.REQUEST_TIMEOUT, httpx.codes.TOO_MANY_REQUESTS):
                    return _result(command, started, attempts, f"rejected: {error}")
            backoff = _pause(backoff, deadline)
        return _result(command, started, attempts, f"{error} (deadline {command.deadline_s:g} s)")

    def close(self) -> None:
        """Refuse further sends; close the HTTP client unless the caller passed it in."""
        self._closed = True
        self._workers.shutdown(wait=False, cancel_futures=True)
        if self._owns_client:
            self._client.close()

    def _post(self, command_id: str, content: bytes, deadline: float) -> httpx.Response:
        timeout = min(self.settings.timeout_s, deadline - time.monotonic())
        if timeout <= 0:  # waited in the queue past the deadline: too late to send
            raise httpx.TimeoutException("not sent: the deadline passed while it waited for a worker")
        headers = {**self.settings.headers, "content-type": "application/json"}
        if self._signer is not None:
            moment = utcnow()
            headers["webhook-id"] = command_id
            headers["webhook-timestamp"] = str(int(moment.timestamp()))
            headers["webhook-signature"] = self._signer.sign(command_id, moment, content.decode())
        return self._client.post(self.settings.url, content=content, headers=headers, timeout=timeout)

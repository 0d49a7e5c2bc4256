"""Door commands against real peers: a private Mosquitto broker and real HTTP servers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from facetrail.door.commands import (
    DoorCommand,
    HttpDoorSender,
    HttpDoorSettings,
    MqttDoorSender,
    MqttDoorSettings,
    SenderStoppedError,
    StateReport,
    parse_state_report,
)
from facetrail.store.models import utcnow
from services import SECRET_A, Mosquitto, Receiver, Subscriber, free_port, wait_until

COMMANDS = "facetrail/doors/+/command"
# "send blocks at most until the deadline": allowance for a loaded test machine, not a speed target.
SLACK_S = 5.0


@pytest.fixture
def senders() -> Iterator[Callable[..., MqttDoorSender]]:
    """Makes started MQTT door senders; every one is stopped at teardown."""
    made: list[MqttDoorSender] = []

    def make(port: int, on_state: Callable[[str, str, datetime], None] | None = None,
             **settings: Any) -> MqttDoorSender:
        sender = MqttDoorSender(MqttDoorSettings(port=port, client_id=f"doors-{len(made)}", **settings), on_state)
        sender.start()
        made.append(sender)
        return sender

    yield make
    for sender in made:
        sender.stop()


@pytest.fixture
def subscribers() -> Iterator[Callable[..., Subscriber]]:
    made: list[Subscriber] = []

    def make(port: int, pattern: str = COMMANDS, **kwargs: Any) -> Subscriber:
        subscriber = Subscriber(port, pattern, **kwargs).connect()
        made.append(subscriber)
        return subscriber

    yield make
    for subscriber in made:
        subscriber.close()


class Controller:
    """A relay controller: answers every command on its door's state topic, as real ones do."""

    def __init__(self, port: int, state: str = "open") -> None:
        self.state = state
        self._subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="controller")
        self.client.on_connect = lambda client, *_args: client.subscribe(COMMANDS, qos=1)
        self.client.on_subscribe = lambda *_args: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        wait_until(self._subscribed.is_set, "the controller's subscription")

    def _on_message(self, client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        command = json.loads(message.payload)
        answer = json.dumps({"command_id": command["command_id"], "state": self.state})
        client.publish(message.topic.rsplit("/", 1)[0] + "/state", answer, qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _commands(subscriber: Subscriber) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in list(subscriber.messages) if m.topic.endswith("/command")]


# --- MQTT -----------------------------------------------------------------------------------------------------


def test_command_arrives_as_json_and_is_acknowledged(
        broker: Mosquitto, senders: Callable[..., MqttDoorSender], subscribers: Callable[..., Subscriber]) -> None:
    subscriber = subscribers(broker.port)
    sender = senders(broker.port)
    wait_until(lambda: sender.connected, "the door sender's connection")
    command = DoorCommand("front", reason="decision 42")

    result = sender.send(command)

    assert result.delivered, result.error
    assert (result.command_id, result.attempts, result.error, result.state) == (command.command_id, 1, None, None)
    assert 0 < result.latency_s <= command.deadline_s
    wait_until(lambda: bool(_commands(subscriber)), "the command on the broker")
    assert subscriber.messages[0].topic == "facetrail/doors/front/command"
    assert _commands(subscriber) == [{
        "command_id": command.command_id, "door": "front", "action": "open", "reason": "decision 42",
        "issued_at": command.issued_at.isoformat(), "expires_at": command.expires_at.isoformat()}]
    assert command.expires_at - command.issued_at == timedelta(seconds=2)


def test_state_acknowledgement_from_the_controller(
        broker: Mosquitto, senders: Callable[..., MqttDoorSender]) -> None:
    controller = Controller(broker.port, state="open")
    try:
        sender = senders(broker.port, require_state_ack=True)
        wait_until(lambda: sender.connected, "the door sender's connection")
        command = DoorCommand("front")
        result = sender.send(command)
    finally:
        controller.close()
    assert result.delivered, result.error
    assert (result.state, result.attempts) == ("open", 1)
    known = sender.state_of("front")
    assert known is not None
    assert (known.state, known.command_id) == ("open", command.command_id)


def test_missing_state_acknowledgement_fails(
        broker: Mosquitto, senders: Callable[..., MqttDoorSender], subscribers: Callable[..., Subscriber]) -> None:
    subscriber = subscribers(broker.port)  # receives the command, never answers
    sender = senders(broker.port, require_state_ack=True)
    wait_until(lambda: sender.connected, "the door sender's connection")

    result = sender.send(DoorCommand("front", deadline_s=0.5))

    assert not result.delivered
    assert result.attempts == 1
    assert result.error is not None
    assert "no state acknowledgement" in result.error
    assert "facetrail/doors/front/state" in result.error
    assert result.latency_s <= 0.5 + SLACK_S
    wait_until(lambda: bool(_commands(subscriber)), "the unanswered command")


def test_no_controller_subscribed_is_a_failure_with_mqtt5(
        broker: Mosquitto, senders: Callable[..., MqttDoorSender]) -> None:
    sender = senders(broker.port)
    wait_until(lambda: sender.connected, "the door sender's connection")

    result = sender.send(DoorCommand("front", deadline_s=0.3))

    assert not result.delivered
    assert result.error is not None
    assert "no controller is subscribed to facetrail/doors/front/command" in result.error
    assert result.attempts >= 1


@pytest.mark.parametrize("mqtt_v5", [False, True], ids=["mqtt3", "mqtt5"])
def test_broker_down_fails_in_time_and_the_command_never_arrives_later(
        brokers: Callable[..., Mosquitto], senders: Callable[..., MqttDoorSender],
        subscribers: Callable[..., Subscriber], mqtt_v5: bool) -> None:
    broker = brokers(persist=True)
    broker.start()
    # A controller with a persistent session: the broker keeps for it whatever is published while it is away,
    # so a stale command sent on reconnection could not be missed.
    subscribers(broker.port, client_id="late-controller", persistent=True).close()
    broker.stop()
    sender = senders(broker.port, mqtt_v5=mqtt_v5, reconnect_max_s=1)
    stale = DoorCommand("front", deadline_s=1.0)

    result = sender.send(stale)

    assert not result.delivered
    assert result.attempts == 0
    assert result.error is not None
    assert f"broker 127.0.0.1:{broker.port} unreachable" in result.error
    assert "refused" in result.error.lower()
    assert result.latency_s <= stale.deadline_s + SLACK_S

    broker.start()
    wait_until(lambda: sender.connected, "the door sender's reconnection")
    fresh = DoorCommand("front", reason="after the restart")
    assert sender.send(fresh).delivered
    subscriber = subscribers(broker.port, client_id="late-controller", persistent=True)
    # Messages kept for a session arrive in order: had the stale command gone out on reconnection, it would
    # be here before the fresh one.
    wait_until(lambda: any(c["command_id"] == fresh.command_id for c in _commands(subscriber)), "the fresh command")
    assert [c["command_id"] for c in _commands(subscriber)] == [fresh.command_id]


def test_mqtt5_broker_drops_a_command_it_kept_past_expiry(
        broker: Mosquitto, senders: Callable[..., MqttDoorSender], subscribers: Callable[..., Subscriber]) -> None:
    subscribers(broker.port, client_id="sleepy-controller", persistent=True).close()
    sender = senders(broker.port)
    wait_until(lambda: sender.connected, "the door sender's connection")
    stale = DoorCommand("front", deadline_s=1.0)
    assert sender.send(stale).delivered  # the broker took it, for the controller's offline session

    time.sleep((stale.expires_at - utcnow()).total_seconds() + 1.0)  # past the expiry, rounded up to a second
    fresh = DoorCommand("front")
    assert sender.send(fresh).delivered
    subscriber = subscribers(broker.port, client_id="sleepy-controller", persistent=True)
    wait_until(lambda: any(c["command_id"] == fresh.command_id for c in _commands(subscriber)), "the fresh command")
    assert [c["command_id"] for c in _commands(subscriber)] == [fresh.command_id]


def test_broker_back_within_the_deadline_delivers(
        brokers: Callable[..., Mosquitto], senders: Callable[..., MqttDoorSender],
        subscribers: Callable[..., Subscriber]) -> None:
    broker = brokers()
    sender = senders(broker.port, reconnect_max_s=1)
    received: list[Subscriber] = []

    def bring_up() -> None:
        broker.start()
        received.append(subscribers(broker.port))

    later = threading.Timer(0.3, bring_up)
    later.start()
    try:
        result = sender.send(DoorCommand("front", deadline_s=8.0))
    finally:
        later.join()
    assert result.delivered, result.error
    wait_until(lambda: bool(_commands(received[0])), "the command")


def test_state_reports_are_kept_and_passed_on(
        broker: Mosquitto, senders: Callable[..., MqttDoorSender]) -> None:
    seen: list[tuple[str, str, datetime]] = []
    sender = senders(broker.port, on_state=lambda door, state, at: seen.append((door, state, at)))
    wait_until(lambda: sender.connected, "the door sender's connection")
    controller = paho.Client(CallbackAPIVersion.VERSION2, client_id="back-door")
    controller.connect("127.0.0.1", broker.port)
    controller.loop_start()
    try:
        controller.publish("facetrail/doors/back/state", b"not json", qos=1).wait_for_publish(5)
        controller.publish("facetrail/doors/back/state", json.dumps({"state": "Forced"}), qos=1).wait_for_publish(5)
        wait_until(lambda: bool(seen), "the forced state")
    finally:
        controller.disconnect()
        controller.loop_stop()
    known = sender.state_of("back")
    assert known is not None
    assert (known.door, known.state, known.command_id) == ("back", "forced", None)
    assert seen == [("back", "forced", known.at)]
    assert known.at.tzinfo is not None
    assert sender.state_of("front") is None


def test_a_sender_not_started_or_stopped_refuses(broker: Mosquitto) -> None:
    sender = MqttDoorSender(MqttDoorSettings(port=broker.port))
    with pytest.raises(SenderStoppedError, match="not started"):
        sender.send(DoorCommand("front"))
    sender.start()
    sender.stop()
    with pytest.raises(SenderStoppedError, match="stopped"):
        sender.send(DoorCommand("front"))
    with pytest.raises(SenderStoppedError):
        sender.start()


# --- HTTP -----------------------------------------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver(free_port(), {"/door": SECRET_A}).start()
    yield running
    running.stop()


def _http(url: str, **settings: Any) -> HttpDoorSender:
    return HttpDoorSender(HttpDoorSettings(url, **settings))


def test_http_delivers_a_signed_command(receiver: Receiver) -> None:
    sender = _http(receiver.url("/door"), secret=SECRET_A)
    command = DoorCommand("front", reason="decision 7")
    try:
        result = sender.send(command)
    finally:
        sender.close()
    assert result.delivered, result.error
    assert result.attempts == 1
    assert receiver.problems == []  # the receiver verified the signature with standardwebhooks.Webhook
    [hit] = receiver.hits
    assert hit.webhook_id == command.command_id
    assert hit.body == json.loads(command.to_json())


def test_http_retries_a_server_error(receiver: Receiver) -> None:
    receiver.script["/door"] = [500]
    sender = _http(receiver.url("/door"), secret=SECRET_A)
    command = DoorCommand("front")
    try:
        result = sender.send(command)
    finally:
        sender.close()
    assert result.delivered, result.error
    assert result.attempts == 2
    assert receiver.attempts("/door") == [command.command_id] * 2


def test_http_rejection_is_not_retried(receiver: Receiver) -> None:
    receiver.always["/door"] = 403
    sender = _http(receiver.url("/door"), secret=SECRET_A)
    try:
        result = sender.send(DoorCommand("front"))
    finally:
        sender.close()
    assert not result.delivered
    assert result.attempts == 1
    assert result.error is not None
    assert result.error.startswith("rejected: HTTP 403 Forbidden")


def test_http_nothing_listening_fails_within_the_deadline() -> None:
    sender = _http(f"http://127.0.0.1:{free_port()}/door")
    try:
        result = sender.send(DoorCommand("front", deadline_s=0.5))
    finally:
        sender.close()
    assert not result.delivered
    assert result.attempts >= 2  # retried until the deadline
    assert result.error is not None
    assert "ConnectError" in result.error
    assert result.latency_s <= 0.5 + SLACK_S


class _Plain:
    """An HTTP server that records requests and answers 200, after ``delay`` seconds on /slow."""

    def __init__(self, delay: float = 0.0) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        done = threading.Event()
        self.done = done
        plain = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                plain.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                if self.path == "/slow":
                    done.wait(delay)
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.done.set()
        self.server.shutdown()
        self.server.server_close()


def test_http_unsigned_with_headers_and_a_slow_server() -> None:
    server = _Plain(delay=10.0)
    try:
        sender = _http(f"http://127.0.0.1:{server.port}/door", headers={"authorization": "Bearer door-key"})
        slow = _http(f"http://127.0.0.1:{server.port}/slow")
        command = DoorCommand("front")
        result = sender.send(command)
        late = slow.send(DoorCommand("front", deadline_s=0.5))
        sender.close()
        slow.close()
    finally:
        server.close()
    assert result.delivered, result.error
    path, headers, body = server.requests[0]
    assert (path, headers["authorization"], headers["content-type"]) == ("/door", "Bearer door-key", "application/json")
    assert "webhook-signature" not in headers
    assert json.loads(body) == json.loads(command.to_json())
    assert not late.delivered
    assert late.error is not None
    assert late.error.startswith("no answer from")
    assert late.latency_s <= 0.5 + SLACK_S


def test_an_expired_command_is_not_sent(receiver: Receiver) -> None:
    sender = _http(receiver.url("/door"), secret=SECRET_A)
    try:
        result = sender.send(DoorCommand("front", issued_at=utcnow() - timedelta(seconds=5)))
    finally:
        sender.close()
    assert (result.delivered, result.attempts) == (False, 0)
    assert result.error is not None
    assert "expired" in result.error
    assert receiver.hits == []


# --- values ---------------------------------------------------------------------------------------------------


def test_parse_state_report() -> None:
    body = json.dumps({"door": "front", "state": " OPEN ", "command_id": "ab12", "battery": 80}).encode()
    assert parse_state_report(body) == StateReport("front", "open", "ab12")
    assert parse_state_report(b'{"state": "forced"}', door="back") == ("back", "forced", None)
    assert parse_state_report(b'{"door": "back", "state": "closed"}', door="back").state == "closed"


@pytest.mark.parametrize(("body", "door", "message"), [
    (b"\xff\xfe", None, "not UTF-8"),
    (b"{not json", None, "not JSON"),
    (b"[1, 2]", None, "JSON object, not list"),
    (b'{"state": "open"}', None, "no door"),
    (b'{"door": "a/b", "state": "open"}', None, "invalid door name"),
    (b'{"door": "front", "state": "open"}', "back", "names door 'front' but came for door 'back'"),
    (b'{"door": "front"}', None, "non-empty string 'state'"),
    (b'{"door": "front", "state": 1}', None, "non-empty string 'state'"),
    (b'{"door": "front", "state": "' + b"x" * 40 + b'"}', None, "at most 32"),
    (b'{"door": "front", "state": "open", "command_id": "no spaces"}', None, "invalid command_id"),
    (b'{"door": "front", "state": "open", "command_id": 5}', None, "invalid command_id"),
    (b" " * 5000, None, "too large"),
])
def test_parse_state_report_refuses(body: bytes, door: str | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_state_report(body, door=door)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"door": ""}, "non-empty"),
    ({"door": "a+b"}, "invalid door name"),
    ({"door": "front", "action": "close"}, "action must be one of open, deny"),
    ({"door": "front", "deadline_s": 0}, "deadline_s"),
    ({"door": "front", "deadline_s": float("nan")}, "deadline_s"),
    ({"door": "front", "issued_at": datetime(2026, 1, 1)}, "timezone-aware"),
    ({"door": "front", "command_id": "a b"}, "invalid command_id"),
])
def test_door_command_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DoorCommand(**kwargs)


def test_settings_validation() -> None:
    with pytest.raises(ValueError, match="QoS 1 or 2"):
        MqttDoorSettings(qos=0)
    with pytest.raises(ValueError, match="topic prefix"):
        MqttDoorSettings(topic_prefix="doors/#")
    with pytest.raises(ValueError, match="http"):
        HttpDoorSettings("ftp://example.org")
    with pytest.raises(ValueError, match="unusable"):
        HttpDoorSender(HttpDoorSettings("http://127.0.0.1/door", secret="not base64!"))

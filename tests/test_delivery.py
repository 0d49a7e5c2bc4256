"""Event delivery against real peers: a Mosquitto broker, an HTTP receiver, SQLite and PostgreSQL."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from facetrail.events import outbox
from facetrail.events.dispatcher import Dispatcher, backoff_delay
from facetrail.events.errors import ChannelUnavailableError, DeliveryError
from facetrail.events.mqtt import MqttPublisher, MqttSettings
from facetrail.events.webhooks import WebhookSender, WebhookTarget
from facetrail.store.db import Database
from facetrail.store.models import OutboxMessage, utcnow
from services import (
    SECRET_A,
    SECRET_B,
    WAIT_S,
    Hit,
    Mosquitto,
    Received,
    Receiver,
    Subscriber,
    free_port,
    retained,
    wait_until,
)


@pytest.fixture
def receivers() -> Iterator[Callable[[int], Receiver]]:
    made: list[Receiver] = []

    def make(port: int) -> Receiver:
        receiver = Receiver(port, {"/a": SECRET_A, "/b": SECRET_B, "/gone": SECRET_A})
        made.append(receiver)
        return receiver

    yield make
    for receiver in made:
        receiver.stop()


def targets(port: int) -> list[WebhookTarget]:
    base = f"http://127.0.0.1:{port}"
    return [WebhookTarget("a", f"{base}/a", SECRET_A), WebhookTarget("b", f"{base}/b", SECRET_B),
            WebhookTarget("gone", f"{base}/gone", SECRET_A)]


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'facetrail.db'}")
    yield database
    database.dispose()


def rows(db: Database) -> dict[str, OutboxMessage]:
    with db.session() as session:
        return {m.message_id: m for m in session.query(OutboxMessage).order_by(OutboxMessage.id)}


def pending(db: Database, channel: str | None = None) -> int:
    with db.session() as session:
        return outbox.pending_count(session, channel)


def enqueue_webhooks(db: Database, plan: list[tuple[str, int]]) -> dict[str, list[str]]:
    """Enqueue (webhook name, sequence number) in order, in one transaction; the ids per name."""
    ids: dict[str, list[str]] = {}
    with db.session() as session:
        for name, seq in plan:
            message = outbox.enqueue(session, channel="webhook", destination=name,
                                     payload={"type": "event.new", "seq": seq})
            ids.setdefault(name, []).append(message.message_id)
    return ids


# --- the outbox itself ----------------------------------------------------------------------------------------


def test_outbox_order_hold_back_and_prune(db_url: str) -> None:
    db = Database(db_url)
    try:
        with pytest.raises(RuntimeError), db.session() as session:
            outbox.enqueue(session, channel="webhook", destination="x", payload={"n": 0})
            raise RuntimeError("the event's transaction fails")
        assert pending(db) == 0, "a rolled-back transaction must not leave messages behind"

        with db.session() as session:
            x1 = outbox.enqueue(session, channel="webhook", destination="x", payload={"n": 1}).message_id
            x2 = outbox.enqueue(session, channel="webhook", destination="x", payload={"n": 2}).message_id
            y1 = outbox.enqueue(session, channel="webhook", destination="y", payload="plain").message_id
            m1 = outbox.enqueue(session, channel="mqtt", destination="facetrail/events",
                                payload={"type": "new"}, retain=True).message_id
        now = utcnow()
        with db.session() as session:
            assert [m.message_id for m in outbox.due(session, channel="webhook", now=now)] == [x1, x2, y1]
            assert outbox.mark_failed(session, x1, "HTTP 500", retry_at=now + timedelta(hours=1))
        with db.session() as session:
            # x2 waits behind x1's retry; y goes on.
            assert [m.message_id for m in outbox.due(session, channel="webhook", now=now)] == [y1]
            later = outbox.due(session, channel="webhook", now=now + timedelta(hours=2))
            assert [m.message_id for m in later] == [x1, x2, y1]
            assert later[0].attempts == 1 and later[0].last_error == "HTTP 500"
            mqtt_due = outbox.due(session, channel="mqtt", now=now)
            assert [m.message_id for m in mqtt_due] == [m1]
            assert json.loads(mqtt_due[0].payload) == {"type": "new", "message_id": m1}
            assert mqtt_due[0].retain is True
            assert outbox.pending_count(session) == 4 and outbox.pending_count(session, "mqtt") == 1
            assert outbox.mark_delivered(session, y1)
            assert not outbox.mark_delivered(session, y1), "a delivered message is not delivered again"
        with db.session() as session:
            assert outbox.pending_count(session, "webhook") == 2
            assert outbox.prune_delivered(session, now - timedelta(hours=1)) == 0
            assert outbox.prune_delivered(session, utcnow() + timedelta(seconds=1)) == 1
            assert outbox.pending_count(session) == 3
    finally:
        db.dispose()


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff_delay(n, 1.0, 60.0) for n in (1, 2, 3, 6, 7, 100)] == [1, 2, 4, 32, 60, 60]


# --- MQTT -----------------------------------------------------------------------------------------------------


def test_mqtt_broker_down_then_up_delivers_everything_once_in_order(
        brokers: Callable[..., Mosquitto], db: Database) -> None:
    broker = brokers(persist=True)
    # The test's subscriber registers a persistent session while the broker is briefly up, so
    # whatever is published after the broker comes back is kept for it, whoever connects first.
    broker.start()
    Subscriber(broker.port, "facetrail/#", client_id="test-subscriber", persistent=True).connect().close()
    broker.stop()

    publisher = MqttPublisher(MqttSettings(port=broker.port, client_id="facetrail-test", reconnect_max_s=1))
    dispatcher = Dispatcher(db, mqtt=publisher, webhooks=None, poll_s=0.05)
    subscriber = Subscriber(broker.port, "facetrail/#", client_id="test-subscriber", persistent=True)
    publisher.start()
    dispatcher.start()
    try:
        events_topic, person_topic = publisher.topic("events"), publisher.topic("front_door", "alice")
        with db.session() as session:
            for event in range(4):
                for kind in ("new", "update", "end"):
                    outbox.enqueue(session, channel="mqtt", destination=events_topic,
                                   payload={"type": kind, "after": {"id": f"ev{event}"}})
                    outbox.enqueue(session, channel="mqtt", destination=person_topic,
                                   payload=f"{event}:{kind}", retain=True)
        dispatcher.wake()
        assert dispatcher.drain_once() == 0
        assert not publisher.connected and pending(db, "mqtt") == 24
        assert all(m.attempts == 0 for m in rows(db).values()), "a down broker must not burn attempts"

        broker.start()
        subscriber.connect()
        wait_until(lambda: pending(db, "mqtt") == 0, "the outbox to drain")
        # Anything sent twice would arrive before this marker (one publisher, one topic, QoS 1).
        publisher.publish(person_topic, "marker", timeout=WAIT_S)
        wait_until(lambda: subscriber.received(person_topic, "marker"), "the marker")

        events = [json.loads(p) for p in subscriber.payloads(events_topic)]
        assert [(e["after"]["id"], e["type"]) for e in events] == [
            (f"ev{n}", kind) for n in range(4) for kind in ("new", "update", "end")]
        by_topic = {m.message_id: m for m in rows(db).values() if m.destination == events_topic}
        assert [e["message_id"] for e in events] == list(by_topic), "MQTT JSON payloads carry the message id"
        assert subscriber.payloads(person_topic) == [
            f"{n}:{kind}" for n in range(4) for kind in ("new", "update", "end")] + ["marker"]
        assert all(m.attempts == 1 for m in rows(db).values())
        assert dispatcher.stats.delivered == 24 and dispatcher.stats.failed == 0
        assert retained(broker.port, "facetrail/available") == Received("facetrail/available", "online", True)
    finally:
        dispatcher.stop()
        publisher.stop()
        subscriber.close()


def test_unacknowledged_publish_is_not_sent_twice(broker: Mosquitto) -> None:
    publisher = MqttPublisher(MqttSettings(port=broker.port, client_id="facetrail-frozen"))
    subscriber = Subscriber(broker.port, "facetrail/t").connect()
    with pytest.raises(ChannelUnavailableError):
        publisher.publish("facetrail/t", "too early", message_id="msg_early")
    publisher.start()
    try:
        wait_until(lambda: publisher.connected, "the publisher to connect")
        broker.signal(signal.SIGSTOP)  # the broker reads nothing and acknowledges nothing
        try:
            with pytest.raises(DeliveryError) as caught:
                publisher.publish("facetrail/t", "once", timeout=0.3, message_id="msg_once")
            assert not isinstance(caught.value, ChannelUnavailableError)
        finally:
            broker.signal(signal.SIGCONT)
        # The retry waits for the copy paho already sent rather than sending another.
        publisher.publish("facetrail/t", "once", timeout=WAIT_S, message_id="msg_once")
        publisher.publish("facetrail/t", "marker", timeout=WAIT_S)
        wait_until(lambda: subscriber.received("facetrail/t", "marker"), "the marker")
        assert subscriber.payloads("facetrail/t") == ["once", "marker"]
    finally:
        publisher.stop()
        subscriber.close()


_CRASHING_PUBLISHER = textwrap.dedent("""
    import sys, time
    from facetrail.events.mqtt import MqttPublisher, MqttSettings
    publisher = MqttPublisher(MqttSettings(port=int(sys.argv[1]), client_id="facetrail-crash", topic_prefix="crash"))
    publisher.start()
    while not publisher.connected:
        time.sleep(0.02)
    print("connected", flush=True)
    time.sleep(600)
""")


def test_availability_online_offline_and_last_will(broker: Mosquitto) -> None:
    watcher = Subscriber(broker.port, "+/available").connect()
    publisher = MqttPublisher(MqttSettings(port=broker.port, client_id="facetrail-clean"))
    publisher.start()
    wait_until(lambda: watcher.received("facetrail/available", "online"), "online")
    publisher.stop()
    wait_until(lambda: watcher.received("facetrail/available", "offline"), "offline after stop")
    assert retained(broker.port, "facetrail/available") == Received("facetrail/available", "offline", True)
    with pytest.raises(ChannelUnavailableError):
        publisher.publish("facetrail/events", "{}")

    # A process killed outright says nothing; the broker publishes its Last Will.
    crashing = subprocess.Popen([sys.executable, "-c", _CRASHING_PUBLISHER, str(broker.port)],
                                stdout=subprocess.PIPE, text=True)
    try:
        assert crashing.stdout is not None and crashing.stdout.readline().strip() == "connected"
        wait_until(lambda: watcher.received("crash/available", "online"), "online from the doomed process")
        crashing.kill()
        crashing.wait(timeout=WAIT_S)
        wait_until(lambda: watcher.received("crash/available", "offline"), "the Last Will")
        assert retained(broker.port, "crash/available") == Received("crash/available", "offline", True)
    finally:
        if crashing.poll() is None:
            crashing.kill()
            crashing.wait()
        watcher.close()


def test_binary_payloads_survive_the_text_outbox_byte_for_byte(db: Database, broker: Mosquitto,
                                                                data_dir: Path) -> None:
    from mqtt_kit import Listener

    photo = (data_dir / "faces" / "obama" / "obama.jpg").read_bytes()  # a real JPEG: every byte value occurs
    with db.session() as session:
        stored = outbox.enqueue(session, channel="mqtt", destination="facetrail/front/obama/snapshot",
                                payload=photo, retain=True)
        assert stored.payload.startswith(outbox.BINARY_PREFIX) and outbox.wire_payload(stored.payload) == photo
        with pytest.raises(ValueError, match="pass bytes"):
            outbox.enqueue(session, channel="mqtt", destination="facetrail/x", payload="base64:AAAA")
        with pytest.raises(ValueError, match="MQTT only"):
            outbox.enqueue(session, channel="webhook", destination="desk", payload=photo)
    publisher = MqttPublisher(MqttSettings(port=broker.port))
    dispatcher = Dispatcher(db, mqtt=publisher, webhooks=None, poll_s=0.05)
    with Listener(broker.port, "facetrail/+/+/snapshot") as heard:
        publisher.start()
        dispatcher.start()
        try:
            wait_until(lambda: bool(heard.on("facetrail/front/obama/snapshot")), "the snapshot")
        finally:
            dispatcher.stop()
            publisher.stop()
    assert heard.on("facetrail/front/obama/snapshot")[0].payload == photo
    assert pending(db) == 0


def test_topics_are_built_under_the_prefix() -> None:
    publisher = MqttPublisher(MqttSettings(topic_prefix="home/faces"))
    assert publisher.topic("events") == "home/faces/events"
    assert publisher.topic("front_door", "alice") == "home/faces/front_door/alice"
    assert publisher.availability_topic == "home/faces/available"
    for bad in ("", "a/b", "+", "x#"):
        with pytest.raises(ValueError):
            publisher.topic("cam", bad)


# --- webhooks -------------------------------------------------------------------------------------------------


def test_webhook_receiver_down_then_up(db: Database, receivers: Callable[[int], Receiver]) -> None:
    port = free_port()  # nothing listens here yet
    sender = WebhookSender(targets(port))
    dispatcher = Dispatcher(db, mqtt=None, webhooks=sender, poll_s=0.05, backoff_initial_s=0.05, backoff_max_s=0.2)
    ids = enqueue_webhooks(db, [(name, seq) for seq in range(5) for name in ("a", "b")])
    dispatcher.start()
    receiver = receivers(port)
    try:
        wait_until(lambda: dispatcher.stats.failed >= 4, "failed attempts while the receiver is down")
        assert "ConnectError" in dispatcher.stats.last_error["webhook"]
        receiver.start()
        wait_until(lambda: pending(db) == 0, "the outbox to drain")
    finally:
        dispatcher.stop()
        sender.close()
    assert receiver.problems == []
    assert receiver.delivered("/a") == receiver.attempts("/a") == ids["a"], "each once, in order"
    assert receiver.delivered("/b") == receiver.attempts("/b") == ids["b"]
    assert [h.body["seq"] for h in receiver.hits if h.path == "/a"] == list(range(5))
    stored = rows(db)
    for name in ("a", "b"):
        head, *rest = ids[name]
        assert stored[head].attempts >= 2 and stored[head].last_error is not None
        # While the head of a destination was failing, nothing behind it was tried.
        assert all(stored[i].attempts == 1 and stored[i].last_error is None for i in rest)


def test_webhook_retries_after_500_without_reordering(db: Database, receivers: Callable[[int], Receiver]) -> None:
    receiver = receivers(free_port()).start()
    receiver.script["/a"] = [500, 503]
    sender = WebhookSender(targets(receiver.port))
    # No back-off: each drain_once() is one retry round, so the test steps through them.
    dispatcher = Dispatcher(db, mqtt=None, webhooks=sender, backoff_initial_s=0.0)
    ids = enqueue_webhooks(db, [("a", 1), ("b", 1), ("a", 2), ("b", 2)])
    try:
        assert dispatcher.drain_once() == 2
        assert receiver.attempts("/a") == ids["a"][:1], "a's second message waits for its first"
        assert receiver.delivered("/b") == ids["b"], "b does not wait for a"
        assert dispatcher.drain_once() == 0
        assert dispatcher.drain_once() == 2
        assert dispatcher.drain_once() == 0
    finally:
        sender.close()
    assert receiver.problems == []
    assert receiver.attempts("/a") == [ids["a"][0]] * 3 + [ids["a"][1]]
    assert receiver.delivered("/a") == ids["a"]
    first = rows(db)[ids["a"][0]]
    assert first.attempts == 3 and first.last_error == "HTTP 503 Service Unavailable"
    assert first.delivered_at is not None
    assert dispatcher.stats.delivered == 4 and dispatcher.stats.failed == 2


def test_webhook_410_gone_is_abandoned_not_retried(db: Database, receivers: Callable[[int], Receiver]) -> None:
    receiver = receivers(free_port()).start()
    receiver.always["/gone"] = 410
    sender = WebhookSender(targets(receiver.port))
    dispatcher = Dispatcher(db, mqtt=None, webhooks=sender, backoff_initial_s=0.0)
    ids = enqueue_webhooks(db, [("gone", 1), ("gone", 2)])
    try:
        assert dispatcher.drain_once() == 0
        assert dispatcher.drain_once() == 0
    finally:
        sender.close()
    assert receiver.attempts("/gone") == ids["gone"]
    assert pending(db) == 0 and dispatcher.stats.abandoned == 2
    assert all(m.last_error == "abandoned: HTTP 410 Gone" for m in rows(db).values())


def test_webhook_sender_signs_per_standard_webhooks(receivers: Callable[[int], Receiver]) -> None:
    receiver = receivers(free_port()).start()
    sender = WebhookSender(targets(receiver.port))
    try:
        sender.send("a", "msg_direct", '{"type":"ping"}')
        assert receiver.hits == [Hit("/a", "msg_direct", {"type": "ping"}, 200)]
        wrong = WebhookSender([WebhookTarget("a", receiver.url("/a"), SECRET_B)])
        with pytest.raises(DeliveryError, match="HTTP 400"):
            wrong.send("a", "msg_forged", "{}")
        wrong.close()
        assert receiver.problems and "msg_forged" not in receiver.delivered("/a")
        with pytest.raises(DeliveryError, match="no webhook named"):
            sender.send("nope", "msg_x", "{}")
    finally:
        sender.close()
    with pytest.raises(ValueError, match="named 'a'"):
        WebhookSender([WebhookTarget("a", "http://x", SECRET_A), WebhookTarget("a", "http://y", SECRET_A)])


# --- durability -----------------------------------------------------------------------------------------------


def test_outbox_survives_a_restart(db_url: str, broker: Mosquitto, receivers: Callable[[int], Receiver]) -> None:
    receiver = receivers(free_port())
    first = Database(db_url)
    with first.session() as session:
        for seq in range(3):
            outbox.enqueue(session, channel="mqtt", destination="facetrail/events", payload={"seq": seq})
            outbox.enqueue(session, channel="webhook", destination="a", payload={"seq": seq})
    first.dispose()  # the process is gone before anything was delivered

    receiver.start()
    subscriber = Subscriber(broker.port, "facetrail/events").connect()
    second = Database(db_url)
    publisher = MqttPublisher(MqttSettings(port=broker.port, client_id="facetrail-restarted"))
    sender = WebhookSender(targets(receiver.port))
    dispatcher = Dispatcher(second, mqtt=publisher, webhooks=sender, poll_s=0.05)
    publisher.start()
    dispatcher.start()
    try:
        wait_until(lambda: pending(second) == 0, "the restarted dispatcher to drain the outbox")
        publisher.publish("facetrail/events", "marker", timeout=WAIT_S)
        wait_until(lambda: subscriber.received("facetrail/events", "marker"), "the marker")
    finally:
        dispatcher.stop()
        publisher.stop()
        sender.close()
        subscriber.close()
        second.dispose()
    assert [json.loads(p)["seq"] for p in subscriber.payloads("facetrail/events")[:-1]] == [0, 1, 2]
    assert [h.body["seq"] for h in receiver.hits] == [0, 1, 2]
    assert len(set(receiver.delivered("/a"))) == 3 and receiver.problems == []

"""One slow receiver delays nobody else, and one database has one delivering process (real peers and databases)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from facetrail.events import outbox
from facetrail.events.dispatcher import Dispatcher
from facetrail.events.errors import DeliveryError
from facetrail.events.lease import open_lease
from facetrail.events.mqtt import MqttPublisher, MqttSettings
from facetrail.events.webhooks import WebhookSender, WebhookTarget
from facetrail.store.db import Database
from facetrail.store.models import OutboxMessage
from services import SECRET_A, SECRET_B, WAIT_S, Mosquitto, Receiver, Subscriber, free_port, wait_until

SLOW_DEADLINE_S = 3.0  # above the trickle's 2 s between bytes: only a total deadline cuts it
EVENTS = "facetrail/events"


class Trickler:
    """A webhook receiver that, until released, answers one byte every 2 s and never finishes; then answers 200."""

    def __init__(self) -> None:
        self.port = free_port()
        self.release = threading.Event()
        self.stuck = threading.Event()  # an attempt is being trickled to now
        self.attempts: list[str] = []
        self.delivered: list[str] = []
        self._lock = threading.Lock()
        trickler = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["content-length"]))
                message_id = self.headers["webhook-id"]
                with trickler._lock:
                    trickler.attempts.append(message_id)
                if not trickler.release.is_set():
                    trickler.stuck.set()
                    endless = b"HTTP/1.1 200 OK\r\nx-slow: "
                    try:
                        for n in range(10**6):
                            self.wfile.write(endless[n:n + 1] or b"a")
                            if trickler.release.wait(2.0):
                                break
                    except OSError:
                        pass  # facetrail hung up
                    self.close_connection = True
                    return
                with trickler._lock:
                    trickler.delivered.append(message_id)
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/slow"

    def stop(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def trickler() -> Iterator[Trickler]:
    made = Trickler()
    yield made
    made.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver(free_port(), {"/a": SECRET_A}).start()
    yield made
    made.stop()


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'facetrail.db'}")
    yield database
    database.dispose()


def enqueue(db: Database, channel: str, destination: str, count: int, start: int = 0) -> list[str]:
    with db.session() as session:
        return [outbox.enqueue(session, channel=channel, destination=destination,  # type: ignore[arg-type]
                               payload={"seq": seq}).message_id for seq in range(start, start + count)]


def row(db: Database, message_id: str) -> OutboxMessage:
    with db.session() as session:
        found = session.query(OutboxMessage).filter_by(message_id=message_id).one()
        session.expunge(found)
        return found


def pending(db: Database) -> int:
    with db.session() as session:
        return outbox.pending_count(session)


# --- one slow receiver ------------------------------------------------------------------------------------------


def test_the_webhook_deadline_cuts_a_receiver_that_trickles(trickler: Trickler) -> None:
    sender = WebhookSender([WebhookTarget("slow", trickler.url(), SECRET_B, timeout_s=SLOW_DEADLINE_S)])
    outcome: list[BaseException | None] = []

    def attempt() -> None:
        try:
            sender.send("slow", "msg_trickled", "{}")
            outcome.append(None)
        except DeliveryError as exc:
            outcome.append(exc)

    threading.Thread(target=attempt, daemon=True).start()
    try:
        wait_until(lambda: bool(outcome), "the attempt to end")  # never, with a timeout per read
    finally:
        trickler.release.set()
        sender.close()
    assert isinstance(outcome[0], DeliveryError)
    assert str(outcome[0]) == f"no complete answer within {SLOW_DEADLINE_S:g} s"
    assert trickler.attempts == ["msg_trickled"] and trickler.delivered == []


def test_a_slow_receiver_delays_neither_mqtt_nor_another_receiver(
        db: Database, broker: Mosquitto, trickler: Trickler, receiver: Receiver) -> None:
    publisher = MqttPublisher(MqttSettings(port=broker.port))
    sender = WebhookSender([WebhookTarget("slow", trickler.url(), SECRET_B, timeout_s=SLOW_DEADLINE_S),
                            WebhookTarget("a", receiver.url("/a"), SECRET_A)])
    dispatcher = Dispatcher(db, mqtt=publisher, webhooks=sender, poll_s=0.05, backoff_initial_s=0.2,
                            backoff_max_s=1.0)
    watcher = Subscriber(broker.port, "facetrail/#").connect()
    slow_ids = enqueue(db, "webhook", "slow", 2)
    publisher.start()
    dispatcher.start()
    try:
        wait_until(trickler.stuck.is_set, "the slow receiver to start trickling")
        fast_ids = enqueue(db, "webhook", "a", 3)
        mqtt_ids = enqueue(db, "mqtt", EVENTS, 3)
        dispatcher.wake()

        def others_arrived() -> bool:
            seen = [json.loads(p)["message_id"] for p in watcher.payloads(EVENTS)]
            return receiver.delivered("/a") == fast_ids and seen == mqtt_ids

        wait_until(others_arrived, "MQTT and the healthy receiver to get their messages")
        assert not trickler.release.is_set() and trickler.delivered == [], "the slow one is still stuck"
        # Only the attempt's total deadline can end an answer that never stops coming.
        wait_until(lambda: row(db, slow_ids[0]).attempts >= 1, "the slow attempt to be cut")
        head = row(db, slow_ids[0])
        assert head.delivered_at is None and head.last_error == f"no complete answer within {SLOW_DEADLINE_S:g} s"
        assert slow_ids[1] not in trickler.attempts, "the later message waits for the first"

        trickler.release.set()
        wait_until(lambda: pending(db) == 0, "the slow receiver's messages to be retried and delivered")
    finally:
        trickler.release.set()
        dispatcher.stop()
        publisher.stop()
        sender.close()
        watcher.close()
    assert trickler.delivered == slow_ids, "retried, in order, once delivered"
    assert receiver.delivered("/a") == receiver.attempts("/a") == fast_ids and receiver.problems == []
    assert [json.loads(p)["message_id"] for p in watcher.payloads(EVENTS)] == mqtt_ids


# --- one delivering process per database ------------------------------------------------------------------------


def test_two_dispatchers_on_one_database_deliver_each_message_once(db_url: str, receiver: Receiver) -> None:
    first_db, second_db = Database(db_url), Database(db_url)
    targets = [WebhookTarget("a", receiver.url("/a"), SECRET_A)]
    first_sender, second_sender = WebhookSender(targets), WebhookSender(targets)
    first = Dispatcher(first_db, mqtt=None, webhooks=first_sender, poll_s=0.05)
    second = Dispatcher(second_db, mqtt=None, webhooks=second_sender, poll_s=0.05)
    first.start()
    second.start()
    try:
        assert first.delivering and not second.delivering
        assert second.held_by and first.lease.holder.startswith(second.held_by), "it says who delivers"
        ids = enqueue(first_db, "webhook", "a", 5)
        first.wake()
        second.wake()
        assert second.drain_once() == 0
        wait_until(lambda: receiver.delivered("/a") == ids, "the holder to deliver")

        first.stop()  # gives the lease up: the other takes over
        ids += enqueue(first_db, "webhook", "a", 5, start=5)
        wait_until(lambda: receiver.delivered("/a") == ids, "the other dispatcher to take over")
        assert second.delivering
    finally:
        first.stop()
        second.stop()
        first_sender.close()
        second_sender.close()
        first_db.dispose()
        second_db.dispose()
    assert receiver.attempts("/a") == ids, "each message exactly once, in order"
    assert first.stats.delivered == 5 and second.stats.delivered == 5


HOLDER = textwrap.dedent("""
    import sys, time
    from facetrail.events.dispatcher import Dispatcher
    from facetrail.events.lease import open_lease
    from facetrail.events.webhooks import WebhookSender, WebhookTarget
    from facetrail.store.db import Database

    url, hook, secret = sys.argv[1:4]
    db = Database(url)
    dispatcher = Dispatcher(db, mqtt=None, webhooks=WebhookSender([WebhookTarget("a", hook, secret)]),
                            poll_s=0.05, lease=open_lease(db, ttl_s=2.0))
    dispatcher.start()
    print("delivering" if dispatcher.delivering else "waiting", flush=True)
    time.sleep(3600)
""")


def test_a_killed_holder_is_taken_over_without_sending_twice(db_url: str, receiver: Receiver) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, db_url, receiver.url("/a"), SECRET_A],
                              stdout=subprocess.PIPE, text=True)
    db = Database(db_url)
    sender = WebhookSender([WebhookTarget("a", receiver.url("/a"), SECRET_A)])
    standby = Dispatcher(db, mqtt=None, webhooks=sender, poll_s=0.05, lease=open_lease(db, ttl_s=2.0))
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "delivering"
        standby.start()
        assert not standby.delivering
        ids = enqueue(db, "webhook", "a", 5)
        wait_until(lambda: receiver.delivered("/a") == ids, "the other process to deliver")
        # The receiver has them; wait until the holder has also marked them delivered, or a kill in between
        # would rightly send the last one again (at-least-once) and this test could not count exactly once.
        wait_until(lambda: pending(db) == 0, "the holder to mark its deliveries")
        assert standby.stats.delivered == 0 and not standby.delivering

        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=WAIT_S)
        ids += enqueue(db, "webhook", "a", 5, start=5)
        wait_until(lambda: receiver.delivered("/a") == ids, "the standby to take over from the killed holder")
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=WAIT_S)
        standby.stop()
        sender.close()
        db.dispose()
    assert receiver.attempts("/a") == ids, "each message exactly once, in order"
    assert standby.stats.delivered == 5


# --- MQTT client ids --------------------------------------------------------------------------------------------


def test_two_publishers_from_the_same_settings_both_stay_connected(broker: Mosquitto) -> None:
    settings = MqttSettings(port=broker.port)  # client_id "facetrail", as two `facetrail run` would have it
    watcher = Subscriber(broker.port, "facetrail/#").connect()
    publishers = [MqttPublisher(settings), MqttPublisher(settings)]
    connects = [0, 0]

    def counter(index: int) -> Callable[[], None]:
        def count() -> None:
            connects[index] += 1
        return count

    try:
        for index, publisher in enumerate(publishers):
            publisher.add_connect_callback(counter(index))
            publisher.start()
            wait_until(lambda p=publisher: p.connected, f"publisher {index} to connect")  # type: ignore[misc]
        # Each sends a marker and waits for its acknowledgement: a publisher whose id the other took over would
        # be thrown off by the broker (and reconnect, throwing the other off) before its marker gets through.
        for index, publisher in enumerate(publishers):
            def marked(p: MqttPublisher = publisher, n: int = index) -> bool:
                try:
                    p.publish("facetrail/marker", str(n), timeout=WAIT_S)
                    return True
                except DeliveryError:
                    return False
            wait_until(marked, f"publisher {index}'s marker to be acknowledged")
        wait_until(lambda: sorted(watcher.payloads("facetrail/marker")) == ["0", "1"], "both markers")
        assert all(p.connected for p in publishers) and connects == [1, 1], "nobody was thrown off"
        assert "offline" not in watcher.payloads("facetrail/available")
        assert publishers[0].client_id != publishers[1].client_id
        assert all(p.client_id.startswith("facetrail-") for p in publishers)
    finally:
        for publisher in publishers:
            publisher.stop()
        watcher.close()


def test_a_fixed_client_id_can_still_be_asked_for() -> None:
    publisher = MqttPublisher(MqttSettings(client_id="gate-7", unique_client_id=False))
    assert publisher.client_id == "gate-7"


# --- two `facetrail run` on one database ------------------------------------------------------------------------


def run_config(tmp_path: Path, name: str, data: Path, hook: str) -> Path:
    """A run whose only camera is a missing file (it fails; --forever keeps the run, and its delivery, going)."""
    config = tmp_path / f"{name}.yml"
    config.write_text(f"purpose: two runs\ndata_dir: {data}\ncameras:\n  {name}:\n    inputs:\n"
                      f"      - path: {tmp_path / 'missing.mp4'}\n    reconnect:\n      max_attempts: 1\n"
                      f"webhooks:\n  - name: a\n    url: {hook}\n    secret: {SECRET_A}\n")
    return config


@pytest.mark.models
def test_a_second_run_on_the_same_database_says_so_and_takes_over(tmp_path: Path, receiver: Receiver) -> None:
    data = tmp_path / "data"
    db = Database(f"sqlite:///{data / 'facetrail.db'}")
    logs = {name: tmp_path / f"{name}.log" for name in ("first", "second")}
    runs: dict[str, subprocess.Popen[bytes]] = {}

    def start(name: str) -> None:
        with logs[name].open("wb") as log:
            runs[name] = subprocess.Popen(
                [sys.executable, "-m", "facetrail.cli.main", "run", str(run_config(tmp_path, name, data,
                                                                                   receiver.url("/a"))),
                 "--forever"], stdout=log, stderr=subprocess.STDOUT)

    def said(name: str, text: str) -> Callable[[], bool]:
        def check() -> bool:
            assert runs[name].poll() is None, logs[name].read_text()
            return text in logs[name].read_text()
        return check

    try:
        start("first")
        ids = enqueue(db, "webhook", "a", 3)
        wait_until(lambda: receiver.delivered("/a") == ids, "the first run to deliver", timeout=120)
        start("second")
        wait_until(said("second", "delivery: another facetrail run on this database delivers the events"),
                   "the second run to say that the first delivers", timeout=120)
        ids += enqueue(db, "webhook", "a", 3, start=3)
        wait_until(lambda: receiver.delivered("/a") == ids, "the first run to deliver the rest", timeout=120)

        runs["first"].send_signal(signal.SIGTERM)
        runs["first"].wait(timeout=120)
        wait_until(said("second", "this run delivers the events now"), "the second run to take over", timeout=120)
        ids += enqueue(db, "webhook", "a", 3, start=6)
        wait_until(lambda: receiver.delivered("/a") == ids, "the second run to deliver", timeout=120)
    finally:
        for process in runs.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=120)
        db.dispose()
    assert receiver.attempts("/a") == ids, "each message exactly once, in order"
    notices = [line for line in logs["second"].read_text().splitlines() if line.startswith("delivery:")]
    assert len(notices) == 2, notices
    assert "delivery:" not in logs["first"].read_text()

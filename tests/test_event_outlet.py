"""One outlet for events: door events and reviews reach MQTT and their webhooks, once, in order, across kill -9.

The producers are the real ones (the pipeline's door service in a process that is then killed with SIGKILL,
the API's door-state and review routes over real HTTP); delivery is the real dispatcher to a private
Mosquitto broker and a Standard Webhooks receiver that verifies every signature.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from api_kit import Server, make_keys, serving
from facetrail.api.app import ApiSettings, create_app
from facetrail.config.errors import ConfigError
from facetrail.config.loader import load_config, parse_config
from facetrail.config.schema import FacetrailConfig
from facetrail.events.dispatcher import Dispatcher
from facetrail.events.messages import Channels, EventView
from facetrail.events.mqtt import MqttPublisher, MqttSettings
from facetrail.events.outbox import pending_count
from facetrail.events.outlet import EventOutlet, new_uid
from facetrail.events.webhooks import WebhookSender
from facetrail.gallery.gallery import Gallery, GallerySettings
from facetrail.pipeline.settings import webhook_targets
from facetrail.store.db import Database
from facetrail.store.models import Event, Identity, OutboxMessage, utcnow
from services import SECRET_A, Mosquitto, Receiver, Subscriber, free_port, wait_until

DELIVERY_WAIT_S = 120.0  # generous: a loaded machine, never a timing assertion
EVENTS = "facetrail/events"
# webhook name -> (path, subscribed kinds; None: the default, every kind)
HOOKS: dict[str, tuple[str, list[str] | None]] = {
    "all": ("/all", None), "tailgate-desk": ("/tailgating", ["tailgating"]),
    "forced-desk": ("/forced", ["door_forced"]), "failed-desk": ("/failed", ["door_command_failed"]),
    "reviews": ("/review", ["review"])}

# The pipeline's door service, in its own process: tailgating, a grant whose command fails, a forced door;
# then the process dies by SIGKILL before anything was delivered (no broker, no receiver is up).
PRODUCER = """
import os, signal, sys
from pathlib import Path
from facetrail.config.loader import load_config
from facetrail.door.decision import DoorDecision
from facetrail.gallery.gallery import Gallery, GallerySettings
from facetrail.pipeline.analyzer import FrameAnalyzer
from facetrail.pipeline.doors import DoorService
from facetrail.pipeline.matcher import GalleryMatcher
from facetrail.store.models import utcnow

config = load_config(Path(sys.argv[1]))
person = int(sys.argv[2])
gallery = Gallery(GallerySettings(config.data_dir))
service = DoorService(config, gallery.db, GalleryMatcher(gallery, default_threshold=0.5),
                      FrameAnalyzer(gallery.engine), default_threshold=0.5)
front = service.doors["front"]

def decision(track, outcome, reason, tailgating=False):
    return DoorDecision(door="front", track_id=track, outcome=outcome, reason=reason, at=utcnow(),
                        identity_id=person, score=0.72, matched_shots=3, liveness=None, tailgating=tailgating,
                        others_present=int(tailgating))

service._record(front, decision(1, "deny", "tailgating: 1 other person at the door", tailgating=True))
service._record(front, decision(2, "grant", "recognised, live and allowed"))
service.stop()  # waits for the command, which fails: nothing listens on its port
service._on_state("front", "forced", utcnow())  # as the controller's MQTT state report calls it
print(service.outlet.enqueued, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def site_config(data: Path, *, mqtt_port: int, hook_port: int) -> str:
    """Two doors on one camera whose commands go to a port where nothing listens; the five webhooks."""
    dead = f"http://127.0.0.1:{free_port()}/open"
    hooks = "".join(
        f"  - name: {name}\n    url: http://127.0.0.1:{hook_port}{path}\n    secret: {SECRET_A}\n"
        + (f"    events: [{', '.join(kinds)}]\n" if kinds is not None else "")
        for name, (path, kinds) in HOOKS.items())
    door = "    camera: entrance\n    allow: [residents]\n" \
           f"    command:\n      mqtt: false\n      http_url: {dead}\n      deadline_s: 0.5\n"
    return (f"purpose: event outlet tests\ndata_dir: {data}\nmqtt:\n  enabled: true\n  port: {mqtt_port}\n"
            f"cameras:\n  entrance:\n    inputs:\n      - path: {data / 'unused.mp4'}\n"
            f"doors:\n  front:\n{door}    tailgating: event\n  side:\n{door}"
            f"webhooks:\n{hooks}")


@contextmanager
def delivering(db: Database, config: FacetrailConfig, port: int) -> Iterator[Dispatcher]:
    """The real dispatcher with a real MQTT publisher and webhook sender, started and stopped."""
    publisher = MqttPublisher(MqttSettings(port=port, client_id=f"outlet-test-{free_port()}"))
    sender = WebhookSender(webhook_targets(config))
    dispatcher = Dispatcher(db, mqtt=publisher, webhooks=sender, backoff_initial_s=0.2, backoff_max_s=1.0)
    publisher.start()
    dispatcher.start()
    try:
        yield dispatcher
    finally:
        dispatcher.stop()
        publisher.stop()
        sender.close()


def by_destination(db: Database) -> dict[str, list[str]]:
    """Message ids of the outbox per destination, in id order."""
    found: dict[str, list[str]] = {}
    with db.session() as session:
        for message in session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)):
            found.setdefault(message.destination, []).append(message.message_id)
    return found


def events_on_mqtt(watcher: Subscriber) -> list[dict[str, Any]]:
    return [json.loads(p) for p in watcher.payloads(EVENTS)]


def types(receiver: Receiver, path: str) -> list[str]:
    return [hit.body["type"] for hit in receiver.hits if hit.path == path]


@pytest.mark.models
def test_door_events_and_a_review_reach_mqtt_and_their_webhooks_once_in_order_across_kill_9(
        tmp_path: Path, brokers: Callable[..., Mosquitto]) -> None:
    data = tmp_path / "data"
    broker = brokers()  # not running while the events are written
    hook_port = free_port()
    config_file = tmp_path / "site.yml"
    config_file.write_text(site_config(data, mqtt_port=broker.port, hook_port=hook_port))
    config = load_config(config_file)
    gallery = Gallery(GallerySettings(data))
    with gallery.db.session() as session:
        person = Identity(display_name="Resident", created_by="test")
        session.add(person)
        session.flush()
        person_id = person.id
    produced = subprocess.run([sys.executable, "-c", PRODUCER, str(config_file), str(person_id)],
                              capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert produced.returncode == -signal.SIGKILL, produced.stderr
    with gallery.db.session() as session:
        kinds = list(session.scalars(select(Event.kind).order_by(Event.id)))
        tailgating = session.scalar(select(Event.id).where(Event.kind == "tailgating"))
        waiting = pending_count(session)
    assert kinds == ["tailgating", "door_command_failed", "door_forced"]
    assert waiting == int(produced.stdout) == 9  # each on MQTT, to "all" and to its own desk: committed with it
    # The API: a controller reports the side door forced; an operator confirms the tailgating.
    keys = make_keys(gallery, ("controller", "door"))
    with serving(create_app(ApiSettings(data, config=config), gallery=gallery)) as url:
        server = Server(url, gallery, keys)
        with server.client("controller") as controller:
            assert controller.post("/doors/side/state", json={"state": "forced"}).status_code == 200
        with server.client("operator") as operator:
            confirmed = operator.post(f"/events/{tailgating}/review", json={"verdict": "confirm", "note": "seen"})
            assert confirmed.status_code == 200 and confirmed.json()["state"] == "confirmed"
    expected = by_destination(gallery.db)
    # Now the broker and the receiver come up, and a dispatcher drains what the dead process left.
    broker.start()
    watcher = Subscriber(broker.port, EVENTS).connect()
    receiver = Receiver(hook_port, {path: SECRET_A for path, _kinds in HOOKS.values()}).start()
    try:
        with delivering(gallery.db, config, broker.port):
            def delivered() -> bool:
                with gallery.db.session() as session:
                    left = pending_count(session)
                return left == 0 and len(watcher.payloads(EVENTS)) >= len(expected[EVENTS])
            wait_until(delivered, "every message to arrive", timeout=DELIVERY_WAIT_S)
        mqtt = events_on_mqtt(watcher)
        assert [m["message_id"] for m in mqtt] == expected[EVENTS]  # exactly once each, in order
        for name, (path, _kinds) in HOOKS.items():
            assert receiver.delivered(path) == expected[name], name
        assert not receiver.problems  # every signature verified
    finally:
        watcher.close()
        receiver.stop()
        gallery.db.dispose()
    assert [(m["type"], m["after"]["kind"], m["after"].get("door")) for m in mqtt] == [
        ("new", "tailgating", "front"), ("new", "door_command_failed", "front"), ("new", "door_forced", "front"),
        ("new", "door_forced", "side"), ("update", "tailgating", None)]
    new, review = mqtt[0], mqtt[-1]
    assert new["after"]["identity"] == {"id": person_id, "name": "Resident"} and new["after"]["has_snapshot"] is False
    assert review["after"]["id"] == new["after"]["id"]
    assert review["before"]["review"] == {"state": "pending", "confirmations": 0, "reviewers_required": 1}
    assert review["after"]["review"] == {"state": "confirmed", "confirmations": 1, "reviewers_required": 1}
    assert mqtt[1]["after"]["error"] and mqtt[1]["after"]["decision_id"]
    assert types(receiver, "/all") == ["tailgating.new", "door_command_failed.new", "door_forced.new",
                                       "door_forced.new", "tailgating.reviewed"]
    assert types(receiver, "/tailgating") == ["tailgating.new", "tailgating.reviewed"]  # nothing but tailgating
    assert types(receiver, "/forced") == ["door_forced.new", "door_forced.new"]
    assert types(receiver, "/failed") == ["door_command_failed.new"]
    assert types(receiver, "/review") == ["tailgating.reviewed"]


def test_each_of_two_reviewers_is_an_update_and_a_server_without_config_announces_nothing(
        tmp_path: Path, broker: Mosquitto) -> None:
    data = tmp_path / "data"
    config = parse_config(site_config(data, mqtt_port=broker.port, hook_port=free_port()), "site.yml")
    gallery = Gallery(GallerySettings(data))
    keys = make_keys(gallery)
    outlet = EventOutlet.for_config(config)
    at = utcnow() - timedelta(minutes=1)
    with gallery.db.session() as session:
        hit, quiet = (outlet.new(session, EventView(uid=new_uid(), kind="watchlist_hit", camera="entrance",
                                                    start_time=at, score=0.81, frame_time=at, reviewers_required=2,
                                                    snapshot_quality=0.9), snapshot=b"\xff\xd8jpeg").id
                      for _ in range(2))
    watcher = Subscriber(broker.port, EVENTS).connect()
    try:
        with delivering(gallery.db, config, broker.port):
            with serving(create_app(ApiSettings(data, config=config), gallery=gallery)) as url:
                server = Server(url, gallery, keys)
                for role in ("operator", "admin"):
                    with server.client(role) as reviewer:
                        answer = reviewer.post(f"/events/{hit}/review", json={"verdict": "confirm"})
                        assert answer.status_code == 200, answer.text
            wait_until(lambda: len(watcher.payloads(EVENTS)) >= 4, "the two events and the two reviews")
            # The same database served without a configuration: the review is stored, announced nowhere.
            with gallery.db.session() as session:
                before = session.scalar(select(func.count()).select_from(OutboxMessage))
            with serving(create_app(ApiSettings(data), gallery=gallery)) as url, \
                    Server(url, gallery, keys).client("operator") as reviewer:
                assert reviewer.post(f"/events/{quiet}/review", json={"verdict": "dismiss"}).status_code == 200
            with gallery.db.session() as session:
                assert session.scalar(select(func.count()).select_from(OutboxMessage)) == before
                assert session.scalar(select(Event.state).where(Event.id == quiet)) == "dismissed"
        mqtt = events_on_mqtt(watcher)
    finally:
        watcher.close()
        gallery.db.dispose()
    assert [m["type"] for m in mqtt] == ["new", "new", "update", "update"]
    first, second = mqtt[2], mqtt[3]
    assert first["before"]["review"] == {"state": "pending", "confirmations": 0, "reviewers_required": 2}
    assert first["after"]["review"] == {"state": "pending", "confirmations": 1, "reviewers_required": 2}
    assert second["before"]["review"] == first["after"]["review"]
    assert second["after"]["review"] == {"state": "confirmed", "confirmations": 2, "reviewers_required": 2}


def test_an_update_that_changes_nothing_is_not_sent_and_end_closes_the_event(db_url: str) -> None:
    db = Database(db_url)
    outlet = EventOutlet(Channels(mqtt_prefix="site", webhooks={"desk": frozenset({"tailgating"})}))
    start = utcnow() - timedelta(seconds=30)
    view = EventView(uid=new_uid(), kind="watchlist_hit", camera="door", start_time=start, score=0.6,
                     frame_time=start, snapshot_quality=0.5)
    with db.session() as session:
        outlet.new(session, view, snapshot=b"first")
        before = view.as_dict()
        view.frame_time = start + timedelta(seconds=1)  # a later frame that shows nothing new
        assert not outlet.update(session, view, before=before)
        before = view.as_dict()
        view.frame_time, view.score = start + timedelta(seconds=2), 0.7
        assert outlet.update(session, view, before=before)
        before = view.as_dict()
        view.snapshot_quality = 0.8  # a better best shot
        assert outlet.update(session, view, before=before, snapshot=b"better")
        outlet.end(session, view, at=start + timedelta(seconds=3))
        tailgating = EventView(uid=new_uid(), kind="tailgating", camera="door", start_time=start)
        outlet.new(session, tailgating, snapshot=None)
    with db.session() as session:
        messages = list(session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))
        row = session.scalar(select(Event).where(Event.uid == view.uid))
        assert row is not None and row.snapshot_jpeg == b"better" and row.score == pytest.approx(0.7)
        assert row.ended_at is not None
    db.dispose()
    assert outlet.enqueued == len(messages) == 6
    assert [(m.destination, json.loads(m.payload)["type"]) for m in messages] == [
        ("site/events", "new"), ("site/events", "update"), ("site/events", "update"), ("site/events", "end"),
        ("site/events", "new"), ("desk", "tailgating.new")]  # the desk wants tailgating only
    score, shot, end = (json.loads(m.payload) for m in messages[1:4])
    assert (score["before"]["score"], score["after"]["score"]) == (0.6, 0.7)
    assert (shot["before"]["snapshot_quality"], shot["after"]["snapshot_quality"]) == (0.5, 0.8)
    assert end["before"]["end_time"] is None and end["after"]["end_time"] == (start + timedelta(seconds=3)).timestamp()
    for message in (score, shot, end):
        assert message["before"] != message["after"]


def test_webhooks_may_subscribe_to_every_kind_and_nothing_else(tmp_path: Path) -> None:
    every = ["watchlist_hit", "unknown_visitor", "seen_again", "tailgating", "door_forced", "door_command_failed",
             "review"]
    base = (f"purpose: kinds\ndata_dir: {tmp_path}\ncameras:\n  door:\n    inputs:\n      - path: {tmp_path}/a.mp4\n"
            f"webhooks:\n  - name: desk\n    url: http://127.0.0.1:9/hook\n    secret: {SECRET_A}\n")
    config = parse_config(base + f"    events: [{', '.join(every)}]\n", "kinds.yml")
    assert config.webhooks[0].events == every
    assert parse_config(base, "default.yml").webhooks[0].events == every  # by default: all of them
    with pytest.raises(ConfigError, match="events"):
        parse_config(base + "    events: [door_opened]\n", "bad.yml")


def test_a_review_from_the_command_line_is_announced_on_the_configured_channels(tmp_path: Path) -> None:
    data = tmp_path / "data"
    config_file = tmp_path / "site.yml"
    config_file.write_text(site_config(data, mqtt_port=free_port(), hook_port=free_port()))
    gallery = Gallery(GallerySettings(data))
    start = utcnow()
    with gallery.db.session() as session:
        event = EventOutlet().new(session, EventView(uid=new_uid(), kind="door_forced", camera="entrance",
                                                     start_time=start), snapshot=None).id
    reviewed = subprocess.run([sys.executable, "-m", "facetrail.cli.main", "events", "review", str(event), "dismiss",
                               "--note", "the cleaner", "--config", str(config_file), "--data", str(data),
                               "--actor", "ana"], capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert reviewed.returncode == 0, reviewed.stderr
    sent = by_destination(gallery.db)
    with gallery.db.session() as session:
        update = json.loads(session.scalars(select(OutboxMessage.payload).where(
            OutboxMessage.destination == EVENTS)).one())
    gallery.db.dispose()
    assert {name: len(ids) for name, ids in sent.items()} == {EVENTS: 1, "all": 1, "forced-desk": 1, "reviews": 1}
    assert (update["type"], update["before"]["review"]["state"], update["after"]["review"]["state"]) == (
        "update", "pending", "dismissed")

"""The running pipeline delivers through MQTT and webhooks that are down at first, and survives kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from facetrail.gallery.gallery import Gallery, GallerySettings
from facetrail.pipeline.runner import Pipeline
from facetrail.store.audit import verify_chain
from facetrail.store.models import Event, OutboxMessage
from facetrail.vision.engine import FaceEngine
from facetrail.vision.samples import sample_image
from pipeline_kit import config_for, enrol, head_and_shoulders, make_clip, walk_in
from services import MOSQUITTO, SECRET_A, Mosquitto, Receiver, Subscriber, free_port, wait_until

pytestmark = pytest.mark.models
DELIVERY_WAIT_S = 120.0  # back-off after a long outage: generous, never a timing assertion


@pytest.fixture
def clip(tmp_path: Path, video_engine: FaceEngine, data_dir: Path) -> Path:
    """Yao Ming twice (two alerts), and a stranger (an unknown visitor)."""
    yao = head_and_shoulders(video_engine, sample_image("yaoming.jpg"))
    stranger = head_and_shoulders(video_engine, data_dir / "faces" / "paul_rudd" / "1.jpg")
    return make_clip(tmp_path / "door.mp4", [walk_in(yao, 0.5, 3.0, 0.3), walk_in(yao, 7.0, 9.5, 0.3),
                                             walk_in(stranger, 0.0, 9.5, 0.75)], 10.0)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A private broker, not started yet."""
    if not os.path.exists(MOSQUITTO):
        pytest.skip("mosquitto is not installed (.ci/run installs it)")
    made = Mosquitto(tmp_path, free_port())
    yield made
    made.stop()


def test_broker_and_receiver_down_at_start_get_every_event_exactly_once(
        tmp_path: Path, clip: Path, video_engine: FaceEngine, broker: Mosquitto) -> None:
    store = tmp_path / "data"
    enrol(store, video_engine, "Yao Ming", sample_image("yaoming.jpg"), watchlist="vip")
    webhook_port = free_port()
    extra = (f"mqtt:\n  enabled: true\n  port: {broker.port}\nevents:\n  unknown_visitor: true\n"
             f"webhooks:\n  - name: desk\n    url: http://127.0.0.1:{webhook_port}/hook\n    secret: {SECRET_A}\n")
    pipeline = Pipeline(config_for(store, {"door": clip}, extra), engine=video_engine)
    stop = threading.Event()
    runner = threading.Thread(target=pipeline.run, kwargs={"stop": stop, "until_done": False})
    runner.start()
    try:
        wait_until(lambda: pipeline.done, "the clip to be analysed", timeout=DELIVERY_WAIT_S)
        with pipeline.gallery.db.session() as session:
            expected = list(session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))
            stored_events = session.scalar(select(func.count()).select_from(Event))
        assert expected and all(m.delivered_at is None for m in expected)  # nobody was listening
        # Now both come up, while the pipeline keeps running.
        broker.start()
        # Text topics only: the per-person snapshots (facetrail/<camera>/<person>/snapshot) are JPEG bytes.
        watcher = Subscriber(broker.port, "facetrail/+").connect()
        counts = Subscriber(broker.port, "facetrail/+/+").connect()
        receiver = Receiver(webhook_port, {"/hook": SECRET_A}).start()
        try:
            mqtt_ids = {m.message_id for m in expected if m.channel == "mqtt"}
            hook_ids = [m.message_id for m in expected if m.channel == "webhook"]
            event_message_ids = {m.message_id for m in expected if m.destination == "facetrail/events"}
            presence = [m for m in expected if m.channel == "mqtt" and m.destination.count("/") == 2]
            presence_topics = {m.destination for m in presence}

            def delivered() -> bool:
                with pipeline.gallery.db.session() as session:
                    waiting = session.scalar(select(func.count()).select_from(OutboxMessage)
                                             .where(OutboxMessage.delivered_at.is_(None)))
                seen = {json.loads(p).get("message_id") for p in watcher.payloads("facetrail/events")}
                presence_seen = sum(len(counts.payloads(topic)) for topic in presence_topics)
                return (waiting == 0 and set(receiver.delivered("/hook")) >= set(hook_ids)
                        and seen >= event_message_ids and presence_seen >= len(presence))

            wait_until(delivered, "every message to arrive", timeout=DELIVERY_WAIT_S)
            events_payloads = [json.loads(p) for p in watcher.payloads("facetrail/events")]
            event_ids = [p["message_id"] for p in events_payloads]
            assert len(event_ids) == len(set(event_ids))  # exactly once
            assert set(event_ids) <= mqtt_ids
            assert receiver.delivered("/hook") == hook_ids  # once each, in order
            assert not receiver.problems  # every signature verified
            kinds = [(p["type"], p["after"]["kind"]) for p in events_payloads]
            assert kinds.count(("new", "watchlist_hit")) == 2 and ("new", "unknown_visitor") in kinds
            assert len({p["after"]["id"] for p in events_payloads}) == stored_events
            assert counts.payloads("facetrail/door/yao_ming") == ["1", "0", "1", "0"]
            assert "online" in watcher.payloads("facetrail/available")
        finally:
            watcher.close()
            counts.close()
            receiver.stop()
    finally:
        stop.set()
        runner.join(timeout=60)
    with pipeline.gallery.db.session() as session:
        assert session.scalar(select(func.count()).select_from(OutboxMessage)
                              .where(OutboxMessage.delivered_at.is_(None))) == 0


def test_kill_9_during_a_run_loses_no_stored_event(tmp_path: Path, clip: Path, video_engine: FaceEngine) -> None:
    store = tmp_path / "data"
    enrol(store, video_engine, "Yao Ming", sample_image("yaoming.jpg"), watchlist="vip")
    config = tmp_path / "run.yml"
    config.write_text(f"purpose: kill test\ndata_dir: {store}\nmqtt:\n  enabled: true\n  port: {free_port()}\n"
                      f"cameras:\n  door:\n    inputs:\n      - path: {clip}\n        realtime: true\n"
                      f"        loop: true\n    detect:\n      fps: 5\n")
    process = subprocess.Popen([sys.executable, "-m", "facetrail.cli.main", "run", str(config), "--forever"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    gallery = Gallery(GallerySettings(store))
    try:
        def alerted() -> bool:
            assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
            with gallery.db.session() as session:
                return (session.scalar(select(func.count()).select_from(Event)) or 0) >= 1
        wait_until(alerted, "a first alert", timeout=DELIVERY_WAIT_S)
        with gallery.db.session() as session:
            before = {e.uid: e.kind for e in session.scalars(select(Event))}
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    with gallery.db.session() as session:
        after = {e.uid: e.kind for e in session.scalars(select(Event))}
        assert set(before) <= set(after)
        announced = {json.loads(m.payload)["after"]["id"] for m in session.scalars(
            select(OutboxMessage).where(OutboxMessage.destination == "facetrail/events"))}
        assert set(after) <= announced  # every stored event has its message waiting: nothing half-written
        assert verify_chain(session).ok
    gallery.db.dispose()

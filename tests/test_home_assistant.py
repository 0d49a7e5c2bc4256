"""Home Assistant MQTT discovery against a real Mosquitto, real SQLite and the real `facetrail forget` CLI.

Home Assistant itself cannot be installed here (current releases need Python 3.14), so every discovery payload
is checked against the documented schema of its platform (https://www.home-assistant.io/integrations/mqtt/,
binary_sensor.mqtt, sensor.mqtt, event.mqtt): only documented keys, the required ones present with the right
types, and every topic it names one that facetrail really publishes to.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from sqlalchemy import select

from facetrail.events.dispatcher import Dispatcher
from facetrail.events.homeassistant import (
    HomeAssistantBridge,
    last_seen_topic,
    presence_topic,
    site_of,
    snapshot_topic,
)
from facetrail.events.messages import Channels, EventView
from facetrail.events.mqtt import MqttPublisher, MqttSettings
from facetrail.events.outlet import EventOutlet, new_uid
from facetrail.gallery.gallery import Gallery, GallerySettings
from facetrail.store.db import Database
from facetrail.store.models import Identity, Sighting, utcnow
from facetrail.vision.engine import EngineConfig, FaceEngine
from mqtt_kit import Listener
from pipeline_kit import enrol
from services import Mosquitto, wait_until

pytestmark = pytest.mark.models  # enrolment embeds real photos
CAMERAS = ("front", "yard")
WAIT_S = 120.0  # a loaded machine: generous, never a timing assertion

# Documented configuration keys (full names) of https://www.home-assistant.io/integrations/<platform>.mqtt/
COMMON = {"availability", "availability_mode", "availability_template", "availability_topic", "default_entity_id",
          "device", "enabled_by_default", "encoding", "entity_category", "entity_picture", "icon",
          "json_attributes_template", "json_attributes_topic", "name", "object_id", "origin", "payload_available",
          "payload_not_available", "platform", "qos", "unique_id"}
DOCUMENTED = {
    "sensor": COMMON | {"device_class", "expire_after", "force_update", "last_reset_value_template", "options",
                        "state_class", "state_topic", "suggested_display_precision", "unit_of_measurement",
                        "value_template"},
    "binary_sensor": COMMON | {"device_class", "expire_after", "force_update", "off_delay", "payload_off",
                               "payload_on", "state_topic", "value_template"},
    "event": COMMON | {"device_class", "event_types", "state_topic", "value_template"},
}
REQUIRED = {"sensor": {"state_topic"}, "binary_sensor": {"state_topic"}, "event": {"state_topic", "event_types"}}
DEVICE_KEYS = {"configuration_url", "connections", "hw_version", "identifiers", "manufacturer", "model", "model_id",
               "name", "serial_number", "suggested_area", "sw_version", "via_device"}
ORIGIN_KEYS = {"name", "sw_version", "support_url"}
BINARY_SENSOR_CLASSES = {"presence", "occupancy", "motion"}  # the subset that fits "someone is here"


def check_documented(topic: str, config: dict[str, Any], published: set[str]) -> None:
    """One discovery payload against its platform's documented schema."""
    discovery, component, node, _object, last = topic.split("/")
    assert (discovery, node, last) == ("homeassistant", "facetrail", "config"), topic
    assert set(config) <= DOCUMENTED[component], set(config) - DOCUMENTED[component]
    assert REQUIRED[component] <= set(config), topic
    assert isinstance(config["unique_id"], str) and config["unique_id"].startswith("facetrail_")
    assert config["default_entity_id"] == f"{component}.{config['unique_id']}"
    assert isinstance(config["name"], str) and config["name"]
    device = config["device"]
    assert set(device) <= DEVICE_KEYS and device["identifiers"] and all(isinstance(i, str) for i in
                                                                         device["identifiers"])
    assert isinstance(device["name"], str) and device["manufacturer"] == "facetrail" and device["model"]
    assert set(config["origin"]) <= ORIGIN_KEYS and config["origin"]["name"] == "facetrail"
    assert config["availability_topic"] == "facetrail/available" and "facetrail/available" in published
    assert (config["payload_available"], config["payload_not_available"]) == ("online", "offline")
    if component != "event":  # an event entity's topic only carries messages when something happens
        assert config["state_topic"] in published, config["state_topic"]
    if component == "sensor":
        assert "value_json" in config["value_template"] and config["json_attributes_topic"] in published
    if component == "binary_sensor":
        assert config["device_class"] in BINARY_SENSOR_CLASSES
        assert (config["payload_on"], config["payload_off"]) == ("ON", "OFF")
    if component == "event":
        assert isinstance(config["event_types"], list) and all(isinstance(t, str) for t in config["event_types"])


def forget_in_another_process(data: Path, name: str) -> None:
    done = subprocess.run([sys.executable, "-m", "facetrail.cli.main", "forget", name, "--reason",
                           "deletion request", "--data", str(data), "--actor", "ha-test"],
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr


class Delivery:
    """A publisher, a dispatcher and a bridge, as `facetrail run` has them."""

    def __init__(self, db: Database, port: int, clock: Callable[[], datetime]) -> None:
        self.settings = MqttSettings(port=port, home_assistant=True, presence_timeout_s=30)
        self.outlet = EventOutlet(Channels(mqtt_prefix="facetrail", home_assistant=True))
        self.publisher = MqttPublisher(self.settings)
        self.dispatcher = Dispatcher(db, mqtt=self.publisher, webhooks=None, poll_s=0.05)
        self.bridge = HomeAssistantBridge(db, self.outlet, site_of("facetrail", "homeassistant", CAMERAS,
                                                                   {"gate": "front"}), self.settings, clock=clock)
        self.bridge.attach(self.publisher)

    def __enter__(self) -> Delivery:
        self.publisher.start()
        self.dispatcher.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.dispatcher.stop()
        self.publisher.stop()

    def sync(self) -> bool:
        self.bridge.sync()
        self.dispatcher.wake()
        return True


def test_entities_and_states_follow_the_database_and_forgetting_removes_them(
        tmp_path: Path, broker: Mosquitto, data_dir: Path) -> None:
    store = tmp_path / "data"
    engine = FaceEngine(EngineConfig())
    enrol(store, engine, "Barack Obama", data_dir / "faces" / "obama" / "obama.jpg")
    enrol(store, engine, "Joe Biden", data_dir / "faces" / "biden" / "biden.jpg")
    gallery = Gallery(GallerySettings(store))
    db = gallery.db
    with db.session() as session:
        ids = {name: id_ for id_, name in session.execute(select(Identity.id, Identity.display_name))}
    obama, biden = ids["Barack Obama"], ids["Joe Biden"]
    moment = [utcnow()]
    with db.session() as session:  # what the pipeline writes for a named track
        session.add(Sighting(track_uid="front-1", camera="front", identity_id=obama, first_seen=moment[0]
                             - timedelta(seconds=9), last_seen=moment[0] - timedelta(seconds=5), score=0.71,
                             quality=0.8, frames=12))
        session.add(Sighting(track_uid="yard-1", camera="yard", identity_id=biden, first_seen=moment[0]
                             - timedelta(hours=2), last_seen=moment[0] - timedelta(hours=2), score=0.64,
                             quality=0.7, frames=30))
    ok, jpeg = cv2.imencode(".jpg", cv2.imread(str(data_dir / "faces" / "obama" / "obama.jpg")))
    assert ok
    obama_snapshot = snapshot_topic("facetrail", "front", "Barack Obama")
    obama_topics = {presence_topic("facetrail", obama, camera) for camera in CAMERAS} | {
        last_seen_topic("facetrail", obama), obama_snapshot,
        f"homeassistant/sensor/facetrail/person_{obama}_last_seen/config",
        *(f"homeassistant/binary_sensor/facetrail/person_{obama}_{camera}_presence/config" for camera in CAMERAS)}

    with Listener(broker.port, "homeassistant/#", "facetrail/#") as heard, \
            Delivery(db, broker.port, lambda: moment[0]) as delivery:
        with db.session() as session:  # a named track's messages, a watchlist hit and a forced door, via the outlet
            delivery.outlet.face_named(session, camera="front", track_id="front-1", identity_id=obama,
                                       name="Barack Obama", score=0.71, at=moment[0], snapshot=jpeg.tobytes())
            delivery.outlet.new(session, EventView(uid=new_uid(), kind="watchlist_hit", camera="yard",
                                                   start_time=moment[0], identity_id=biden, watchlist="vip",
                                                   score=0.66), snapshot=None)
            delivery.outlet.door_forced(session, door="gate", camera="front", at=moment[0])
        configs_expected = 2 + 1 + 2 * (1 + len(CAMERAS))  # watchlist per camera, the door, per person

        def announced() -> bool:
            delivery.sync()
            configs = [json.loads(p) for t, p in heard.holding().items() if t.startswith("homeassistant/")]
            states = {c["state_topic"] for c in configs if "event_types" not in c}
            return (obama_topics <= set(heard.holding()) and len(configs) == configs_expected
                    and states <= set(heard.holding()))

        wait_until(announced, "discovery, states and the snapshot", timeout=WAIT_S)
        holding = heard.holding()
        configs = {t: json.loads(p) for t, p in holding.items() if t.startswith("homeassistant/")}
        for topic, config in configs.items():
            check_documented(topic, config, heard.topics())
        # The event entities' messages carry one of their event_types.
        events = {c["state_topic"]: c["event_types"] for t, c in configs.items()
                  if t.startswith("homeassistant/event/")}
        hit = heard.on("facetrail/yard/watchlist_hit")[0].json()
        assert hit["event_type"] in events["facetrail/yard/watchlist_hit"] and hit["name"] == "Joe Biden"
        forced = heard.on("facetrail/door_events/gate")[0].json()
        assert forced["event_type"] == "door_forced" and forced["event_type"] in events["facetrail/door_events/gate"]
        # States: Obama was seen at the front 5 s ago (presence timeout 30 s); Biden nowhere yet.
        assert holding[presence_topic("facetrail", obama, "front")] == b"ON"
        assert holding[presence_topic("facetrail", obama, "yard")] == b"OFF"
        assert all(holding[presence_topic("facetrail", biden, c)] == b"OFF" for c in CAMERAS)
        seen = json.loads(holding[last_seen_topic("facetrail", obama)])
        assert (seen["camera"], seen["name"], seen["score"]) == ("front", "Barack Obama", 0.71)
        assert datetime.fromisoformat(seen["time"]) == moment[0] - timedelta(seconds=5)
        assert seen["timestamp"] == pytest.approx((moment[0] - timedelta(seconds=5)).timestamp())
        assert cv2.imdecode(np.frombuffer(holding[obama_snapshot], np.uint8), cv2.IMREAD_COLOR) is not None

        # 31 s later the presence sensor turns off.
        moment[0] += timedelta(seconds=31)
        wait_until(lambda: delivery.sync() and heard.last(presence_topic("facetrail", obama, "front")) == b"OFF",
                   "presence to turn off", timeout=WAIT_S)

        # Obama is forgotten by the CLI, in another process: every entity, state and snapshot of his is removed
        # (an empty retained message), and Biden's stay.
        forget_in_another_process(store, "Barack Obama")
        wait_until(lambda: delivery.sync() and all(heard.last(t) == b"" for t in obama_topics),
                   "Obama's entities to be removed", timeout=WAIT_S)
        assert not obama_topics & set(heard.holding())
        assert f"homeassistant/sensor/facetrail/person_{biden}_last_seen/config" in heard.holding()

    # Biden is forgotten while no facetrail process runs; the next one learns from the broker's retained
    # messages what is announced, and removes his entities on connecting.
    forget_in_another_process(store, "Joe Biden")
    biden_config = f"homeassistant/sensor/facetrail/person_{biden}_last_seen/config"
    with Listener(broker.port, "homeassistant/#") as heard:
        wait_until(lambda: biden_config in heard.holding(), "the retained configurations", timeout=WAIT_S)
        with Delivery(Gallery(GallerySettings(store)).db, broker.port, utcnow) as delivery:
            wait_until(lambda: delivery.sync() and heard.last(biden_config) == b"",
                       "Biden's entities to be removed", timeout=WAIT_S)
            remaining = {t for t in heard.holding() if "/person_" in t}
            assert remaining == set()
            # The cameras' and the door's entities stay.
            assert "homeassistant/event/facetrail/door_gate_event/config" in heard.holding()

"""Doors end to end: the real pipeline on clips of real photos, the real API over HTTP, a real Mosquitto broker.

A door that also asks for a PIN watches a resident (read at the clip's own speed and looped, like a camera);
the keypad sends the PIN to the API, the pipeline sends the door command; the controller's state reports come
back over MQTT. A face too far from the door gets "no decision", with the reason.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path

import pytest
from paho.mqtt import publish
from sqlalchemy import select

from api_kit import Server, make_keys, serving
from facetrail.api.app import ApiSettings, create_app
from facetrail.gallery.gallery import Gallery, GallerySettings
from facetrail.pipeline.runner import Pipeline
from facetrail.store.doors import record_consent
from facetrail.store.models import DoorDecisionRecord, DoorStateRecord, Event, Identity
from facetrail.synth.door_clips import RESIDENT_PHOTOS, head_and_shoulders, resident_clip
from facetrail.vision.engine import FaceEngine
from pipeline_kit import config_for, enrol, make_clip, walk_in
from services import Mosquitto, Subscriber, wait_until

pytestmark = pytest.mark.models
PIN = "2468"
TIMEOUT_S = 3


def decisions(gallery: Gallery) -> list[DoorDecisionRecord]:
    with gallery.db.session() as session:
        rows = list(session.scalars(select(DoorDecisionRecord).order_by(DoorDecisionRecord.id)))
        session.expunge_all()
    return rows


def test_a_pending_decision_times_out_then_the_pin_opens_the_door(tmp_path: Path, engine: FaceEngine,
                                                                  data_dir: Path, broker: Mosquitto) -> None:
    for relative in RESIDENT_PHOTOS:
        if not (data_dir / relative).is_file():
            pytest.skip(f"test photo {data_dir / relative} is absent")
    clip = resident_clip(engine, data_dir, tmp_path / "resident.mp4")
    data = tmp_path / "data"
    enrol(data, engine, "Resident", data_dir / RESIDENT_PHOTOS[0], watchlist="residents")
    config = config_for(data, {"entrance": clip}, extra=(
        f"mqtt:\n  enabled: false\n  host: 127.0.0.1\n  port: {broker.port}\n"
        "doors:\n  front:\n    camera: entrance\n    allow: [residents]\n    second_factor: true\n"
        f"    factor_timeout_s: {TIMEOUT_S}\n    command:\n      deadline_s: 1.5\n"))
    entrance = config.cameras["entrance"]
    # Looped: the resident comes back every 4 s.
    entrance.inputs = [dataclasses.replace(entrance.inputs[0], loop=True, realtime=True)]
    entrance.detect = dataclasses.replace(entrance.detect, fps=10)
    gallery = Gallery(GallerySettings(data), engine=engine)
    keys = make_keys(gallery, ("keypad", "door"))
    with gallery.db.session() as session:
        resident = session.scalar(select(Identity.id))
        assert resident is not None
        record_consent(session, resident, "front", method="signed form 21", actor="desk", factor=PIN)

    controller = Subscriber(broker.port, "facetrail/doors/#").connect()
    stop = threading.Event()
    pipeline = Pipeline(config, engine=engine, actor="tester")
    running = threading.Thread(target=pipeline.run, kwargs={"stop": stop}, daemon=True)
    try:
        with serving(create_app(ApiSettings(data, config=config), gallery=gallery)) as url:
            server = Server(url, gallery, keys)
            running.start()
            # First pass: nobody types the PIN; the pending decision is denied when its time runs out.
            wait_until(lambda: any(r.outcome == "deny" for r in decisions(gallery)), "the first decision to expire")
            expired = decisions(gallery)[0]
            assert (expired.outcome, expired.identity_id) == ("deny", resident)
            assert expired.reason == f"no second factor within {TIMEOUT_S} s" and expired.command is None
            assert controller.payloads("facetrail/doors/front/command") == []

            # A later pass: the keypad sends the PIN while the decision is pending, and the door opens.
            wait_until(lambda: any(r.outcome == "pending" for r in decisions(gallery)), "a pending decision")
            with server.client("keypad") as keypad:
                typed = keypad.post("/doors/front/factor", json={"code": PIN}).json()
            assert typed["granted"], typed
            wait_until(lambda: bool(controller.payloads("facetrail/doors/front/command")), "the door command")
            command = json.loads(controller.payloads("facetrail/doors/front/command")[0])
            assert (command["door"], command["action"]) == ("front", "open")
            assert command["reason"] == f"decision {typed['decision_id']}"
            wait_until(lambda: next(r for r in decisions(gallery) if r.id == typed["decision_id"]).command
                       == "delivered", "the command's fate in the log")

            # The controller reports the door forced open: kept as the door's state, raised as an event.
            publish.single("facetrail/doors/front/state", json.dumps({"state": "forced"}), qos=1,
                           hostname="127.0.0.1", port=broker.port)

            def forced() -> bool:
                with gallery.db.session() as session:
                    state = session.get(DoorStateRecord, "front")
                    return state is not None and state.state == "forced" and session.scalar(
                        select(Event.id).where(Event.kind == "door_forced")) is not None

            wait_until(forced, "the forced state and its event")
            with server.client("viewer") as viewer:
                door = viewer.get("/doors").json()[0]
            assert (door["state"], door["state_source"]) == ("forced", "mqtt")
    finally:
        stop.set()
        running.join(timeout=60)
        controller.close()
        gallery.close()
    assert not running.is_alive(), "the pipeline did not stop"


def test_a_face_too_far_from_the_door_gets_no_decision_with_the_reason(tmp_path: Path, engine: FaceEngine,
                                                                       data_dir: Path) -> None:
    photo = data_dir / RESIDENT_PHOTOS[0]
    if not photo.is_file():
        pytest.skip(f"test photo {photo} is absent")
    far = make_clip(tmp_path / "far.mp4", [walk_in(head_and_shoulders(engine, photo), 0.2, 2.8, 0.5, scale=0.12)],
                    3.0)
    data = tmp_path / "data"
    enrol(data, engine, "Resident", photo, watchlist="residents")
    config = config_for(data, {"entrance": far}, extra=(
        "mqtt:\n  enabled: false\ndoors:\n  front:\n    camera: entrance\n    allow: [residents]\n"))
    config.cameras["entrance"].detect = dataclasses.replace(config.cameras["entrance"].detect, fps=10)
    Pipeline(config, engine=engine, actor="tester").run(until_done=True)
    gallery = Gallery(GallerySettings(data), engine=engine)
    try:
        rows = decisions(gallery)
    finally:
        gallery.close()
    assert [(r.outcome, r.reason, r.command) for r in rows] == [("no_decision", "face too small", None)]

"""Frigate-compatible messages from the running pipeline, read the way Frigate's consumers read them.

A real clip of a real face (Yao Ming, on a watchlist) runs through the pipeline with MQTT (a private Mosquitto),
Home Assistant discovery, two Standard Webhooks receivers (one asking for the snapshot JPEG) and a public URL
that is a real API server on the same data folder. The consumers below are written from Frigate's documented
payloads (https://docs.frigate.video/integrations/mqtt): an automation on ``frigate/events`` reads
``after.sub_label[0]`` and ``after.camera``; a face-recognition consumer of Frigate 0.16+ reads
``tracked_object_update`` messages of type ``face``.
"""

from __future__ import annotations

import base64
import json
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from sqlalchemy import func, select

from api_kit import make_keys, serving
from facetrail.api.app import ApiSettings, create_app
from facetrail.config.errors import ConfigError
from facetrail.config.loader import parse_config
from facetrail.gallery.gallery import Gallery, GallerySettings
from facetrail.pipeline.runner import Pipeline
from facetrail.store.models import Event, OutboxMessage
from facetrail.vision.engine import FaceEngine
from facetrail.vision.samples import sample_image
from mqtt_kit import Listener
from pipeline_kit import config_for, enrol, head_and_shoulders, make_clip, walk_in
from services import SECRET_A, SECRET_B, Mosquitto, Receiver, free_port, wait_until

WAIT_S = 180.0  # a loaded machine: generous, never a timing assertion


def frigate_automation(message: dict[str, Any]) -> tuple[str, str] | None:
    """A Frigate automation: on a new or updated event whose sub_label names someone, (name, camera)."""
    if message.get("type") not in ("new", "update"):
        return None
    after = message["after"]
    if after.get("label") not in ("face", "person") or not after.get("sub_label"):
        return None
    return after["sub_label"][0], after["camera"]


def frigate_face_consumer(message: dict[str, Any]) -> tuple[str, str, float] | None:
    """A consumer of Frigate 0.16+ ``tracked_object_update``: (name, camera, score) of a recognised face."""
    if message.get("type") != "face" or not message.get("name"):
        return None
    return message["name"], message["camera"], float(message["score"])


def decoded(jpeg: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a JPEG"
    return image


@pytest.mark.parametrize(("section", "expected"), [
    ("server:\n  public_url: faces.example.org\n", "a public URL starts with http:// or https://"),
    ("mqtt:\n  discovery_prefix: home/#\n", "no +, # or leading/trailing /"),
    ("mqtt:\n  presence_timeout_s: 0\n", "presence_timeout_s"),
    ("webhooks:\n  - name: desk\n    url: https://x/y\n    secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n"
     "    include_snapshot: maybe\n", "include_snapshot"),
])
def test_bad_settings_are_refused_with_what_to_do(section: str, expected: str) -> None:
    minimal = "purpose: tests\ncameras:\n  door:\n    inputs:\n      - path: door.mp4\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(minimal + section, "site.yml")
    assert expected in str(caught.value)


def test_public_url_makes_links_absolute() -> None:
    minimal = "purpose: tests\ncameras:\n  door:\n    inputs:\n      - path: door.mp4\n"
    config = parse_config(minimal + "server:\n  public_url: https://faces.example.org/\n", "site.yml")
    assert config.server.public_url == "https://faces.example.org"
    assert parse_config(minimal, "site.yml").server.public_url is None


@pytest.mark.models
def test_pipeline_messages_are_frigate_shaped_and_carry_the_snapshot(
        tmp_path: Path, video_engine: FaceEngine, broker: Mosquitto) -> None:
    yao = head_and_shoulders(video_engine, sample_image("yaoming.jpg"))
    clip = make_clip(tmp_path / "door.mp4", [walk_in(yao, 0.5, 3.5, 0.4)], 4.5)
    store = tmp_path / "data"
    enrol(store, video_engine, "Yao Ming", sample_image("yaoming.jpg"), watchlist="vip")
    gallery = Gallery(GallerySettings(store))
    keys = make_keys(gallery)
    hooks = Receiver(free_port(), {"/plain": SECRET_A, "/jpeg": SECRET_B}).start()
    try:
        with serving(create_app(ApiSettings(store), gallery=gallery)) as api_url, \
                Listener(broker.port, "facetrail/#", "homeassistant/#") as heard:
            extra = (f"mqtt:\n  enabled: true\n  port: {broker.port}\n  home_assistant: true\n"
                     f"server:\n  public_url: {api_url}/\n"
                     f"webhooks:\n  - name: plain\n    url: {hooks.url('/plain')}\n    secret: {SECRET_A}\n"
                     f"    events: [watchlist_hit]\n"
                     f"  - name: jpeg\n    url: {hooks.url('/jpeg')}\n    secret: {SECRET_B}\n"
                     f"    events: [watchlist_hit]\n    include_snapshot: true\n")
            pipeline = Pipeline(config_for(store, {"door": clip}, extra), engine=video_engine)
            stop = threading.Event()
            runner = threading.Thread(target=pipeline.run, kwargs={"stop": stop, "until_done": False})
            runner.start()
            try:
                def delivered() -> bool:
                    with pipeline.gallery.db.session() as session:
                        waiting = session.scalar(select(func.count()).select_from(OutboxMessage)
                                                 .where(OutboxMessage.delivered_at.is_(None)))
                    return pipeline.done and waiting == 0 and bool(heard.on("facetrail/events"))

                wait_until(delivered, "the clip's messages to be delivered", timeout=WAIT_S)
            finally:
                stop.set()
                runner.join(timeout=120)
            with gallery.db.session() as session:
                rows = {e.uid: (e.id, e.snapshot_jpeg) for e in session.scalars(select(Event))}

            # facetrail/events: Frigate's shape; the automation finds the name and the camera.
            events = [m.json() for m in heard.on("facetrail/events")]
            assert {frigate_automation(m) for m in events if m["type"] != "end"} == {("Yao Ming", "door")}
            new = next(m for m in events if m["type"] == "new")["after"]
            assert (new["kind"], new["label"], new["identity"]["name"], new["watchlist"]) == (
                "watchlist_hit", "face", "Yao Ming", "vip")
            assert new["sub_label"] == ["Yao Ming", new["score"]] and new["top_score"] == new["score"] > 0.3
            assert new["has_snapshot"] is True and new["has_clip"] is False and new["active"] is True
            row_id, snapshot = rows[new["id"]]
            assert snapshot is not None
            frame = decoded(snapshot)
            x1, y1, x2, y2 = new["box"]
            assert 0 <= x1 < x2 <= frame.shape[1] and 0 <= y1 < y2 <= frame.shape[0]
            # One time rule: epoch where Frigate has a time, ISO 8601 with zone beside it.
            started = datetime.fromisoformat(new["start_time_iso"])
            assert started.tzinfo is not None and started.timestamp() == pytest.approx(new["start_time"])
            end = next(m for m in events if m["type"] == "end")["after"]
            assert end["active"] is False
            assert datetime.fromisoformat(end["end_time_iso"]).timestamp() == pytest.approx(end["end_time"])
            # The link is absolute under the public URL and really serves the snapshot.
            assert new["snapshot_url"] == f"{api_url}/api/v1/events/{row_id}/snapshot"
            answer = httpx.get(end["snapshot_url"], headers={"Authorization": f"Bearer {keys['viewer']}"},
                               timeout=60)
            assert answer.status_code == 200 and answer.content == snapshot

            # tracked_object_update: the face message, as Frigate 0.16+ sends it.
            faces = [m.json() for m in heard.on("facetrail/tracked_object_update")]
            recognised = [frigate_face_consumer(f) for f in faces]
            assert faces and {r[:2] for r in recognised if r is not None} == {("Yao Ming", "door")}
            assert all(r is not None and r[2] > 0.3 for r in recognised)
            assert all(f["id"] and f["timestamp"] == pytest.approx(
                datetime.fromisoformat(f["timestamp_iso"]).timestamp()) for f in faces)

            # The snapshot topic holds the JPEG, retained: a newcomer gets it at once.
            with Listener(broker.port, "facetrail/door/yao_ming/snapshot") as newcomer:
                wait_until(lambda: bool(newcomer.on("facetrail/door/yao_ming/snapshot")), "the retained snapshot")
                retained = newcomer.on("facetrail/door/yao_ming/snapshot")[0]
            assert retained.retain and decoded(retained.payload).ndim == 3

            # Home Assistant: the watchlist hit reached the camera's event entity, announced by discovery.
            config = json.loads(heard.last("homeassistant/event/facetrail/door_watchlist_hit/config") or b"{}")
            assert config["state_topic"] == "facetrail/door/watchlist_hit"
            hit = heard.on("facetrail/door/watchlist_hit")[0].json()
            assert hit["event_type"] in config["event_types"] and hit["name"] == "Yao Ming"

        # Webhooks: the same schema; ISO timestamps with zone; the JPEG only for the receiver that asked.
        assert not hooks.problems
        plain = [hit.body for hit in hooks.hits if hit.path == "/plain"]
        jpeg = [hit.body for hit in hooks.hits if hit.path == "/jpeg"]
        assert plain and len(plain) == len(jpeg)
        assert all(datetime.fromisoformat(body["timestamp"]).tzinfo is not None for body in plain + jpeg)
        assert plain[0]["data"]["sub_label"] == ["Yao Ming", plain[0]["data"]["score"]]
        assert all("snapshot_base64" not in body["data"] for body in plain)
        assert {k: v for k, v in jpeg[0]["data"].items() if k != "snapshot_base64"} == plain[0]["data"]
        assert base64.b64decode(jpeg[-1]["data"]["snapshot_base64"]) == snapshot
    finally:
        hooks.stop()
        gallery.close()

"""The API around a running pipeline: dashboard logins, the live event stream, cameras and retention."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from api_kit import Server, make_keys, serving
from facetrail.api.app import PREFIX, ApiSettings, create_app
from facetrail.api.auth import COOKIE
from facetrail.config.schema import FacetrailConfig
from facetrail.gallery.gallery import Gallery, GallerySettings
from facetrail.store.keys import revoke_key
from facetrail.store.models import AuditEntry, Event, Identity, Sighting, utcnow
from facetrail.vision.engine import EngineConfig, FaceEngine
from facetrail.vision.samples import sample_image
from pipeline_kit import config_for, enrol, head_and_shoulders, make_clip, run, walk_in
from services import wait_until

pytestmark = pytest.mark.models


@dataclass
class Live:
    server: Server
    config: FacetrailConfig  # what the pipeline runs: the door camera only
    engine: FaceEngine


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    folder = tmp_path_factory.mktemp("live")
    engine = FaceEngine(EngineConfig())
    yao = head_and_shoulders(engine, sample_image("yaoming.jpg"))
    clip = make_clip(folder / "door.mp4", [walk_in(yao, 0.5, 3.0, 0.4)], 4.0)
    data = folder / "data"
    enrol(data, engine, "Yao Ming", sample_image("yaoming.jpg"), watchlist="vip")
    # The server knows one more camera than the pipeline runs: it must show as not running.
    served = config_for(data, {"door": clip, "lobby": folder / "lobby.mp4"})
    gallery = Gallery(GallerySettings(data), engine=engine)
    keys = make_keys(gallery, ("doomed", "viewer"))
    with serving(create_app(ApiSettings(data, config=served), gallery=gallery)) as url:
        yield Live(Server(url, gallery, keys), config_for(data, {"door": clip}), engine)
    gallery.db.dispose()


def sse_events(url: str, key: str, after: int, received: list[dict[str, Any]], opened: threading.Event) -> None:
    """Read the event stream (resuming after ``after``) until one event arrives."""
    headers = {"Authorization": f"Bearer {key}", "Last-Event-ID": str(after)}
    with httpx.stream("GET", url + PREFIX + "/events/stream", headers=headers, timeout=None) as answer:
        assert answer.headers["content-type"].startswith("text/event-stream")
        opened.set()
        for line in answer.iter_lines():
            if line.startswith("data:"):
                received.append(json.loads(line[5:]))
                return


def test_a_clip_processed_by_a_pipeline_streams_its_alert_and_reports_the_camera(live: Live) -> None:
    received: list[dict[str, Any]] = []
    opened = threading.Event()
    listener = threading.Thread(target=sse_events, args=(live.server.url, live.server.keys["viewer"], 0, received,
                                                         opened), daemon=True)
    listener.start()
    assert opened.wait(30), "the event stream did not open"
    run(live.config, live.engine)
    wait_until(lambda: bool(received), "an event on the live stream")
    alert = received[0]
    assert (alert["kind"], alert["identity_name"], alert["watchlist_name"], alert["camera"]) == (
        "watchlist_hit", "Yao Ming", "vip", "door")
    assert alert["has_snapshot"] and alert["state"] == "pending"
    with live.server.client("viewer") as viewer:
        cameras = {c["name"]: c for c in viewer.get("/cameras").json()}
        frame = viewer.get("/cameras/door/frame")
        photo = viewer.get(f"/identities/{alert['identity_id']}/photo")
        assert viewer.get("/cameras/lobby/frame").status_code == 404
    assert cameras["door"]["state"] == "finished" and cameras["door"]["frames_analysed"] > 0
    assert cameras["door"]["configured"] and cameras["door"]["source"].endswith("door.mp4")
    assert cameras["lobby"]["state"] == "not running" and cameras["lobby"]["reported_at"] is None
    assert frame.headers["content-type"] == "image/jpeg" and frame.content[:2] == b"\xff\xd8"
    assert photo.headers["content-type"] == "image/jpeg" and photo.content[:2] == b"\xff\xd8"


def test_retention_shows_what_is_kept_and_an_admin_purge_deletes_what_is_past_it(live: Live) -> None:
    with live.server.gallery.db.session() as session:
        old = utcnow() - timedelta(days=400)
        identity = session.scalar(select(Identity.id))
        # A sighting and an event of the enrolled person, as a pipeline would have written them long ago.
        sighting = Sighting(track_uid="long-ago", camera="door", identity_id=identity, first_seen=old,
                            last_seen=old, quality=0.9, frames=3)
        session.add(sighting)
        session.flush()
        session.add(Event(uid="long-ago", kind="watchlist_hit", camera="door", sighting_id=sighting.id,
                          identity_id=identity, started_at=old, snapshot_jpeg=b"jpeg"))
        session.execute(update(Sighting).values(first_seen=old, last_seen=old))
        session.execute(update(Event).values(started_at=old))
    with live.server.client("operator") as operator:
        assert operator.get("/retention").status_code == 403
    with live.server.client("admin") as admin:
        before = admin.get("/retention").json()
        purged = admin.post("/retention/purge")
        after = admin.get("/retention").json()
    assert before["source"] == "configuration" and before["events_days"] == 90
    assert before["stored"]["events"] >= 1 and before["stored"]["known_sightings"] >= 1
    assert purged.status_code == 200 and purged.json()["counts"]["events"] == before["stored"]["events"]
    assert after["stored"]["events"] == 0 and after["stored"]["known_sightings"] == 0
    assert after["last_deletion_at"] is not None
    with live.server.gallery.db.session() as session:
        runs = session.scalars(select(AuditEntry).where(AuditEntry.action == "retention.purge")).all()
    assert [(r.actor, r.result_count) for r in runs] == [("admin-key", sum(purged.json()["counts"].values()))]


def test_a_dashboard_session_acts_as_its_key_and_ends_with_it(live: Live) -> None:
    url = live.server.url + PREFIX
    with httpx.Client(base_url=url) as browser:
        refused = browser.post("/session", json={"key": "ft_abc_wrong"})
        assert refused.status_code == 401 and COOKIE not in browser.cookies
        logged = browser.post("/session", json={"key": live.server.keys["viewer"]})
        assert logged.json() == {"name": "viewer-key", "role": "viewer"}
        assert "httponly" in logged.headers["set-cookie"].lower()
        assert "samesite=strict" in logged.headers["set-cookie"].lower()
        assert browser.get("/events").status_code == 200
        assert browser.get("/audit").status_code == 403
        assert browser.delete("/session").status_code == 204
        assert browser.get("/session").status_code == 401
    with httpx.Client(base_url=url) as browser:
        browser.post("/session", json={"key": live.server.keys["operator"]})
        forged = browser.post("/events/1/review", json={"verdict": "dismiss"},
                              headers={"Origin": "http://evil.example"})
        assert forged.status_code == 403 and forged.json()["error"]["code"] == "cross_origin"
    with httpx.Client(base_url=url) as browser:
        browser.post("/session", json={"key": live.server.keys["doomed"]})
        assert browser.get("/session").status_code == 200
        with live.server.gallery.db.session() as session:
            revoke_key(session, "doomed", actor="admin-key")
        assert browser.get("/session").status_code == 401
    with live.server.gallery.db.session() as session:
        actions = [(a.action, a.actor) for a in session.scalars(select(AuditEntry).order_by(AuditEntry.id))]
    assert ("session.login", "viewer-key") in actions and ("session.logout", "viewer-key") in actions


def test_failed_logins_are_rate_limited_per_address(live: Live, tmp_path: Path) -> None:
    app = create_app(ApiSettings(tmp_path, login_attempts=3), gallery=live.server.gallery)
    with serving(app) as url, httpx.Client(base_url=url + PREFIX) as browser:
        for _ in range(3):
            assert browser.post("/session", json={"key": "ft_guess_guess"}).status_code == 401
        blocked = browser.post("/session", json={"key": live.server.keys["viewer"]})
        assert blocked.status_code == 429 and blocked.json()["error"]["details"]["retry_after_s"] > 0
        assert COOKIE not in browser.cookies

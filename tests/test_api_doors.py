"""The door routes over real HTTP: keypads and their key, door states, the decision log, consents and withdrawal.

The person is enrolled from a real photo through the real model; a door decision
awaiting its second factor is put in the log as the door service writes it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import cv2
import httpx
import pytest
from sqlalchemy import func, select

from api_kit import Server, make_keys, serving
from facetrail.api.app import PREFIX, ApiSettings, create_app
from facetrail.config.loader import parse_config
from facetrail.gallery.gallery import Gallery, GallerySettings
from facetrail.gallery.search import match_many
from facetrail.store.models import (
    AuditEntry,
    DoorDecisionRecord,
    DoorStateRecord,
    Event,
    FaceTemplate,
    Identity,
    utcnow,
)
from facetrail.vision.engine import FaceEngine
from facetrail.vision.image import load_image
from facetrail.vision.samples import sample_image
from pipeline_kit import enrol

pytestmark = pytest.mark.models
PIN = "4321"


@dataclass
class Doors:
    server: Server
    person: int  # Yao Ming's identity id


@pytest.fixture(scope="module")
def doors(tmp_path_factory: pytest.TempPathFactory, engine: FaceEngine) -> Iterator[Doors]:
    data = tmp_path_factory.mktemp("doors-api")
    enrol(data, engine, "Yao Ming", sample_image("yaoming.jpg"), watchlist="residents")
    config = parse_config(
        f"purpose: door access tests\ndata_dir: {data}\n"
        f"cameras:\n  entrance:\n    inputs:\n      - path: {data / 'unused.mp4'}\n"
        "doors:\n  front:\n    camera: entrance\n    allow: [residents]\n    second_factor: true\n"
        "    factor_timeout_s: 30\n  side:\n    camera: entrance\n    allow: [residents]\n    second_factor: true\n",
        "doors.yml")
    gallery = Gallery(GallerySettings(data), engine=engine)
    keys = make_keys(gallery, ("keypad", "door"))
    with gallery.db.session() as session:
        person = session.scalar(select(Identity.id).where(Identity.display_name == "Yao Ming"))
    assert person is not None
    with serving(create_app(ApiSettings(data, config=config, factor_attempts=3), gallery=gallery)) as url:
        yield Doors(Server(url, gallery, keys), person)
    gallery.db.dispose()


def pending_decision(doors: Doors, *, seconds_ago: float = 0.0) -> int:
    """A decision at the front door waiting for the person's second factor, with its best shot."""
    ok, snapshot = cv2.imencode(".jpg", load_image(sample_image("yaoming.jpg")))
    assert ok
    row = DoorDecisionRecord(
        door="front", camera="entrance", track_uid="t-1", outcome="pending",
        reason="recognised, live and allowed; awaiting the second factor (PIN or card)", rule="front door rule",
        identity_id=doors.person, score=0.71, matched_shots=3, liveness="live", liveness_reason="blinked",
        blinks=1, depth_residual=0.04, snapshot_jpeg=snapshot.tobytes(),
        decided_at=utcnow() - timedelta(seconds=seconds_ago))
    with doors.server.gallery.db.session() as session:
        session.add(row)
        session.flush()
        return row.id


def keypad(doors: Doors) -> httpx.Client:
    return doors.server.client("keypad")


def test_a_consent_with_a_pin_lets_the_keypad_grant_only_its_own_pending_decision(doors: Doors) -> None:
    with doors.server.client("operator") as operator:
        unknown_door = operator.post(f"/identities/{doors.person}/consents",
                                     json={"door": "back", "method": "signed form 12"})
        assert unknown_door.status_code == 404 and "front" in unknown_door.json()["error"]["message"]
        recorded = operator.post(f"/identities/{doors.person}/consents",
                                 json={"door": "front", "method": "signed form 12", "factor": PIN})
        assert recorded.status_code == 201, recorded.text
        assert recorded.json()["has_second_factor"] and "factor" not in recorded.json()
    stale = pending_decision(doors, seconds_ago=120)  # its 30 s ran out long ago
    waiting = pending_decision(doors)
    with keypad(doors) as pad:
        wrong = pad.post("/doors/front/factor", json={"code": "9999"})
        assert wrong.status_code == 200 and not wrong.json()["granted"]
        right = pad.post("/doors/front/factor", json={"code": PIN})
        assert right.json() == {"granted": True, "decision_id": waiting,
                                "detail": "granted; the door command follows"}
        again = pad.post("/doors/front/factor", json={"code": PIN})  # nothing is waiting any more
        assert not again.json()["granted"]
    with doors.server.client("viewer") as viewer:
        granted = viewer.get(f"/doors/decisions/{waiting}").json()
        assert (granted["outcome"], granted["identity_name"]) == ("grant", "Yao Ming")
        assert granted["reason"] == "recognised, live, allowed and second factor given"
        assert viewer.get(f"/doors/decisions/{stale}").json()["outcome"] == "pending"
        listed = viewer.get("/doors/decisions", params={"outcome": "grant"}).json()["items"]
        assert [d["id"] for d in listed] == [waiting]
        image = viewer.get(f"/doors/decisions/{waiting}/snapshot")
        assert image.headers["content-type"] == "image/jpeg" and image.content[:2] == b"\xff\xd8"
        assert viewer.get("/doors/decisions/999999").status_code == 404
        # The viewer may read the log, not act as a keypad.
        assert viewer.post("/doors/front/factor", json={"code": PIN}).status_code == 403
    with doors.server.gallery.db.session() as session:
        tries = list(session.scalars(select(AuditEntry.result_count).where(AuditEntry.action == "door.factor")
                                     .order_by(AuditEntry.id)))
        stored = session.scalar(select(func.count()).select_from(AuditEntry)
                                .where(AuditEntry.details.contains(PIN)))
    assert tries == [0, 1, 0]
    assert stored == 0, "the PIN itself must never reach the audit log"


def test_wrong_codes_are_limited_per_door_and_a_door_key_does_nothing_else(doors: Doors) -> None:
    with keypad(doors) as pad:
        for _ in range(3):
            assert not pad.post("/doors/side/factor", json={"code": "0000"}).json()["granted"]
        limited = pad.post("/doors/side/factor", json={"code": PIN})
        assert limited.status_code == 429 and "wrong codes at this door" in limited.json()["error"]["message"]
        assert pad.get("/identities").status_code == 403
        assert pad.get("/doors/decisions").status_code == 403
        assert pad.post("/doors/front/factor", json={"code": "0000"}).status_code == 200, "another door's limit"
        assert pad.post("/doors/nowhere/factor", json={"code": PIN}).status_code == 404
    with httpx.Client(base_url=doors.server.url + PREFIX) as browser:
        login = browser.post("/session", json={"key": doors.server.keys["keypad"]})
        assert login.status_code == 401, "a door device's key must not open a dashboard session"
        assert browser.post("/session", json={"key": doors.server.keys["viewer"]}).status_code == 200


def test_a_controller_reports_the_door_state_and_forced_raises_an_event(doors: Doors) -> None:
    with keypad(doors) as pad:
        closed = pad.post("/doors/front/state", json={"state": "Closed"})
        assert closed.status_code == 200 and closed.json()["state"] == "closed"
        forced = pad.post("/doors/front/state", json={"state": "forced"})
        assert forced.json()["source"] == "http"
        assert pad.post("/doors/front/state", json={"state": "forced"}).status_code == 200  # still forced
        bad = pad.post("/doors/front/state", json={"state": "open\n", "command_id": "x/y"})
        assert bad.status_code == 422 and "command_id" in bad.json()["error"]["message"]
        assert pad.post("/doors/nowhere/state", json={"state": "open"}).status_code == 404
    with doors.server.client("viewer") as viewer:
        shown = {d["name"]: d for d in viewer.get("/doors").json()}
    assert (shown["front"]["state"], shown["front"]["camera"], shown["front"]["second_factor"]) == (
        "forced", "entrance", True)
    with doors.server.gallery.db.session() as session:
        raised = session.scalars(select(Event.camera).where(Event.kind == "door_forced")).all()
        kept = session.get(DoorStateRecord, "front")
        assert kept is not None and kept.state == "forced"
    assert raised == ["entrance"], "one event per forced opening, not one per report"


def test_withdrawing_the_last_consent_deletes_the_templates_and_the_gallery_forgets_the_face(
        doors: Doors, engine: FaceEngine) -> None:
    gallery = doors.server.gallery
    faces = engine.analyze(load_image(sample_image("yaoming.jpg")))
    index = faces.primary()
    assert index is not None
    vector = faces.embeddings.vectors[index:index + 1]
    before = match_many(gallery, vector)[0]
    assert before is not None and before.identity_id == doors.person
    with doors.server.client("operator") as operator:
        consents = operator.get(f"/identities/{doors.person}/consents").json()
        everywhere = operator.post(f"/identities/{doors.person}/consents",
                                   json={"door": "*", "method": "spoken, recorded at the desk"}).json()
        first = operator.post(f"/consents/{consents[0]['id']}/withdraw").json()
        assert (first["templates_removed"], first["other_consents"]) == (0, 1)
        assert first["consent"]["withdrawn_by"] == "operator-key"
        last = operator.post(f"/consents/{everywhere['id']}/withdraw").json()
        assert last["templates_removed"] == 1 and last["other_consents"] == 0
        twice = operator.post(f"/consents/{everywhere['id']}/withdraw")
        assert twice.status_code == 400 and "already withdrawn" in twice.json()["error"]["message"]
        assert operator.post("/consents/99999/withdraw").status_code == 404
        person = operator.get(f"/identities/{doors.person}").json()
    assert person["templates"] == 0
    with gallery.db.session() as session:
        assert session.scalar(select(func.count()).select_from(FaceTemplate)) == 0
    after = match_many(gallery, vector)[0]
    assert after is None or after.identity_id != doors.person, "the running gallery still knows the face"

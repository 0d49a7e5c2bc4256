"""Door access through the real pipeline: clips made from real photos, the real models, a real MQTT broker.

The resident's clip is one woman's real photos in sequence (eyes open, winking,
shut, open, head turned): a blink and a head that moves in depth. The printed
photo is a real photo moved in front of the camera as a flat plane.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from facetrail.gallery.gallery import Gallery, GallerySettings
from facetrail.pipeline.runner import Pipeline
from facetrail.store.doors import record_consent
from facetrail.store.models import DoorDecisionRecord, Event, Identity
from facetrail.synth import door_clips
from facetrail.synth.door_clips import EYES, FPS, RESIDENT_PHOTOS, head_and_shoulders
from facetrail.vision.engine import EngineConfig, FaceEngine
from facetrail.vision.image import BGRImage
from pipeline_kit import config_for, enrol
from services import MOSQUITTO, Mosquitto, Subscriber, free_port, wait_until

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def door_engine() -> FaceEngine:
    return FaceEngine(EngineConfig())


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    if not os.path.exists(MOSQUITTO):
        pytest.skip("mosquitto is not installed (.ci/run installs it)")
    server = Mosquitto(tmp_path_factory.mktemp("door-broker"), free_port())
    server.start()
    yield server
    server.stop()


def photo(data_dir: Path, relative: str) -> Path:
    path = data_dir / relative
    if not path.is_file():
        pytest.skip(f"test photo {path} is absent")
    return path


def resident_clip(engine: FaceEngine, data_dir: Path, path: Path, *, stranger: BGRImage | None = None) -> Path:
    """The resident blinking and turning her head in front of the door (optionally a stranger beside her)."""
    for relative in RESIDENT_PHOTOS:
        photo(data_dir, relative)
    return door_clips.resident_clip(engine, data_dir, path, stranger=stranger)


def printed_photo_clip(data_dir: Path, path: Path) -> Path:
    """A real photo held up and tilted in front of the camera: 30 frames of a plane moving."""
    return door_clips.printed_photo_clip(photo(data_dir, "faces/obama/obama.jpg"), path)


def door_config(port: int, extra: str = "") -> str:
    """The front door on camera 'entrance', residents allowed, commands over MQTT on ``port``."""
    return (f"mqtt:\n  enabled: false\n  host: 127.0.0.1\n  port: {port}\n"
            "doors:\n  front:\n    camera: entrance\n    allow: [residents]\n"
            f"    command:\n      deadline_s: 1.5\n{extra}")


def run_door(data: Path, clip: Path, engine: FaceEngine, port: int, extra: str = "") -> list[DoorDecisionRecord]:
    config = config_for(data, {"entrance": clip}, extra=door_config(port, extra))
    config.cameras["entrance"].detect = dataclasses.replace(config.cameras["entrance"].detect, fps=FPS)
    Pipeline(config, engine=engine, actor="tester").run(until_done=True)
    gallery = Gallery(GallerySettings(data), engine=engine)
    try:
        with gallery.db.session() as session:
            rows = list(session.scalars(select(DoorDecisionRecord).order_by(DoorDecisionRecord.id)))
            session.expunge_all()
        return rows
    finally:
        gallery.close()


def enrol_resident(data: Path, engine: FaceEngine, data_dir: Path, *, consent: bool = True,
                   source: str = f"{EYES}/open_eyes.png", name: str = "Resident") -> None:
    enrol(data, engine, name, photo(data_dir, source), watchlist="residents")
    if consent:
        gallery = Gallery(GallerySettings(data), engine=engine)
        with gallery.db.session() as session:
            identity = session.scalar(select(Identity.id).where(Identity.display_name == name))
            assert identity is not None
            record_consent(session, identity, "front", method="signed form 17", actor="tester")
        gallery.close()


def test_a_live_resident_is_let_in_and_the_command_reaches_the_controller(
        tmp_path: Path, door_engine: FaceEngine, data_dir: Path, broker: Mosquitto) -> None:
    clip = resident_clip(door_engine, data_dir, tmp_path / "resident.mp4")
    enrol_resident(tmp_path / "data", door_engine, data_dir)
    controller = Subscriber(broker.port, "facetrail/doors/#").connect()
    try:
        rows = run_door(tmp_path / "data", clip, door_engine, broker.port,
                        extra="    liveness:\n      require_blink: true\n")
        wait_until(lambda: bool(controller.payloads("facetrail/doors/front/command")), "the door command")
        command = json.loads(controller.payloads("facetrail/doors/front/command")[0])
    finally:
        controller.close()
    assert [(r.outcome, r.reason) for r in rows] == [("grant", "recognised, live and allowed")]
    grant = rows[0]
    assert grant.liveness == "live" and (grant.blinks or 0) >= 1 and grant.matched_shots >= 3
    assert grant.command == "delivered" and grant.command_attempts >= 1 and grant.snapshot_jpeg
    assert "allow residents" in grant.rule
    assert command["action"] == "open" and command["door"] == "front" and command["reason"] == f"decision {grant.id}"


def test_without_consent_or_enrolment_the_door_stays_shut(tmp_path: Path, door_engine: FaceEngine,
                                                            data_dir: Path, broker: Mosquitto) -> None:
    clip = resident_clip(door_engine, data_dir, tmp_path / "resident.mp4")
    enrol_resident(tmp_path / "no-consent", door_engine, data_dir, consent=False)
    refused = run_door(tmp_path / "no-consent", clip, door_engine, broker.port)
    assert [r.outcome for r in refused] == ["deny"] and "not allowed" in refused[0].reason
    assert refused[0].command is None
    # Someone else is enrolled; the woman at the door is not.
    enrol_resident(tmp_path / "stranger", door_engine, data_dir, source="faces/biden/biden.jpg", name="Joe")
    unknown = run_door(tmp_path / "stranger", clip, door_engine, broker.port)
    assert [r.outcome for r in unknown] == ["deny"] and unknown[0].reason.startswith("not recognised")
    assert unknown[0].identity_id is None


def test_a_printed_photo_moved_in_front_of_the_camera_is_denied(tmp_path: Path, door_engine: FaceEngine,
                                                                 data_dir: Path, broker: Mosquitto) -> None:
    clip = printed_photo_clip(data_dir, tmp_path / "printed.mp4")
    data = tmp_path / "data"
    enrol_resident(data, door_engine, data_dir, source="faces/obama/obama.jpg", name="Barack")
    rows = run_door(data, clip, door_engine, broker.port)
    assert [r.outcome for r in rows] == ["deny"], [(r.outcome, r.reason) for r in rows]
    assert rows[0].liveness == "spoof" and rows[0].reason.startswith("liveness failed")
    assert rows[0].identity_id is not None, "recognised as the resident, and still refused"


def test_a_stranger_beside_the_resident_is_tailgating(tmp_path: Path, door_engine: FaceEngine, data_dir: Path,
                                                      broker: Mosquitto) -> None:
    stranger = head_and_shoulders(door_engine, photo(data_dir, "faces/biden/biden.jpg"))
    clip = resident_clip(door_engine, data_dir, tmp_path / "two.mp4", stranger=stranger)
    data = tmp_path / "data"
    enrol_resident(data, door_engine, data_dir)
    rows = run_door(data, clip, door_engine, broker.port, extra="    tailgating: event\n")
    resident = [r for r in rows if r.identity_id is not None]
    assert [r.outcome for r in resident] == ["deny"] and resident[0].tailgating
    assert resident[0].reason.startswith("tailgating: 1 other person")
    gallery = Gallery(GallerySettings(data), engine=door_engine)
    with gallery.db.session() as session:
        kinds = list(session.scalars(select(Event.kind)))
    gallery.close()
    assert "tailgating" in kinds, "the rule raised an event for review"


def test_a_command_to_a_broker_that_is_down_is_retried_and_reported(tmp_path: Path, door_engine: FaceEngine,
                                                                    data_dir: Path) -> None:
    clip = resident_clip(door_engine, data_dir, tmp_path / "resident.mp4")
    data = tmp_path / "data"
    enrol_resident(data, door_engine, data_dir)
    rows = run_door(data, clip, door_engine, free_port())  # nothing listens there
    assert [r.outcome for r in rows] == ["grant"]
    assert rows[0].command == "failed" and rows[0].command_error
    assert "127.0.0.1" in rows[0].command_error
    gallery = Gallery(GallerySettings(data), engine=door_engine)
    with gallery.db.session() as session:
        raised = session.execute(select(Event.kind, Event.identity_id, Event.snapshot_jpeg)
                                 .where(Event.kind != "watchlist_hit")).all()
    gallery.close()
    assert [(kind, who) for kind, who, _ in raised] == [("door_command_failed", rows[0].identity_id)]
    assert raised[0][2], "the event carries the best shot, for the person who reviews it"



def test_door_decisions_follow_retention_and_a_forgotten_person_leaves_none(tmp_path: Path,
                                                                             door_engine: FaceEngine,
                                                                             data_dir: Path) -> None:
    from datetime import timedelta

    from facetrail.gallery.people import forget
    from facetrail.store.models import DoorConsent, utcnow
    from facetrail.store.retention import RetentionPolicy, purge_data

    data = tmp_path / "data"
    enrol_resident(data, door_engine, data_dir)
    gallery = Gallery(GallerySettings(data), engine=door_engine)
    try:
        with gallery.db.session() as session:
            identity = session.scalar(select(Identity.id))
            for days, uid in ((1, "fresh"), (10, "week-old"), (120, "old")):
                session.add(DoorDecisionRecord(door="front", camera="entrance", track_uid=uid, outcome="grant",
                                               reason="test", rule="test", identity_id=identity,
                                               decided_at=utcnow() - timedelta(days=days), snapshot_jpeg=b"jpeg"))
        with gallery.db.session() as session:
            report = purge_data(session, RetentionPolicy(events_days=90, thumbnails_days=7))
        assert report.counts["door_decisions"] == 1 and report.counts["door_snapshots"] == 1
        with gallery.db.session() as session:
            kept = session.scalars(select(DoorDecisionRecord).order_by(DoorDecisionRecord.id)).all()
            assert [(r.track_uid, r.snapshot_jpeg) for r in kept] == [("fresh", b"jpeg"), ("week-old", None)]
        forget(gallery, str(identity), actor="dpo", reason="moved out")
        with gallery.db.session() as session:
            assert session.scalars(select(DoorDecisionRecord)).all() == []
            assert session.scalars(select(DoorConsent)).all() == []
    finally:
        gallery.close()


def test_a_second_factor_grants_only_the_pending_decision_it_belongs_to(tmp_path: Path, db_url: str) -> None:
    from datetime import timedelta

    from facetrail.store.db import Database
    from facetrail.store.doors import present_factor
    from facetrail.store.models import AuditEntry, DoorConsent, utcnow

    db = Database(db_url)
    with db.session() as session:
        ana, ben = Identity(display_name="Ana", created_by="t"), Identity(display_name="Ben", created_by="t")
        session.add_all([ana, ben])
        session.flush()
        record_consent(session, ana.id, "front", method="signed form", actor="desk", factor="4711")
        record_consent(session, ben.id, "*", method="signed form", actor="desk", factor="9999")
        for who, seconds in ((ana.id, 5), (ben.id, 120)):
            session.add(DoorDecisionRecord(door="front", camera="entrance", track_uid=f"t{who}", outcome="pending",
                                           reason="awaiting", rule="r", identity_id=who,
                                           decided_at=utcnow() - timedelta(seconds=seconds)))
        ana_id, ben_id = ana.id, ben.id
    with db.session() as session:
        hashes = list(session.scalars(select(DoorConsent.factor_hash)))
        assert all(h and "4711" not in h and "9999" not in h for h in hashes), "factors are stored hashed"
        assert present_factor(session, "front", "0000", timeout=timedelta(seconds=30), actor="keypad") is None
        assert present_factor(session, "front", "9999", timeout=timedelta(seconds=30), actor="keypad") is None, \
            "Ben's pending decision is past the time-out"
        granted = present_factor(session, "front", "4711", timeout=timedelta(seconds=30), actor="keypad")
        assert granted is not None and granted.identity_id == ana_id and granted.outcome == "grant"
    with db.session() as session:
        outcomes = dict(session.execute(select(DoorDecisionRecord.identity_id, DoorDecisionRecord.outcome)).all())
        assert outcomes == {ana_id: "grant", ben_id: "pending"}
        factors = session.scalars(select(AuditEntry.result_count).where(AuditEntry.action == "door.factor")).all()
        assert list(factors) == [0, 0, 1], "every presented factor is audited, failed ones too"
    db.dispose()


def test_an_empty_gallery_denies_and_a_few_poor_shots_do_not_deny_a_resident() -> None:
    from datetime import timedelta

    from facetrail.door.decision import DoorDecider, DoorRule
    from facetrail.door.decision import Shot as DoorShot
    from facetrail.store.models import utcnow

    start = utcnow()
    rule = DoorRule(door="front", camera="entrance", allowed=frozenset({1}), threshold=0.4, consecutive=3)

    def shot(k: int, identity: int | None, score: float) -> DoorShot:
        return DoorShot(7, start + timedelta(seconds=k / 10), 150.0, 0.9, 0.0, True, identity, score)

    empty = DoorDecider(rule)  # nobody enrolled: every shot is embedded and matches nobody
    decided = [d for k in range(3) for d in empty.observe(start + timedelta(seconds=k / 10), [shot(k, None, -1.0)])]
    assert [(d.outcome, d.reason.startswith("not recognised")) for d in decided] == [("deny", True)]

    resident = DoorDecider(rule)  # two weak shots (turning towards the door), then matching ones
    scores = [(1, 0.2), (None, -1.0), (1, 0.8), (1, 0.2), (1, 0.8), (1, 0.85), (1, 0.9)]
    decided = [d for k, (who, score) in enumerate(scores)
               for d in resident.observe(start + timedelta(seconds=k / 10), [shot(k, who, score)])]
    assert decided == [], "neither denied for a few weak shots nor granted without liveness"

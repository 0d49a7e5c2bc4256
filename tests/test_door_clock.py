"""The door service's time-outs on a clock the test sets: no waiting, nothing that depends on the machine's speed.

A pending decision is denied when its second factor's time is up, and the list of who may pass is read again
when its refresh interval has passed, both measured by the clock handed to ``DoorService``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from facetrail.clock import ManualClock
from facetrail.gallery.gallery import Gallery, GallerySettings
from facetrail.gallery.watchlists import add_member, create_watchlist
from facetrail.pipeline.analyzer import FrameAnalyzer
from facetrail.pipeline.doors import ALLOWED_REFRESH_S, DoorService
from facetrail.pipeline.matcher import GalleryMatcher
from facetrail.store.doors import record_consent
from facetrail.store.models import DoorDecisionRecord, Identity
from facetrail.vision.engine import FaceEngine
from pipeline_kit import config_for

pytestmark = pytest.mark.models
TIMEOUT_S = 30


@pytest.fixture
def door(tmp_path: Path, engine: FaceEngine) -> Iterator[tuple[DoorService, Gallery, ManualClock]]:
    """The front door (residents, PIN within TIMEOUT_S) of a real SQLite store, on a manual clock."""
    data = tmp_path / "data"
    config = config_for(data, {"entrance": tmp_path / "entrance.mp4"}, extra=(
        "mqtt:\n  enabled: false\n"
        "doors:\n  front:\n    camera: entrance\n    allow: [residents]\n    second_factor: true\n"
        f"    factor_timeout_s: {TIMEOUT_S}\n    command:\n      mqtt: false\n"))
    gallery = Gallery(GallerySettings(data), engine=engine)
    clock = ManualClock()
    service = DoorService(config, gallery.db, GalleryMatcher(gallery, default_threshold=engine.threshold),
                          FrameAnalyzer(engine), default_threshold=engine.threshold, clock=clock)
    try:
        yield service, gallery, clock
    finally:
        service.stop()
        gallery.close()


def test_a_pending_decision_is_denied_when_the_clock_passes_its_factor_time_out(
        door: tuple[DoorService, Gallery, ManualClock]) -> None:
    service, gallery, clock = door
    with gallery.db.session() as session:
        session.add(DoorDecisionRecord(door="front", camera="entrance", track_uid="t1", outcome="pending",
                                       reason="awaiting the second factor", rule="r", decided_at=clock.now()))

    def outcome() -> tuple[str, str]:
        with gallery.db.session() as session:
            row = session.scalars(select(DoorDecisionRecord)).one()
            return row.outcome, row.reason

    clock.advance(TIMEOUT_S - 1)
    service.housekeeping()
    assert outcome() == ("pending", "awaiting the second factor")
    clock.advance(2)
    service.housekeeping()
    assert outcome() == ("deny", f"no second factor within {TIMEOUT_S} s")


def test_who_may_pass_is_read_again_once_the_refresh_interval_has_passed(
        door: tuple[DoorService, Gallery, ManualClock]) -> None:
    service, gallery, clock = door
    service.refresh_allowed()
    decider = service.doors["front"].decider
    assert decider.rule.allowed == frozenset()
    create_watchlist(gallery, "residents", purpose="tests", actor="tester")
    with gallery.db.session() as session:
        resident = Identity(display_name="Resident", created_by="tester")
        session.add(resident)
        session.flush()
        record_consent(session, resident.id, "front", method="signed form", actor="desk", factor="2468")
        resident_id = resident.id
    add_member(gallery, "residents", "Resident", actor="tester")

    clock.advance(ALLOWED_REFRESH_S - 0.5)
    service.housekeeping()
    assert decider.rule.allowed == frozenset(), "read again before its interval"
    clock.advance(1.0)
    service.housekeeping()
    assert decider.rule.allowed == frozenset({resident_id})


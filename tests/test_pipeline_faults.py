"""Fault isolation: a consumer that raises on one camera stops nothing else, shows in that camera's status,
and the camera recovers when the fault stops. Real faces in generated clips, the real pipeline, a real SQLite file.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from api_kit import make_keys, serving
from facetrail.api.app import PREFIX, ApiSettings, create_app
from facetrail.gallery.gallery import Gallery, GallerySettings
from facetrail.pipeline.batch import FrameBatch
from facetrail.pipeline.consumers import Sightings
from facetrail.pipeline.health import FAILING_AFTER
from facetrail.pipeline.runner import Pipeline
from facetrail.store.models import CameraState, Event, Sighting, as_utc
from facetrail.vision.engine import EngineConfig, FaceEngine
from facetrail.vision.samples import sample_image
from pipeline_kit import config_for, enrol, head_and_shoulders, make_clip, walk_in

pytestmark = pytest.mark.models
FAULT_FOR = timedelta(seconds=4.5)  # of clip time, from the faulty camera's first frame


def rows(data: Path, model: type, camera: str) -> list:  # type: ignore[type-arg]
    gallery = Gallery(GallerySettings(data))
    try:
        with gallery.db.session() as session:
            return list(session.scalars(select(model).where(model.camera == camera)))  # type: ignore[attr-defined]
    finally:
        gallery.db.dispose()


@contextmanager
def shown_cameras(data: Path) -> Iterator[dict[str, dict[str, Any]]]:
    """GET /api/v1/cameras as a viewer, from a real server over the run's data folder."""
    app = create_app(ApiSettings(data_dir=data))
    keys = make_keys(app.state.gallery)
    try:
        with serving(app) as url:
            answer = httpx.get(f"{url}{PREFIX}/cameras", headers={"Authorization": f"Bearer {keys['viewer']}"},
                               timeout=60)
            assert answer.status_code == 200, answer.text
            yield {camera["name"]: camera for camera in answer.json()}
    finally:
        app.state.gallery.close()


def test_a_consumer_failing_on_one_camera_leaves_the_other_intact_and_recovers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    engine = FaceEngine(EngineConfig())
    yao = head_and_shoulders(engine, sample_image("yaoming.jpg"))
    # Yao comes twice to each camera: once while camera a's sightings consumer fails, once after.
    visits = [walk_in(yao, 0.3, 3.0, 0.4), walk_in(yao, 6.0, 8.8, 0.4)]
    clips = {name: make_clip(tmp_path / f"{name}.mp4", visits, 9.0) for name in ("a", "b")}
    data = tmp_path / "data"
    enrol(data, engine, "Yao Ming", sample_image("yaoming.jpg"), watchlist="vip")

    first_frame: dict[str, datetime] = {}
    original = Sightings.on_frame

    def faulty(self: Sightings, batch: FrameBatch) -> None:
        start = first_frame.setdefault(batch.camera, batch.captured_at)
        if batch.camera == "a" and batch.captured_at - start < FAULT_FOR:
            raise RuntimeError("injected fault in the sightings consumer")
        original(self, batch)

    monkeypatch.setattr(Sightings, "on_frame", faulty)
    pipeline = Pipeline(config_for(data, clips), engine=engine, actor="tester")
    failing_seen: list[str | None] = []
    caplog.set_level(logging.WARNING, logger="facetrail.pipeline.health")
    pipeline.start()
    try:
        while not pipeline.done:
            pipeline.step()
            if not failing_seen and pipeline.health.cameras["a"].failing:
                pipeline.report_cameras()  # what the dashboard and the API read
                failing_seen += [state.failing for state in rows(data, CameraState, "a")]
    finally:
        pipeline.stop()

    # Camera b: both visits stored and alerted, as if nothing happened next door.
    b_alerts = [e for e in rows(data, Event, "b") if e.kind == "watchlist_hit"]
    b_named = [s for s in rows(data, Sighting, "b") if s.identity_id is not None]
    assert len(b_alerts) == 2 and len(b_named) == 2, (b_alerts, b_named)
    # Camera a: the first visit fell in the fault, the second was stored and alerted after it stopped.
    a_alerts = [e for e in rows(data, Event, "a") if e.kind == "watchlist_hit"]
    a_named = [s for s in rows(data, Sighting, "a") if s.identity_id is not None]
    assert len(a_alerts) == 1 and len(a_named) == 1, (a_alerts, a_named)
    assert as_utc(a_named[0].first_seen) - first_frame["a"] > FAULT_FOR
    # While it failed, a's status said so; at the end the fault is counted but no part is failing.
    assert failing_seen == ["sightings"]
    [state] = rows(data, CameraState, "a")
    assert state.faults >= FAILING_AFTER and state.failing is None
    assert state.last_fault == "sightings: RuntimeError: injected fault in the sightings consumer"
    [other] = rows(data, CameraState, "b")
    assert other.faults == 0 and other.last_fault is None
    with shown_cameras(data) as cameras:  # the API (and the dashboard's Cameras page) show it
        assert cameras["a"]["faults"] == state.faults and cameras["a"]["failing"] == []
        assert cameras["a"]["last_fault"] == state.last_fault and cameras["b"]["faults"] == 0
    logged = [r.getMessage() for r in caplog.records]
    assert any("camera a, sightings failed" in message for message in logged), logged
    assert not any("camera b" in message for message in logged), logged

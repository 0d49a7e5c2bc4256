"""Event clips: the real pipeline records an MP4 around a watchlist hit, the API serves it, retention and forget
delete it. Real faces in a generated camera clip, a real SQLite file, PyAV to decode, HTTP against uvicorn."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import av
import httpx
import pytest
from sqlalchemy import select

from api_kit import make_keys, serving
from facetrail.api.app import ApiSettings, create_app
from facetrail.gallery.gallery import Gallery, GallerySettings
from facetrail.gallery.people import forget
from facetrail.gallery.retention import apply_retention
from facetrail.pipeline.runner import Pipeline
from facetrail.store.media import ClipFiles
from facetrail.store.models import Event, OutboxMessage
from facetrail.store.retention import RetentionPolicy
from facetrail.vision.engine import EngineConfig, FaceEngine
from facetrail.vision.samples import sample_image
from pipeline_kit import config_for, enrol, head_and_shoulders, make_clip, walk_in
from services import free_port

pytestmark = pytest.mark.models

START = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
PRE_S, POST_S = 2.0, 2.0
CLIPS = f"clips:\n  enabled: true\n  pre_s: {PRE_S}\n  post_s: {POST_S}\n"


def hook(port: int) -> str:
    """A webhook nobody answers: its messages stay in the outbox, where the test reads them."""
    return (f"webhooks:\n  - name: hook\n    url: http://127.0.0.1:{port}/hook\n"
            "    secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder after a run with clips on: Yao Ming (on watchlist 'vip') walks in at 2 s of a 9 s clip."""
    folder = tmp_path_factory.mktemp("clips")
    engine = FaceEngine(EngineConfig())
    yao = head_and_shoulders(engine, sample_image("yaoming.jpg"))
    clip = make_clip(folder / "door.mp4", [walk_in(yao, 2.0, 7.0, 0.4)], 9.0)
    data = folder / "data"
    enrol(data, engine, "Yao Ming", sample_image("yaoming.jpg"), watchlist="vip")
    pipeline = Pipeline(config_for(data, {"door": clip}, CLIPS + hook(free_port())), engine=engine,
                        start_time=START)
    pipeline.run(until_done=True)
    assert pipeline.clips is not None and pipeline.clips.written == 1
    return data


@pytest.fixture
def data(recorded: Path, tmp_path: Path) -> Path:
    """A copy of the recorded data folder, so each test changes its own."""
    return Path(shutil.copytree(recorded, tmp_path / "data"))


def the_event(data: Path) -> Event:
    gallery = Gallery(GallerySettings(data))
    try:
        with gallery.db.session() as session:
            events = list(session.scalars(select(Event)))
            assert [e.kind for e in events] == ["watchlist_hit"]
            session.expunge_all()
            return events[0]
    finally:
        gallery.db.dispose()


def test_a_watchlist_hit_gets_an_h264_clip_from_before_to_after_it(data: Path) -> None:
    event = the_event(data)
    path = ClipFiles(data).path(event.id)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        starts = datetime.fromisoformat(container.metadata["comment"].removeprefix("starts "))
        times = [float(frame.time) for frame in container.decode(video=0) if frame.time is not None]
    happened = event.started_at.replace(tzinfo=UTC)
    moments = [starts + timedelta(seconds=t) for t in times]
    before = [m for m in moments if m < happened]
    after = [m for m in moments if m > happened]
    assert before and after, (happened, moments)
    # The clip covers the whole window: pre_s before the event to post_s after it.
    assert abs((happened - moments[0]).total_seconds() - PRE_S) < 0.01
    assert abs((moments[-1] - happened).total_seconds() - POST_S) < 0.01
    assert len(after) >= 2  # analysed frames of the person walking in (the motion gate skips some)


def test_receivers_hear_that_the_event_has_a_clip_and_later_messages_keep_it(data: Path) -> None:
    event = the_event(data)
    gallery = Gallery(GallerySettings(data))
    try:
        with gallery.db.session() as session:
            rows = session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))
            sent = [json.loads(row.payload) for row in rows]
    finally:
        gallery.db.dispose()
    mine = [message for message in sent if message["data"]["id"] == event.uid]
    types, has_clip = [m["type"] for m in mine], [m["data"]["has_clip"] for m in mine]
    # The clip is announced once written (post_s after the start, encoded on a writer thread), which may come
    # before or after the event's end: one update says so, and every message after it keeps it.
    assert sorted(types) == ["watchlist_hit.end", "watchlist_hit.new", "watchlist_hit.update"], types
    assert types[0] == "watchlist_hit.new"
    announced = types.index("watchlist_hit.update")
    assert has_clip == [False] * announced + [True] * (len(mine) - announced), (types, has_clip)


def test_the_api_serves_the_clip_to_viewers_with_range_requests(data: Path) -> None:
    event = the_event(data)
    gallery = Gallery(GallerySettings(data))
    keys = make_keys(gallery)
    app = create_app(ApiSettings(data), gallery=gallery)
    size = ClipFiles(data).path(event.id).stat().st_size
    try:
        with serving(app) as url:
            headers = {"Authorization": f"Bearer {keys['viewer']}"}
            with httpx.Client(base_url=url + "/api/v1", headers=headers, timeout=60) as client:
                whole = client.get(f"/events/{event.id}/clip")
                assert whole.status_code == 200 and whole.headers["content-type"] == "video/mp4"
                assert len(whole.content) == size and whole.content[4:8] == b"ftyp"
                part = client.get(f"/events/{event.id}/clip", headers={"Range": "bytes=100-199"})
                assert part.status_code == 206 and part.content == whole.content[100:200]
                listed = client.get("/events").json()["items"]
                assert [(e["id"], e["has_clip"]) for e in listed] == [(event.id, True)]
                missing = client.get(f"/events/{event.id + 1}/clip")
                assert missing.status_code == 404
            assert httpx.get(f"{url}/api/v1/events/{event.id}/clip").status_code == 401
    finally:
        gallery.close()


def test_retention_deletes_the_clip_with_the_snapshot_and_clips_of_deleted_events(data: Path) -> None:
    event = the_event(data)
    clips = ClipFiles(data)
    orphan = clips.path(event.id + 100)
    shutil.copy(clips.path(event.id), orphan)  # a clip whose event is gone
    gallery = Gallery(GallerySettings(data))
    try:
        kept = apply_retention(gallery, RetentionPolicy(), now=START + timedelta(hours=1))
        assert kept.counts.get("clips") == 1 and clips.event_ids() == [event.id]  # the orphan went, the clip stays
        gone = apply_retention(gallery, RetentionPolicy(thumbnails_days=1, events_days=30),
                               now=START + timedelta(days=2))
        assert gone.counts.get("clips") == 1 and clips.event_ids() == []
        with gallery.db.session() as session:
            assert session.get(Event, event.id) is not None  # the event itself is kept longer
    finally:
        gallery.close()


def test_forgetting_the_person_deletes_their_event_clips(data: Path) -> None:
    event = the_event(data)
    gallery = Gallery(GallerySettings(data))
    try:
        assert ClipFiles(data).exists(event.id)
        forget(gallery, "Yao Ming", actor="tester", reason="deletion request")
        assert not ClipFiles(data).exists(event.id)
    finally:
        gallery.close()

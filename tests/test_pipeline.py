"""The video pipeline end to end: real faces in generated clips and in street.mp4, a real SQLite file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest
from sqlalchemy import Select, select

from facetrail.gallery.gallery import Gallery, GallerySettings
from facetrail.gallery.history import search_history, timeline
from facetrail.store.audit import verify_chain
from facetrail.store.models import AuditEntry, Event, OutboxMessage, Sighting, Visitor
from facetrail.vision.engine import FaceEngine
from facetrail.vision.image import BGRImage
from facetrail.vision.samples import sample_image
from pipeline_kit import config_for, enrol, head_and_shoulders, make_clip, run, walk_in

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def people(data_dir: Path, video_engine: FaceEngine) -> dict[str, BGRImage]:
    """Head-and-shoulders cut-outs of real people."""
    return {
        "yao": head_and_shoulders(video_engine, sample_image("yaoming.jpg")),
        "biden": head_and_shoulders(video_engine, data_dir / "faces" / "biden" / "biden.jpg"),
        "kit": head_and_shoulders(video_engine, data_dir / "faces" / "kit_harington" / "john1.jpeg"),
        "rudd": head_and_shoulders(video_engine, data_dir / "faces" / "paul_rudd" / "1.jpg"),
    }


def stored(data_dir: Path, query: Select[Any]) -> list[Any]:
    """Rows of a finished run, read from its database."""
    gallery = Gallery(GallerySettings(data_dir))
    try:
        with gallery.db.session() as session:
            return list(session.scalars(query))
    finally:
        gallery.db.dispose()


def sightings(data_dir: Path) -> list[Sighting]:
    return stored(data_dir, select(Sighting).order_by(Sighting.first_seen, Sighting.id))


def events(data_dir: Path) -> list[Event]:
    return stored(data_dir, select(Event).order_by(Event.started_at, Event.id))


def test_watchlist_person_alerted_once_per_appearance_and_nobody_else(
        tmp_path: Path, video_engine: FaceEngine, people: dict[str, BGRImage], data_dir: Path) -> None:
    clip = make_clip(tmp_path / "door.mp4", [
        walk_in(people["yao"], 0.5, 3.0, 0.3),
        walk_in(people["biden"], 0.0, 9.5, 0.75),
        walk_in(people["kit"], 2.0, 9.0, 0.5, scale=0.45),
        walk_in(people["yao"], 7.0, 9.5, 0.3),  # back after 4 s away: a second appearance
    ], 10.0)
    store = tmp_path / "data"
    enrol(store, video_engine, "Yao Ming", sample_image("yaoming.jpg"), watchlist="vip")
    enrol(store, video_engine, "Kit Harington", data_dir / "faces" / "kit_harington" / "test1.jpg")
    stats, _ = run(config_for(store, {"door": clip}), video_engine)

    alerts = [e for e in events(store) if e.kind == "watchlist_hit"]
    assert len(alerts) == 2, [(e.started_at, e.identity_id) for e in alerts]
    yao = timeline(Gallery(GallerySettings(store)), "Yao Ming", purpose="test", actor="tester")
    assert len(yao) == 2 and all(s.watchlist_hit for s in yao)
    assert {a.sighting_id for a in alerts} == {s.id for s in yao}
    assert yao[0].last_seen < yao[1].first_seen
    # Kit is enrolled but on no watchlist: named, never alerted; Biden is unknown.
    rows = sightings(store)
    kit = [s for s in rows if s.identity_id is not None and s.id not in {y.id for y in yao}]
    assert len(kit) == 1 and not kit[0].watchlist_hit
    unknown = [s for s in rows if s.identity_id is None]
    assert unknown and all(s.visitor_id is not None for s in unknown)
    assert stats.embedded < stats.faces / 3  # faces are not embedded on every frame
    for alert in alerts:
        assert alert.state == "pending" and alert.snapshot_jpeg and alert.snapshot_jpeg[:2] == b"\xff\xd8"


def test_two_cameras_give_one_timeline_in_order(tmp_path: Path, video_engine: FaceEngine,
                                                people: dict[str, BGRImage]) -> None:
    # The same moment for both cameras: entrance sees him first, the lobby 4 s later.
    entrance = make_clip(tmp_path / "entrance.mp4", [walk_in(people["yao"], 0.5, 3.0, 0.4)], 8.0)
    lobby = make_clip(tmp_path / "lobby.mp4", [walk_in(people["yao"], 4.5, 7.5, 0.6),
                                               walk_in(people["rudd"], 0.0, 7.5, 0.2)], 8.0, seed=1)
    store = tmp_path / "data"
    enrol(store, video_engine, "Yao Ming", sample_image("yaoming.jpg"))
    config = config_for(store, {"entrance": entrance, "lobby": lobby})
    from datetime import UTC, datetime

    from facetrail.pipeline.runner import Pipeline

    pipeline = Pipeline(config, engine=video_engine, start_time=datetime(2026, 5, 1, 9, 0, tzinfo=UTC))
    stats = pipeline.run(until_done=True)
    assert stats.per_camera_frames.keys() == {"entrance", "lobby"}
    rows = timeline(Gallery(GallerySettings(store)), "Yao Ming", purpose="test", actor="tester")
    assert [r.camera for r in rows] == ["entrance", "lobby"]
    assert rows[0].last_seen < rows[1].first_seen
    assert rows[0].first_seen >= datetime(2026, 5, 1, 9, 0, tzinfo=UTC)


def test_a_dark_clip_still_names_the_person_with_low_light_enhancement(
        tmp_path: Path, video_engine: FaceEngine, people: dict[str, BGRImage]) -> None:
    clip = make_clip(tmp_path / "night.mp4", [walk_in(people["yao"], 0.0, 5.0, 0.5)], 5.0, darken=lambda t: 0.12)
    with av.open(str(clip)) as container:
        frame = next(container.decode(video=0)).to_ndarray(format="bgr24")
    assert float(frame.mean()) < 30  # really dark
    store = tmp_path / "data"
    enrol(store, video_engine, "Yao Ming", sample_image("yaoming.jpg"), watchlist="night")
    run(config_for(store, {"yard": clip}), video_engine)
    named = [s for s in sightings(store) if s.identity_id is not None]
    assert len(named) == 1 and named[0].watchlist_hit


def test_a_broken_camera_is_retried_and_reported_while_the_other_keeps_working(
        tmp_path: Path, video_engine: FaceEngine, people: dict[str, BGRImage]) -> None:
    good = make_clip(tmp_path / "good.mp4", [walk_in(people["yao"], 0.5, 4.0, 0.5)], 5.0)
    broken = tmp_path / "broken.mp4"
    data = good.read_bytes()
    broken.write_bytes(data[: len(data) // 2])  # cut in half: the index at the end is gone
    store = tmp_path / "data"
    enrol(store, video_engine, "Yao Ming", sample_image("yaoming.jpg"), watchlist="vip")
    stats, pipeline = run(config_for(store, {"good": good, "broken": broken}), video_engine)
    status = {s.name: s for s in pipeline.status()}
    assert status["broken"].state == "failed" and status["broken"].attempts == 3
    assert status["broken"].error and "broken.mp4" in status["broken"].error
    assert status["good"].state == "finished"
    good_frames = status["good"].frames_analysed + status["good"].frames_skipped_motion
    assert good_frames >= 20 and "broken" not in stats.per_camera_frames
    assert len([e for e in events(store) if e.kind == "watchlist_hit"]) == 1


def test_unknown_visitor_coming_back_keeps_one_anonymous_id(tmp_path: Path, video_engine: FaceEngine,
                                                             people: dict[str, BGRImage]) -> None:
    clip = make_clip(tmp_path / "shop.mp4", [walk_in(people["rudd"], 0.0, 2.5, 0.5),
                                             walk_in(people["rudd"], 6.0, 8.5, 0.4),
                                             walk_in(people["rudd"], 12.0, 14.5, 0.6),
                                             walk_in(people["biden"], 6.0, 8.5, 0.8)], 15.0)
    store = tmp_path / "data"
    run(config_for(store, {"shop": clip}, "events:\n  unknown_visitor: true\n  seen_again: true\n"
                                          "  seen_again_after_s: 2\n"), video_engine)
    rows = sightings(store)
    assert all(s.identity_id is None for s in rows)
    by_visitor: dict[int | None, int] = {}
    for row in rows:
        by_visitor[row.visitor_id] = by_visitor.get(row.visitor_id, 0) + 1
    assert sorted(by_visitor.values()) == [1, 3], by_visitor  # Rudd three times, Biden once
    kinds = sorted(e.kind for e in events(store))
    assert kinds == ["seen_again", "seen_again", "unknown_visitor", "unknown_visitor"]
    gallery = Gallery(GallerySettings(store))
    visitor = next(k for k, v in by_visitor.items() if v == 3)
    with gallery.db.session() as session:
        assert session.get(Visitor, visitor).sightings == 3  # type: ignore[union-attr]
    assert len(timeline(gallery, f"visitor:{visitor}", purpose="test", actor="tester")) == 3


def test_only_watchlist_hits_keeps_no_other_face(tmp_path: Path, video_engine: FaceEngine,
                                                 people: dict[str, BGRImage]) -> None:
    clip = make_clip(tmp_path / "gate.mp4", [walk_in(people["yao"], 0.0, 3.0, 0.3),
                                             walk_in(people["biden"], 0.0, 3.0, 0.75)], 3.5)
    store = tmp_path / "data"
    enrol(store, video_engine, "Yao Ming", sample_image("yaoming.jpg"), watchlist="vip")
    run(config_for(store, {"gate": clip}, "retention:\n  only_watchlist_hits: true\n"), video_engine)
    rows = sightings(store)
    assert len(rows) == 1 and rows[0].watchlist_hit
    gallery = Gallery(GallerySettings(store))
    with gallery.db.session() as session:
        assert session.scalar(select(Visitor.id)) is None


def test_history_search_finds_an_unknown_face_among_sightings(tmp_path: Path, video_engine: FaceEngine,
                                                              people: dict[str, BGRImage], data_dir: Path) -> None:
    clip = make_clip(tmp_path / "hall.mp4", [walk_in(people["rudd"], 0.0, 3.0, 0.3),
                                             walk_in(people["biden"], 0.0, 3.0, 0.75)], 3.5)
    store = tmp_path / "data"
    run(config_for(store, {"hall": clip}), video_engine)
    probe = video_engine.analyze(head_and_shoulders(video_engine, data_dir / "faces" / "biden" / "biden2.jpg"))
    index = probe.primary()
    assert index is not None
    gallery = Gallery(GallerySettings(store))
    hits = search_history(gallery, probe.embeddings.vectors[index], purpose="find a visitor", actor="tester")
    assert hits and hits[0].camera == "hall" and hits[0].identity_id is None
    biden_sighting = hits[0].id
    others = [s for s in sightings(store) if s.id != biden_sighting]
    assert others and all((hit.id == biden_sighting) for hit in hits)
    with gallery.db.session() as session:
        actions = list(session.scalars(select(AuditEntry.action)))
        assert "search.history" in actions and "run.start" in actions and "run.stop" in actions
        assert verify_chain(session).ok


@pytest.fixture(scope="module")
def street(street_mp4: Path) -> Path:
    return street_mp4


def test_street_person_enrolled_from_one_frame_is_named_on_the_others(
        tmp_path: Path, video_engine: FaceEngine, street: Path) -> None:
    with av.open(str(street)) as container:
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    import cv2

    def best_face(image: BGRImage) -> float:
        found = video_engine.analyze(image)
        return max((q.score for q in found.qualities), default=0.0)

    still = max(frames[::10], key=best_face)  # the frame with the clearest face
    cv2.imwrite(str(tmp_path / "walker.png"), still)
    store = tmp_path / "data"
    enrol(store, video_engine, "Walker", tmp_path / "walker.png", watchlist="street")
    stats, _ = run(config_for(store, {"street": street}), video_engine)
    rows = sightings(store)
    named = [s for s in rows if s.identity_id is not None]
    assert len(named) == 1, [(s.first_seen, s.frames) for s in named]  # one track, not one per frame
    assert named[0].frames >= 8  # followed over many frames, before and after the enrolment frame
    assert 4 <= len(rows) <= 14  # about a dozen people, each one sighting
    assert stats.tracks <= 3 * len(rows)
    alerts = [e for e in events(store) if e.kind == "watchlist_hit"]
    assert len(alerts) == 1


def test_every_event_has_its_outbox_messages(tmp_path: Path, video_engine: FaceEngine,
                                             people: dict[str, BGRImage]) -> None:
    clip = make_clip(tmp_path / "door.mp4", [walk_in(people["yao"], 0.5, 3.0, 0.4)], 4.0)
    store = tmp_path / "data"
    enrol(store, video_engine, "Yao Ming", sample_image("yaoming.jpg"), watchlist="vip")
    secret = "whsec_" + __import__("base64").b64encode(b"0123456789abcdef0123456789abcdef").decode()
    extra = (f"mqtt:\n  enabled: true\n  port: 9\nwebhooks:\n  - name: desk\n    url: http://127.0.0.1:9/hook\n"
             f"    secret: {secret}\n")
    run(config_for(store, {"door": clip}, extra), video_engine)  # both receivers are down: nothing is lost
    gallery = Gallery(GallerySettings(store))
    with gallery.db.session() as session:
        messages = list(session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))
    import json

    kinds = [(m.channel, json.loads(m.payload).get("type")) for m in messages if m.destination.endswith("events")
             or m.channel == "webhook"]
    assert kinds == [("mqtt", "new"), ("webhook", "watchlist_hit.new"),
                     ("mqtt", "end"), ("webhook", "watchlist_hit.end")]
    presence = [m.payload for m in messages if m.destination == "facetrail/door/yao_ming"]
    assert presence == ["1", "0"]
    assert all(m.delivered_at is None for m in messages)  # both receivers were down: all still waiting


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL database (the other tests here use a SQLite file)."""
    from dbs import postgres_problem, throwaway_postgres

    problem = postgres_problem()
    if problem:
        pytest.skip(problem)
    with throwaway_postgres() as url:
        yield url


def test_the_same_pipeline_on_postgresql(tmp_path: Path, video_engine: FaceEngine, people: dict[str, BGRImage],
                                         postgres_url: str) -> None:
    """Many machines share PostgreSQL: the pipeline, its events and its outbox work there unchanged."""
    db_url = postgres_url
    clip = make_clip(tmp_path / "door.mp4", [walk_in(people["yao"], 0.5, 3.0, 0.4),
                                             walk_in(people["biden"], 0.0, 3.5, 0.8)], 4.0)
    store = tmp_path / "data"
    enrol(store, video_engine, "Yao Ming", sample_image("yaoming.jpg"), watchlist="vip", reviewers=2,
          db_url=db_url)
    run(config_for(store, {"door": clip}, f"database:\n  url: {db_url}\nmqtt:\n  enabled: true\n  port: 9\n"),
        video_engine)
    gallery = Gallery(GallerySettings(store, db_url))
    try:
        with gallery.db.session() as session:
            alerts = list(session.scalars(select(Event).where(Event.kind == "watchlist_hit")))
            assert len(alerts) == 1 and alerts[0].reviewers_required == 2
            rows = list(session.scalars(select(Sighting)))
            assert {r.identity_id is None for r in rows} == {True, False}
            assert session.scalar(select(OutboxMessage.id).where(OutboxMessage.destination == "facetrail/events"))
            assert verify_chain(session).ok
        assert not (store / "facetrail.db").exists()  # nothing went to a SQLite file by mistake
    finally:
        gallery.db.dispose()


def test_detection_ahead_on_its_own_thread_tracks_every_frame_as_the_plain_loop_does(
        tmp_path: Path, video_engine: FaceEngine, people: dict[str, BGRImage]) -> None:
    """Two cameras whose files end at different times: overlapped detection loses no frame at the end of a
    file (a camera closes only once every frame taken from it was tracked) and finds the same sightings."""
    from datetime import UTC, datetime

    from facetrail.pipeline.runner import Pipeline

    short = make_clip(tmp_path / "short.mp4", [walk_in(people["yao"], 0.0, 2.9, 0.4)], 3.0)
    long = make_clip(tmp_path / "long.mp4", [walk_in(people["rudd"], 0.0, 5.0, 0.3),
                                             walk_in(people["yao"], 3.0, 6.0, 0.7)], 6.0, seed=2)
    results = {}
    for overlap in (True, False):
        store = tmp_path / f"data-{overlap}"
        enrol(store, video_engine, "Yao Ming", sample_image("yaoming.jpg"))
        pipeline = Pipeline(config_for(store, {"short": short, "long": long}), engine=video_engine,
                            start_time=datetime(2026, 5, 1, 9, 0, tzinfo=UTC))
        stats = pipeline.run(until_done=True, overlap=overlap)
        assert stats.frames == sum(s.frames_analysed for s in pipeline.status()) > 0
        results[overlap] = sorted((s.camera, s.first_seen, s.last_seen, s.frames, s.identity_id or 0)
                                  for s in sightings(store))
    assert results[True] == results[False]
    assert any(row[-1] for row in results[True])  # Yao Ming was named

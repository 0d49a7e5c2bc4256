"""The consumers after the seam, fed hand-made frame batches (no models): sightings, events, doors, merges, ends.

A real SQLite file; the batches are built the way the tracking stage builds them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from facetrail.gallery.gallery import Gallery, GallerySettings
from facetrail.pipeline.analyzer import AnalysedFrame
from facetrail.pipeline.batch import PENDING, EndedTrack, FrameBatch, Merge, TrackVerdict
from facetrail.pipeline.consumers import Doors, Sightings
from facetrail.pipeline.doors import DoorFace
from facetrail.pipeline.matcher import GalleryMatcher
from facetrail.pipeline.recorder import Channels, EventRules, Recorder
from facetrail.store.models import Event, Identity, Sighting, Watchlist, WatchlistMember
from facetrail.vision.types import FaceDetections

T0 = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
DIM = 8


@pytest.fixture
def gallery(tmp_path: Path) -> Gallery:
    gallery = Gallery(GallerySettings(tmp_path / "data"))
    yield gallery  # type: ignore[misc]
    gallery.close()


@pytest.fixture
def ana(gallery: Gallery) -> int:
    """Ana, on the watchlist 'vip' (threshold 0.5)."""
    with gallery.db.session() as session:
        person = Identity(display_name="Ana Diaz", created_by="tester")
        watchlist = Watchlist(name="vip", purpose="tests", threshold=0.5, reviewers_required=1, created_by="tester")
        session.add_all([person, watchlist])
        session.flush()
        session.add(WatchlistMember(watchlist_id=watchlist.id, identity_id=person.id, added_by="tester"))
        return person.id


@pytest.fixture
def sightings(gallery: Gallery) -> Sightings:
    recorder = Recorder(gallery.db, channels=Channels(mqtt_prefix="facetrail"), rules=EventRules(), clusters=None)
    return Sightings(recorder, GalleryMatcher(gallery, default_threshold=0.3))


def frame(faces: int) -> AnalysedFrame:
    """A grey 640x360 frame with ``faces`` face boxes side by side."""
    boxes = np.array([[40 + 150 * k, 100, 140 + 150 * k, 220] for k in range(faces)], np.float32).reshape(-1, 4)
    detections = FaceDetections(xyxy=boxes, scores=np.full(faces, 0.9, np.float32),
                                landmarks=np.zeros((faces, 5, 2), np.float32))
    return AnalysedFrame(np.full((360, 640, 3), 90, np.uint8), detections, False, 1.0)


def vector(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def batch(at: datetime, tracks: Sequence[int], verdicts: Sequence[TrackVerdict], decided: Sequence[bool],
          merges: tuple[Merge, ...] = (), embedded: Sequence[bool] | None = None) -> FrameBatch:
    """One frame of camera 'door' with ``tracks`` in view (face k is track k's)."""
    n = len(tracks)
    analysed = frame(n)
    return FrameBatch(
        camera="door", captured_at=at, frame=analysed, model_id="test-model",
        track_ids=np.array(tracks, np.int64), uids=tuple(f"run:door:{t}" for t in tracks),
        face_index=np.arange(n, dtype=np.int64), boxes=np.asarray(analysed.faces.xyxy, np.float32),
        landmarks=np.zeros((n, 5, 2), np.float32), quality=np.full(n, 0.8, np.float32),
        embeddings=np.zeros((n, DIM), np.float32), embedded=np.array(embedded or [False] * n, bool),
        verdicts=tuple(verdicts),
        decided=np.array(decided, bool), started=np.zeros(n, bool), merges=merges)


def named(identity: int, score: float) -> TrackVerdict:
    return TrackVerdict("named", identity, "Ana Diaz", score, vector(1), 0.8)


def stored(gallery: Gallery, model: type) -> list:  # type: ignore[type-arg]
    with gallery.db.session() as session:
        return list(session.scalars(select(model)))


def test_a_named_track_on_a_watchlist_raises_one_alert_and_its_frames_are_counted(
        gallery: Gallery, ana: int, sightings: Sightings) -> None:
    sightings.on_frame(batch(T0, [1], [PENDING], [False]))  # confirmed, not embedded yet
    sightings.on_frame(batch(T0 + timedelta(seconds=0.2), [1], [named(ana, 0.62)], [True]))
    sightings.on_frame(batch(T0 + timedelta(seconds=0.4), [1], [named(ana, 0.62)], [False]))
    sightings.housekeeping(float("inf"))  # flush the frame counts
    [sighting] = stored(gallery, Sighting)
    assert (sighting.identity_id, sighting.frames, sighting.watchlist_hit) == (ana, 3, True)
    [alert] = stored(gallery, Event)
    assert (alert.kind, alert.identity_id, alert.camera, alert.state) == ("watchlist_hit", ana, "door", "pending")
    assert alert.snapshot_jpeg and alert.ended_at is None and sightings.events == 1

    sightings.on_track_ended(EndedTrack("door", 1, "run:door:1", T0 + timedelta(seconds=1)))
    [alert] = stored(gallery, Event)
    assert alert.ended_at is not None


def test_a_score_under_the_watchlist_threshold_names_without_alerting(
        gallery: Gallery, ana: int, sightings: Sightings) -> None:
    sightings.on_frame(batch(T0, [1], [named(ana, 0.4)], [True]))  # named (calibrated 0.3), list asks 0.5
    [sighting] = stored(gallery, Sighting)
    assert sighting.identity_id == ana and not sighting.watchlist_hit
    assert stored(gallery, Event) == []


def test_an_unknown_track_is_stored_without_a_name_or_an_event(gallery: Gallery, ana: int,
                                                                 sightings: Sightings) -> None:
    unknown = TrackVerdict("unknown", None, None, 0.05, vector(2), 0.7)
    sightings.on_frame(batch(T0, [4, 5], [unknown, PENDING], [True, False]))
    [sighting] = stored(gallery, Sighting)
    assert sighting.identity_id is None and sighting.track_uid == "run:door:4"
    assert stored(gallery, Event) == []


def test_a_merge_joins_the_absorbed_tracks_frames_to_the_survivor(gallery: Gallery, ana: int,
                                                                   sightings: Sightings) -> None:
    sightings.on_frame(batch(T0, [1], [named(ana, 0.6)], [True]))
    sightings.on_frame(batch(T0 + timedelta(seconds=0.2), [2], [PENDING], [False]))
    sightings.on_frame(batch(T0 + timedelta(seconds=0.4), [2], [PENDING], [False]))
    # Track 2 was track 1 come back: from now on the row is track 1's.
    sightings.on_frame(batch(T0 + timedelta(seconds=0.6), [1], [named(ana, 0.6)], [False],
                             merges=(Merge(1, 2, "run:door:1", "run:door:2"),)))
    sightings.housekeeping(float("inf"))
    [sighting] = stored(gallery, Sighting)
    assert sighting.frames == 4
    assert sighting.last_seen.replace(tzinfo=UTC) == T0 + timedelta(seconds=0.6)


def test_a_batch_refuses_columns_of_different_lengths() -> None:
    good = batch(T0, [1, 2], [PENDING, PENDING], [False, False])
    with pytest.raises(ValueError, match="one row per track"):
        FrameBatch(camera="door", captured_at=T0, frame=good.frame, model_id="m", track_ids=good.track_ids,
                   uids=good.uids[:1], face_index=good.face_index, boxes=good.boxes, landmarks=good.landmarks,
                   quality=good.quality, embeddings=good.embeddings, embedded=good.embedded,
                   verdicts=good.verdicts, decided=good.decided, started=good.started)
    with pytest.raises(ValueError, match="read-only"):
        good.boxes[0, 0] = 1.0


class RecordingDoors:
    """Stands in for DoorService at the seam: notes what the Doors consumer hands it (no models, no broker)."""

    cameras = frozenset({"door"})

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def frame(self, camera: str, at: datetime, result: AnalysedFrame, faces: list[DoorFace],
              embedded: dict[int, np.ndarray]) -> None:
        self.calls.append(("frame", (camera, at, [(f.track_id, f.track_uid, f.index) for f in faces],
                                     sorted(embedded))))

    def merged(self, camera: str, survivor: int, absorbed: int) -> None:
        self.calls.append(("merged", (camera, survivor, absorbed)))

    def ended(self, camera: str, track_id: int, at: datetime) -> None:
        self.calls.append(("ended", (camera, track_id, at)))


def test_the_doors_consumer_hands_each_door_frame_its_faces_embeddings_merges_and_ends() -> None:
    service = RecordingDoors()
    doors = Doors(service)  # type: ignore[arg-type]
    doors.on_frame(batch(T0, [7, 9], [PENDING, PENDING], [False, False], embedded=[False, True],
                         merges=(Merge(7, 8, "run:door:7", "run:door:8"),)))
    other = batch(T0, [1], [PENDING], [False])
    doors.on_frame(FrameBatch(**{**vars(other), "camera": "lobby"}))  # not a door camera: ignored
    doors.on_track_ended(EndedTrack("door", 9, "run:door:9", T0 + timedelta(seconds=2)))
    doors.on_track_ended(EndedTrack("lobby", 1, "run:lobby:1", T0))
    assert service.calls == [
        ("merged", ("door", 7, 8)),  # before the frame: the absorbed track's approach is the survivor's
        ("frame", ("door", T0, [(7, "run:door:7", 0), (9, "run:door:9", 1)], [1])),
        ("ended", ("door", 9, T0 + timedelta(seconds=2))),
    ]

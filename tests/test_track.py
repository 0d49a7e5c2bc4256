"""The tracker, best shots, per-track decisions and unknown clusters, on synthetic boxes and real faces."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import av
import numpy as np
import pytest

from facetrail.track.bestshot import BestShots, BestShotSettings, Shot
from facetrail.track.decision import decide
from facetrail.track.tracker import FaceTracker, TrackerSettings
from facetrail.track.unknowns import UnknownClusters
from facetrail.vision.align import align_faces
from facetrail.vision.engine import FaceEngine
from facetrail.vision.image import BGRImage

CROP = np.zeros((112, 112, 3), np.uint8)


def box(cx: float, cy: float, size: float = 60.0) -> list[float]:
    return [cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2]


def ids_of(tracker: FaceTracker, boxes: list[list[float]], t: float, scores: list[float] | None = None) -> list[int]:
    """Track id of each detection (-1 if none)."""
    matched = tracker.update(np.array(boxes, np.float32).reshape(-1, 4),
                             np.array(scores or [0.9] * len(boxes), np.float32), t)
    out = [-1] * len(boxes)
    for track in matched:
        assert track.detection is not None
        out[track.detection] = track.track_id
    return out


def test_crossing_faces_keep_their_ids() -> None:
    tracker = FaceTracker()
    first = ids_of(tracker, [box(100, 200), box(500, 230)], 0.0)
    seen = [first]
    for step in range(1, 26):  # they pass each other half way, boxes overlapping
        t = step * 0.2
        left, right = 100 + 16 * step, 500 - 16 * step
        seen.append(ids_of(tracker, [box(left, 200), box(right, 230)], t))
    assert all(ids == first for ids in seen), seen


def test_a_missed_detection_is_bridged_by_motion_prediction() -> None:
    tracker = FaceTracker(TrackerSettings(max_lost_s=1.0))
    ids = [ids_of(tracker, [box(100 + 20 * k, 200)], 0.2 * k)[0] for k in range(5)]
    assert ids_of(tracker, [], 1.0) == []
    assert ids_of(tracker, [], 1.2) == []
    later = ids_of(tracker, [box(100 + 20 * 7, 200)], 1.4)[0]  # where prediction says it is
    assert later == ids[0] and len(set(ids)) == 1


def test_weak_detections_extend_tracks_but_never_start_them() -> None:
    tracker = FaceTracker()
    assert ids_of(tracker, [box(100, 100)], 0.0, [0.4]) == [-1]
    assert tracker.active == []
    track_id = ids_of(tracker, [box(300, 100)], 0.0 + 0.2, [0.9])[0]
    assert ids_of(tracker, [box(305, 100)], 0.4, [0.4]) == [track_id]


def test_uneven_time_steps() -> None:
    tracker = FaceTracker()
    times = [0.0, 0.1, 0.5, 0.6, 1.4, 1.5]
    ids = {ids_of(tracker, [box(100 + 50 * t, 100)], t)[0] for t in times}
    assert len(ids) == 1


def test_an_unconfirmed_track_missing_a_frame_is_dropped_and_never_reported() -> None:
    tracker = FaceTracker()
    ids_of(tracker, [box(100, 100)], 0.0)
    ids_of(tracker, [], 0.2)
    assert tracker.active == []
    assert tracker.end_all() == []


# -- best shots and decisions ---------------------------------------------------------------------------


def shot(shot_id: int, quality: float, area: float = 5000.0) -> Shot:
    return Shot(shot_id=shot_id, t=float(shot_id), quality=quality, area=area, crop=CROP)


def test_best_shots_embed_only_on_clear_improvement() -> None:
    shots = BestShots(BestShotSettings(keep=2, max_embeddings=2, reembed_margin=0.1, min_quality=0.3,
                                       min_area=1000))
    assert not shots.offer(shot(1, 0.2))  # too poor
    assert not shots.offer(shot(2, 0.9, area=500))  # too small
    assert shots.offer(shot(3, 0.5))  # first usable shot
    assert not shots.offer(shot(4, 0.55))  # its embedding is not back yet
    shots.set_embedding(3, np.ones(4))
    assert not shots.offer(shot(5, 0.55))  # not better by the margin
    assert shots.offer(shot(6, 0.7))
    shots.set_embedding(6, np.ones(4))
    assert not shots.offer(shot(7, 0.95))  # out of embeddings
    assert [s.shot_id for s in shots.kept] == [7, 6]
    assert [s.shot_id for s in shots.embedded()] == [3, 6]
    assert shots.best() is not None and shots.best().shot_id == 7  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def team(engine: FaceEngine, players: BGRImage, yaoming: BGRImage) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings of every player in players.jpg, and of yaoming.jpg's face."""
    team = engine.analyze(players).embeddings.vectors
    single = engine.analyze(yaoming)
    index = single.primary()
    assert index is not None
    return team, single.embeddings.vectors[index]


def matcher_over(gallery: np.ndarray) -> object:
    def match(vectors: np.ndarray) -> list[tuple[int | None, float]]:
        scores = vectors @ gallery.T
        best = scores.argmax(axis=1)
        return [(int(b), float(scores[i, b])) for i, b in enumerate(best)]
    return match


@pytest.mark.models
def test_decide_aggregate_and_vote_on_real_faces(team: tuple[np.ndarray, np.ndarray], engine: FaceEngine) -> None:
    everyone, yao = team
    yao_in_team = int(np.argmax(everyone @ yao))
    gallery = everyone[[yao_in_team]]  # only him enrolled, as identity 0
    match = matcher_over(gallery)
    mine = [Shot(k, 0.0, 0.8, 5000, CROP, embedding=yao) for k in range(3)]
    for method in ("aggregate", "vote"):
        decision = decide(mine, match, method=method, threshold=engine.threshold)  # type: ignore[arg-type]
        assert decision.identity_id == 0 and decision.score >= engine.threshold
    stranger = everyone[(yao_in_team + 1) % len(everyone)]
    others = [Shot(k, 0.0, 0.8, 5000, CROP, embedding=stranger) for k in range(3)]
    assert decide(others, match, method="aggregate", threshold=engine.threshold).identity_id is None  # type: ignore[arg-type]
    split = [mine[0], others[0], Shot(9, 0.0, 0.8, 5000, CROP, embedding=everyone[(yao_in_team + 2) % len(everyone)])]
    vote = decide(split, match, method="vote", threshold=engine.threshold)  # type: ignore[arg-type]
    assert vote.identity_id is None and vote.votes == {0: 1}  # one vote in three is no majority


@pytest.mark.models
def test_unknown_clusters_on_real_faces(team: tuple[np.ndarray, np.ndarray], engine: FaceEngine) -> None:
    everyone, yao = team
    clusters = UnknownClusters(engine.threshold, timedelta(days=1))
    start = datetime(2026, 1, 1, tzinfo=UTC)
    first = clusters.add(1, yao, start)
    for hours in (2, 5):
        found = clusters.match(yao, start + timedelta(hours=hours))
        assert found is first
        clusters.update(found, yao, start + timedelta(hours=hours))
    assert first.count == 3
    assert clusters.match(yao, start + timedelta(days=3)) is None  # outside the window: a new visitor
    other = everyone[int(np.argmin(everyone @ yao))]
    assert clusters.match(other, start + timedelta(hours=6)) is None
    assert clusters.expire(start + timedelta(days=3)) == [1]


# -- real video ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def street(data_dir: Path, engine: FaceEngine) -> list[tuple[float, BGRImage, object]]:
    """street.mp4 at 5 frames per second with the detector's faces."""
    path = data_dir / "video" / "street.mp4"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            t = float(frame.time or 0.0)
            if frames and t < frames[-1][0] + 0.2 - 1e-6:
                continue
            frames.append((t, frame.to_ndarray(format="bgr24")))
    detections = engine.detector.detect_many([image for _, image in frames])
    return [(t, image, found) for (t, image), found in zip(frames, detections, strict=True)]


@pytest.mark.models
def test_street_gives_one_stable_track_per_person(street: list[tuple[float, BGRImage, object]],
                                                  engine: FaceEngine) -> None:
    """As the pipeline does it: embed a track's first usable shot, so a lost person can be re-joined."""
    tracker = FaceTracker(best_shots=BestShotSettings(min_quality=0.0, min_area=0.0))
    members: dict[int, list[np.ndarray]] = {}
    detections_total = 0
    most_in_a_frame = 0
    shot_ids = iter(range(1, 10_000))
    for t, image, faces in street:
        detections_total += len(faces)  # type: ignore[arg-type]
        matched = tracker.update(faces.xyxy, faces.scores, t)  # type: ignore[attr-defined]
        wide = [tr for tr in matched if tr.detection is not None
                and faces.xyxy[tr.detection, 2] - faces.xyxy[tr.detection, 0] >= 40]  # type: ignore[attr-defined]
        most_in_a_frame = max(most_in_a_frame, len(wide))
        if not wide:
            continue
        crops = align_faces(image, faces.landmarks[[tr.detection for tr in wide]])  # type: ignore[attr-defined]
        vectors = engine.embedder.embed_crops(crops.crops)  # type: ignore[attr-defined]
        for tr, crop, vector in zip(wide, crops.crops, vectors, strict=True):
            survivor = tr
            if tr.confirmed and not tr.shots.embedded():
                shot_id = next(shot_ids)
                tr.shots.offer(Shot(shot_id, t, 0.5, 5000.0, crop))
                survivor = tracker.set_embedding(tr, shot_id, vector)
                if survivor is not tr:
                    members.setdefault(survivor.track_id, []).extend(members.pop(tr.track_id, []))
            members.setdefault(survivor.track_id, []).append(vector)
    close = {tid: np.stack(v) for tid, v in members.items() if len(v) >= 3}
    assert most_in_a_frame >= 3
    assert 5 <= len(close) <= 12, (len(close), most_in_a_frame)  # about a dozen people, some never close
    assert detections_total > 4 * len(close)  # tracks, not one per detection
    for tid, vectors in close.items():
        mean = vectors.mean(axis=0)
        mean /= np.linalg.norm(mean)
        # A switch to another person would leave a run of frames unlike the rest; one odd frame (a face
        # turning away, half hidden) is not a switch.
        unlike = int(((vectors @ mean) < 0.4).sum())
        assert unlike <= max(1, len(vectors) // 8), f"track {tid} switched identity: {np.round(vectors @ mean, 2)}"
    # nobody is split into two tracks: the person hidden for a moment was re-joined by appearance
    means = np.stack([v.mean(axis=0) / np.linalg.norm(v.mean(axis=0)) for v in close.values()])
    similarity = means @ means.T - 2 * np.eye(len(means))
    assert float(similarity.max()) < engine.threshold + 0.2


@pytest.mark.models
def test_a_track_lost_behind_an_occlusion_is_rejoined_by_appearance(team: tuple[np.ndarray, np.ndarray]) -> None:
    everyone, yao = team
    tracker = FaceTracker(TrackerSettings(max_lost_s=0.5, rejoin_s=3.0))
    first = ids_of(tracker, [box(100, 100)], 0.0)[0]
    ids_of(tracker, [box(110, 100)], 0.2)
    original = tracker.active[0]
    original.shots.offer(shot(1, 0.8))
    tracker.set_embedding(original, 1, yao)
    for t in (0.4, 0.6, 0.8, 1.0):
        ids_of(tracker, [], t)
    # he comes back elsewhere (no overlap), and a stranger appears too
    again = ids_of(tracker, [box(600, 300), box(900, 300)], 1.2)
    assert first not in again
    ids_of(tracker, [box(605, 300), box(905, 300)], 1.4)
    newcomer, stranger = (next(tr for tr in tracker.active if tr.track_id == k) for k in again)
    newcomer.shots.offer(shot(2, 0.8))
    stranger.shots.offer(shot(3, 0.8))
    other = everyone[int(np.argmin(everyone @ yao))]
    assert tracker.set_embedding(stranger, 3, other) is stranger
    survivor = tracker.set_embedding(newcomer, 2, yao)
    assert survivor.track_id == first and survivor is original
    assert sorted(tr.track_id for tr in tracker.active) == sorted([first, stranger.track_id])
    assert len(survivor.shots.embedded()) == 2

"""The tracker, best shots, per-track decisions and unknown clusters, on synthetic boxes and real faces."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import av
import numpy as np
import pytest

from facetrail.track.bestshot import BestShots, BestShotSettings, Shot
from facetrail.track.decision import (
    WEAK_SHOT_THRESHOLDS,
    Matcher,
    aggregate_template,
    decide,
    decide_weak,
    weak_threshold,
)
from facetrail.track.tracker import FaceTracker, TrackerSettings
from facetrail.track.unknowns import UnknownClusters, Visitor
from facetrail.vision.align import align_faces
from facetrail.vision.embedder import ArcFaceEmbedder
from facetrail.vision.engine import FaceEngine
from facetrail.vision.image import BGRImage, load_image
from facetrail.vision.registry import DLIB_RESNET, W600K_MBF
from facetrail.vision.types import FaceDetections

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
    first = ids_of(tracker, [box(100, 200), box(850, 210)], 0.0)
    seen = [first]
    for step in range(1, 26):  # half a box width a frame; they pass each other half way, boxes overlapping
        t = step * 0.2
        left, right = 100 + 30 * step, 850 - 30 * step
        seen.append(ids_of(tracker, [box(left, 200), box(right, 210)], t))
    assert all(ids == first for ids in seen), seen


def test_a_missed_detection_is_bridged_by_motion_prediction() -> None:
    tracker = FaceTracker(TrackerSettings(max_lost_s=1.0))
    ids = [ids_of(tracker, [box(100 + 30 * k, 200)], 0.2 * k)[0] for k in range(5)]
    for t in (1.0, 1.2, 1.4):
        assert ids_of(tracker, [], t) == []
    later = ids_of(tracker, [box(100 + 30 * 8, 200)], 1.6)[0]  # 1.5 box widths on: where the prediction says
    assert later == ids[0] and len(set(ids)) == 1


def test_weak_detections_extend_tracks_but_never_start_them() -> None:
    tracker = FaceTracker()
    assert ids_of(tracker, [box(100, 100)], 0.0, [0.4]) == [-1]
    assert tracker.active == []
    track_id = ids_of(tracker, [box(300, 100)], 0.0 + 0.2, [0.9])[0]
    assert ids_of(tracker, [box(305, 100)], 0.4, [0.4]) == [track_id]
    assert ids_of(tracker, [box(310, 100)], 0.6, [0.2]) == [-1]  # below low_score: ignored altogether
    assert [tr.track_id for tr in tracker.active] == [track_id]


def test_uneven_time_steps() -> None:
    tracker = FaceTracker()
    times = [0.0, 0.1, 0.5, 0.6, 0.64, 1.4, 1.5, 1.52, 2.3]  # a motion gate skips frames
    ids = {ids_of(tracker, [box(100 + 150 * t, 100)], t)[0] for t in times}  # 2.5 box widths a second
    assert len(ids) == 1


def test_an_unconfirmed_track_missing_a_frame_is_dropped_and_never_reported() -> None:
    tracker = FaceTracker()
    ids_of(tracker, [box(100, 100)], 0.0)
    ids_of(tracker, [], 0.2)
    assert tracker.active == []
    assert tracker.end_all() == []


def test_lost_tracks_end_after_both_windows() -> None:
    tracker = FaceTracker(TrackerSettings(max_lost_s=0.5, rejoin_s=1.0))
    first = ids_of(tracker, [box(100, 100)], 0.0)[0]
    ids_of(tracker, [box(100, 100)], 0.2)
    ids_of(tracker, [], 0.4)
    assert ids_of(tracker, [box(100, 100)], 0.6) == [first]  # unseen 0.4 s: still matched where it was
    ids_of(tracker, [], 0.8)
    ids_of(tracker, [], 1.2)
    assert tracker.end_stale(1.2) == []  # lost 0.6 s: past max_lost_s but it may still re-join
    newcomer = ids_of(tracker, [box(100, 100)], 1.3)[0]
    assert newcomer not in (-1, first)  # no longer matched by position
    ended = tracker.end_stale(1.7)  # lost 1.1 s: past both windows
    assert [tr.track_id for tr in ended] == [first]
    assert [tr.track_id for tr in tracker.active] == [newcomer]
    assert tracker.end_all() == []  # the newcomer was never confirmed


def test_faces_in_view_together_are_never_merged() -> None:
    """However alike two faces look (twins, a poster), two tracks seen at once are two people."""
    tracker = FaceTracker(TrackerSettings(max_lost_s=0.5))
    face = np.ones(8, np.float32) / np.sqrt(8)
    ids_of(tracker, [box(100, 100)], 0.0)
    ids_of(tracker, [box(100, 100), box(600, 100)], 0.2)  # the right one comes into view
    ids_of(tracker, [box(100, 100), box(600, 100)], 0.4)
    left, right = sorted(tracker.active, key=lambda tr: tr.box[0])
    left.shots.offer(shot(1, 0.8))
    assert tracker.set_embedding(left, 1, face) is left
    ids_of(tracker, [box(600, 100)], 0.6)  # the left one is hidden now, the right one is embedded only now
    right.shots.offer(shot(2, 0.8))
    assert tracker.set_embedding(right, 2, face) is right
    assert sorted(tr.track_id for tr in tracker.active) == sorted([left.track_id, right.track_id])


# -- best shots and decisions ---------------------------------------------------------------------------


def shot(shot_id: int, quality: float, area: float = 5000.0) -> Shot:
    return Shot(shot_id=shot_id, t=float(shot_id), quality=quality, area=area, crop=CROP)


def test_best_shots_embed_only_on_clear_improvement() -> None:
    shots = BestShots(BestShotSettings(best_shots=2, max_embeddings=2, reembed_margin=0.1, min_quality=0.3,
                                       min_area=1000, weak_embeddings=0))
    assert not shots.offer(shot(1, 0.2))  # too poor (and weak shots are off)
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


def test_weak_shots_are_embedded_until_the_budget_or_a_strong_shot() -> None:
    settings = BestShotSettings(best_shots=3, max_embeddings=2, min_quality=0.3, min_area=1000, weak_min_area=400,
                                weak_embeddings=2)
    shots = BestShots(settings)
    assert not shots.offer(shot(1, 0.9, area=300))  # under the floor: never kept, never embedded
    assert shots.kept == []
    for shot_id in (2, 3):  # small, or big but blurred: weak, embedded without any quality margin
        weak = shot(shot_id, 0.05, area=600 if shot_id == 2 else 5000)
        assert shots.offer(weak) and weak.weak
        shots.set_embedding(shot_id, np.ones(4))
    assert not shots.offer(shot(4, 0.06, area=600))  # the weak budget is spent
    assert not shots.has_strong() and [s.shot_id for s in shots.decisive()] == [2, 3]
    strong = shot(5, 0.5)
    assert shots.offer(strong) and not strong.weak  # the first strong shot is embedded whatever the weak ones did
    shots.set_embedding(5, np.ones(4))
    assert shots.has_strong() and [s.shot_id for s in shots.decisive()] == [5]  # weak shots no longer count

    fresh = BestShots(dataclasses.replace(settings, weak_embeddings=5))
    fresh.offer(first := shot(6, 0.5))
    fresh.set_embedding(6, np.ones(4))
    assert first in fresh.decisive()
    assert not fresh.offer(shot(7, 0.05, area=600))  # a track with a strong shot embeds no weak ones


@pytest.mark.parametrize(("photo", "embedded"), [("left_face.jpeg", False), ("right_face.png", False),
                                                  ("lower_face.jpeg", True), ("left_wryneck.png", True)])
def test_a_face_turned_past_the_pose_limits_is_never_embedded(engine: FaceEngine, data_dir: Path, photo: str,
                                                              embedded: bool) -> None:
    found = engine.analyze(load_image(data_dir / "conditions" / "pose" / photo))
    i = found.primary()
    assert i is not None
    quality = found.qualities[i]
    assert (quality.score > 0) == embedded  # a profile (yaw 90) scores 0; a face turned 16-43 degrees does not
    shots = BestShots(BestShotSettings())
    face = Shot(shot_id=1, t=0.0, quality=quality.score, area=float(found.detections.areas[i]), crop=CROP)
    assert shots.may_embed(quality.score, face.area) == embedded  # (asked before a record-stream cut)
    assert shots.offer(face) == embedded
    small = Shot(shot_id=2, t=0.0, quality=quality.score, area=900.0, crop=CROP)  # the same view, far away: weak
    assert BestShots(BestShotSettings()).offer(small) == embedded


@pytest.fixture(scope="module")
def team(engine: FaceEngine, players: BGRImage, yaoming: BGRImage) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings of every player in players.jpg, and of yaoming.jpg's face."""
    team = engine.analyze(players).embeddings.vectors
    single = engine.analyze(yaoming)
    index = single.primary()
    assert index is not None
    return team, single.embeddings.vectors[index]


def matcher_over(gallery: np.ndarray) -> Matcher:
    """Best gallery row (its index is the identity id) and cosine for each embedding."""

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
        decision = decide(mine, match, method=method, threshold=engine.threshold)
        assert decision.identity_id == 0 and decision.score >= engine.threshold
    stranger = everyone[(yao_in_team + 1) % len(everyone)]
    others = [Shot(k, 0.0, 0.8, 5000, CROP, embedding=stranger) for k in range(3)]
    assert decide(others, match, method="aggregate", threshold=engine.threshold).identity_id is None
    third = Shot(9, 0.0, 0.8, 5000, CROP, embedding=everyone[(yao_in_team + 2) % len(everyone)])
    vote = decide([mine[0], others[0], third], match, method="vote", threshold=engine.threshold)
    assert vote.identity_id is None and vote.votes == {0: 1}  # one vote in three is no majority
    vote = decide([mine[0], mine[1], others[0]], match, method="vote", threshold=engine.threshold)
    assert vote.identity_id == 0 and vote.votes == {0: 2}
    tie = decide([mine[0], mine[1], others[0], third], match, method="vote", threshold=engine.threshold)
    assert tie.identity_id is None  # two in four is not a strict majority
    assert decide([], match, method="aggregate", threshold=engine.threshold).identity_id is None


@pytest.mark.models
def test_decide_weak_needs_agreeing_votes_on_real_faces(team: tuple[np.ndarray, np.ndarray]) -> None:
    everyone, yao = team
    match = matcher_over(everyone)  # the whole team enrolled, one identity per player
    yao_id = int(np.argmax(everyone @ yao))
    other_id = (yao_id + 1) % len(everyone)
    yao_shot = [Shot(k, float(k), 0.05, 600, CROP, embedding=yao, weak=True) for k in range(3)]
    other_shot = [Shot(9, 9.0, 0.05, 600, CROP, embedding=everyone[other_id], weak=True),
                  Shot(10, 10.0, 0.05, 600, CROP, embedding=everyone[other_id], weak=True)]
    named = decide_weak(yao_shot[:2], match, threshold=0.25, votes=2)
    assert named.identity_id == yao_id and named.votes == {yao_id: 2} and named.score >= 0.25
    assert decide_weak(yao_shot[:1], match, threshold=0.25, votes=2).identity_id is None  # one shot never names
    assert decide_weak(yao_shot[:2] + other_shot, match, threshold=0.25, votes=2).identity_id is None  # a tie
    assert decide_weak(yao_shot + other_shot, match, threshold=0.25, votes=2).identity_id == yao_id  # 3 beat 2
    assert decide_weak(yao_shot, match, threshold=1.01, votes=2).identity_id is None
    assert decide_weak([], match, threshold=0.25, votes=2).identity_id is None


def test_weak_threshold_is_calibrated_only_for_the_default_recogniser() -> None:
    assert weak_threshold(W600K_MBF.model_id, None) == WEAK_SHOT_THRESHOLDS[W600K_MBF.model_id]
    assert weak_threshold(DLIB_RESNET.model_id, None) is None  # weak shots of dlib never name...
    assert weak_threshold(DLIB_RESNET.model_id, 0.95) == 0.95  # ...unless a threshold is configured
    assert weak_threshold(W600K_MBF.model_id, 0.4) == 0.4


@pytest.mark.models
def test_aggregate_template_weighs_shots_by_quality(team: tuple[np.ndarray, np.ndarray]) -> None:
    everyone, yao = team
    other = everyone[int(np.argmin(everyone @ yao))]
    shots = [Shot(1, 0.0, 0.9, 5000, CROP, embedding=yao), Shot(2, 0.0, 0.1, 5000, CROP, embedding=other),
             Shot(3, 0.0, 0.9, 5000, CROP)]  # not embedded yet: ignored
    template = aggregate_template(shots)
    assert abs(float(np.linalg.norm(template)) - 1.0) < 1e-5
    assert float(template @ yao) > 0.9 > float(template @ other)
    with pytest.raises(ValueError):
        aggregate_template(shots[2:])


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
    other = everyone[int(np.argmin(everyone @ yao))]
    assert clusters.match(other, start + timedelta(hours=6)) is None  # a different face: a different visitor
    stranger = clusters.add(2, other, start + timedelta(hours=6))
    assert clusters.match(other, start + timedelta(hours=7)) is stranger
    assert clusters.match(yao, start + timedelta(hours=7)) is first
    later = start + timedelta(days=1, hours=5, minutes=1)  # yao last seen more than a day before
    assert clusters.match(yao, later) is None
    assert clusters.expire(later) == [1]
    returning = clusters.add(3, yao, later)  # the same face after the window: a new visitor
    assert clusters.match(yao, later + timedelta(hours=1)) is returning and returning.count == 1
    assert sorted(v.key for v in (stranger, returning)) == [2, 3] and len(clusters) == 2


@pytest.mark.models
def test_unknown_clusters_among_thousands(team: tuple[np.ndarray, np.ndarray], engine: FaceEngine) -> None:
    everyone, yao = team
    rng = np.random.default_rng(7)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    noise = rng.standard_normal((4000, yao.shape[0])).astype(np.float32)
    clusters = UnknownClusters(engine.threshold, timedelta(days=7))
    clusters.load(Visitor(k, noise[k], 1, start, start + timedelta(hours=k % 200)) for k in range(len(noise)))
    clusters.load([Visitor(5000, everyone[int(np.argmax(everyone @ yao))], 2, start, start)])
    at = start + timedelta(days=2)
    found = clusters.match(yao, at)
    assert found is not None and found.key == 5000
    assert clusters.match(yao, at, exclude={5000}) is None
    # visitors last seen in the first 100 hours go; the rows left must still be the right ones
    expired = clusters.expire(start + timedelta(days=7, hours=100))
    assert len(expired) == 2001 and 5000 in expired and len(clusters) == 2000
    for key in (150, 199, 3999):
        found = clusters.match(noise[key], start + timedelta(days=8))
        assert found is not None and found.key == key


# -- real video ------------------------------------------------------------------------------------------

FULL_RATE_S = 2.0  # street.mp4 is analysed at its full 25 fps up to here, at 5 fps after
STEP_S = 0.2  # 5 fps
WIDE_PX = 40  # faces at least this wide are "close enough" to recognise


@dataclass
class StreetFrame:
    """One analysed frame: its time, the detector's faces, aligned crops of the wide faces on the 5 fps grid."""

    t: float
    faces: FaceDetections
    on_grid: bool
    crops: dict[int, np.ndarray]


@dataclass
class StreetClip:
    """street.mp4 with the detector's faces; embeddings computed once, when first asked for."""

    frames: list[StreetFrame]
    engine: FaceEngine
    cache: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)

    def embedding(self, k: int, i: int) -> np.ndarray:
        key = (k, i)
        if key not in self.cache:
            frame = self.frames[k]
            todo = [j for j in frame.crops if (k, j) not in self.cache]
            embedder = self.engine.embedder
            assert isinstance(embedder, ArcFaceEmbedder)
            vectors = embedder.embed_crops(np.stack([frame.crops[j] for j in todo]))
            self.cache.update({(k, j): v for j, v in zip(todo, vectors, strict=True)})
        return self.cache[key]


def wide(faces: FaceDetections) -> np.ndarray:
    return np.flatnonzero(faces.xyxy[:, 2] - faces.xyxy[:, 0] >= WIDE_PX)


@pytest.fixture(scope="module")
def street(data_dir: Path, engine: FaceEngine) -> StreetClip:
    path = data_dir / "video" / "street.mp4"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    frames: list[StreetFrame] = []
    grid_t = -1.0
    pending: list[tuple[float, bool, BGRImage]] = []

    def flush() -> None:  # a few frames per batch: 1080p frames are not all kept in memory
        found = engine.detector.detect_many([image for _, _, image in pending])
        for (t, on_grid, image), faces in zip(pending, found, strict=True):
            keep = wide(faces) if on_grid else np.zeros(0, np.intp)
            crops = list(align_faces(image, faces.landmarks[keep]).crops) if len(keep) else []
            frames.append(StreetFrame(t, faces, on_grid, dict(zip(keep.tolist(), crops, strict=True))))
        pending.clear()

    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            t = float(frame.time or 0.0)
            on_grid = t >= grid_t + STEP_S - 1e-6
            if on_grid:
                grid_t = t
            if on_grid or t < FULL_RATE_S:
                pending.append((t, on_grid, np.asarray(frame.to_ndarray(format="bgr24"), np.uint8)))
            if len(pending) == 8:
                flush()
    flush()
    return StreetClip(frames, engine)


@dataclass
class Followed:
    """What the tracker made of a run of frames, as the pipeline drives it."""

    detections: int = 0
    most_in_a_frame: int = 0  # wide faces
    spans: dict[int, int] = field(default_factory=dict)  # track id -> frames with its face wide
    members: dict[int, list[np.ndarray]] = field(default_factory=dict)  # track id -> embeddings on the grid

    def close(self) -> dict[int, np.ndarray]:
        """Tracks of people who came close: at least three embedded wide faces."""
        return {tid: np.stack(v) for tid, v in self.members.items() if len(v) >= 3}


def follow(clip: StreetClip, frames: Sequence[int]) -> Followed:
    """Track the frames; embed a confirmed track's first wide face on the grid, so a lost person can re-join."""
    tracker = FaceTracker(best_shots=BestShotSettings(min_quality=0.0, min_area=0.0))
    out = Followed()
    for k in frames:
        frame = clip.frames[k]
        out.detections += len(frame.faces)
        matched = tracker.update(frame.faces.xyxy, frame.faces.scores, frame.t)
        close = set(wide(frame.faces).tolist())
        seen = [tr for tr in matched if tr.detection in close]
        out.most_in_a_frame = max(out.most_in_a_frame, len(seen))
        for track in seen:
            assert track.detection is not None
            survivor = track
            if frame.on_grid:
                vector = clip.embedding(k, track.detection)
                if track.confirmed and not track.shots.embedded():
                    track.shots.offer(Shot(k, frame.t, 0.5, 5000.0, frame.crops[track.detection]))
                    survivor = tracker.set_embedding(track, k, vector)
                    if survivor is not track:
                        out.members.setdefault(survivor.track_id, []).extend(out.members.pop(track.track_id, []))
                        out.spans[survivor.track_id] = out.spans.get(survivor.track_id, 0) + out.spans.pop(
                            track.track_id, 0)
                out.members.setdefault(survivor.track_id, []).append(vector)
            out.spans[survivor.track_id] = out.spans.get(survivor.track_id, 0) + 1
    return out


def assert_one_stable_track_per_person(run: Followed, threshold: float) -> None:
    close = run.close()
    assert run.most_in_a_frame >= 3
    # about a dozen people, some never close; never more tracks than people in view would explain
    assert 5 <= len(close) <= min(12, 1.5 * run.most_in_a_frame), (len(close), run.most_in_a_frame)
    # tracks, not one per detection: the close tracks hold nearly every wide face
    assert sum(run.spans[tid] for tid in close) >= 0.9 * sum(run.spans.values()), run.spans
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
    assert float(similarity.max()) < threshold + 0.2


@pytest.mark.models
def test_street_at_5_fps_gives_one_stable_track_per_person(street: StreetClip, engine: FaceEngine) -> None:
    grid = [k for k, frame in enumerate(street.frames) if frame.on_grid]
    assert len(grid) >= 20
    run = follow(street, grid)
    assert run.detections > 4 * len(run.spans)
    assert_one_stable_track_per_person(run, engine.threshold)


@pytest.mark.models
def test_street_at_25_fps_gives_one_stable_track_per_person(street: StreetClip, engine: FaceEngine) -> None:
    full = [k for k, frame in enumerate(street.frames) if frame.t < FULL_RATE_S]
    assert len(full) >= 45
    run = follow(street, full)
    assert run.detections > 15 * len(run.spans)
    assert_one_stable_track_per_person(run, engine.threshold)


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

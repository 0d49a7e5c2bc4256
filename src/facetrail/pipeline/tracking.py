"""One camera's tracking stage: from an analysed frame to a :class:`~facetrail.pipeline.batch.FrameBatch`.

In two halves around the embedder, because the embedder is shared by every
camera of a step: :meth:`CameraTracking.observe` tracks the frame's faces
and says which shots to embed; :meth:`CameraTracking.complete` takes their
embeddings (re-joining tracks the tracker recognises), decides who each
embedded track is, and returns the batch that every consumer reads.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import numpy as np

from facetrail.pipeline.analyzer import AnalysedFrame
from facetrail.pipeline.batch import PENDING, EndedTrack, FrameBatch, Merge, TrackVerdict
from facetrail.pipeline.high_resolution import HighResolutionShots, RecordShot
from facetrail.pipeline.matcher import GalleryMatcher
from facetrail.track.bestshot import Shot
from facetrail.track.camera_motion import CameraMotion
from facetrail.track.decision import Decision, DecisionMethod, decide, decide_weak, weak_threshold
from facetrail.track.tracker import FaceTracker, Track
from facetrail.video.frames import Frame


@dataclass(frozen=True, eq=False)
class EmbedRequest:
    """A shot a track asked to have embedded: face ``face`` of ``frame``, or its cut from the record stream."""

    track: Track
    shot: Shot
    frame: AnalysedFrame
    face: int
    cut: RecordShot | None = None  # the same face found on the record stream: embedded from there

    @property
    def source(self) -> tuple[AnalysedFrame, int]:
        """The frame and face index the embedding is made from."""
        return (self.cut.frame, self.cut.face) if self.cut is not None else (self.frame, self.face)


@dataclass
class TrackingCounts:
    """Running totals of one camera's tracking stage."""

    frames: int = 0
    faces: int = 0
    embedded: int = 0
    tracks: int = 0
    named_tracks: int = 0
    record_shots: int = 0  # shots cut from the record stream


@dataclass(frozen=True)
class RecognitionRule:
    """When a track is named, uncertain or unknown."""

    threshold: float
    unknown_score: float
    method: DecisionMethod


class CameraTracking:
    """The tracker of one camera and the current decision of each of its tracks."""

    def __init__(self, camera: str, tracker: FaceTracker, matcher: GalleryMatcher, rule: RecognitionRule, *,
                 run_id: str, model_id: str, embedding_size: int, shot_ids: Iterator[int] | None = None,
                 high_resolution: HighResolutionShots | None = None) -> None:
        self.camera = camera
        self.high_resolution = high_resolution  # small faces cut from the record stream
        self.tracker = tracker
        self.matcher = matcher
        self.rule = rule
        self.run_id = run_id
        self.model_id = model_id
        self.embedding_size = embedding_size
        self.motion = CameraMotion()
        self.counts = TrackingCounts()
        self.last_t = 0.0
        self.last_at: datetime | None = None
        self._shot_ids = shot_ids or itertools.count(1)
        self._uids: dict[int, str] = {}  # confirmed track id -> its uid
        self._verdicts: dict[int, TrackVerdict] = {}
        self._started: set[int] = set()
        self._quality: dict[int, float] = {}  # face index -> quality, for the faces judged in this frame
        self._frame: tuple[Frame, AnalysedFrame] | None = None

    def observe(self, frame: Frame, analysed: AnalysedFrame) -> list[EmbedRequest]:
        """Track this frame's faces; returns the shots to embed (all in one batch with other cameras')."""
        t = frame.captured_at.timestamp()
        self.last_t, self.last_at = t, frame.captured_at
        self.counts.frames += 1
        self.counts.faces += len(analysed)
        self._frame = (frame, analysed)
        self._started, self._quality = set(), {}
        requests = []
        # The camera's motion only moves existing tracks: with none, the optical flow is skipped.
        camera_motion = self.motion.estimate(frame.image, needed=bool(self.tracker.active), grey=lambda: frame.grey)
        if self.high_resolution is not None:
            self.high_resolution.advance(frame)
        for track in self.tracker.update(analysed.faces.xyxy, analysed.faces.scores, t, camera_motion):
            i = track.detection
            if i is None or not track.confirmed:
                continue
            if track.track_id not in self._uids:
                self._uids[track.track_id] = f"{self.run_id}:{self.camera}:{track.track_id}"
                self._started.add(track.track_id)
                self.counts.tracks += 1
            cut = self._record_shot(frame, analysed, i, track)
            source, index = (cut.frame, cut.face) if cut is not None else (analysed, i)
            gate, area = track.shots.settings, source.area(index)
            if area < gate.min_area and (area < gate.weak_min_area or not track.shots.takes_weak()):
                continue  # too small to recognise, or a small face this track wants no more of: never aligned
            face = source.shot(index)
            self._quality[i] = face.quality.score
            if not face.usable:
                continue
            shot = Shot(shot_id=next(self._shot_ids), t=t, quality=face.quality.score, area=area,
                        crop=face.crop, thumbnail=None, stream="detect" if cut is None else "record")
            if track.shots.offer(shot):
                self.counts.record_shots += cut is not None
                requests.append(EmbedRequest(track, shot, analysed, i, cut))
        return requests

    def complete(self, requests: Sequence[EmbedRequest], vectors: np.ndarray) -> FrameBatch:
        """Attach this camera's embeddings, decide the embedded tracks, and return the frame's batch."""
        if self._frame is None:
            raise RuntimeError("complete() before observe()")
        frame, analysed = self._frame
        self._frame = None
        merges: list[Merge] = []
        decided: set[int] = set()
        made: dict[int, np.ndarray] = {}
        for request, vector in zip(requests, vectors, strict=True):
            self.counts.embedded += 1
            made[request.face] = vector
            survivor = self.tracker.set_embedding(request.track, request.shot.shot_id, vector)
            if survivor is not request.track:
                absorbed = request.track.track_id
                absorbed_uid = self._uids.pop(absorbed, None)
                if absorbed_uid is not None:
                    self.counts.tracks -= 1
                merges.append(Merge(survivor.track_id, absorbed, self._uids.get(survivor.track_id, "?"),
                                    absorbed_uid or "?"))
                self._verdicts.pop(absorbed, None)
                self._started.discard(absorbed)
            verdict = self._decide(survivor)
            if verdict is not None:
                self._verdicts[survivor.track_id] = verdict
                decided.add(survivor.track_id)
        return self._batch(frame, analysed, made, decided, tuple(merges))

    def end_stale(self) -> list[EndedTrack]:
        """Tracks gone for good as of the latest frame."""
        return self._ended(self.tracker.end_stale(self.last_t))

    def end_all(self) -> list[EndedTrack]:
        """Every track (the stream is over)."""
        return self._ended(self.tracker.end_all())

    def open_uids(self) -> list[str]:
        """Uids of the confirmed tracks not yet ended."""
        return [self._uids[t.track_id] for t in self.tracker.active if t.track_id in self._uids]

    # -- internals -------------------------------------------------------------------------------------------

    def _record_shot(self, frame: Frame, analysed: AnalysedFrame, i: int, track: Track) -> RecordShot | None:
        """Face ``i`` cut from the record stream when it is small here and its track could use a shot now.

        Done before the shot gate, which must judge the face at the size it would be embedded from.
        """
        high = self.high_resolution
        if high is None or not high.wants(analysed, i) or not track.shots.may_embed():
            return None  # (the budget first: judging the shot aligns the face)
        if not track.shots.may_embed(*high.expected(analysed, i, track.track_id)):
            return None
        return high.cut(frame, analysed, i, track.track_id)

    def _decide(self, track: Track) -> TrackVerdict | None:
        embedded = [shot for shot in track.shots.decisive() if shot.embedding is not None]
        if not embedded:
            return None
        weak = all(shot.weak for shot in embedded)
        if weak:
            decision = self._decide_weak(track, embedded)
        else:
            decision = decide(embedded, self.matcher, method=self.rule.method, threshold=self.rule.threshold)
        best = track.shots.best()
        evidence = max(embedded, key=lambda s: s.quality).embedding
        quality = best.quality if best else 0.0
        if decision.identity_id is not None:
            if self._verdicts.get(track.track_id, PENDING).status != "named":
                self.counts.named_tracks += 1
            return TrackVerdict("named", decision.identity_id, self.matcher.name(decision.identity_id),
                                decision.score, evidence, quality)
        # A small face that matches nobody is no evidence of a stranger: weak tracks are never "unknown".
        status: Literal["unknown", "uncertain"] = "unknown" if decision.score <= self.rule.unknown_score \
            and not weak else "uncertain"
        return TrackVerdict(status, None, None, decision.score, evidence, quality)

    def _decide_weak(self, track: Track, embedded: Sequence[Shot]) -> Decision:
        gate = track.shots.settings
        calibrated = weak_threshold(self.model_id, gate.weak_threshold)
        # No calibration for this recogniser and none configured: weak shots are shown, never named. And a weak
        # track is never named under the recognition threshold, whatever weak_threshold says.
        threshold = math.inf if calibrated is None else max(calibrated, self.rule.threshold)
        return decide_weak(embedded, self.matcher, threshold=threshold, votes=gate.weak_votes)

    def _batch(self, frame: Frame, analysed: AnalysedFrame, made: dict[int, np.ndarray], decided: set[int],
               merges: tuple[Merge, ...]) -> FrameBatch:
        rows = [t for t in self.tracker.active if t.detection is not None and t.confirmed and t.track_id in self._uids]
        index = np.array([t.detection for t in rows], np.int64)
        n = len(rows)
        embeddings = np.zeros((n, self.embedding_size), np.float32)
        embedded = np.zeros(n, bool)
        for k, i in enumerate(index):
            if int(i) in made:
                embeddings[k], embedded[k] = made[int(i)], True
        return FrameBatch(
            camera=self.camera, captured_at=frame.captured_at, pts=frame.pts, frame=analysed, model_id=self.model_id,
            track_ids=np.array([t.track_id for t in rows], np.int64),
            uids=tuple(self._uids[t.track_id] for t in rows),
            face_index=index,
            boxes=np.asarray(analysed.faces.xyxy, np.float32).reshape(-1, 4)[index],
            landmarks=np.asarray(analysed.faces.landmarks, np.float32).reshape(-1, 5, 2)[index],
            quality=np.array([self._quality.get(int(i), np.nan) for i in index], np.float32),
            embeddings=embeddings, embedded=embedded,
            verdicts=tuple(self._verdicts.get(t.track_id, PENDING) for t in rows),
            decided=np.array([t.track_id in decided for t in rows], bool),
            started=np.array([t.track_id in self._started for t in rows], bool),
            merges=merges)

    def _ended(self, tracks: Sequence[Track]) -> list[EndedTrack]:
        at = self.last_at
        ended = []
        for track in tracks:
            uid = self._uids.pop(track.track_id, None)
            self._verdicts.pop(track.track_id, None)
            if uid is not None and at is not None:
                ended.append(EndedTrack(self.camera, track.track_id, uid, at))
        return ended

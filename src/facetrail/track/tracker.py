"""A ByteTrack-style multi-face tracker for one camera.

Each frame: predict every track with its Kalman filter over the time since
the last frame, match confident detections to tracks by IoU, then the weak
detections ByteTrack would otherwise throw away to the still-unmatched
active tracks. Confident leftovers start tentative tracks, confirmed after
``min_hits`` detections. A track unseen for a moment is "lost": it can still
be matched by IoU for ``max_lost_s``, and re-joined by appearance (a new
track whose first embedding matches it) for ``rejoin_s``; after both it ends.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from pydantic import Field
from pydantic.dataclasses import dataclass as pydantic_dataclass

from facetrail.track.bestshot import STRICT, BestShots, BestShotSettings
from facetrail.track.kalman import BoxKalman, buffered, greedy_match, iou_matrix, size_ratio


@pydantic_dataclass(frozen=True, config=STRICT)
class TrackLifetimes:
    """How long a track lives unseen (the configuration's ``tracking:``)."""

    max_lost_s: float = Field(default=1.5, gt=0, le=60, title="Lost after",
                              description="A track not seen for this many seconds is no longer matched by position.")
    rejoin_s: float = Field(default=3.0, ge=0, le=60, title="Re-join window",
                            description="A new track whose face matches a track lost at most this long ago "
                                        "continues it (a person hidden for a moment).")
    rejoin_similarity: float = Field(default=0.35, ge=-1, le=1, title="Re-join similarity",
                                     description="Cosine similarity a re-joined face needs.")


@pydantic_dataclass(frozen=True, config=STRICT)
class TrackerSettings(TrackLifetimes):
    """Association thresholds (fixed, measured) on top of the configurable lifetimes."""

    high_score: float = 0.6
    low_score: float = 0.35
    match_iou: float = 0.3
    low_match_iou: float = 0.5
    # Faces move fast relative to their size at a few frames per second: boxes are compared grown by
    # this fraction on each side (buffered IoU, Yang et al. 2023), and pairs whose heights differ more
    # than max_size_ratio are never matched (a different, nearer or farther, person).
    buffer: float = 0.5
    new_track_buffer: float = 1.5  # a track seen once has no velocity yet: search wider
    max_size_ratio: float = 1.35
    min_hits: int = 2


@dataclass(eq=False)
class Track:
    """The state of one tracked face.

    ``box``: the Kalman estimate (xyxy), predicted while unseen. ``lost``: a
    confirmed track missed in the latest update. ``detection``: index of its
    detection in the latest update, None when unmatched there. What the
    pipeline knows of a track lives in its tracking stage, keyed by
    ``track_id``, never on the track.
    """

    track_id: int
    box: np.ndarray
    first_seen: float
    last_seen: float
    shots: BestShots
    kalman: BoxKalman
    hits: int = 1
    confirmed: bool = False
    lost: bool = False
    detection: int | None = None

    def mean_embedding(self) -> np.ndarray | None:
        """Unit mean of the track's embeddings, None before the first."""
        vectors = [s.embedding for s in self.shots.embedded() if s.embedding is not None]
        if not vectors:
            return None
        mean = np.mean(vectors, axis=0)
        return np.asarray(mean / max(float(np.linalg.norm(mean)), 1e-12), np.float32)


class FaceTracker:
    """Tracks the faces of one camera across frames."""

    def __init__(self, settings: TrackerSettings | None = None, best_shots: BestShotSettings | None = None) -> None:
        self.settings = settings or TrackerSettings()
        self.best_shot_settings = best_shots or BestShotSettings()
        self._tracks: list[Track] = []
        self._ids = itertools.count(1)
        self._last_t: float | None = None

    @property
    def active(self) -> list[Track]:
        """Every track not yet ended (lost ones included)."""
        return list(self._tracks)

    def update(self, boxes: np.ndarray, scores: np.ndarray, t: float,
               camera_motion: np.ndarray | None = None) -> list[Track]:
        """Associate one frame's detections; returns the tracks matched in it (``detection`` set).

        The list includes tracks started in this frame, still unconfirmed
        (``confirmed`` False) until ``min_hits`` detections.

        ``camera_motion``: the 2x3 transform of the picture since the previous
        update (``CameraMotion.estimate``), applied to every track first.
        """
        s = self.settings
        dt = 0.0 if self._last_t is None else max(0.0, t - self._last_t)
        self._last_t = t
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        scores = np.asarray(scores, np.float64).reshape(-1)
        for track in self._tracks:
            track.detection = None
            if camera_motion is not None:
                track.kalman.warp(np.asarray(camera_motion, np.float64))
            track.box = track.kalman.predict(dt)
        high = np.flatnonzero(scores >= s.high_score)
        low = np.flatnonzero((scores >= s.low_score) & (scores < s.high_score))
        candidates = [tr for tr in self._tracks if not tr.lost or t - tr.last_seen <= s.max_lost_s]
        matched: list[Track] = []
        first = greedy_match(self._affinity(candidates, boxes[high]), s.match_iou)
        for row, col in first:
            matched.append(self._hit(candidates[row], boxes[high[col]], int(high[col]), t))
        leftover = [tr for k, tr in enumerate(candidates) if k not in {r for r, _ in first} and not tr.lost]
        second = greedy_match(self._affinity(leftover, boxes[low]), s.low_match_iou)
        for row, col in second:
            matched.append(self._hit(leftover[row], boxes[low[col]], int(low[col]), t))
        used = {c for _, c in first}
        for col in range(len(high)):
            if col not in used:
                matched.append(self._start(boxes[high[col]], int(high[col]), t))
        hit_ids = {id(tr) for tr in matched}
        survivors = []
        for track in self._tracks:
            if id(track) in hit_ids:
                survivors.append(track)
            elif track.confirmed:
                track.lost = True
                survivors.append(track)
            # an unconfirmed track that misses a frame was most likely a false detection: dropped
        self._tracks = survivors + [tr for tr in matched if tr not in survivors]
        return matched

    def set_embedding(self, track: Track, shot_id: int, embedding: np.ndarray) -> Track:
        """Store a shot's embedding; a new track whose face matches a lost one is merged into it.

        Only a track's first embedding is compared, with the tracks lost at
        most ``rejoin_s`` ago and last seen before this one appeared. On a
        merge the older track (id, ``first_seen``) continues with
        both tracks' shots and is returned; the newer one is gone.
        """
        first = not track.shots.embedded()
        track.shots.set_embedding(shot_id, embedding)
        if not first:
            return track
        vector = np.asarray(embedding, np.float32)
        best, best_score = None, self.settings.rejoin_similarity
        for other in self._tracks:
            if other is track or not other.lost or track.last_seen - other.last_seen > self.settings.rejoin_s:
                continue
            if other.last_seen >= track.first_seen:
                continue  # both were in view at once: two faces, however alike
            mean = other.mean_embedding()
            if mean is None:
                continue
            score = float(mean @ vector)
            if score >= best_score:
                best, best_score = other, score
        if best is None:
            return track
        return self._merge(best, track)

    def end_stale(self, t: float) -> list[Track]:
        """End tracks lost for longer than ``max(max_lost_s, rejoin_s)``; returns them (all confirmed).

        A track lost past ``max_lost_s`` is no longer matched by position but
        stays, until ``rejoin_s``, for a re-join by appearance.
        """
        horizon = max(self.settings.max_lost_s, self.settings.rejoin_s)
        ended = [tr for tr in self._tracks if tr.lost and t - tr.last_seen > horizon]
        self._tracks = [tr for tr in self._tracks if tr not in ended]
        return [tr for tr in ended if tr.confirmed]

    def end_all(self) -> list[Track]:
        """End every track (the stream is over); returns the confirmed ones."""
        ended, self._tracks = self._tracks, []
        return [tr for tr in ended if tr.confirmed]

    def _affinity(self, tracks: list[Track], detections: np.ndarray) -> np.ndarray:
        """Buffered IoU of predicted track boxes and detections, zero where the sizes disagree."""
        if not tracks or not len(detections):
            return np.zeros((len(tracks), len(detections)))
        out = np.zeros((len(tracks), len(detections)))
        for buffer, rows in ((self.settings.buffer, [k for k, tr in enumerate(tracks) if tr.hits > 1]),
                             (self.settings.new_track_buffer, [k for k, tr in enumerate(tracks) if tr.hits <= 1])):
            if rows:
                boxes = np.stack([tracks[k].box for k in rows])
                out[rows] = iou_matrix(buffered(boxes, buffer), buffered(detections, buffer))
        boxes = np.stack([tr.box for tr in tracks])
        return np.where(size_ratio(boxes, detections) <= self.settings.max_size_ratio, out, 0.0)

    def _hit(self, track: Track, box: np.ndarray, index: int, t: float) -> Track:
        track.box = track.kalman.update(box)
        track.detection, track.last_seen, track.lost = index, t, False
        track.hits += 1
        track.confirmed = track.confirmed or track.hits >= self.settings.min_hits
        return track

    def _start(self, box: np.ndarray, index: int, t: float) -> Track:
        kalman = BoxKalman(box)
        return Track(track_id=next(self._ids), box=kalman.box, first_seen=t, last_seen=t,
                     shots=BestShots(self.best_shot_settings), kalman=kalman, detection=index,
                     confirmed=self.settings.min_hits <= 1)

    def _merge(self, old: Track, new: Track) -> Track:
        old.kalman, old.box = new.kalman, new.box
        old.last_seen, old.detection, old.lost = new.last_seen, new.detection, False
        old.hits += new.hits
        old.confirmed = old.confirmed or new.confirmed
        old.shots.merge(new.shots)
        self._tracks = [tr for tr in self._tracks if tr is not new]
        return old

"""The seam after the tracker: one frozen value per analysed frame and camera.

Everything downstream of tracking (sightings and visitors, event rules, doors,
camera status) reads a :class:`FrameBatch` and nothing else: the tracks in
view as columns, in the style of supervision's ``Detections`` and
``facetrail.vision.types``. No payload dicts, no tuples to unpack, no
reaching back into the tracker.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import numpy as np

from facetrail.pipeline.analyzer import AnalysedFrame

Status = Literal["pending", "named", "uncertain", "unknown"]


@dataclass(frozen=True)
class TrackVerdict:
    """A track's current decision: who it is (when named), the score, and the evidence it rests on.

    ``embedding``: the track's best embedded shot (the one stored as evidence); ``quality``: its best kept shot's.
    """

    status: Status
    identity_id: int | None = None
    name: str | None = None
    score: float | None = None
    embedding: np.ndarray | None = None
    quality: float = 0.0


PENDING = TrackVerdict("pending")


@dataclass(frozen=True)
class Merge:
    """The tracker joined ``absorbed`` to ``survivor`` in this frame: the same person, one track from now on."""

    survivor: int
    absorbed: int
    survivor_uid: str
    absorbed_uid: str


@dataclass(frozen=True, eq=False)
class FrameBatch:
    """The confirmed tracks in view in one analysed frame of one camera, one row per track.

    ``face_index``: the row's face in ``frame.faces``; ``quality``: NaN where the face was not judged (too small
    to recognise); ``embedded``: an embedding was made of this row's face in this frame (``embeddings`` holds
    it; other rows are zero); ``decided``: the row's verdict was made again in this frame; ``started``: the
    track was confirmed in this frame.
    """

    camera: str
    captured_at: datetime
    frame: AnalysedFrame
    model_id: str
    track_ids: np.ndarray  # (n,) int64
    uids: tuple[str, ...]
    face_index: np.ndarray  # (n,) int64
    boxes: np.ndarray  # (n, 4) float32, xyxy
    landmarks: np.ndarray  # (n, 5, 2) float32
    quality: np.ndarray  # (n,) float32
    embeddings: np.ndarray  # (n, d) float32
    embedded: np.ndarray  # (n,) bool
    verdicts: tuple[TrackVerdict, ...]
    decided: np.ndarray  # (n,) bool
    started: np.ndarray  # (n,) bool
    merges: tuple[Merge, ...] = ()
    pts: float = 0.0  # the frame's media time in its source (a resumed file camera starts after it)

    def __post_init__(self) -> None:
        n = len(self.track_ids)
        columns = (self.uids, self.face_index, self.boxes, self.landmarks, self.quality, self.embeddings,
                   self.embedded, self.verdicts, self.decided, self.started)
        if any(len(column) != n for column in columns):
            raise ValueError(f"every column of a FrameBatch has one row per track ({n})")
        for array in (self.track_ids, self.face_index, self.boxes, self.landmarks, self.quality, self.embeddings,
                      self.embedded, self.decided, self.started):
            array.flags.writeable = False

    def __len__(self) -> int:
        return len(self.track_ids)

    def rows(self) -> range:
        """Row numbers, for loops over the tracks in view."""
        return range(len(self))

    def embedding_of(self, row: int) -> np.ndarray | None:
        """The embedding made of row ``row``'s face in this frame, None when none was made."""
        return self.embeddings[row] if self.embedded[row] else None


@dataclass(frozen=True)
class EndedTrack:
    """A track that left its camera (or the camera's stream ended) at ``at``."""

    camera: str
    track_id: int
    uid: str
    at: datetime

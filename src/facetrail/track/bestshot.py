"""The best shots of a track: which frames of a face are worth keeping and embedding.

A track is embedded on its first usable shot and again only when a clearly
better one arrives (quality up by ``reembed_margin``), at most
``max_embeddings`` times: a face walking towards the camera is embedded a
few times as it grows sharper, not on every frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class BestShotSettings:
    """How many shots a track keeps and when it asks for an embedding."""

    keep: int = 3
    max_embeddings: int = 6
    reembed_margin: float = 0.1
    min_quality: float = 0.25
    min_area: float = 1600.0  # px² of the face box


@dataclass(eq=False)
class Shot:
    """One frame's view of the tracked face."""

    shot_id: int
    t: float
    quality: float
    area: float
    crop: np.ndarray  # 112x112 aligned BGR
    thumbnail: np.ndarray | None = None
    embedding: np.ndarray | None = None


@dataclass
class BestShots:
    """The best shots of one track and the embedded ones."""

    settings: BestShotSettings = field(default_factory=BestShotSettings)
    kept: list[Shot] = field(default_factory=list)
    embedded_shots: list[Shot] = field(default_factory=list)
    pending: dict[int, Shot] = field(default_factory=dict)  # asked to be embedded, embedding not back yet
    embeddings_used: int = 0

    def eligible(self, shot: Shot) -> bool:
        """True when the shot is large and good enough to recognise from."""
        return shot.quality >= self.settings.min_quality and shot.area >= self.settings.min_area

    def offer(self, shot: Shot) -> bool:
        """Keep the shot if it is among the best; True when it should be embedded now."""
        if not self.eligible(shot):
            return False
        self.kept.append(shot)
        self.kept.sort(key=lambda s: -s.quality)
        del self.kept[self.settings.keep:]
        if self.embeddings_used >= self.settings.max_embeddings:
            return False
        best_embedded = max((s.quality for s in self.embedded_shots), default=None)
        if best_embedded is not None and shot.quality < best_embedded + self.settings.reembed_margin:
            return False
        if self.pending:
            return False  # an embedding for this track is already on its way
        self.embeddings_used += 1
        self.pending[shot.shot_id] = shot
        return True

    def set_embedding(self, shot_id: int, embedding: np.ndarray) -> Shot | None:
        """Attach the embedding of a shot this track asked for; None if the shot is unknown."""
        shot = self.pending.pop(shot_id, None) or self.get(shot_id)
        if shot is None:
            return None
        shot.embedding = np.asarray(embedding, np.float32)
        if shot not in self.embedded_shots:
            self.embedded_shots.append(shot)
        return shot

    def get(self, shot_id: int) -> Shot | None:
        """A kept or embedded shot by id."""
        for shot in (*self.kept, *self.embedded_shots, *self.pending.values()):
            if shot.shot_id == shot_id:
                return shot
        return None

    def embedded(self) -> list[Shot]:
        """Shots that have an embedding, oldest first."""
        return list(self.embedded_shots)

    def best(self) -> Shot | None:
        """The highest-quality shot kept."""
        return self.kept[0] if self.kept else None

    def merge(self, other: BestShots) -> None:
        """Take over another track's shots (the same face, re-joined)."""
        self.kept = sorted([*self.kept, *other.kept], key=lambda s: -s.quality)[:self.settings.keep]
        self.embedded_shots = sorted([*self.embedded_shots, *other.embedded_shots], key=lambda s: s.t)
        self.embeddings_used += other.embeddings_used
        self.pending.update(other.pending)

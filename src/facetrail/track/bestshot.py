"""The best shots of a track: which frames of a face are worth keeping and embedding.

A track is embedded on its first usable shot and again only when a clearly
better one arrives (quality up by ``reembed_margin``), at most
``max_embeddings`` times: a face walking towards the camera is embedded a
few times as it grows sharper, not on every frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass as pydantic_dataclass

# Settings are validated pydantic dataclasses: the configuration file's schema is built from these very classes.
STRICT = ConfigDict(extra="forbid")


@pydantic_dataclass(frozen=True, config=STRICT)
class ShotSelection:
    """Which shots of a track are kept and how often it is embedded (the configuration's ``tracking:``)."""

    best_shots: int = Field(default=3, ge=1, le=20, title="Best shots kept", description="Best shots kept per track.")
    max_embeddings: int = Field(default=6, ge=1, le=50, title="Embeddings per track",
                                description="A track is embedded at most this many times.")
    reembed_margin: float = Field(default=0.1, ge=0, le=1, title="Re-embed margin",
                                  description="A new shot is embedded when its quality beats the best embedded "
                                              "one by this much.")


@pydantic_dataclass(frozen=True, config=STRICT)
class ShotGate:
    """When a face is good enough to recognise (the configuration's ``face_recognition:``, per camera)."""

    min_area: int = Field(default=1600, ge=0, title="Minimum face area",
                          description="Face box area in pixels² below which a face is tracked but not recognised.")
    min_quality: float = Field(default=0.25, ge=0, le=1, title="Minimum quality",
                               description="Quality score (0-1: size, sharpness, pose) a shot needs to be embedded.")


@pydantic_dataclass(frozen=True, config=STRICT)
class BestShotSettings(ShotSelection, ShotGate):
    """Everything a track's best shots need: the selection and the gate."""


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
        del self.kept[self.settings.best_shots:]
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
        self.kept = sorted([*self.kept, *other.kept], key=lambda s: -s.quality)[:self.settings.best_shots]
        self.embedded_shots = sorted([*self.embedded_shots, *other.embedded_shots], key=lambda s: s.t)
        self.embeddings_used += other.embeddings_used
        self.pending.update(other.pending)

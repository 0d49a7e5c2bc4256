"""The best shots of a track: which frames of a face are worth keeping and embedding.

A track is embedded on its first usable shot and again only when a clearly
better one arrives (quality up by ``reembed_margin``), at most
``max_embeddings`` times: a face walking towards the camera is embedded a
few times as it grows sharper, not on every frame.

Shots under the gate (``min_area``, ``min_quality``) but above the floor
(``weak_min_area``) are *weak*: a face far from the camera. Until a track has
a strong embedded shot, each of its weak shots is embedded, at most
``weak_embeddings`` of them, because a weak track is named only when several
weak shots agree (``facetrail.track.decision.decide_weak``). Below the floor a
face is tracked but never aligned or embedded, and a shot of quality 0 (a face
turned past the pose limits, ``facetrail.vision.quality``) is never embedded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass as pydantic_dataclass

# Settings are validated pydantic dataclasses: the configuration file's schema is built from these very classes.
STRICT = ConfigDict(extra="forbid")
# Weak shots, measured on LFW View 1 probes shrunk into 640x360 video frames (numbers: facetrail.track.decision).
# Floor: faces 16 px wide (box ~350 px²) are useless, their genuine median cosine (0.14) under the impostors'
# 99.9th percentile (0.19), 92% missed at the weak threshold; at 20 px (~525 px²) genuine median 0.23, 58% missed.
WEAK_MIN_AREA = 400  # px², about 18 px wide
WEAK_EMBEDDINGS = 3  # a weak track is decided on at most 3 shots: the k-of-3 agreement that was calibrated
WEAK_VOTES = 2  # 2 of 3 agreeing: a third of the false names of 1 of 3, half the misses of 3 of 3


@pydantic_dataclass(frozen=True, config=STRICT)
class ShotSelection:
    """Which shots of a track are kept and how often it is embedded (the configuration's ``tracking:``)."""

    best_shots: int = Field(default=3, ge=1, le=20, title="Best shots kept", description="Best shots kept per track.")
    max_embeddings: int = Field(default=6, ge=1, le=50, title="Embeddings per track",
                                description="A track is embedded at most this many times.")
    reembed_margin: float = Field(default=0.1, ge=0, le=1, title="Re-embed margin",
                                  description="A new shot is embedded when its quality beats the best embedded "
                                              "one by this much.")
    weak_embeddings: int = Field(default=WEAK_EMBEDDINGS, ge=0, le=50, title="Weak embeddings per track",
                                 description="A track with no shot past the gate (min_area, min_quality) embeds "
                                             "at most this many of its weak shots, to be named when weak_votes of "
                                             "them agree. 0: weak shots are never embedded.")


@pydantic_dataclass(frozen=True, config=STRICT)
class ShotGate:
    """When a face is good enough to recognise (the configuration's ``face_recognition:``, per camera).

    ``min_area`` 1600 (a face about 34 px wide) was checked with the weak-shot calibration: one blurred shot at
    the named threshold 0.2323 matches strangers at 5.5e-4 with 6% of true matches missed at 32 px, 6.5e-4 and
    2.8% at 40 px, against 8.1e-4 and 0.5% for full-size LFW faces; from about this size one shot may name.
    """

    min_area: int = Field(default=1600, ge=0, title="Minimum face area",
                          description="Face box area in pixels² a shot needs to name a person on its own. Smaller "
                                      "faces (down to weak_min_area) are weak shots.")
    min_quality: float = Field(default=0.25, ge=0, le=1, title="Minimum quality",
                               description="Quality score (0-1: size, sharpness, pose) a shot needs to name a person "
                                           "on its own. Poorer shots over weak_min_area are weak shots.")
    weak_min_area: int = Field(default=WEAK_MIN_AREA, ge=0, title="Weak face floor",
                               description="Face box area in pixels² from which a face under the gate is still a "
                                           "weak shot: embedded, and named only when weak_votes shots agree. Below "
                                           "it a face is tracked but never recognised.")
    weak_votes: int = Field(default=WEAK_VOTES, ge=1, le=50, title="Weak votes",
                            description="How many weak shots of a track must match the same person at or above "
                                        "weak_threshold for it to be named.")
    weak_threshold: float | None = Field(default=None, ge=-1, le=1, title="Weak-shot threshold",
                                         description="Cosine similarity a weak shot needs to count as a vote. "
                                                     "Empty: the value calibrated for the recogniser; a recogniser "
                                                     "without one names no track from weak shots.")


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
    weak: bool = False  # under the gate, over the floor (set by BestShots.offer)
    stream: Literal["detect", "record"] = "detect"  # the camera input the face was cut from


@dataclass
class BestShots:
    """The best shots of one track and the embedded ones."""

    settings: BestShotSettings = field(default_factory=BestShotSettings)
    kept: list[Shot] = field(default_factory=list)
    embedded_shots: list[Shot] = field(default_factory=list)
    pending: dict[int, Shot] = field(default_factory=dict)  # asked to be embedded, embedding not back yet
    embeddings_used: int = 0
    weak_embeddings_used: int = 0

    def eligible(self, shot: Shot) -> bool:
        """True when the shot is large and good enough to recognise from on its own."""
        return shot.quality >= self.settings.min_quality and shot.area >= self.settings.min_area

    def weak_eligible(self, shot: Shot) -> bool:
        """True when the shot misses the gate but is over the floor (and weak shots are on): it counts only with
        others that agree. A shot of quality 0 never does: its face is turned past the pose limits (70 degrees of
        yaw, 50 of pitch), a view the weak-shot threshold was not calibrated on (frontal LFW faces, shrunk)."""
        return (self.settings.weak_embeddings > 0 and not self.eligible(shot)
                and shot.area >= self.settings.weak_min_area and shot.quality > 0)

    def offer(self, shot: Shot) -> bool:
        """Keep the shot if it is among the best; True when it should be embedded now."""
        strong = self.eligible(shot)
        if not strong and not self.weak_eligible(shot):
            return False
        shot.weak = not strong
        self.kept.append(shot)
        self.kept.sort(key=_best_first)
        del self.kept[self.settings.best_shots:]
        if self.pending:
            return False  # an embedding for this track is already on its way
        wanted = self._wants_strong(shot) if strong else self.takes_weak()
        if wanted:
            if strong:
                self.embeddings_used += 1
            else:
                self.weak_embeddings_used += 1
            self.pending[shot.shot_id] = shot
        return wanted

    def may_embed(self, quality: float | None = None, area: float | None = None) -> bool:
        """True when a shot offered now could be embedded: none on its way and budget left; given the shot's
        expected ``quality`` and ``area``, as the strong or weak shot it would be."""
        if self.pending:
            return False
        if quality is None or area is None:
            return self.embeddings_used < self.settings.max_embeddings or self.takes_weak()
        if quality < self.settings.min_quality or area < self.settings.min_area:
            return area >= self.settings.weak_min_area and quality > 0 and self.takes_weak()
        if self.embeddings_used >= self.settings.max_embeddings:
            return False
        best = max((s.quality for s in self.embedded_shots if not s.weak), default=None)
        return best is None or quality >= best + self.settings.reembed_margin

    def _wants_strong(self, shot: Shot) -> bool:
        if self.embeddings_used >= self.settings.max_embeddings:
            return False
        best_embedded = max((s.quality for s in self.embedded_shots if not s.weak), default=None)
        return best_embedded is None or shot.quality >= best_embedded + self.settings.reembed_margin

    def takes_weak(self) -> bool:
        """True while weak shots may still be embedded: no strong shot yet (the track is then decided on its
        strong shots alone), weak budget left."""
        return not self.has_strong() and self.weak_embeddings_used < self.settings.weak_embeddings

    def has_strong(self) -> bool:
        """True when a shot past the gate has been embedded."""
        return any(not s.weak for s in self.embedded_shots)

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

    def decisive(self) -> list[Shot]:
        """The embedded shots a decision rests on: the strong ones if there are any, else the weak ones."""
        strong = [s for s in self.embedded_shots if not s.weak]
        return strong or list(self.embedded_shots)

    def best(self) -> Shot | None:
        """The highest-quality shot kept."""
        return self.kept[0] if self.kept else None

    def merge(self, other: BestShots) -> None:
        """Take over another track's shots (the same face, re-joined)."""
        self.kept = sorted([*self.kept, *other.kept], key=_best_first)[:self.settings.best_shots]
        self.embedded_shots = sorted([*self.embedded_shots, *other.embedded_shots], key=lambda s: s.t)
        self.embeddings_used += other.embeddings_used
        self.weak_embeddings_used += other.weak_embeddings_used
        self.pending.update(other.pending)


def _best_first(shot: Shot) -> tuple[bool, float]:
    """Strong shots before weak ones, each by quality, best first."""
    return shot.weak, -shot.quality

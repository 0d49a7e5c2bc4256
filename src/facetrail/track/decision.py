"""Who is this track? One decision per track from its embedded shots, not one per frame.

``aggregate`` matches the quality-weighted mean of the track's embeddings
once (noise of single frames averages out); ``vote`` matches each shot and
names the person only when a strict majority of shots agree.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import Field, model_validator
from pydantic.dataclasses import dataclass as pydantic_dataclass

from facetrail.track.bestshot import STRICT, Shot

Matcher = Callable[[np.ndarray], list[tuple[int | None, float]]]
DecisionMethod = Literal["aggregate", "vote"]
UNKNOWN_FRACTION = 0.8  # default unknown_score as a fraction of the recognition threshold


@pydantic_dataclass(frozen=True, config=STRICT)
class RecognitionThresholds:
    """When a track is named, and when it is an unknown visitor (the configuration's ``face_recognition:``)."""

    recognition_threshold: float | None = Field(default=None, ge=-1, le=1, title="Recognition threshold",
        description="Cosine similarity at or above which a person is named. Empty: the recogniser's calibrated "
                    "threshold.")
    unknown_score: float | None = Field(default=None, ge=-1, le=1, title="Unknown score",
        description="At or below this similarity a face is an unknown visitor; between this and the recognition "
                    "threshold it is uncertain (neither). Empty: 0.8 x the recognition threshold.")

    @model_validator(mode="after")
    def _ordered(self) -> RecognitionThresholds:
        named, unknown = self.recognition_threshold, self.unknown_score
        if named is not None and unknown is not None and unknown > named:
            raise ValueError(f"unknown_score ({unknown}) must not be above recognition_threshold ({named})")
        return self

    def resolve(self, calibrated: float) -> tuple[float, float]:
        """(recognition threshold, unknown score), the recogniser's ``calibrated`` threshold filling in."""
        named = self.recognition_threshold if self.recognition_threshold is not None else calibrated
        unknown = self.unknown_score if self.unknown_score is not None else UNKNOWN_FRACTION * named
        return named, min(unknown, named)


@dataclass(frozen=True)
class Decision:
    """The track's identity (None: not named) and the score behind it."""

    identity_id: int | None
    score: float
    method: str
    votes: dict[int, int] = field(default_factory=dict)


def aggregate_template(shots: Sequence[Shot]) -> np.ndarray:
    """Quality-weighted mean of the shots' unit embeddings, renormalised (shots without one are skipped)."""
    if not any(s.embedding is not None for s in shots):
        raise ValueError("no shot has an embedding")
    vectors = np.stack([np.asarray(s.embedding, np.float32) for s in shots if s.embedding is not None])
    weights = np.array([max(s.quality, 1e-3) for s in shots if s.embedding is not None], np.float32)
    mean = (weights[:, None] * vectors).sum(axis=0)
    return np.asarray(mean / max(float(np.linalg.norm(mean)), 1e-12), np.float32)


def decide(shots: Sequence[Shot], matcher: Matcher, *, method: DecisionMethod,
           threshold: float) -> Decision:
    """Name the track when its shots match someone at or above ``threshold``."""
    embedded = [s for s in shots if s.embedding is not None]
    if not embedded:
        return Decision(None, -1.0, method)
    if method == "aggregate":
        identity, score = matcher(aggregate_template(embedded)[None, :])[0]
        named = identity if identity is not None and score >= threshold else None
        return Decision(named, float(score), method, {named: 1} if named is not None else {})
    results = matcher(np.stack([np.asarray(s.embedding, np.float32) for s in embedded]))
    votes = Counter(identity for identity, score in results if identity is not None and score >= threshold)
    best_score = max(score for _, score in results)
    if votes:
        winner, count = votes.most_common(1)[0]
        if count * 2 > len(embedded):
            winner_score = max(score for identity, score in results if identity == winner)
            return Decision(winner, float(winner_score), method, dict(votes))
    return Decision(None, float(best_score), method, {k: v for k, v in votes.items() if k is not None})

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

from facetrail.track.bestshot import Shot

Matcher = Callable[[np.ndarray], list[tuple[int | None, float]]]


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


def decide(shots: Sequence[Shot], matcher: Matcher, *, method: Literal["aggregate", "vote"],
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

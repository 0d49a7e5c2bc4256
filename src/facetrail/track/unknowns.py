"""Anonymous ids for unknown faces: the same unknown visitor, seen again, keeps one id.

A visitor is a cluster centroid (running mean of unit embeddings). A new
unknown face joins the most similar visitor seen within the window, or
starts a new one. Visitors are never named here: only an operator can enrol
a person.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass as pydantic_dataclass

# Unknown faces are joined into one visitor only when clearly alike: a wrong merge of two strangers
# is worse than one person holding two visitor ids.
DEFAULT_CLUSTER_THRESHOLD = 0.4


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class UnknownsSettings:
    """Anonymous ids for unknown visitors (the configuration's ``unknowns:``)."""

    enabled: bool = Field(default=True, title="Cluster unknowns",
                          description="Give unknown faces an anonymous visitor id that is kept when they return.")
    cluster_threshold: float | None = Field(
        default=None, ge=-1, le=1, title="Cluster threshold",
        description=f"Similarity for the same visitor. Empty: {DEFAULT_CLUSTER_THRESHOLD}, or the recognition "
                    "threshold if that is higher.")
    window_days: float = Field(default=7, gt=0, title="Window",
                               description="Visitors not seen for this many days get a new id when they return.")

    def threshold(self, calibrated: float) -> float:
        """The similarity for the same visitor, the recogniser's ``calibrated`` threshold filling in."""
        if self.cluster_threshold is not None:
            return self.cluster_threshold
        return max(calibrated, DEFAULT_CLUSTER_THRESHOLD)

    @property
    def window(self) -> timedelta:
        """How long a visitor keeps their id while away."""
        return timedelta(days=self.window_days)


@dataclass
class Visitor:
    """One anonymous visitor. Change it only through ``UnknownClusters.update``."""

    key: int
    centroid: np.ndarray
    count: int
    first_seen: datetime
    last_seen: datetime


class UnknownClusters:
    """Recent unknown visitors, matched by cosine similarity of their centroids.

    Centroids live in one matrix (a row per visitor, grown by doubling) so a
    match is a single matrix-vector product however many visitors there are.
    """

    def __init__(self, threshold: float, window: timedelta) -> None:
        self.threshold = threshold
        self.window = window
        self._visitors: dict[int, Visitor] = {}
        self._rows: dict[int, int] = {}  # key -> row of the matrix
        self._keys: list[int] = []  # row -> key
        self._matrix = np.zeros((0, 0), np.float32)
        self._last_seen = np.zeros(0, np.float64)  # POSIX seconds, per row

    def __len__(self) -> int:
        return len(self._visitors)

    def __contains__(self, key: object) -> bool:
        return key in self._visitors

    def load(self, visitors: Iterable[Visitor]) -> None:
        """Seed from storage (a visitor already known under the same key is replaced)."""
        for visitor in visitors:
            visitor.centroid = _unit(visitor.centroid)
            self._put(visitor)

    def match(self, embedding: np.ndarray, at: datetime, *, exclude: Collection[int] = ()) -> Visitor | None:
        """The most similar visitor seen within the window (``last_seen ≥ at - window``), if similar enough.

        ``exclude``: visitors that cannot be this face (say, they are in view at
        the same moment on the same camera).
        """
        count = len(self._keys)
        if not count:
            return None
        scores = self._matrix[:count] @ self._check_dim(_unit(embedding))
        eligible = (scores >= self.threshold) & (self._last_seen[:count] >= (at - self.window).timestamp())
        for key in exclude:
            row = self._rows.get(key)
            if row is not None:
                eligible[row] = False
        if not eligible.any():
            return None
        best = int(np.argmax(np.where(eligible, scores, -np.inf)))
        return self._visitors[self._keys[best]]

    def add(self, key: int, embedding: np.ndarray, at: datetime) -> Visitor:
        """Start a new visitor."""
        visitor = Visitor(key, _unit(embedding), 1, at, at)
        self._put(visitor)
        return visitor

    def update(self, visitor: Visitor, embedding: np.ndarray, at: datetime) -> Visitor:
        """Fold one more sighting into a visitor: running-mean centroid, renormalised."""
        visitor.centroid = _unit(visitor.centroid * visitor.count + _unit(embedding))
        visitor.count += 1
        visitor.last_seen = max(visitor.last_seen, at)
        self._put(visitor)
        return visitor

    def expire(self, now: datetime) -> list[int]:
        """Forget visitors not seen within the window; returns their keys."""
        count = len(self._keys)
        stale = np.flatnonzero(self._last_seen[:count] < (now - self.window).timestamp())
        gone = [self._keys[int(row)] for row in stale]
        for key in gone:
            self._remove(key)
        return gone

    def _put(self, visitor: Visitor) -> None:
        """Insert or refresh a visitor's row."""
        vector = self._check_dim(visitor.centroid)
        row = self._rows.get(visitor.key)
        if row is None:
            row = len(self._keys)
            if row == len(self._matrix) or self._matrix.shape[1] != vector.shape[0]:  # full, or empty and new dim
                self._grow(vector.shape[0])
            self._rows[visitor.key] = row
            self._keys.append(visitor.key)
        self._visitors[visitor.key] = visitor
        self._matrix[row] = vector
        self._last_seen[row] = visitor.last_seen.timestamp()

    def _remove(self, key: int) -> None:
        """Drop a visitor; the last row moves into its place."""
        del self._visitors[key]
        row = self._rows.pop(key)
        last = len(self._keys) - 1
        if row != last:
            moved = self._keys[last]
            self._matrix[row] = self._matrix[last]
            self._last_seen[row] = self._last_seen[last]
            self._keys[row] = moved
            self._rows[moved] = row
        self._keys.pop()

    def _grow(self, dim: int) -> None:
        rows = len(self._keys)
        capacity = max(16, 2 * len(self._matrix))
        matrix = np.zeros((capacity, dim), np.float32)
        last_seen = np.zeros(capacity, np.float64)
        if rows:
            matrix[:rows] = self._matrix[:rows]
            last_seen[:rows] = self._last_seen[:rows]
        self._matrix, self._last_seen = matrix, last_seen

    def _check_dim(self, vector: np.ndarray) -> np.ndarray:
        if self._keys and vector.shape[0] != self._matrix.shape[1]:
            raise ValueError(f"embedding has {vector.shape[0]} dimensions, the visitors {self._matrix.shape[1]}")
        return vector


def _unit(vector: np.ndarray) -> np.ndarray:
    flat = np.asarray(vector, np.float32).reshape(-1)
    return np.asarray(flat / max(float(np.linalg.norm(flat)), 1e-12), np.float32)

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


@dataclass
class Visitor:
    """One anonymous visitor."""

    key: int
    centroid: np.ndarray
    count: int
    first_seen: datetime
    last_seen: datetime


class UnknownClusters:
    """Recent unknown visitors, matched by cosine similarity of their centroids."""

    def __init__(self, threshold: float, window: timedelta) -> None:
        self.threshold = threshold
        self.window = window
        self._visitors: dict[int, Visitor] = {}
        self._keys: list[int] = []
        self._matrix = np.zeros((0, 0), np.float32)

    def __len__(self) -> int:
        return len(self._visitors)

    def load(self, visitors: Iterable[Visitor]) -> None:
        """Seed from storage."""
        for visitor in visitors:
            visitor.centroid = _unit(visitor.centroid)
            self._visitors[visitor.key] = visitor
        self._rebuild()

    def match(self, embedding: np.ndarray, at: datetime, *, exclude: Collection[int] = ()) -> Visitor | None:
        """The most similar visitor seen within the window, if similar enough.

        ``exclude``: visitors that cannot be this face (say, they are in view at
        the same moment on the same camera).
        """
        if not self._keys:
            return None
        scores = self._matrix @ _unit(embedding)
        for k in np.argsort(-scores):
            if scores[k] < self.threshold:
                return None
            visitor = self._visitors[self._keys[int(k)]]
            if visitor.key not in exclude and visitor.last_seen >= at - self.window:
                return visitor
        return None

    def add(self, key: int, embedding: np.ndarray, at: datetime) -> Visitor:
        """Start a new visitor."""
        visitor = Visitor(key, _unit(embedding), 1, at, at)
        self._visitors[key] = visitor
        self._rebuild()
        return visitor

    def update(self, visitor: Visitor, embedding: np.ndarray, at: datetime) -> Visitor:
        """Fold one more sighting into a visitor."""
        merged = visitor.centroid * visitor.count + _unit(embedding)
        visitor.centroid = _unit(merged)
        visitor.count += 1
        visitor.last_seen = max(visitor.last_seen, at)
        self._rebuild()
        return visitor

    def expire(self, now: datetime) -> list[int]:
        """Forget visitors not seen within the window; returns their keys."""
        gone = [key for key, v in self._visitors.items() if v.last_seen < now - self.window]
        for key in gone:
            del self._visitors[key]
        if gone:
            self._rebuild()
        return gone

    def _rebuild(self) -> None:
        self._keys = list(self._visitors)
        self._matrix = (np.stack([self._visitors[k].centroid for k in self._keys]) if self._keys
                        else np.zeros((0, 0), np.float32))


def _unit(vector: np.ndarray) -> np.ndarray:
    flat = np.asarray(vector, np.float32).reshape(-1)
    return np.asarray(flat / max(float(np.linalg.norm(flat)), 1e-12), np.float32)

"""The index history search uses: every stored sighting's best-shot embedding, kept in step with the database.

The same backend as the gallery's templates (FAISS in memory by default, a
Milvus collection per model when configured). The database stays the source
of truth; ``sync`` brings the index in line with it: sightings it lacks are
added, sightings whose best shot changed (the recorder replaces the
embedding when a better shot comes, and its quality only grows) are
replaced, and deleted ones (retention, forget, a track dropped at its end)
are removed. An aggregate query (count, largest id, sum of qualities) skips
the work when nothing changed. Only changed rows are decrypted, so a
search no longer decrypts every sighting as the brute-force scan did.

A Milvus collection persists, but which best shot it holds is not recorded
there, so a process re-adds every sighting once, at its first sync.

Thread-safety: ``sync`` is serialised; searches run concurrently.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from sqlalchemy import ColumnElement, func, select

from facetrail.gallery.backends import IndexBackendSettings, close_index, flush_index, open_index
from facetrail.gallery.index import Index
from facetrail.gallery.milvus_index import MilvusIndex
from facetrail.store.db import Database
from facetrail.store.models import Sighting
from facetrail.store.sealed import keys_of, open_column

_BATCH = 5_000  # sightings decrypted and indexed per step


class SightingIndex:
    """The sightings of one model, searchable by embedding (see module doc)."""

    def __init__(self, db: Database, model_id: str, dim: int, settings: IndexBackendSettings,
                 data_dir: Path) -> None:
        self.db = db
        self.model_id = model_id
        self.dim = dim
        self.index: Index = open_index(settings, data_dir, "sightings", model_id, dim)
        self._seen: dict[int, float] = {}  # sighting id -> quality of the best shot indexed by this process
        self._fingerprint: tuple[int, int, float] | None = None
        self._lock = threading.Lock()

    def _where(self) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
        return Sighting.model_id == self.model_id, Sighting.embedding.is_not(None)

    def fingerprint(self) -> tuple[int, int, float]:
        """(count, largest id, sum of qualities) of the model's sightings with an embedding."""
        with self.db.session() as session:
            count, largest, total = session.execute(
                select(func.count(Sighting.id), func.max(Sighting.id), func.sum(Sighting.quality))
                .where(*self._where())).one()
        return int(count or 0), int(largest or 0), round(float(total or 0.0), 6)

    def sync(self) -> tuple[int, int]:
        """Bring the index in line with the database; returns (added or replaced, removed)."""
        seen = self.fingerprint()
        if seen == self._fingerprint:
            return 0, 0
        with self._lock:
            with self.db.session() as session:
                truth = {int(i): float(q) for i, q in session.execute(
                    select(Sighting.id, Sighting.quality).where(*self._where()))}
            present = set(self._seen)
            if self._fingerprint is None:  # first sync: what a persistent index already holds
                present.update(int(i) for i in self.index.ids())
                self._prune_other_models()
            gone = np.asarray(sorted(present - truth.keys()), np.int64)
            stale = np.asarray(sorted(i for i, q in truth.items() if self._seen.get(i) != q), np.int64)
            removed = self.index.remove(gone) if gone.size else 0
            for i in gone:
                self._seen.pop(int(i), None)
            for start in range(0, stale.size, _BATCH):
                self._add(stale[start:start + _BATCH])
            if removed:
                flush_index(self.index)
            self._fingerprint = seen
        return int(stale.size), int(removed)

    def _prune_other_models(self) -> None:
        """Milvus: sightings deleted since the model changed leave the other models' collections too."""
        if isinstance(self.index, MilvusIndex):
            with self.db.session() as session:
                every = np.asarray(session.scalars(select(Sighting.id)).all(), np.int64)
            self.index.prune_siblings("sightings", every)

    def _add(self, ids: np.ndarray) -> None:
        keys = keys_of(self.db)
        with self.db.session() as session:
            rows = [(int(i), bytes(b or b""), float(q)) for i, b, q in session.execute(
                select(Sighting.id, Sighting.embedding, Sighting.quality)
                .where(Sighting.id.in_([int(i) for i in ids]), *self._where()))]
            plain = open_column(keys, session, "sightings", "embedding", [(i, b) for i, b, _ in rows])
        if not rows:
            return
        vectors = np.stack([np.frombuffer(blob, np.float32) for blob in plain])
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        unit = vectors / np.where(norms > 0, norms, 1)  # stored best shots are unit vectors; float drift only
        self.index.add(np.asarray([i for i, _, _ in rows], np.int64), unit.astype(np.float32))
        self._seen.update((i, q) for i, _, q in rows)

    def close(self) -> None:
        """Release the index's connection (Milvus)."""
        close_index(self.index)

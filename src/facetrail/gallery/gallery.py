"""The gallery: who is enrolled, and the vector index that finds them.

``Gallery`` joins the database (source of truth), the vector index (a cache
of the embeddings for fast search) and the face engine. Every change is one
database transaction, committed before the index is touched, so a crash can
leave the index behind the database but never ahead of it; the next open
repairs it (``facetrail.gallery.sync``).

Faces are encrypted at rest (``facetrail.store.crypto``): opening a gallery
loads the master key (or refuses, in one line, without it), seals any face an
earlier version stored in plaintext, and builds the index in memory from the
decrypted templates; the index is never written to disk.

Thread-safety: index mutations are serialised by a lock; searches may run
concurrently.
"""

from __future__ import annotations

import getpass
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import func, select

from facetrail.gallery.backends import FAISS, IndexBackendSettings, close_index, flush_index
from facetrail.gallery.errors import GalleryError
from facetrail.gallery.index import Index
from facetrail.gallery.sighting_index import SightingIndex
from facetrail.gallery.sync import apply, build_index, differences, fingerprint, remove_index_files, template_ids
from facetrail.store.audit_anchor import AuditAnchor
from facetrail.store.audit_anchor import attach as attach_audit_anchor
from facetrail.store.crypto import CryptoError, KeyRing, open_keyring
from facetrail.store.db import Database, sqlite_url
from facetrail.store.models import FaceTemplate, Identity
from facetrail.store.sealed import seal_existing
from facetrail.vision.engine import EngineConfig, FaceEngine
from facetrail.vision.registry import RECOGNISERS, ModelSpec

log = logging.getLogger(__name__)



def default_actor() -> str:
    """Who is acting when nobody says: FACETRAIL_ACTOR, else the OS user."""
    try:
        return os.environ.get("FACETRAIL_ACTOR") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@dataclass(frozen=True)
class GallerySettings:
    """Where the gallery lives and which recogniser it uses.

    ``data_dir`` holds the SQLite file (unless ``db_url`` names another
    database) and, unless FACETRAIL_MASTER_KEY is set, ``master.key``;
    ``recogniser`` picks the embedding model; ``index`` the vector index backend (FAISS in memory by default,
    or Milvus).
    """

    data_dir: Path
    db_url: str | None = None
    recogniser: str = "arcface"
    index: IndexBackendSettings = field(default=FAISS)


class Gallery:
    """Database, vector index and face engine, opened together."""

    def __init__(self, settings: GallerySettings, *, engine: FaceEngine | None = None) -> None:
        if settings.recogniser not in RECOGNISERS:
            raise GalleryError(f"unknown recogniser {settings.recogniser!r}; choose from {list(RECOGNISERS)}")
        self.settings = settings
        self.spec: ModelSpec = RECOGNISERS[settings.recogniser]
        self.dim = int(self.spec.embedding_size or 0)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.db = Database(settings.db_url or sqlite_url(settings.data_dir))
        attach_audit_anchor(self.db.engine, AuditAnchor.for_data_dir(settings.data_dir))  # keys the audit chain
        try:
            with self.db.session() as session:
                self.keys: KeyRing = open_keyring(session, settings.data_dir)
            self.db.keys = self.keys
            seal_existing(self.db, self.keys)
            remove_index_files(settings.data_dir)
            self.index: Index = build_index(self.db, self.model_id, self.dim, settings.index, settings.data_dir)
        except CryptoError as error:  # no or a wrong master key, or a face that does not open: one line
            self.db.dispose()
            raise GalleryError(str(error)) from None
        except BaseException:  # e.g. Milvus unreachable (a GalleryError in one line)
            self.db.dispose()
            raise
        self._engine = engine
        self.lock = threading.Lock()
        self._fingerprint = fingerprint(self.db, self.model_id)
        self._sightings: SightingIndex | None = None  # opened by the first history search

    @property
    def model_id(self) -> str:
        """Id of the model whose embeddings this gallery searches."""
        return self.spec.model_id

    @property
    def engine(self) -> FaceEngine:
        """The face engine, built on first use (commands that only read do not load models)."""
        if self._engine is None:
            self._engine = FaceEngine(EngineConfig(recogniser=self.settings.recogniser,  # type: ignore[arg-type]
                                                   try_rotations=True))
        return self._engine

    def add_to_index(self, ids: list[int], vectors: np.ndarray) -> None:
        """Index committed templates (call after the transaction that wrote them committed)."""
        if ids:
            with self.lock:
                self.index.add(np.asarray(ids, np.int64), vectors.astype(np.float32))

    def remove_from_index(self, ids: list[int]) -> None:
        """Drop templates from the index (after the transaction that deleted them committed)."""
        if ids:
            with self.lock:
                self.index.remove(np.asarray(ids, np.int64))

    def refresh(self) -> tuple[int, int]:
        """Catch up with templates another process added or deleted; returns (added, removed).

        A long-running process (the pipeline) calls this now and then, so people enrolled or deleted from
        the dashboard or the CLI are recognised, or no longer recognised, without a restart.
        """
        seen = fingerprint(self.db, self.model_id)
        if seen == self._fingerprint:
            return 0, 0
        missing, extra = differences(self.index, template_ids(self.db, self.model_id))
        with self.lock:
            apply(self.db, self.model_id, self.dim, self.index, missing, extra)
        self._fingerprint = seen
        if self.settings.index.backend != "faiss":  # a person forgotten elsewhere: their sightings leave Milvus too
            self.sync_sightings()
        return len(missing), len(extra)

    @property
    def sightings(self) -> SightingIndex:
        """The index of the sightings' embeddings (history search), opened on first use and synced by the caller."""
        with self.lock:
            if self._sightings is None:
                self._sightings = SightingIndex(self.db, self.model_id, self.dim, self.settings.index,
                                                self.settings.data_dir)
            return self._sightings

    def sync_sightings(self) -> tuple[int, int]:
        """After sightings were deleted (forget, retention): drop them from the sightings index now.

        A FAISS one only if this process opened it (it lives in memory); a Milvus one always, so deleted faces do
        not wait in the collection for the next history search. Returns (added or replaced, removed).
        """
        if self._sightings is None and self.settings.index.backend == "faiss":
            return 0, 0
        return self.sightings.sync()

    def save_index(self) -> None:
        """Make removals durable where the index persists (Milvus: flush); a FAISS index lives in memory only
        (a file would hold the faces in plaintext)."""
        with self.lock:
            flush_index(self.index)

    def counts(self) -> tuple[int, int]:
        """(identities, templates of this gallery's model) in the database."""
        with self.db.session() as session:
            identities = session.scalar(select(func.count()).select_from(Identity)) or 0
            templates = session.scalar(select(func.count()).select_from(FaceTemplate)
                                       .where(FaceTemplate.model_id == self.model_id)) or 0
        return int(identities), int(templates)

    def close(self) -> None:
        """Release the database and the indexes' connections (Milvus)."""
        close_index(self.index)
        if self._sightings is not None:
            self._sightings.close()
        self.db.dispose()

"""Keeping the vector index true to the database, which is the source of truth.

With FAISS (the default) the index is built in memory from the decrypted
templates when the gallery opens; nothing of it is saved (an index file
would hold every face in plaintext). With Milvus the collection persists, so
opening compares its ids with the database's and fixes only the difference.
Either way a long-running process catches up with changes made elsewhere by
the same comparison (``differences`` / ``apply``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from sqlalchemy import func, select

from facetrail.gallery.backends import FAISS, IndexBackendSettings, open_index
from facetrail.gallery.index import Index
from facetrail.gallery.milvus_index import MilvusIndex
from facetrail.store.db import Database
from facetrail.store.models import FaceTemplate
from facetrail.store.sealed import keys_of, open_column

log = logging.getLogger(__name__)

_BATCH = 20_000


def template_ids(db: Database, model_id: str) -> np.ndarray:
    """Ids (int64, sorted) of every template of ``model_id`` in the database."""
    with db.session() as session:
        ids = session.scalars(select(FaceTemplate.id).where(FaceTemplate.model_id == model_id)
                              .order_by(FaceTemplate.id)).all()
    return np.asarray(ids, dtype=np.int64)


def load_vectors(db: Database, model_id: str, ids: np.ndarray, dim: int) -> np.ndarray:
    """Embeddings (len(ids), dim) for the given template ids, in the same order, decrypted."""
    keys = keys_of(db)
    out = np.empty((len(ids), dim), np.float32)
    position = {int(i): n for n, i in enumerate(ids)}
    for start in range(0, len(ids), _BATCH):
        chunk = [int(i) for i in ids[start:start + _BATCH]]
        with db.session() as session:
            rows = [(int(i), bytes(b)) for i, b in session.execute(
                select(FaceTemplate.id, FaceTemplate.embedding)
                .where(FaceTemplate.id.in_(chunk), FaceTemplate.model_id == model_id))]
            for (template_id, _), plain in zip(rows, open_column(keys, session, "face_templates", "embedding", rows),
                                               strict=True):
                out[position[template_id]] = np.frombuffer(plain, np.float32)
    return out


def build_index(db: Database, model_id: str, dim: int, settings: IndexBackendSettings = FAISS,
                data_dir: Path | None = None) -> Index:
    """The index of ``model_id``'s templates, true to the database.

    FAISS: built in memory from the decrypted templates, never written to disk (a file would hold the faces in
    plaintext, beyond the reach of ``forget``). Milvus: the model's collection, reconciled with the database
    (templates it lacks are added, ids the database no longer has removed).
    """
    truth = template_ids(db, model_id)
    index = open_index(settings, data_dir or Path("."), "templates", model_id, dim)
    missing, extra = differences(index, truth) if settings.backend != "faiss" else (truth, truth[:0])
    apply(db, model_id, dim, index, missing, extra)
    if isinstance(index, MilvusIndex):  # other models' collections: templates deleted since leave them too
        with db.session() as session:
            every = np.asarray(session.scalars(select(FaceTemplate.id)).all(), np.int64)
        index.prune_siblings("templates", every)
    log.info("vector index of %s (%s) holds %d templates: %d added, %d removed at open", model_id,
             settings.backend, len(truth), len(missing), len(extra))
    return index


def remove_index_files(data_dir: Path) -> None:
    """Delete index files earlier versions saved (they hold the faces in plaintext)."""
    for stale in data_dir.glob("index-*.faiss*"):
        stale.unlink(missing_ok=True)
        log.warning("removed %s: the vector index now lives in memory only (it held faces in plaintext)", stale)


def differences(index: Index, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ids the index lacks, ids it holds that the database no longer has)."""
    present = index.ids()
    return (np.setdiff1d(truth, present, assume_unique=True), np.setdiff1d(present, truth, assume_unique=True))


def apply(db: Database, model_id: str, dim: int, index: Index, missing: np.ndarray, extra: np.ndarray) -> None:
    """Bring the index in line with the database: drop ``extra``, add ``missing`` from their stored vectors."""
    if len(extra):
        index.remove(extra)
    if len(missing):
        index.add(missing, load_vectors(db, model_id, missing, dim))


def fingerprint(db: Database, model_id: str) -> tuple[int, int]:
    """(count, largest id) of the model's templates: changes whenever a template is added or deleted."""
    with db.session() as session:
        count, largest = session.execute(select(func.count(FaceTemplate.id), func.max(FaceTemplate.id))
                                         .where(FaceTemplate.model_id == model_id)).one()
    return int(count or 0), int(largest or 0)

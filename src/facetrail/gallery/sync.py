"""Keeping the vector index true to the database, which is the source of truth.

The index is built in memory from the decrypted templates when the gallery
opens, and a long-running process catches up with changes made elsewhere by
comparing the index's ids with the database's (``differences`` / ``apply``).
Nothing of it is saved: an index file would hold every face in plaintext.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from sqlalchemy import func, select

from facetrail.gallery.faiss_index import FaissIndex
from facetrail.gallery.index import Index
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


def build_index(db: Database, model_id: str, dim: int) -> Index:
    """The index for ``model_id`` (the FAISS backend), built in memory from the decrypted templates.

    It is never written to disk: a file would hold the faces in plaintext, beyond the reach of ``forget``.
    """
    truth = template_ids(db, model_id)
    index = FaissIndex(dim)
    if len(truth):
        index.add(truth, load_vectors(db, model_id, truth, dim))
    log.info("vector index of %s built in memory with %d templates", model_id, len(truth))
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

"""Keeping the vector index true to the database, which is the source of truth.

On open the index file is loaded and compared with the database's template
ids for the current model; a missing, corrupt or stale file is repaired
(incrementally when only a little is off, rebuilt otherwise) with a log line
saying what happened.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from sqlalchemy import func, select

from facetrail.gallery.errors import IndexCorruptError
from facetrail.gallery.faiss_index import FaissIndex, load_index
from facetrail.gallery.index import Index
from facetrail.store.db import Database
from facetrail.store.models import FaceTemplate

log = logging.getLogger(__name__)

_BATCH = 20_000


def template_ids(db: Database, model_id: str) -> np.ndarray:
    """Ids (int64, sorted) of every template of ``model_id`` in the database."""
    with db.session() as session:
        ids = session.scalars(select(FaceTemplate.id).where(FaceTemplate.model_id == model_id)
                              .order_by(FaceTemplate.id)).all()
    return np.asarray(ids, dtype=np.int64)


def load_vectors(db: Database, model_id: str, ids: np.ndarray, dim: int) -> np.ndarray:
    """Embeddings (len(ids), dim) for the given template ids, in the same order."""
    out = np.empty((len(ids), dim), np.float32)
    position = {int(i): n for n, i in enumerate(ids)}
    for start in range(0, len(ids), _BATCH):
        chunk = [int(i) for i in ids[start:start + _BATCH]]
        with db.session() as session:
            rows = session.execute(select(FaceTemplate.id, FaceTemplate.embedding)
                                   .where(FaceTemplate.id.in_(chunk), FaceTemplate.model_id == model_id))
            for template_id, blob in rows:
                out[position[template_id]] = np.frombuffer(blob, np.float32)
    return out


def open_index(db: Database, model_id: str, dim: int, path: Path) -> Index:
    """The index for ``model_id`` at ``path`` (the FAISS backend), repaired or rebuilt from the database as needed."""
    truth = template_ids(db, model_id)
    try:
        index = load_index(path, dim)
    except IndexCorruptError as error:
        if path.exists():
            log.warning("vector index %s is unusable (%s); rebuilding it from the database", path, error)
        elif len(truth):
            log.warning("vector index %s is missing; rebuilding it from the database", path)
        return rebuild(db, model_id, dim, path, truth)
    missing, extra = differences(index, truth)
    if len(missing) + len(extra) == 0:
        return index
    if len(missing) + len(extra) > max(1000, len(truth) // 10):
        log.warning("vector index %s is stale (%d missing, %d extra); rebuilding it from the database",
                    path, len(missing), len(extra))
        return rebuild(db, model_id, dim, path, truth)
    log.warning("vector index %s was stale (%d missing, %d extra); repaired from the database",
                path, len(missing), len(extra))
    apply(db, model_id, dim, index, missing, extra)
    index.save(path)
    return index


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


def rebuild(db: Database, model_id: str, dim: int, path: Path, ids: np.ndarray | None = None) -> Index:
    """A new index holding every template of ``model_id``, saved to ``path``."""
    ids = template_ids(db, model_id) if ids is None else ids
    index = FaissIndex(dim)
    if len(ids):
        index.add(ids, load_vectors(db, model_id, ids, dim))
    index.save(path)
    log.info("vector index %s rebuilt with %d templates", path, len(ids))
    return index

"""Which data key seals which stored face, and the start-up step that seals faces stored in plaintext.

Owners: a template, a negative example and a named sighting belong to their
identity; an unknown sighting has a key of its own; a visitor's centroid has
the visitor's. ``seal_existing`` encrypts rows written before encryption
(by an older facetrail) the first time a gallery opens the database with
its master key; it is idempotent and runs on every open.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from facetrail.store.crypto import IDENTITY, MAGIC, SIGHTING, VISITOR, CryptoError, KeyRing, aad, is_sealed
from facetrail.store.db import Database
from facetrail.store.models import FaceTemplate, NegativeExample, Sighting, Visitor

log = logging.getLogger(__name__)

Owner = tuple[str, int]
_BATCH = 2_000
# (model, the face columns it stores)
SEALED_COLUMNS: tuple[tuple[type[Any], tuple[str, ...]], ...] = (
    (FaceTemplate, ("embedding", "thumbnail_jpeg")),
    (NegativeExample, ("embedding",)),
    (Sighting, ("embedding", "thumbnail_jpeg")),
    (Visitor, ("centroid",)),
)


def keys_of(db: Database) -> KeyRing:
    """The database's key ring; CryptoError when it was opened without one (only the gallery opens it so)."""
    if db.keys is None:
        raise CryptoError("this database was opened without its master key; open it through the gallery")
    return db.keys


def owner_of(row: Any) -> Owner:
    """The owner whose key seals ``row``'s faces."""
    if isinstance(row, FaceTemplate | NegativeExample):
        return IDENTITY, int(row.identity_id)
    if isinstance(row, Sighting):
        return (IDENTITY, int(row.identity_id)) if row.identity_id is not None else (SIGHTING, int(row.id))
    if isinstance(row, Visitor):
        return VISITOR, int(row.id)
    raise TypeError(f"{type(row).__name__} holds no sealed face")


def seal_into(keys: KeyRing, session: Session, row: Any, column: str, plaintext: bytes | None) -> None:
    """Store ``plaintext`` sealed in ``row.column`` (the row must have its id: flush first)."""
    if plaintext is None:
        setattr(row, column, None)
        return
    if row.id is None:
        session.flush()
    setattr(row, column, keys.seal(session, owner_of(row), plaintext, aad(row.__tablename__, column, row.id)))


def open_from(keys: KeyRing, session: Session, table: str, column: str, row_id: int,
              blob: bytes | None) -> bytes | None:
    """The plaintext of a sealed column value (None stays None)."""
    if blob is None:
        return None
    return keys.open(session, blob, aad(table, column, row_id))


def open_column(keys: KeyRing, session: Session, table: str, column: str,
                rows: list[tuple[int, bytes]]) -> list[bytes]:
    """Plaintexts of many (row id, sealed value) pairs of one column, in order."""
    return keys.open_many(session, [(blob, aad(table, column, row_id)) for row_id, blob in rows])


def reseal(keys: KeyRing, session: Session, row: Any, columns: tuple[str, ...], previous: Owner) -> None:
    """Seal ``row``'s faces again under its current owner (a sighting that was named or un-named)."""
    if owner_of(row) == previous:
        return
    for column in columns:
        blob = getattr(row, column)
        if blob is not None and is_sealed(blob):
            plain = keys.open(session, blob, aad(row.__tablename__, column, row.id))
            seal_into(keys, session, row, column, plain)


def seal_existing(db: Database, keys: KeyRing) -> int:
    """Encrypt every face still stored in plaintext; returns how many values were sealed."""
    sealed = 0
    for model, columns in SEALED_COLUMNS:
        plain = or_(*(func.substr(getattr(model, c), 1, len(MAGIC)) != MAGIC for c in columns))
        while True:
            with db.session() as session:
                rows = list(session.scalars(select(model).where(plain).order_by(model.id).limit(_BATCH)))
                for row in rows:
                    for column in columns:
                        value = getattr(row, column)
                        if value is not None and not is_sealed(value):
                            seal_into(keys, session, row, column, bytes(value))
                            sealed += 1
            if len(rows) < _BATCH:
                break
    if sealed:
        log.warning("encrypted %d face value(s) stored in plaintext by an earlier version", sealed)
    return sealed

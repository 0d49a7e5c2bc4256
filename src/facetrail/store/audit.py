"""The append-only, hash-chained audit log.

Each entry's hash covers its fields and the previous entry's hash, so altering,
deleting or inserting a row breaks the chain from that row on, and
``verify_chain`` says where. Appends are serialised (SQLite's write lock,
PostgreSQL's advisory lock) so two writers cannot fork the chain.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from facetrail.store.models import AuditEntry, utcnow

GENESIS = "0" * 64
_ADVISORY_LOCK_KEY = 0x66616365  # "face": one lock for the whole audit chain


@dataclass(frozen=True)
class ChainCheck:
    """Outcome of ``verify_chain``: ``ok``, entries checked, and the first bad entry if any."""

    ok: bool
    checked: int
    first_bad_id: int | None = None
    reason: str = ""


def _canonical_time(moment: datetime) -> str:
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="microseconds")


def entry_hash(entry: AuditEntry) -> str:
    """The hash an entry must carry, computed from its fields and ``prev_hash``."""
    body = json.dumps({
        "at": _canonical_time(entry.at), "actor": entry.actor, "action": entry.action,
        "target": entry.target, "purpose": entry.purpose, "result_count": entry.result_count,
        "details": entry.details, "prev": entry.prev_hash,
    }, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def record(session: Session, *, actor: str, action: str, target: str, purpose: str | None = None,
           result_count: int | None = None, details: dict[str, Any] | None = None) -> AuditEntry:
    """Append one entry in the caller's transaction (it commits or rolls back with the change it logs).

    ``details`` must hold no biometric data (no embeddings, no images).
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK_KEY})
    last = session.scalar(select(AuditEntry.entry_hash).order_by(AuditEntry.id.desc()).limit(1))
    entry = AuditEntry(at=utcnow(), actor=actor, action=action, target=target, purpose=purpose,
                       result_count=result_count, details=json.dumps(details or {}, sort_keys=True),
                       prev_hash=last or GENESIS)
    entry.entry_hash = entry_hash(entry)
    session.add(entry)
    session.flush()
    return entry


def verify_chain(session: Session) -> ChainCheck:
    """Walk the whole log in order and check every link and every hash."""
    previous = GENESIS
    checked = 0
    for entry in session.scalars(select(AuditEntry).order_by(AuditEntry.id).execution_options(
            yield_per=1000)):
        if entry.prev_hash != previous:
            return ChainCheck(False, checked, entry.id, "link to the previous entry is broken "
                              "(an entry before it was removed, inserted or altered)")
        if entry_hash(entry) != entry.entry_hash:
            return ChainCheck(False, checked, entry.id, "entry content does not match its hash (altered)")
        previous = entry.entry_hash
        checked += 1
    return ChainCheck(True, checked)

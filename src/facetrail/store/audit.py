"""The append-only, hash-chained audit log, keyed with a secret kept outside the database.

Each entry's hash covers its fields and the previous entry's hash, so altering,
deleting or inserting a row breaks the chain from that row on. Entries written
through a gallery carry ``k1:<n>:<HMAC-SHA256>``: ``n`` is the entry's position
in the log and the HMAC's key lives outside the database (``audit_anchor``), so
nobody without it can recompute the chain after changing it. Entries written
before keying (or through a bare ``Database``) carry a plain SHA-256 (64 hex
digits); once the chain is keyed it stays keyed. Signed checkpoints of the
head, written outside the database after commits, show truncation.
``verify_chain`` checks it all and says what is wrong. Appends are serialised
(SQLite's write lock, PostgreSQL's advisory lock) so two writers cannot fork
the chain.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event, func, select, text
from sqlalchemy.orm import Session

from facetrail.store.audit_anchor import AuditAnchor, AuditKeyError, Checkpoint, anchor_for, mac
from facetrail.store.models import AuditEntry, utcnow

GENESIS = "0" * 64
KEYED = "k1"
_ENTRY_DOMAIN = b"facetrail-audit-entry-v1\n"
_MAX_SEQUENCE = 10**16  # "k1:" + 16 digits + ":" + 43 characters fits the 64-character column
_ADVISORY_LOCK_KEY = 0x66616365  # "face": one lock for the whole audit chain
_HEAD = "facetrail.audit.head"  # session.info: (anchor, count, id, hash) of the last entry this transaction added


@dataclass(frozen=True)
class ChainCheck:
    """Outcome of ``verify_chain``.

    ``ok``; ``checked``: entries verified before the first bad one; ``first_bad_id`` and ``reason``: the
    first entry that does not verify and why; ``problems``: one line per thing found wrong (the chain, the
    checkpoints); ``cannot_check``: why the log could not be checked (its key is missing); ``note``: how
    the log is anchored, when it verifies.
    """

    ok: bool
    checked: int
    first_bad_id: int | None = None
    reason: str = ""
    problems: tuple[str, ...] = ()
    cannot_check: str = ""
    note: str = ""


def _canonical_time(moment: datetime) -> str:
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="microseconds")


def _body(entry: AuditEntry, **extra: int) -> bytes:
    return json.dumps({
        "at": _canonical_time(entry.at), "actor": entry.actor, "action": entry.action,
        "target": entry.target, "purpose": entry.purpose, "result_count": entry.result_count,
        "details": entry.details, "prev": entry.prev_hash, **extra,
    }, sort_keys=True, separators=(",", ":")).encode()


def entry_hash(entry: AuditEntry) -> str:
    """The unkeyed (plain SHA-256) hash an entry written before keying must carry."""
    return hashlib.sha256(_body(entry)).hexdigest()


def keyed_hash(entry: AuditEntry, key: bytes, position: int) -> str:
    """``k1:<position>:<HMAC>``: the hash a keyed entry at ``position`` (1 = first) must carry."""
    return f"{KEYED}:{position}:{mac(key, _ENTRY_DOMAIN, _body(entry, seq=position))}"


def position_of(stored: str | None) -> int | None:
    """The position a keyed hash names, or None for an unkeyed (or malformed) one."""
    if stored is None or not stored.startswith(KEYED + ":"):
        return None
    number = stored.split(":")[1]
    return int(number) if number.isdigit() else None


def record(session: Session, *, actor: str, action: str, target: str, purpose: str | None = None,
           result_count: int | None = None, details: dict[str, Any] | None = None) -> AuditEntry:
    """Append one entry in the caller's transaction (it commits or rolls back with the change it logs).

    ``details`` must hold no biometric data (no embeddings, no images). Keyed when the session's database
    has an anchor (a gallery's); AuditKeyError when the chain is keyed and its key is not at hand.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK_KEY})
    anchor = anchor_for(session)
    last = session.scalar(select(AuditEntry.entry_hash).order_by(AuditEntry.id.desc()).limit(1))
    entry = AuditEntry(at=utcnow(), actor=actor, action=action, target=target, purpose=purpose,
                       result_count=result_count, details=json.dumps(details or {}, sort_keys=True),
                       prev_hash=last or GENESIS)
    before = position_of(last)
    if anchor is None:
        if before is not None:
            raise AuditKeyError("the audit log is keyed: write it through the gallery that holds its audit key")
        entry.entry_hash = entry_hash(entry)
        position = 0
    else:
        key = anchor.key()
        if key is None:
            if before is not None:
                raise AuditKeyError(anchor.missing_key_message())
            key = anchor.create_key()
        if before is None:  # the first keyed entry: count the unkeyed ones once
            before = int(session.scalar(select(func.count()).select_from(AuditEntry)) or 0)
        position = before + 1
        if position >= _MAX_SEQUENCE:
            raise AuditKeyError("the audit log is full (10^16 entries)")
        entry.entry_hash = keyed_hash(entry, key, position)
    session.add(entry)
    session.flush()
    if anchor is not None:
        session.info[_HEAD] = (anchor, position, entry.id, entry.entry_hash)
    return entry


@event.listens_for(Session, "after_commit")
def _checkpoint_after_commit(session: Session) -> None:
    head = session.info.pop(_HEAD, None)
    if head is not None:
        anchor, count, last_id, last_hash = head
        anchor.committed(count, last_id, last_hash)


@event.listens_for(Session, "after_soft_rollback")
def _forget_head(session: Session, _previous: Any) -> None:
    session.info.pop(_HEAD, None)  # a rolled-back entry must never reach a checkpoint


class _Walk:
    """One pass over the log in order: links, hashes, positions, and the hash at a given position."""

    def __init__(self, key: bytes | None, probe: int | None) -> None:
        self.key = key
        self.probe = probe
        self.previous = GENESIS
        self.position = 0
        self.checked = 0
        self.keyed = 0
        self.first_bad: tuple[int, str] | None = None
        self.probed: str | None = None

    def visit(self, entry: AuditEntry) -> None:
        self.position += 1
        if self.position == self.probe:
            self.probed = entry.entry_hash
        reason = self._fault(entry)
        self.previous = entry.entry_hash
        if reason and self.first_bad is None:
            self.first_bad = (entry.id, reason)
        elif self.first_bad is None:
            self.checked += 1

    def _fault(self, entry: AuditEntry) -> str:
        if entry.prev_hash != self.previous:
            return "link to the previous entry is broken (an entry before it was removed, inserted or altered)"
        stored = entry.entry_hash
        position = position_of(stored)
        if position is not None:
            self.keyed += 1
            if position != self.position:
                return (f"it says it is entry {position} of the log but is entry {self.position} "
                        "(entries before it were removed or inserted)")
            if self.key is not None and not hmac.compare_digest(stored, keyed_hash(entry, self.key, position)):
                return ("entry content does not match its keyed hash (altered, or the chain was recomputed "
                        "without the audit key)")
            return ""
        if self.keyed:
            return "an unkeyed entry after keyed ones (the chain was recomputed without the audit key)"
        if len(stored) != 64 or entry_hash(entry) != stored:
            return "entry content does not match its hash (altered)"
        return ""


def verify_chain(session: Session, anchor: AuditAnchor | None = None) -> ChainCheck:
    """Walk the whole log in order, check every link and hash, and the head against the last checkpoint.

    ``anchor``: the key and checkpoints to check with; by default the one attached to the session's database.
    A bare ``Database`` has none: then only links, positions and unkeyed hashes are checked (``note`` says so);
    ``facetrail audit verify`` and the dashboard always check through the gallery's anchor.
    """
    anchor = anchor or anchor_for(session)
    key: bytes | None = None
    problems: list[str] = []
    cannot_check = ""
    checkpoints = None
    if anchor is not None:
        try:
            key = anchor.key()
        except AuditKeyError as error:
            cannot_check = str(error)
        if key is not None:
            checkpoints = anchor.read_checkpoints(key)
            problems.extend(checkpoints.problems)
    latest = checkpoints.latest if checkpoints else None
    walk = _Walk(key, latest.count if latest else None)
    for entry in session.scalars(select(AuditEntry).order_by(AuditEntry.id).execution_options(yield_per=1000)):
        walk.visit(entry)
    if walk.first_bad is not None:
        problems.insert(0, f"entry {walk.first_bad[0]}: {walk.first_bad[1]} "
                           f"({walk.checked} entries before it verified)")
    if anchor is not None and key is None and not cannot_check and (
            walk.keyed or anchor.checkpoint_path.exists()):
        cannot_check = anchor.missing_key_message()
    if anchor is not None and key is not None:
        problems.extend(_against_checkpoint(anchor, latest, walk, exists=bool(checkpoints and checkpoints.exists)))
    first_id, reason = walk.first_bad if walk.first_bad else (None, "")
    if not reason and problems:
        reason = problems[0]
    ok = not problems and not cannot_check
    note = ""
    if ok and anchor is not None:
        note = _note(anchor, walk, latest)
    elif ok and walk.keyed:
        note = f"links only: the {walk.keyed} keyed entries' HMACs and the checkpoints need the audit key"
    return ChainCheck(ok, walk.checked, first_id, reason, tuple(problems), cannot_check, note)


def _against_checkpoint(anchor: AuditAnchor, latest: Checkpoint | None, walk: _Walk, *, exists: bool) -> list[str]:
    total = walk.position
    if latest is None:
        if walk.keyed:
            where = "holds no valid checkpoint" if exists else "is missing"
            return [f"the checkpoint file {anchor.checkpoint_path} {where} although the log is keyed "
                    "(it was removed or emptied): truncation cannot be ruled out"]
        return []
    said = f"the checkpoint of {latest.at} (line {latest.line}) says the log held {latest.count} entries"
    if total == 0:
        return [f"every entry was deleted: {said}, it now holds none"]
    if total < latest.count:
        return [f"truncated: {said}, it now holds {total} (at least the last {latest.count - total} were deleted)"]
    if walk.probed != latest.hash:
        return [f"entry {latest.count} of the log is not the one the checkpoint of {latest.at} (line {latest.line}) "
                "signed: entries were rewritten or replaced"]
    return []


def _note(anchor: AuditAnchor, walk: _Walk, latest: Checkpoint | None) -> str:
    if not walk.keyed:
        return "unkeyed (written before the audit key); not anchored yet"
    unkeyed = walk.position - walk.keyed
    keyed = f"{walk.keyed} keyed" + (f", {unkeyed} unkeyed before them" if unkeyed else "")
    if latest is None:
        return keyed
    return f"{keyed}; last checkpoint: {latest.count} entries at {latest.at} in {anchor.checkpoint_path}"

"""API keys: made at random, shown once, stored as a hash, checked in constant time, audited.

A key reads ``ft_<prefix>_<secret>``: the prefix finds the row, the secret's
sha256 is compared. Secrets are 32 random bytes, so a fast hash is enough
(no password stretching is needed for a secret nobody chose).

Checking a key only reads: when each key was last used is kept in memory by
``KeyUse`` and written in batches, at most once a minute and in a transaction
of its own, so reads keep working when the database cannot be written.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from facetrail.store import audit
from facetrail.store.db import Database
from facetrail.store.errors import StoreError
from facetrail.store.models import ApiKey, utcnow

Role = Literal["admin", "operator", "viewer", "door"]
ROLES: tuple[Role, ...] = ("viewer", "operator", "admin")  # each role may do what the ones before it may
DOOR: Role = "door"  # a keypad, card reader or door controller: sends second factors and door states, reads nothing
KEY_ROLES: tuple[Role, ...] = (*ROLES, DOOR)
FLUSH_INTERVAL_S = 60.0  # how long a key's last use may wait in memory before it is written

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Caller:
    """Who is calling the API: the key's name (the audit log's actor) and role."""

    name: str
    role: Role

    def may(self, needed: Role) -> bool:
        """True when this caller's role includes ``needed`` (a door key may only do door work; admins may too)."""
        if self.role == DOOR:
            return needed == DOOR
        if needed == DOOR:
            return self.role == "admin"
        return ROLES.index(self.role) >= ROLES.index(needed)


def create_key(session: Session, name: str, role: Role, *, actor: str) -> str:
    """Make a key; returns the only copy of its secret."""
    if role not in KEY_ROLES:
        raise StoreError(f"a key's role is one of {', '.join(KEY_ROLES)}, not {role!r}")
    if not name.strip():
        raise StoreError("a key needs a name (who or what uses it)")
    if session.scalar(select(ApiKey.id).where(ApiKey.name == name)) is not None:
        raise StoreError(f"a key called {name!r} already exists")
    prefix, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    session.add(ApiKey(name=name, role=role, prefix=prefix, secret_sha256=_digest(secret), created_by=actor))
    audit.record(session, actor=actor, action="key.create", target=f"key:{name}", details={"role": role})
    return f"ft_{prefix}_{secret}"


def check_key(session: Session, presented: str) -> Caller | None:
    """The caller a presented key belongs to, or None (unknown, malformed or revoked); writes nothing."""
    parts = presented.split("_", 2)
    if len(parts) != 3 or parts[0] != "ft":
        return None
    row = session.scalar(select(ApiKey).where(ApiKey.prefix == parts[1]))
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.secret_sha256, _digest(parts[2])):
        return None
    role: Role = row.role  # type: ignore[assignment]
    return Caller(row.name, role)


def revoke_key(session: Session, name: str, *, actor: str) -> None:
    """Revoke a key by name (it stops working at once)."""
    row = session.scalar(select(ApiKey).where(ApiKey.name == name))
    if row is None:
        raise StoreError(f"no key called {name!r}")
    row.revoked_at = utcnow()
    audit.record(session, actor=actor, action="key.revoke", target=f"key:{name}")


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyUse:
    """When each key was last used: noted in memory by every request, written in batches.

    ``note`` never touches the database. The first note after a flush arms a
    timer; ``interval_s`` later, ``flush`` writes every key's latest use in one
    transaction of its own. A flush that fails (a read-only or full database)
    keeps the uses for the next one and is logged once, until one succeeds.
    """

    def __init__(self, db: Database, *, interval_s: float = FLUSH_INTERVAL_S) -> None:
        self.db, self.interval_s = db, interval_s
        self._pending: dict[str, datetime] = {}
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._failing = False

    def note(self, name: str, at: datetime | None = None) -> None:
        """Remember that the key called ``name`` was used (now, unless ``at``)."""
        with self._lock:
            self._pending[name] = at or utcnow()
            if self._timer is None:
                self._timer = threading.Timer(self.interval_s, self.flush)
                self._timer.name, self._timer.daemon = "key-use-flush", True
                self._timer.start()

    def pending(self) -> dict[str, datetime]:
        """The uses noted but not written yet, by key name."""
        with self._lock:
            return dict(self._pending)

    def flush(self) -> int:
        """Write the noted uses; the number of keys written (0 when nothing was pending or the write failed)."""
        with self._lock:
            pending, self._pending = self._pending, {}
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        if not pending:
            return 0
        try:
            with self.db.session() as session:
                for name, at in pending.items():
                    session.execute(update(ApiKey).where(ApiKey.name == name).values(last_used_at=at))
        except SQLAlchemyError as error:
            with self._lock:
                for name, at in pending.items():
                    self._pending[name] = max(at, self._pending.get(name, at))
                failing, self._failing = self._failing, True
            if not failing:
                log.warning("could not record when API keys were last used (kept in memory, retried later): %s",
                            str(getattr(error, "orig", error)).splitlines()[0])
            return 0
        self._failing = False
        return len(pending)

    def close(self) -> None:
        """Write what is pending and stop the timer (at shutdown)."""
        self.flush()

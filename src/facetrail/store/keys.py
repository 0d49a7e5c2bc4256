"""API keys: made at random, shown once, stored as a hash, checked in constant time, audited.

A key reads ``ft_<prefix>_<secret>``: the prefix finds the row, the secret's
sha256 is compared. Secrets are 32 random bytes, so a fast hash is enough
(no password stretching is needed for a secret nobody chose).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from facetrail.store import audit
from facetrail.store.errors import StoreError
from facetrail.store.models import ApiKey, utcnow

Role = Literal["admin", "operator", "viewer", "door"]
ROLES: tuple[Role, ...] = ("viewer", "operator", "admin")  # each role may do what the ones before it may
DOOR: Role = "door"  # a keypad, card reader or door controller: sends second factors and door states, reads nothing
KEY_ROLES: tuple[Role, ...] = (*ROLES, DOOR)


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
    """The caller a presented key belongs to, or None (unknown, malformed or revoked)."""
    parts = presented.split("_", 2)
    if len(parts) != 3 or parts[0] != "ft":
        return None
    row = session.scalar(select(ApiKey).where(ApiKey.prefix == parts[1]))
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.secret_sha256, _digest(parts[2])):
        return None
    row.last_used_at = utcnow()
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

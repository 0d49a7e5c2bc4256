"""Dashboard logins: an API key opens a session whose random token lives in a cookie.

Only the token's sha256 is stored. A session dies with its key: revoking the
key ends every session opened with it, at the next request. Checking a
session only reads; logging in and out write.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from facetrail.store import audit
from facetrail.store.keys import DOOR, Caller, Role, check_key
from facetrail.store.models import ApiKey, WebSession, as_utc, utcnow

SESSION_LIFETIME = timedelta(hours=12)


def open_session(session: Session, key: str, *, lifetime: timedelta = SESSION_LIFETIME,
                 now: datetime | None = None) -> tuple[str, Caller] | None:
    """A new session's token for a valid key (audited as a login), or None; a door device's key opens none."""
    caller = check_key(session, key)
    if caller is None or caller.role == DOOR:
        return None
    moment = now or utcnow()
    key_id = session.scalar(select(ApiKey.id).where(ApiKey.name == caller.name))
    assert key_id is not None
    token = secrets.token_urlsafe(32)
    session.execute(delete(WebSession).where(WebSession.expires_at < moment))
    session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=moment))
    session.add(WebSession(token_sha256=_digest(token), api_key_id=key_id, created_at=moment,
                           expires_at=moment + lifetime))
    audit.record(session, actor=caller.name, action="session.login", target=f"key:{caller.name}")
    return token, caller


def check_session(session: Session, token: str, *, now: datetime | None = None) -> Caller | None:
    """The caller behind a live session's token; None when unknown, expired or its key revoked; writes nothing."""
    row = session.execute(select(WebSession.expires_at, ApiKey.name, ApiKey.role, ApiKey.revoked_at)
                          .join(ApiKey, ApiKey.id == WebSession.api_key_id)
                          .where(WebSession.token_sha256 == _digest(token))).first()
    if row is None or row.revoked_at is not None or as_utc(row.expires_at) <= (now or utcnow()):
        return None
    role: Role = row.role
    return Caller(row.name, role)


def close_session(session: Session, token: str) -> None:
    """Log out: the token stops working."""
    caller = check_session(session, token)
    session.execute(delete(WebSession).where(WebSession.token_sha256 == _digest(token)))
    if caller is not None:
        audit.record(session, actor=caller.name, action="session.logout", target=f"key:{caller.name}")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()

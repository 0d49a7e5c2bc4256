"""Door records: residents' consents (and their second factor, hashed), and the log of door decisions."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from facetrail.store import audit
from facetrail.store.errors import StoreError
from facetrail.store.models import DoorConsent, DoorDecisionRecord, Identity, utcnow

ANY_DOOR = "*"
FACTOR_ITERATIONS = 100_000  # PBKDF2-SHA256; a PIN is short, so its hash is slow to try


def hash_factor(code: str) -> str:
    """A salted, slow hash of a PIN or card number: ``pbkdf2$<iterations>$<salt>$<hash>``."""
    salt = secrets.token_hex(16)
    digest = hashlib.pbkdf2_hmac("sha256", code.encode(), bytes.fromhex(salt), FACTOR_ITERATIONS).hex()
    return f"pbkdf2${FACTOR_ITERATIONS}${salt}${digest}"


def factor_matches(stored: str, code: str) -> bool:
    """Whether ``code`` is the factor hashed in ``stored`` (constant-time comparison)."""
    try:
        _scheme, iterations, salt, digest = stored.split("$")
        candidate = hashlib.pbkdf2_hmac("sha256", code.encode(), bytes.fromhex(salt), int(iterations)).hex()
    except ValueError:
        return False
    return hmac.compare_digest(candidate, digest)


def record_consent(session: Session, identity_id: int, door: str, *, method: str, actor: str,
                   factor: str | None = None) -> DoorConsent:
    """Record that a person agreed to be recognised at ``door`` (or ``*``): who recorded it, how (audited)."""
    if session.get(Identity, identity_id) is None:
        raise StoreError(f"no identity with id {identity_id}")
    if not method.strip():
        raise StoreError("say how the consent was given (e.g. 'signed form 2026-114')")
    if factor is not None and len(factor.strip()) < 4:
        raise StoreError("a PIN or card number has at least 4 characters")
    consent = DoorConsent(identity_id=identity_id, door=door, method=method.strip(), recorded_by=actor,
                          factor_hash=hash_factor(factor.strip()) if factor else None)
    session.add(consent)
    session.flush()
    audit.record(session, actor=actor, action="door.consent", target=f"identity:{identity_id}",
                 purpose=f"door access: {door}", details={"consent": consent.id, "second_factor": bool(factor)})
    return consent


def withdraw_consent(session: Session, consent_id: int, *, actor: str) -> DoorConsent:
    """Withdraw a consent (audited); the caller removes the person's templates if nothing else needs them."""
    consent = session.get(DoorConsent, consent_id)
    if consent is None:
        raise StoreError(f"no consent with id {consent_id}")
    if consent.withdrawn_at is not None:
        raise StoreError(f"consent {consent_id} was already withdrawn")
    consent.withdrawn_at, consent.withdrawn_by = utcnow(), actor
    audit.record(session, actor=actor, action="door.consent_withdrawn", target=f"identity:{consent.identity_id}",
                 purpose=f"door access: {consent.door}", details={"consent": consent_id})
    return consent


def active_consents(session: Session, door: str) -> list[DoorConsent]:
    """Consents in force for ``door`` (its own and every-door ones)."""
    return list(session.scalars(select(DoorConsent).where(DoorConsent.withdrawn_at.is_(None),
                                                          or_(DoorConsent.door == door,
                                                              DoorConsent.door == ANY_DOOR))))


def present_factor(session: Session, door: str, code: str, *, timeout: timedelta, actor: str,
                   now: datetime | None = None) -> DoorDecisionRecord | None:
    """A keypad or reader sent ``code``: grant the pending decision at ``door`` whose person it belongs to.

    Returns the granted decision, or None when no pending decision (within ``timeout``) matches; both audited.
    """
    moment = now or utcnow()
    pending = session.scalars(select(DoorDecisionRecord).where(
        DoorDecisionRecord.door == door, DoorDecisionRecord.outcome == "pending",
        DoorDecisionRecord.decided_at >= moment - timeout).order_by(DoorDecisionRecord.id.desc())).all()
    consents = {c.identity_id: c for c in active_consents(session, door) if c.factor_hash}
    for decision in pending:
        consent = consents.get(decision.identity_id or -1)
        if consent is not None and consent.factor_hash and factor_matches(consent.factor_hash, code):
            decision.outcome = "grant"
            decision.reason = "recognised, live, allowed and second factor given"
            audit.record(session, actor=actor, action="door.factor", target=f"door:{door}",
                         purpose="door access", result_count=1, details={"decision": decision.id})
            return decision
    audit.record(session, actor=actor, action="door.factor", target=f"door:{door}", purpose="door access",
                 result_count=0, details={"pending": len(pending)})
    return None

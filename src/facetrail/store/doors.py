"""Door records: residents' consents (and their second factor, hashed), the log of door decisions, door states."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from facetrail.store import audit
from facetrail.store.errors import StoreError
from facetrail.store.models import (
    DoorConsent,
    DoorDecisionRecord,
    DoorStateRecord,
    FaceTemplate,
    Identity,
    NegativeExample,
    utcnow,
)

ANY_DOOR = "*"
FORCED = "forced"  # a door opened without a command: the caller raises an event
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


@dataclass(frozen=True)
class Withdrawal:
    """A withdrawn consent, and the face templates removed with it (none while another consent is in force)."""

    consent: DoorConsent
    template_ids: list[int]
    other_consents: int


def withdraw_consent(session: Session, consent_id: int, *, actor: str) -> Withdrawal:
    """Withdraw a consent (audited) and, unless another consent is still in force, remove the person's templates.

    The templates were kept for door access; without a consent there is no purpose left for them. The identity,
    its consent history and the decision log stay (the log until retention removes it). The caller removes the
    returned template ids from the search index.
    """
    consent = session.get(DoorConsent, consent_id)
    if consent is None:
        raise StoreError(f"no consent with id {consent_id}")
    if consent.withdrawn_at is not None:
        raise StoreError(f"consent {consent_id} was already withdrawn")
    consent.withdrawn_at, consent.withdrawn_by = utcnow(), actor
    others = session.scalar(select(func.count()).select_from(DoorConsent).where(
        DoorConsent.identity_id == consent.identity_id, DoorConsent.withdrawn_at.is_(None),
        DoorConsent.id != consent_id)) or 0
    template_ids: list[int] = []
    if not others:
        template_ids = list(session.scalars(select(FaceTemplate.id).where(
            FaceTemplate.identity_id == consent.identity_id)))
        session.execute(delete(FaceTemplate).where(FaceTemplate.identity_id == consent.identity_id))
        session.execute(delete(NegativeExample).where(NegativeExample.identity_id == consent.identity_id))
    audit.record(session, actor=actor, action="door.consent_withdrawn", target=f"identity:{consent.identity_id}",
                 purpose=f"door access: {consent.door}", result_count=len(template_ids),
                 details={"consent": consent_id, "templates_removed": len(template_ids),
                          "other_consents": int(others)})
    return Withdrawal(consent, template_ids, int(others))


def consents_of(session: Session, identity_id: int) -> list[DoorConsent]:
    """A person's consents, in force and withdrawn, oldest first."""
    return list(session.scalars(select(DoorConsent).where(DoorConsent.identity_id == identity_id)
                                .order_by(DoorConsent.id)))


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


@dataclass(frozen=True)
class RecordedState:
    """A door's state as kept, and whether this report is the one that found it forced (raise an event then)."""

    row: DoorStateRecord
    became_forced: bool


def record_door_state(session: Session, door: str, state: str, *, source: str,
                      command_id: str | None = None, at: datetime | None = None) -> RecordedState:
    """Keep the state a door's controller reported.

    A door that just became ``forced`` is an event for review: the caller raises it through
    :class:`facetrail.events.outlet.EventOutlet` (the store sits below the events).
    """
    moment = at or utcnow()
    row = session.get(DoorStateRecord, door)
    previous = row.state if row is not None else None
    if row is None:
        row = DoorStateRecord(door=door, state=state, source=source, command_id=command_id, reported_at=moment)
        session.add(row)
    else:
        row.state, row.source, row.command_id, row.reported_at = state, source, command_id, moment
    return RecordedState(row, state == FORCED and previous != FORCED)

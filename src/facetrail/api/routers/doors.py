"""/doors: the doors and their states, the decision log with its evidence, second factors, consents.

A keypad or card reader sends the code it read to ``POST /doors/{door}/factor``
and a door controller may report its state to ``POST /doors/{door}/state``;
both use a key with the ``door`` role, which can do nothing else.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from sqlalchemy.orm import Session

from facetrail.api import pagination
from facetrail.api.auth import LoginLimiter
from facetrail.api.deps import ConsentId, GalleryDep, Operator, PersonId, RowId, Viewer, require
from facetrail.api.door_views import (
    configured_door,
    consent_out,
    decision_out,
    decisions_page,
    doors_out,
    server_config,
)
from facetrail.api.errors import ApiError
from facetrail.api.schemas import (
    ConsentIn,
    ConsentOut,
    DoorDecisionOut,
    DoorOut,
    DoorOutcome,
    DoorStateIn,
    DoorStateOut,
    FactorIn,
    FactorOut,
    WithdrawalOut,
)
from facetrail.api.strings import Name
from facetrail.door.commands import parse_state_report
from facetrail.events.outlet import EventOutlet
from facetrail.gallery.people import withdraw_door_consent
from facetrail.store.doors import ANY_DOOR, consents_of, present_factor, record_consent, record_door_state
from facetrail.store.keys import DOOR, Caller
from facetrail.store.models import DoorDecisionRecord, Identity

router = APIRouter(tags=["doors"])
DoorDevice = Annotated[Caller, Depends(require(DOOR))]
DoorName = Annotated[Name, Path(description="a configured door's name")]


@router.get("/doors", response_model=list[DoorOut])
def list_doors(request: Request, store: GalleryDep, _who: Viewer) -> list[DoorOut]:
    """Configured doors with their rule and the state their controller last reported."""
    with store.db.session() as session:
        return doors_out(session, server_config(request))


@router.get("/doors/decisions", response_model=pagination.Page[DoorDecisionOut])
def list_decisions(store: GalleryDep, _who: Viewer, limit: Annotated[int, Query(ge=1, le=200)] = 50,
                   cursor: str | None = None,
                   door: Annotated[Name | None, Query(description="only this door's decisions")] = None,
                   outcome: DoorOutcome | None = None,
                   identity_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
                   ) -> pagination.Page[DoorDecisionOut]:
    """Door decisions, newest first, with their reasons and evidence."""
    after = pagination.decode(cursor)
    with store.db.session() as session:
        return decisions_page(session, limit=limit, after=after, door=door, outcome=outcome,
                              identity_id=identity_id)


@router.get("/doors/decisions/{decision_id}", response_model=DoorDecisionOut)
def get_decision(decision_id: RowId, store: GalleryDep, _who: Viewer) -> DoorDecisionOut:
    """One door decision."""
    with store.db.session() as session:
        return decision_out(session, _decision(session, decision_id))


@router.get("/doors/decisions/{decision_id}/snapshot", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}, "description": "the best shot of the approach"}})
def decision_snapshot(decision_id: RowId, store: GalleryDep, _who: Viewer) -> Response:
    """The best shot the decision was made on (JPEG), while retention keeps it."""
    with store.db.session() as session:
        row = _decision(session, decision_id)
        if row.snapshot_jpeg is None:
            raise ApiError(404, "not_found", f"door decision {decision_id} has no snapshot (none was usable, or "
                                             "retention removed it)")
        return Response(row.snapshot_jpeg, media_type="image/jpeg")


@router.post("/doors/{door}/factor", response_model=FactorOut)
def present_second_factor(door: DoorName, body: FactorIn, request: Request, store: GalleryDep,
                          who: DoorDevice) -> FactorOut:
    """A keypad or reader at ``door`` read a PIN or card: it grants the pending decision of the person it belongs
    to (audited). Wrong codes are limited per door; then 429 until the minute has passed."""
    rule = configured_door(request, door)
    limiter: LoginLimiter = request.app.state.factor_limiter
    limiter.check(door)
    with store.db.session() as session:
        decision = present_factor(session, door, body.code, timeout=timedelta(seconds=rule.factor_timeout_s),
                                  actor=who.name)
        decision_id = decision.id if decision is not None else None
    if decision_id is None:
        limiter.failed(door)
        return FactorOut(granted=False, decision_id=None,
                         detail="no one waiting at this door has this code (or their time ran out); look at the "
                                "camera again, then enter the code")
    limiter.succeeded(door)
    return FactorOut(granted=True, decision_id=decision_id, detail="granted; the door command follows")


@router.post("/doors/{door}/state", response_model=DoorStateOut)
def report_state(door: DoorName, body: DoorStateIn, request: Request, store: GalleryDep,
                 _who: DoorDevice) -> DoorStateOut:
    """A door controller reports the door's state (open, closed, forced, ...); ``forced`` raises an event."""
    rule = configured_door(request, door)
    try:
        report = parse_state_report(body.model_dump_json(exclude_none=True).encode(), door=door)
    except ValueError as error:
        raise ApiError(422, "invalid", str(error)) from None
    outlet = EventOutlet.for_config(server_config(request))  # its channels announce a door_forced event
    with store.db.session() as session:
        recorded = record_door_state(session, report.door, report.state, source="http", command_id=report.command_id)
        if recorded.became_forced:
            outlet.door_forced(session, door=report.door, camera=rule.camera, at=recorded.row.reported_at)
        row = recorded.row
        return DoorStateOut(door=row.door, state=row.state, source=row.source, command_id=row.command_id,
                            reported_at=row.reported_at)


@router.get("/identities/{identity_id}/consents", response_model=list[ConsentOut])
def list_consents(identity_id: PersonId, store: GalleryDep, _who: Operator) -> list[ConsentOut]:
    """A person's door consents, in force and withdrawn."""
    with store.db.session() as session:
        if session.get(Identity, identity_id) is None:
            raise ApiError(404, "not_found", f"no identity with id {identity_id}")
        return [consent_out(row) for row in consents_of(session, identity_id)]


@router.post("/identities/{identity_id}/consents", response_model=ConsentOut, status_code=201)
def add_consent(identity_id: PersonId, body: ConsentIn, request: Request, store: GalleryDep,
                who: Operator) -> ConsentOut:
    """Record a person's consent to be recognised at a door (or ``*``, every door), how it was given and, if the
    door asks for it, their PIN or card number (stored hashed). Audited."""
    if body.door != ANY_DOOR:
        configured_door(request, body.door)
    with store.db.session() as session:
        return consent_out(record_consent(session, identity_id, body.door, method=body.method, actor=who.name,
                                          factor=body.factor))


@router.post("/consents/{consent_id}/withdraw", response_model=WithdrawalOut, tags=["doors"])
def withdraw(consent_id: ConsentId, store: GalleryDep, who: Operator) -> WithdrawalOut:
    """Withdraw a consent (audited). Unless another consent is in force, the person's face templates are deleted
    at once, so no door (and no camera) recognises them any more; the decision log stays until retention."""
    withdrawal = withdraw_door_consent(store, consent_id, actor=who.name)
    return WithdrawalOut(consent=consent_out(withdrawal.consent), templates_removed=len(withdrawal.template_ids),
                         other_consents=withdrawal.other_consents)


def _decision(session: Session, decision_id: int) -> DoorDecisionRecord:
    row = session.get(DoorDecisionRecord, decision_id)
    if row is None:
        raise ApiError(404, "not_found", f"no door decision with id {decision_id}")
    return row

"""Door rows as the API shows them; the dashboard's door view renders the same shapes."""

from __future__ import annotations

from fastapi import Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from facetrail.api import pagination
from facetrail.api.errors import ApiError
from facetrail.api.schemas import ConsentOut, DoorDecisionOut, DoorOut
from facetrail.config.doors import DoorConfig
from facetrail.config.schema import FacetrailConfig
from facetrail.store.models import DoorConsent, DoorDecisionRecord, DoorStateRecord, Identity


def decision_out(session: Session, row: DoorDecisionRecord) -> DoorDecisionOut:
    """A door decision with its person's name."""
    identity = session.get(Identity, row.identity_id) if row.identity_id is not None else None
    return DoorDecisionOut(
        id=row.id, door=row.door, camera=row.camera, outcome=row.outcome,
        reason=row.reason, rule=row.rule, identity_id=row.identity_id,
        identity_name=identity.display_name if identity else None, score=row.score,
        matched_shots=row.matched_shots, liveness=row.liveness, liveness_reason=row.liveness_reason,
        blinks=row.blinks, depth_residual=row.depth_residual, tailgating=row.tailgating,
        others_present=row.others_present, decided_at=row.decided_at, command=row.command,
        command_error=row.command_error, command_attempts=row.command_attempts,
        has_snapshot=row.snapshot_jpeg is not None)


def decisions_page(session: Session, *, limit: int, after: int | None = None, door: str | None = None,
                   outcome: str | None = None, identity_id: int | None = None) -> pagination.Page[DoorDecisionOut]:
    """Door decisions newest first, after the cursor's id, filtered by door, outcome and person."""
    query = select(DoorDecisionRecord).order_by(DoorDecisionRecord.id.desc()).limit(limit + 1)
    if door:
        query = query.where(DoorDecisionRecord.door == door)
    if outcome:
        query = query.where(DoorDecisionRecord.outcome == outcome)
    if identity_id is not None:
        query = query.where(DoorDecisionRecord.identity_id == identity_id)
    if after is not None:
        query = query.where(DoorDecisionRecord.id < after)
    return pagination.page(list(session.scalars(query)), limit, lambda row: decision_out(session, row))


def consent_out(row: DoorConsent) -> ConsentOut:
    """A consent without its second factor."""
    return ConsentOut(id=row.id, identity_id=row.identity_id, door=row.door, method=row.method,
                      recorded_by=row.recorded_by, recorded_at=row.recorded_at,
                      has_second_factor=row.factor_hash is not None, withdrawn_at=row.withdrawn_at,
                      withdrawn_by=row.withdrawn_by)


def doors_out(session: Session, config: FacetrailConfig | None) -> list[DoorOut]:
    """The configured doors (and any other door that reported a state), with their last reported state."""
    states = {row.door: row for row in session.scalars(select(DoorStateRecord))}
    doors = config.doors if config is not None else {}
    shown = []
    for name in sorted(set(doors) | set(states)):
        door, state = doors.get(name), states.get(name)
        shown.append(DoorOut(
            name=name, configured=door is not None, camera=door.camera if door else None,
            allow=list(door.allow) if door else [], hours=list(door.hours) if door else [],
            timezone=door.timezone if door else None, second_factor=door.second_factor if door else False,
            tailgating=door.tailgating if door else None, state=state.state if state else None,
            state_source=state.source if state else None, state_at=state.reported_at if state else None))
    return shown


def server_config(request: Request) -> FacetrailConfig | None:
    """The configuration this server was started with (``serve --config``), if any."""
    config: FacetrailConfig | None = request.app.state.settings.config
    return config


def configured_door(request: Request, name: str) -> DoorConfig:
    """The door ``name`` of the server's configuration; 404 ApiError when the server has none or not this one."""
    config = server_config(request)
    if config is None:
        raise ApiError(404, "not_found", "this server does not know its doors; start it with "
                                         "`facetrail serve --config CONFIG`")
    door = config.doors.get(name)
    if door is None:
        raise ApiError(404, "not_found", f"no door {name!r} in the configuration (doors: "
                                         f"{', '.join(sorted(config.doors)) or 'none'})")
    return door

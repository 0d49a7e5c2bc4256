"""/retention: how long each class of data is kept, what is held now, and a purge on demand (admins)."""

from __future__ import annotations

import json
from datetime import datetime

from fastapi import APIRouter, Request
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from facetrail.api.deps import Admin, GalleryDep
from facetrail.api.schemas import PurgeOut, RetentionOut
from facetrail.config.schema import FacetrailConfig, RetentionConfig
from facetrail.gallery.people import purge as purge_people
from facetrail.pipeline.settings import retention_policy
from facetrail.store import audit
from facetrail.store.models import AuditEntry, CameraState, Event, Sighting, Visitor
from facetrail.store.retention import purge_data

router = APIRouter(prefix="/retention", tags=["retention"])


@router.get("", response_model=RetentionOut)
def settings(request: Request, store: GalleryDep, _who: Admin) -> RetentionOut:
    """The retention in effect (this server's configuration, else the last pipeline run's) and what is stored.

    Retention is changed in the configuration file, where cameras are; the pipeline applies it.
    """
    with store.db.session() as session:
        source, retention = _in_effect(session, request.app.state.settings.config)
        stored = {
            "known_sightings": _count(session, Sighting.identity_id.is_not(None)),
            "unknown_sightings": _count(session, Sighting.identity_id.is_(None)),
            "visitors": session.scalar(select(func.count()).select_from(Visitor)) or 0,
            "events": session.scalar(select(func.count()).select_from(Event)) or 0,
            "thumbnails": _count(session, Sighting.thumbnail_jpeg.is_not(None)),
            "snapshots": session.scalar(select(func.count()).select_from(Event)
                                        .where(Event.snapshot_jpeg.is_not(None))) or 0,
            "camera_frames": session.scalar(select(func.count()).select_from(CameraState)
                                            .where(CameraState.frame_jpeg.is_not(None))) or 0,
        }
        oldest: dict[str, datetime | None] = {
            "sighting": session.scalar(select(func.min(Sighting.first_seen))),
            "event": session.scalar(select(func.min(Event.started_at))),
        }
        last = session.scalar(select(func.max(AuditEntry.at)).where(AuditEntry.action == "retention.purge"))
    return RetentionOut(source=source, unknown_sightings_days=retention.unknown_sightings_days,
                        known_sightings_days=retention.known_sightings_days,
                        thumbnails_days=retention.thumbnails_days, events_days=retention.events_days,
                        only_watchlist_hits=retention.only_watchlist_hits, stored=stored, oldest=oldest,
                        last_deletion_at=last)


@router.post("/purge", response_model=PurgeOut)
def purge_now(request: Request, store: GalleryDep, who: Admin) -> PurgeOut:
    """Apply the retention in effect now, and expire identities and watchlists past their date (audited)."""
    with store.db.session() as session:
        _source, retention = _in_effect(session, request.app.state.settings.config)
        report = purge_data(session, retention_policy(retention), actor=who.name)
        audit.record(session, actor=who.name, action="retention.run", target="all data", purpose="retention",
                     result_count=report.total, details=report.counts)
    people = purge_people(store, actor=who.name)
    return PurgeOut(counts=report.counts, identities_forgotten=len(people.forgotten),
                    watchlists_expired=len(people.expired_watchlists))


def _in_effect(session: Session, config: FacetrailConfig | None) -> tuple[str, RetentionConfig]:
    if config is not None:
        return "configuration", config.retention
    details = session.scalar(select(AuditEntry.details).where(AuditEntry.action == "run.start")
                             .order_by(AuditEntry.id.desc()).limit(1))
    recorded = json.loads(details).get("retention") if details else None
    if recorded:
        return "last pipeline run", RetentionConfig.model_validate(recorded)
    return "defaults", RetentionConfig()


def _count(session: Session, condition: object) -> int:
    return session.scalar(select(func.count()).select_from(Sighting).where(condition)) or 0  # type: ignore[arg-type]

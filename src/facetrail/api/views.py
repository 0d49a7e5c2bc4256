"""Rows as the API shows them; the dashboard renders the same shapes."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from facetrail.api.schemas import CameraOut, EventOut, IdentityOut, PurgeOut, RetentionOut
from facetrail.config.schema import FacetrailConfig
from facetrail.gallery.gallery import Gallery
from facetrail.gallery.retention import apply_retention, retention_in_effect
from facetrail.store.cameras import camera_states
from facetrail.store.models import (
    AuditEntry,
    CameraPlacement,
    CameraState,
    DoorDecisionRecord,
    Event,
    FaceTemplate,
    Identity,
    Sighting,
    Visitor,
    Watchlist,
    WatchlistMember,
    as_utc,
    utcnow,
)
from facetrail.store.placements import placements
from facetrail.video.errors import mask_credentials

SILENT_AFTER = timedelta(seconds=30)  # a pipeline reports every 2 s; this long without one means it is gone
RUNNING = frozenset({"connecting", "connected", "retrying"})


def event_out(session: Session, row: Event) -> EventOut:
    """An event with its person's and watchlist's names."""
    identity = session.get(Identity, row.identity_id) if row.identity_id is not None else None
    watchlist = session.get(Watchlist, row.watchlist_id) if row.watchlist_id is not None else None
    return EventOut(id=row.id, kind=row.kind, camera=row.camera, identity_id=row.identity_id,
                    identity_name=identity.display_name if identity else None, visitor_id=row.visitor_id,
                    watchlist_id=row.watchlist_id, watchlist_name=watchlist.name if watchlist else None,
                    score=row.score, started_at=row.started_at, ended_at=row.ended_at, state=row.state,
                    reviewers_required=row.reviewers_required, has_snapshot=row.snapshot_jpeg is not None)


def identity_out(session: Session, row: Identity) -> IdentityOut:
    """A person with template count and watchlist names."""
    templates = session.scalar(select(func.count()).select_from(FaceTemplate)
                               .where(FaceTemplate.identity_id == row.id)) or 0
    lists = list(session.scalars(select(Watchlist.name).join(WatchlistMember,
                                                            WatchlistMember.watchlist_id == Watchlist.id)
                                 .where(WatchlistMember.identity_id == row.id)))
    return IdentityOut(id=row.id, display_name=row.display_name, templates=int(templates), watchlists=sorted(lists),
                       created_at=row.created_at)


def cameras_out(session: Session, config: FacetrailConfig | None) -> list[CameraOut]:
    """Configured cameras and every camera a pipeline reported, by name."""
    states = {row.camera: row for row in camera_states(session)}
    where = placements(session)
    names = sorted(set(states) | set(config.cameras if config else ()) | set(where))
    return [_placed(_camera(name, config, states.get(name)), where.get(name)) for name in names]


def _placed(camera: CameraOut, row: CameraPlacement | None) -> CameraOut:
    """The camera with the cluster node running it and its last move (unchanged off a cluster)."""
    if row is None:
        return camera
    return camera.model_copy(update={"node": row.node, "moved_from": row.moved_from, "moved_at": row.moved_at})


def _camera(name: str, config: FacetrailConfig | None, row: CameraState | None) -> CameraOut:
    camera = config.cameras.get(name) if config is not None else None
    source = mask_credentials(camera.detect_input.path) if camera else None
    detect_fps = camera.detect.fps if camera else None
    if row is None:
        state = "disabled" if camera is not None and not camera.enabled else "not running"
        return CameraOut(name=name, configured=camera is not None, source=source, detect_fps=detect_fps, state=state,
                         error=None, attempts=0, last_frame_at=None, analysed_fps=0.0, frames_analysed=0,
                         frames_skipped_motion=0, frames_dropped=0, faces_in_frame=0, frame_at=None,
                         reported_at=None)
    state = row.state
    if state in RUNNING and utcnow() - as_utc(row.updated_at) > SILENT_AFTER:
        state = "silent"
    dropped = round(row.dropped_fps or 0.0, 2) if state in RUNNING else 0.0
    return CameraOut(name=name, configured=camera is not None, source=source or row.source, detect_fps=detect_fps,
                     state=state, error=row.error, attempts=row.attempts, last_frame_at=row.last_frame_at,
                     analysed_fps=round(row.analysed_fps, 2), target_fps=row.target_fps or detect_fps,
                     dropped_fps=dropped, skipped_motion_fps=round(row.skipped_motion_fps or 0.0, 2),
                     overloaded=dropped > 0, frames_analysed=row.frames_analysed,
                     frames_skipped_motion=row.frames_skipped_motion, frames_dropped=row.frames_dropped,
                     frames_skipped_decoder=row.frames_skipped_decoder or 0,
                     faces_in_frame=row.faces_in_frame, frame_at=row.frame_at, faults=row.faults or 0,
                     last_fault=row.last_fault, failing=[p for p in (row.failing or "").split(", ") if p],
                     reported_at=row.updated_at)


def retention_out(session: Session, config: FacetrailConfig | None) -> RetentionOut:
    """The retention in effect and how much of each data class is held now."""
    source, retention = retention_in_effect(session, config)

    def count(model: type[Any], *where: Any) -> int:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)

    stored = {"known_sightings": count(Sighting, Sighting.identity_id.is_not(None)),
              "unknown_sightings": count(Sighting, Sighting.identity_id.is_(None)),
              "visitors": count(Visitor), "events": count(Event),
              "thumbnails": count(Sighting, Sighting.thumbnail_jpeg.is_not(None)),
              "snapshots": count(Event, Event.snapshot_jpeg.is_not(None)),
              "camera_frames": count(CameraState, CameraState.frame_jpeg.is_not(None)),
              "door_decisions": count(DoorDecisionRecord),
              "door_snapshots": count(DoorDecisionRecord, DoorDecisionRecord.snapshot_jpeg.is_not(None))}
    oldest: dict[str, datetime | None] = {"sighting": session.scalar(select(func.min(Sighting.first_seen))),
                                          "event": session.scalar(select(func.min(Event.started_at)))}
    last = session.scalar(select(func.max(AuditEntry.at)).where(AuditEntry.action == "retention.purge"))
    return RetentionOut(source=source, unknown_sightings_days=retention.unknown_sightings_days,
                        known_sightings_days=retention.known_sightings_days,
                        thumbnails_days=retention.thumbnails_days, events_days=retention.events_days,
                        only_watchlist_hits=retention.only_watchlist_hits, stored=stored, oldest=oldest,
                        last_deletion_at=last)


def purge(gallery: Gallery, config: FacetrailConfig | None, *, actor: str) -> PurgeOut:
    """Apply the retention in effect now, and expire people and watchlists past their date (audited)."""
    with gallery.db.session() as session:
        _source, retention = retention_in_effect(session, config)
    outcome = apply_retention(gallery, retention, actor=actor)
    return PurgeOut(counts=outcome.data.counts, identities_forgotten=len(outcome.people.forgotten),
                    watchlists_expired=len(outcome.people.expired_watchlists))

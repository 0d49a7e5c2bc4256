"""Cameras' reported status: the pipeline writes one row per camera, readers anywhere read them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from facetrail.store.models import CameraState, utcnow


@dataclass(frozen=True)
class CameraReport:
    """What a pipeline knows about one of its cameras right now."""

    camera: str
    run_id: str
    state: str
    source: str
    error: str | None
    attempts: int
    last_frame_at: datetime | None
    analysed_fps: float
    frames_analysed: int
    frames_skipped_motion: int
    frames_dropped: int
    target_fps: float | None = None  # the analysis rate asked for
    dropped_fps: float = 0.0  # frames dropped per second (analysis did not keep up)
    skipped_motion_fps: float = 0.0  # frames skipped by the motion gate per second
    frames_skipped_decoder: int = 0  # frames the source skipped without decoding them
    faces_in_frame: int = 0
    frame_jpeg: bytes | None = None
    frame_at: datetime | None = None
    faults: int = 0  # errors in the camera's stages and consumers this run (each retried on the next frame)
    last_fault: str | None = None
    failing: str | None = None  # the parts failing now, comma-separated


def report_cameras(session: Session, reports: list[CameraReport]) -> None:
    """Insert or overwrite each camera's row (a frame is kept until a newer one replaces it)."""
    now = utcnow()
    for report in reports:
        row = session.get(CameraState, report.camera)
        if row is None:
            row = CameraState(camera=report.camera)
            session.add(row)
        values = vars(report).copy()
        if report.frame_jpeg is None:
            values.pop("frame_jpeg")
            values.pop("frame_at")
            values.pop("faces_in_frame")
        for name, value in values.items():
            setattr(row, name, value)
        row.updated_at = now


def camera_states(session: Session) -> list[CameraState]:
    """Every camera that a pipeline has reported, by name."""
    return list(session.scalars(select(CameraState).order_by(CameraState.camera)))


def blank_frames(session: Session, before: datetime) -> int:
    """Remove latest-frame images older than ``before`` (retention of images); returns how many."""
    result = session.execute(update(CameraState).where(CameraState.frame_at < before,
                                                       CameraState.frame_jpeg.is_not(None))
                             .values(frame_jpeg=None))
    return int(getattr(result, "rowcount", 0) or 0)

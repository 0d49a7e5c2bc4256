"""Where a cluster (or a run's worker process) runs each camera, its moves, and its checkpoint (how far its file was
read and stored)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from facetrail.store.models import CameraPlacement, as_utc, utcnow


@dataclass(frozen=True)
class ResumePoint:
    """Where a camera picks up: after ``position_s`` of its file, on the clock its first run started."""

    position_s: float | None
    clock_origin: datetime | None


def place(session: Session, cameras: Iterable[str], *, run_id: str, node: str,
          origin: datetime) -> dict[str, ResumePoint]:
    """Record that ``node`` runs ``cameras`` now (a move when another node ran them in the same run).

    Returns each camera's resume point: the checkpoint of an unfinished earlier run (this one's, after a move,
    or one that stopped, e.g. when the head died), else a fresh start on ``origin``.
    """
    now = utcnow()
    points: dict[str, ResumePoint] = {}
    for camera in cameras:
        row = session.get(CameraPlacement, camera, with_for_update=True)
        if row is None:
            row = CameraPlacement(camera=camera, run_id=run_id, node=node, clock_origin=origin)
            session.add(row)
        elif row.run_id == run_id and row.node != node:
            row.moved_from, row.moved_at = row.node, now
        elif row.run_id != run_id:
            row.moved_from = row.moved_at = None
            if row.position_s is None:  # the last run read the file to its end: this run starts afresh
                row.clock_origin = origin
        row.run_id, row.node, row.updated_at = run_id, node, now
        points[camera] = ResumePoint(row.position_s, as_utc(row.clock_origin) if row.clock_origin else origin)
    return points


def start_afresh(session: Session, cameras: Iterable[str], *, run_id: str, node: str, origin: datetime) -> None:
    """Record that ``node`` runs ``cameras`` from the start of their files, on the clock ``origin``.

    For a run that does not resume an earlier one (``facetrail run --processes``: only its own workers that
    died resume, through :func:`place` with the same ``run_id``).
    """
    now = utcnow()
    for camera in cameras:
        row = session.get(CameraPlacement, camera, with_for_update=True)
        if row is None:
            row = CameraPlacement(camera=camera)
            session.add(row)
        row.run_id, row.node, row.clock_origin, row.position_s = run_id, node, origin, None
        row.moved_from = row.moved_at = None
        row.updated_at = now


def resume_run(session: Session, cameras: Iterable[str], *, run_id: str, node: str,
               origin: datetime) -> dict[str, ResumePoint]:
    """Where ``cameras`` pick up in run ``run_id`` once the process that ran them died, now run by ``node``.

    This run's checkpoint (recorded as a move from the dead process), or the start of the file for a camera
    this run never placed (its process died before it could): never an earlier run's checkpoint.
    """
    cameras = list(cameras)
    ours = [camera for camera in cameras
            if (row := session.get(CameraPlacement, camera, with_for_update=True)) is not None and row.run_id == run_id]
    start_afresh(session, [camera for camera in cameras if camera not in ours], run_id=run_id, node=node,
                 origin=origin)
    points = place(session, ours, run_id=run_id, node=node, origin=origin)
    return {camera: points.get(camera, ResumePoint(None, origin)) for camera in cameras}


def checkpoint(session: Session, camera: str, position_s: float | None) -> None:
    """The camera's work up to media time ``position_s`` is stored (None: its file was read to the end)."""
    row = session.get(CameraPlacement, camera)
    if row is not None:
        row.position_s, row.updated_at = position_s, utcnow()


def placements(session: Session) -> dict[str, CameraPlacement]:
    """Every placed camera's row, by name."""
    return {row.camera: row for row in session.scalars(select(CameraPlacement))}

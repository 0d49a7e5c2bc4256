"""Watchlist events a dead process left open, taken over by the process that runs its cameras next.

A camera group started again (a cluster's actor on another node, a run's worker process after a crash) hands
these to :meth:`Recorder.resume`: the first track of the same person continues such an event rather than
announcing it again, and the events nobody takes over are ended a little later (:class:`LiveOrphans` for live
cameras, by the clock; :mod:`facetrail.pipeline.checkpoints` for files, by media time).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sqlalchemy import select

from facetrail.events.messages import EventView
from facetrail.events.outlet import view_of
from facetrail.pipeline.consumers import Consumer
from facetrail.store.db import Database
from facetrail.store.models import Event

ADOPT_WITHIN_S = 10.0  # seconds after a restart during which a track may take over a left-open event


def open_watchlist_events(db: Database, cameras: Sequence[str]) -> list[EventView]:
    """The watchlist events of ``cameras`` that no run closed (the run that raised them stopped mid-track)."""
    with db.session() as session:
        rows = session.scalars(select(Event).where(Event.camera.in_(list(cameras)), Event.kind == "watchlist_hit",
                                                   Event.ended_at.is_(None)))
        return [view_of(session, row) for row in rows]


class LiveOrphans(Consumer):
    """Ends the left-open events no track took over ``ADOPT_WITHIN_S`` after the start, and at the stop."""

    name = "orphans"

    def __init__(self, end_orphans: Callable[[], int]) -> None:
        self.end_orphans = end_orphans
        self._started: float | None = None

    def housekeeping(self, now: float) -> None:
        if self._started is None:
            self._started = now
        elif now - self._started >= ADOPT_WITHIN_S:
            self.end_orphans()

    def stop(self) -> None:
        self.end_orphans()

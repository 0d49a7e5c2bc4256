"""Video files in the data folder that the pipeline writes and the API serves: event clips and live frames.

Both live beside the database in ``data_dir``, so ``facetrail run`` and ``facetrail serve`` must share that
folder (one machine, or a shared volume) for clips and the live view; everything else meets in the database.

- ``clips/<event id>.mp4``: the recording around an event. An event has a clip when this file exists (no
  column). Clips go with their event: :meth:`ClipFiles.sweep` deletes those whose event is gone (retention,
  forget) or older than the snapshot retention.
- ``live/<camera>.watch``: touched by the API about every second while someone watches the camera's live view;
  ``live/<camera>.jpg``: the newest annotated frame, replaced atomically by the pipeline only while the marker
  is fresh. Nobody watching costs the pipeline one ``stat`` per camera a second.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from facetrail.store.models import Event

CLIPS_FOLDER = "clips"
LIVE_FOLDER = "live"
WATCH_FRESH_S = 5.0  # a viewer touches its marker every second; five missed touches and the pipeline stops
_CLIP_NAME = re.compile(r"^(\d+)\.mp4$")
_CAMERA_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")  # the configuration's camera names (config.schema.SLUG)


class ClipFiles:
    """Event clips under ``<data_dir>/clips``, one file per event id."""

    def __init__(self, data_dir: Path) -> None:
        self.folder = Path(data_dir) / CLIPS_FOLDER

    def path(self, event_id: int) -> Path:
        """Where the clip of ``event_id`` is (whether or not it exists)."""
        return self.folder / f"{int(event_id)}.mp4"

    def exists(self, event_id: int) -> bool:
        """Whether the event has a clip."""
        return self.path(event_id).is_file()

    def event_ids(self) -> list[int]:
        """Every event id that has a clip."""
        if not self.folder.is_dir():
            return []
        return sorted(int(m.group(1)) for m in map(_CLIP_NAME.match, os.listdir(self.folder)) if m)

    def delete(self, event_ids: Iterable[int]) -> int:
        """Delete the clips of ``event_ids``; returns how many existed."""
        deleted = 0
        for event_id in event_ids:
            with contextlib.suppress(FileNotFoundError):
                self.path(event_id).unlink()
                deleted += 1
        return deleted

    def sweep(self, session: Session, *, older_than: datetime | None = None) -> int:
        """Delete the clips whose event is gone, or (with ``older_than``) started before it; returns how many."""
        have = self.event_ids()
        doomed: list[int] = []
        for start in range(0, len(have), 500):
            chunk = have[start:start + 500]
            query = select(Event.id).where(Event.id.in_(chunk))
            if older_than is not None:
                query = query.where(Event.started_at >= older_than)
            kept = set(session.scalars(query))
            doomed += [event_id for event_id in chunk if event_id not in kept]
        return self.delete(doomed)


class LiveFrames:
    """The live view's mailbox under ``<data_dir>/live``: watch markers (API) and newest frames (pipeline)."""

    def __init__(self, data_dir: Path) -> None:
        self.folder = Path(data_dir) / LIVE_FOLDER

    def frame_path(self, camera: str) -> Path:
        """The newest annotated JPEG of ``camera``."""
        return self.folder / f"{_checked(camera)}.jpg"

    def watch(self, camera: str) -> None:
        """Say that someone watches ``camera`` now (the API, about every second while a stream is open)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"{_checked(camera)}.watch").touch()

    def watched(self, camera: str, *, now: float | None = None) -> bool:
        """Whether a viewer touched ``camera``'s marker within :data:`WATCH_FRESH_S` (wall clock)."""
        try:
            touched = (self.folder / f"{_checked(camera)}.watch").stat().st_mtime
        except FileNotFoundError:
            return False
        return (now if now is not None else time.time()) - touched <= WATCH_FRESH_S

    def publish(self, camera: str, jpeg: bytes) -> None:
        """Replace ``camera``'s newest frame atomically (a reader sees the old file or the new, never half)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{camera}.", suffix=".part", dir=self.folder)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(jpeg)
            os.replace(tmp, self.frame_path(camera))
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def newest(self, camera: str, *, after: int = 0) -> tuple[int, bytes] | None:
        """``(version, JPEG)`` of the newest frame when its version is not ``after``; else None.

        The version is the file's identity (inode, modification time, size): each publish makes a new file.
        """
        path = self.frame_path(camera)
        try:
            info = path.stat()
            version = hash((info.st_ino, info.st_mtime_ns, info.st_size))
            if version == after:
                return None
            return version, path.read_bytes()
        except FileNotFoundError:
            return None

    def clear(self, camera: str) -> None:
        """Remove ``camera``'s newest frame (nobody watches any more, or the pipeline stopped)."""
        with contextlib.suppress(FileNotFoundError):
            self.frame_path(camera).unlink()


def _checked(camera: str) -> str:
    if not _CAMERA_NAME.match(camera):
        raise ValueError(f"camera name {camera!r}: use lower-case letters, digits, - and _")
    return camera

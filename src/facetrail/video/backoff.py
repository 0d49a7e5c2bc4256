"""What every reader thread needs between frames: a file's pacing, and the back-off after a failure.

``Pacer`` holds a file read in real time to its own speed; ``Backoff``
counts a reader's failures in a row and waits before the next try. Both
return False when the reader's stop event is set meanwhile; the reader
keeps its own lock, state and log messages.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

from facetrail.video.errors import mask_credentials

__all__ = ["Backoff", "Pacer", "RetryPolicy"]


class RetryPolicy(Protocol):
    """How long to wait after each failure, and when to give up (``ReconnectSettings`` is one)."""

    @property
    def max_attempts(self) -> int | None: ...

    def delay(self, failures: int) -> float: ...


class Pacer:
    """Sleeps until each frame's moment, counted from the first frame, so a file plays at its own speed."""

    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop
        self._origin: tuple[float, float] | None = None  # (monotonic, pts) of the first frame

    def wait(self, pts: float) -> bool:
        """Sleep until the frame at ``pts`` is due; False when stopped meanwhile."""
        if self._origin is None:
            self._origin = (time.monotonic(), pts)
            return True
        wait = self._origin[0] + (pts - self._origin[1]) - time.monotonic()
        return not (wait > 0 and self._stop.wait(wait))


class Backoff:
    """A reader's failures in a row (``attempts``), the latest one (``error``) and when it tries again.

    The owner calls ``fail``, ``waited`` and ``succeeded`` under its own lock (its status reads the three
    fields), and ``wait`` without it.
    """

    def __init__(self, policy: RetryPolicy, stop: threading.Event) -> None:
        self.policy = policy
        self._stop = stop
        self.attempts = 0
        self.error: str | None = None
        self.next_retry_at: datetime | None = None

    def fail(self, message: str) -> float | None:
        """Count a failure (``message`` with credentials masked): seconds to wait, or None to give up."""
        self.attempts += 1
        self.error = mask_credentials(message)
        if self.policy.max_attempts is not None and self.attempts >= self.policy.max_attempts:
            self.next_retry_at = None
            return None
        delay = self.policy.delay(self.attempts)
        self.next_retry_at = datetime.now(UTC) + timedelta(seconds=delay)
        return delay

    def wait(self, delay: float) -> bool:
        """Sleep out ``delay`` seconds; False when stopped meanwhile."""
        return not self._stop.wait(delay)

    def waited(self) -> None:
        """The wait is over: no retry is scheduled while the reader tries again."""
        self.next_retry_at = None

    def succeeded(self) -> None:
        """A frame came: the failures in a row start again from zero."""
        self.attempts, self.error = 0, None

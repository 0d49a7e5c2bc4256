"""Clocks: where time decides something, it is asked of a clock, so tests set time instead of waiting.

``SystemClock`` is the real one; ``ManualClock`` stands still until a test moves it.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """A source of time: a monotonic count for intervals, and the wall-clock time in UTC."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary start; never goes back."""
        ...

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class SystemClock:
    """The machine's clocks."""

    def monotonic(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()

    def now(self) -> datetime:
        """The current UTC time."""
        return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told (thread-safe)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime.now(UTC)
        self._monotonic = 0.0
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        """Seconds advanced since this clock was made."""
        with self._lock:
            return self._monotonic

    def now(self) -> datetime:
        """The start time plus every advance."""
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move both clocks forward by ``seconds`` (≥ 0)."""
        if seconds < 0:
            raise ValueError("a clock does not go back")
        with self._lock:
            self._monotonic += seconds
            self._now += timedelta(seconds=seconds)

"""How busy the rest of the machine was while a benchmark timed something (Linux)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class CpuMeter:
    """Share of the machine's CPU time spent by other processes while timing.

    Reads the machine's busy jiffies from /proc/stat and this process's own
    CPU time; the difference is what everything else used. Linux only (None
    elsewhere): a background share above a few percent makes the timings noisy.
    """

    start_busy: float | None = None
    start_own: float = 0.0
    start_wall: float = 0.0

    @staticmethod
    def _busy_seconds() -> float | None:
        try:
            fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        except (OSError, IndexError):
            return None
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own_seconds() -> float:
        times = os.times()
        return times.user + times.system

    def start(self) -> None:
        self.start_busy = self._busy_seconds()
        self.start_own = self._own_seconds()
        self.start_wall = time.perf_counter()

    def background_share(self) -> float | None:
        """Other processes' CPU use since ``start``, as a share of all CPUs (0 to 1)."""
        busy = self._busy_seconds()
        if busy is None or self.start_busy is None:
            return None
        wall = time.perf_counter() - self.start_wall
        others = (busy - self.start_busy) - (self._own_seconds() - self.start_own)
        return max(0.0, others / (wall * (os.cpu_count() or 1)))

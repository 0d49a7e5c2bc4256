"""One line, once per run, when cameras keep dropping frames: what is wrong and what to do about it."""

from __future__ import annotations

import time
from collections.abc import Sequence

from facetrail.cores import usable_cores
from facetrail.video.camera import CameraStatus

OVERLOADED_FOR_S = 10.0  # cameras dropping frames this long in a row (a start-up burst is not an overload)


class OverloadNotice:
    """Watches the cameras' status; says once what to do when analysis has not kept up for ``OVERLOADED_FOR_S``.

    One process uses about 1.5 cores (its threads share the interpreter's lock): with more cores than worker
    processes, ``--processes auto`` is the first remedy; with every core in use, fewer frames or cameras are.
    """

    def __init__(self, processes: int, cpus: int | None = None) -> None:
        self.processes = processes
        self.cpus = cpus if cpus is not None else usable_cores()
        self._since: float | None = None
        self._said = False

    def check(self, statuses: Sequence[CameraStatus], now: float | None = None) -> str | None:
        """The line to show, the first time the cameras have been overloaded long enough; else None."""
        now = time.monotonic() if now is None else now
        behind = [status for status in statuses if status.overloaded]
        if not behind:
            self._since = None
            return None
        if self._since is None:
            self._since = now
        if self._said or now - self._since < OVERLOADED_FOR_S:
            return None
        self._said = True
        dropped = sum(status.dropped_fps for status in behind)
        names = ", ".join(status.name for status in behind)
        line = (f"overloaded: cameras {names} drop {dropped:.1f} frame(s)/s in all: analysis does not keep up "
                "(each camera still gets its share of the newest frames). ")
        if self.processes < min(self.cpus, len(statuses)):
            return line + (f"This run uses {self.processes} process(es) on a machine with {self.cpus} CPUs, and one "
                           "process uses about 1.5 cores: run with --processes auto (or processes: auto in the file)")
        return line + ("The machine's cores are busy: analyse fewer frames (detect.fps), detect on a low-resolution "
                       "sub-stream (an input with roles: [detect] beside one with roles: [record]), or move cameras "
                       "to another machine")

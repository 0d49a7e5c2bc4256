"""Fault isolation: an error in one camera's stage or one consumer is counted, logged and retried, never fatal.

Every call the pipeline makes on behalf of a camera goes through
:meth:`PipelineHealth.guard`. An exception is logged with the camera and the
part that raised, counted in the camera's status, and the next frame tries
again; the other cameras never notice. A part that fails
``FAILING_AFTER`` times in a row is shown as *failing* in the camera's
status until it succeeds again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

log = logging.getLogger(__name__)

FAILING_AFTER = 3  # consecutive failures after which a part is marked failing
MAX_FAULT_CHARS = 500
T = TypeVar("T")


@dataclass
class CameraHealth:
    """One camera's faults: the total, the latest, and which parts fail now."""

    faults: int = 0
    last_fault: str | None = None
    consecutive: dict[str, int] = field(default_factory=dict)  # part -> failures in a row

    @property
    def failing(self) -> list[str]:
        """Parts that failed ``FAILING_AFTER`` times in a row and have not succeeded since."""
        return sorted(part for part, count in self.consecutive.items() if count >= FAILING_AFTER)

    def failed(self, part: str, error: BaseException) -> int:
        """Count a failure of ``part``; returns how many in a row."""
        self.faults += 1
        self.last_fault = f"{part}: {type(error).__name__}: {error}"[:MAX_FAULT_CHARS]
        self.consecutive[part] = self.consecutive.get(part, 0) + 1
        return self.consecutive[part]

    def succeeded(self, part: str) -> None:
        """``part`` worked: it is no longer failing."""
        if self.consecutive.get(part):
            log.info("%s recovered", part)
            self.consecutive[part] = 0


class PipelineHealth:
    """The health of every camera of one pipeline."""

    def __init__(self, cameras: Iterable[str]) -> None:
        self.cameras = {name: CameraHealth() for name in cameras}
        self._lock = threading.Lock()  # detection (its own thread) and tracking count faults of one camera

    def guard(self, camera: str | None, part: str, call: Callable[[], T]) -> T | None:
        """``call()``; on an exception log and count it against ``camera`` (None: every camera), return None."""
        targets = [camera] if camera is not None else list(self.cameras)
        try:
            result = call()
        except Exception as error:
            with self._lock:
                in_a_row = max(self.cameras[name].failed(part, error) for name in targets)
            where = f"camera {camera}" if camera is not None else "every camera"
            if in_a_row == 1 or in_a_row == FAILING_AFTER:
                log.exception("%s, %s failed (%d in a row; retried on the next frame)", where, part, in_a_row)
            else:
                log.warning("%s, %s failed again (%d in a row): %s", where, part, in_a_row, error)
            return None
        with self._lock:
            for name in targets:
                self.cameras[name].succeeded(part)
        return result

"""glibc's heap: keep large buffers out of it, and hand freed pages back (elsewhere, nothing happens).

Both the API (bursts of photo searches) and the pipeline (decoded frames of
many cameras, each on its own reader thread) allocate buffers of megabytes.
glibc raises its mmap threshold to the largest block freed so far (up to
32 MB), after which such buffers come from the heap (one arena per thread),
and freed ones stay mapped there: memory keeps the peak of every thread.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Callable

__all__ = ["give_memory_back", "keep_large_buffers_out_of_the_heap"]


def _glibc(function: str) -> Callable[..., int] | None:
    """A function of the C library, or None where it is not glibc (musl, macOS): nothing to call."""
    name = ctypes.util.find_library("c")
    try:
        found: Callable[..., int] = getattr(ctypes.CDLL(name or "libc.so.6"), function)
    except (OSError, AttributeError):
        return None
    return found


_M_MMAP_THRESHOLD = -3  # glibc's malloc.h
_MALLOPT = _glibc("mallopt")
_TRIM = None if os.environ.get("FACETRAIL_MALLOC_TRIM") == "0" else _glibc("malloc_trim")  # "0": off, to measure it
MMAP_THRESHOLD = 128 * 1024  # glibc's initial value


def keep_large_buffers_out_of_the_heap() -> None:
    """Serve buffers of 128 kB and more from their own mappings, returned to the system when freed (glibc only).

    Fixing the threshold at glibc's initial 128 kB stops its drift. Measured (bench/camera_memory.py and the
    API's bench/load.py): no CPU cost per analysed frame within the noise, since FFmpeg pools its frames.
    """
    if _MALLOPT is not None:
        _MALLOPT(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def give_memory_back() -> None:
    """Return the C heap's free pages to the system (glibc only; elsewhere nothing happens)."""
    if _TRIM is not None:
        _TRIM(0)

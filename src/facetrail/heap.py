"""glibc's heap: where buffers of megabytes come from, and handing freed pages back (elsewhere, nothing happens).

Both the API (bursts of photo searches) and the pipeline (decoded frames of
many cameras, each on its own reader thread) allocate buffers of megabytes.
glibc raises its mmap threshold to the largest block freed so far (up to
32 MB), after which such buffers come from the heap (one arena per thread),
and freed ones stay mapped there: memory keeps the peak of every thread.

The two uses want different things. The API's photos come in bursts of
every size: ``keep_large_buffers_out_of_the_heap`` maps each buffer of
128 kB or more on its own, handed back when freed. The pipeline converts
every analysed frame into a new picture of the same size (6 MB at 1080p),
and a fresh mapping per frame costs its page faults, the kernel zeroing it
and unmapping it again: 4.4-4.9 ms of CPU to convert a 1080p frame against
0.8-1.0 from reused memory. ``reuse_large_buffers`` serves such buffers from
the heap, where a freed frame's memory is the next frame's; the pipeline
calls ``give_memory_back`` every ``TRIM_EVERY_S`` so a burst (cameras
reconnecting, a slow consumer) is not kept.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Callable

__all__ = ["TRIM_EVERY_S", "give_memory_back", "keep_large_buffers_out_of_the_heap", "reuse_large_buffers"]


def _glibc(function: str) -> Callable[..., int] | None:
    """A function of the C library, or None where it is not glibc (musl, macOS): nothing to call."""
    name = ctypes.util.find_library("c")
    try:
        found: Callable[..., int] = getattr(ctypes.CDLL(name or "libc.so.6"), function)
    except (OSError, AttributeError):
        return None
    return found


_M_TRIM_THRESHOLD = -1  # glibc's malloc.h
_M_MMAP_THRESHOLD = -3
_MALLOPT = _glibc("mallopt")
_TRIM = None if os.environ.get("FACETRAIL_MALLOC_TRIM") == "0" else _glibc("malloc_trim")  # "0": off, to measure it
MMAP_THRESHOLD = 128 * 1024  # glibc's initial value (of the trim threshold too)
# Buffers up to this size come from the heap in the pipeline: glibc's own ceiling for its dynamic threshold, above a
# 4K BGR frame (25 MB). The heap is trimmed by give_memory_back alone (its automatic trimming would unmap a freed
# frame at the top of the heap, to be mapped and zeroed again for the next one).
REUSE_THRESHOLD = 32 * 1024 * 1024
REUSE_TRIM_THRESHOLD = 2 * REUSE_THRESHOLD
TRIM_EVERY_S = 10.0  # the pipeline hands freed heap back this often (a trim takes a few ms)


def keep_large_buffers_out_of_the_heap() -> None:
    """Serve buffers of 128 kB and more from their own mappings, returned to the system when freed (glibc only).

    For the API's bursts of photos of every size (bench/load.py): fixing the threshold at glibc's initial 128 kB
    stops its drift. A pipeline in the same process (``serve --config``) sets ``reuse_large_buffers`` after it,
    and trims the heap itself.
    """
    if _MALLOPT is not None:
        _MALLOPT(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        _MALLOPT(_M_TRIM_THRESHOLD, MMAP_THRESHOLD)


def reuse_large_buffers() -> None:
    """Serve buffers up to 32 MB from the heap and keep freed ones there for reuse until ``give_memory_back``.

    For the pipeline, whose frames come and go at the same size (glibc only). Measured (1080p street.mp4
    through the pipeline on 2 cores, runs alternated in one process): 3-10% less CPU per analysed frame.
    """
    if _MALLOPT is not None:
        _MALLOPT(_M_MMAP_THRESHOLD, REUSE_THRESHOLD)
        _MALLOPT(_M_TRIM_THRESHOLD, REUSE_TRIM_THRESHOLD)


def give_memory_back() -> None:
    """Return the C heap's free pages to the system (glibc only; elsewhere nothing happens)."""
    if _TRIM is not None:
        _TRIM(0)

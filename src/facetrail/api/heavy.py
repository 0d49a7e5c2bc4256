"""Searches and enrolments: a few at a time in a bounded thread pool, a short queue, 503 beyond it.

Fifty concurrent photo analyses each hold their decoded image and model
buffers at once: the p99 climbs and glibc keeps the peak. Here at most
``workers`` run, ``queue`` more wait (without a thread each), and the rest are
told to come back. When the pool goes idle, freed heap is handed back to the
system (``malloc_trim``), so memory returns to its level after a burst.

``prepare`` runs a job on every worker at once before the first request: the
models load at start instead of on the first search, and each worker's
buffers (and onnxruntime's arena, which grows to the largest concurrent use
and keeps it) reach their working size then, not during the first burst.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from typing import TypeVar

from fastapi import Request

from facetrail.api.errors import ApiError
from facetrail.heap import give_memory_back

log = logging.getLogger(__name__)
T = TypeVar("T")


class Busy(ApiError):
    """Every worker is busy and the queue is full: 503 with ``Retry-After``."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(503, "busy", f"the server is busy with other searches and enrolments; try again in "
                                      f"{retry_after_s} s", {"retry_after_s": retry_after_s})
        self.retry_after_s = retry_after_s


class HeavyWork:
    """At most ``workers`` heavy jobs at once and ``queue`` waiting; more raise :class:`Busy`."""

    def __init__(self, workers: int = 2, queue: int = 8, *, trim: bool = True) -> None:
        if workers < 1 or queue < 0:
            raise ValueError("heavy work needs at least one worker and a queue of zero or more")
        self.workers, self.queue, self.trim = workers, queue, trim
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="facetrail-heavy")
        self._lock = threading.Lock()
        self._admitted = 0
        self._mean_s = 1.0  # a running mean of one job's time, for Retry-After

    @property
    def admitted(self) -> int:
        """Jobs running or waiting now."""
        return self._admitted

    async def run(self, job: Callable[..., T], *args: object) -> T:
        """Run ``job(*args)`` in the pool and await it (from an async route)."""
        with self._admission():
            return await asyncio.wrap_future(self._submit(job, *args))

    def call(self, job: Callable[..., T], *args: object) -> T:
        """Run ``job(*args)`` in the pool and wait for it (from a sync route's thread)."""
        with self._admission():
            return self._submit(job, *args).result()

    def prepare(self, job: Callable[[], object]) -> None:
        """Run ``job`` once on every worker at the same time, then give freed memory back.

        A failure is logged, not raised: the first real request meets the same fault and reports it.
        """
        together = threading.Barrier(self.workers)

        def on_each_worker() -> None:
            together.wait(timeout=60)  # every worker takes exactly one: none is free until all arrived
            job()

        futures = [self._pool.submit(on_each_worker) for _ in range(self.workers)]
        for future in futures:
            try:
                future.result()
            except Exception as exc:  # whatever the job raises; the server still starts
                log.warning("warm-up of the search workers failed: %s", exc)
                break
        if self.trim:
            self._pool.submit(give_memory_back).result()

    def close(self) -> None:
        """Stop the pool's threads once their jobs are done."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _submit(self, job: Callable[..., T], *args: object) -> Future[T]:
        def timed() -> T:
            started = time.monotonic()
            try:
                return job(*args)
            finally:
                with self._lock:
                    self._mean_s = 0.8 * self._mean_s + 0.2 * (time.monotonic() - started)

        return self._pool.submit(timed)

    @contextmanager
    def _admission(self) -> Iterator[None]:
        with self._lock:
            if self._admitted >= self.workers + self.queue:
                waves = (self._admitted + 1) / self.workers
                raise Busy(min(60, max(1, math.ceil(self._mean_s * waves))))
            self._admitted += 1
        try:
            yield
        finally:
            with self._lock:
                self._admitted -= 1
                idle = self._admitted == 0
            if idle and self.trim:
                self._trim_later()

    def _trim_later(self) -> None:
        with suppress(RuntimeError):  # RuntimeError: the pool is shut down
            self._pool.submit(give_memory_back)  # in the pool: trimming a large heap takes a few ms


def heavy_work(request: Request) -> HeavyWork:
    """The app's heavy-work pool."""
    found: HeavyWork = request.app.state.heavy
    return found

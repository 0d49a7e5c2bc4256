"""Micro-batching: requests of several callers gathered into one run of a batch function, each answered its rows.

Used by the cluster's embedding actors (an async Ray actor: every call is a coroutine on one event loop), kept
free of Ray so it is tested alone. A batch closes when it holds ``max_batch`` rows or ``max_wait_s`` after its
first request arrived; the batch function runs on a worker thread, so the next batch gathers meanwhile, and
batches run one at a time, in arrival order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

BatchFunction = Callable[[npt.NDArray[np.uint8]], npt.NDArray[np.float32]]


@dataclass
class BatchStats:
    """What a batcher did since it started."""

    requests: int = 0
    rows: int = 0
    batches: int = 0
    largest: int = 0  # rows of the largest batch
    sizes: list[int] = field(default_factory=list)  # rows of each batch, the latest 1,000

    def add(self, rows: int, requests: int) -> None:
        self.requests += requests
        self.rows += rows
        self.batches += 1
        self.largest = max(self.largest, rows)
        self.sizes = [*self.sizes[-999:], rows]


@dataclass(eq=False)
class _Request:
    rows: npt.NDArray[np.uint8]
    answer: asyncio.Future[npt.NDArray[np.float32]]


class MicroBatcher:
    """Answers ``run(rows)`` calls by running ``function`` on the rows of several calls at once.

    ``function`` maps (n, ...) inputs to (n, d) outputs, row i for input i. Use from one event loop; ``run``
    is a coroutine, safe to await from many tasks at once.
    """

    def __init__(self, function: BatchFunction, *, max_batch: int, max_wait_s: float) -> None:
        self.function = function
        self.max_batch = max(1, max_batch)
        self.max_wait_s = max(0.0, max_wait_s)
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Request] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._carried: _Request | None = None  # arrived too late for the batch before: first of the next
        self.waiting = 0  # requests taken and not yet answered

    async def run(self, rows: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """The outputs of ``rows`` (row i for input i), computed in a batch shared with other callers."""
        loop = asyncio.get_running_loop()
        if self._queue is None or self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = loop.create_task(self._serve(self._queue))
        request = _Request(rows, loop.create_future())
        self.waiting += 1
        try:
            await self._queue.put(request)
            return await request.answer
        finally:
            self.waiting -= 1

    async def _serve(self, queue: asyncio.Queue[_Request]) -> None:
        while True:
            batch = await self._gather(queue)
            live = [request for request in batch if not request.answer.done()]  # a caller may have given up
            if not live:
                continue
            rows = np.concatenate([request.rows for request in live])
            try:
                outputs = await asyncio.to_thread(self.function, rows)
            except Exception as error:  # each caller gets the batch's error, and the batcher goes on
                for request in live:
                    if not request.answer.done():
                        request.answer.set_exception(error)
                continue
            self.stats.add(len(rows), len(live))
            start = 0
            for request in live:
                end = start + len(request.rows)
                if not request.answer.done():
                    request.answer.set_result(np.ascontiguousarray(outputs[start:end]))
                start = end

    async def _gather(self, queue: asyncio.Queue[_Request]) -> list[_Request]:
        """Requests for one batch: up to ``max_batch`` rows, or what came within ``max_wait_s`` of the first."""
        first, self._carried = self._carried or await queue.get(), None
        batch, rows = [first], len(first.rows)
        deadline = asyncio.get_running_loop().time() + self.max_wait_s
        while rows < self.max_batch:
            left = deadline - asyncio.get_running_loop().time()
            try:
                request = queue.get_nowait() if left <= 0 else await asyncio.wait_for(queue.get(), left)
            except (asyncio.QueueEmpty, TimeoutError):
                break
            if rows + len(request.rows) > self.max_batch:
                self._carried = request
                break
            batch.append(request)
            rows += len(request.rows)
        return batch

"""The search pool's warm-up: every worker runs the job once, at the same time, before the first request."""

from __future__ import annotations

import logging
import threading

import pytest

from facetrail.api.heavy import HeavyWork


def test_prepare_runs_the_job_once_on_every_worker_at_the_same_time() -> None:
    heavy = HeavyWork(workers=3, queue=0)
    seen: list[str] = []
    running = 0
    most_at_once = 0
    lock = threading.Lock()
    all_in = threading.Barrier(3)

    def job() -> None:
        nonlocal running, most_at_once
        with lock:
            seen.append(threading.current_thread().name)
            running += 1
            most_at_once = max(most_at_once, running)
        all_in.wait(timeout=10)  # returns only if the three jobs really overlap
        with lock:
            running -= 1

    try:
        heavy.prepare(job)
    finally:
        heavy.close()
    assert len(seen) == 3 and len(set(seen)) == 3  # one per worker thread, none twice
    assert all(name.startswith("facetrail-heavy") for name in seen)
    assert most_at_once == 3


def test_a_failing_warm_up_is_logged_and_the_pool_still_works(caplog: pytest.LogCaptureFixture) -> None:
    heavy = HeavyWork(workers=2, queue=1)

    def broken() -> None:
        raise OSError("model file missing")

    try:
        with caplog.at_level(logging.WARNING, logger="facetrail.api.heavy"):
            heavy.prepare(broken)
        assert "warm-up of the search workers failed: model file missing" in caplog.text
        assert heavy.call(lambda: 41 + 1) == 42
        assert heavy.admitted == 0
    finally:
        heavy.close()

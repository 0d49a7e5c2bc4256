"""The life of a reader thread: started once, stopped at any moment, retried with back-off, never crashing out.

A camera's detect input (``Camera``) and its record input (``RecordStream``)
are each one: a subclass reads its own way in ``_read`` and keeps its own
counters, under the lock (``_cond``) and with the state and back-off this
class gives it. ``_read`` raises ``Stopped`` (via ``_check_stop``, ``_fail``)
to leave once the reader is stopped or gives up.
"""

from __future__ import annotations

import logging
import threading
from typing import Literal

from facetrail.video.backoff import Backoff, RetryPolicy
from facetrail.video.errors import mask_credentials

__all__ = ["ReaderState", "ReaderThread", "Stopped"]

log = logging.getLogger(__name__)

ReaderState = Literal["connecting", "connected", "retrying", "failed", "finished", "stopped"]


class Stopped(Exception):
    """Leaves the reader loop once the reader is stopped or gives up."""


class ReaderThread:
    """One daemon thread reading one input until it ends, fails for good or is stopped.

    ``what`` names the reader in logs and errors ("camera door"); ``aside`` is added to its retry and
    give-up messages (e.g. what still works meanwhile).
    """

    def __init__(self, what: str, thread_name: str, policy: RetryPolicy, *, aside: str = "") -> None:
        self._what = what
        self._aside = f" ({aside})" if aside else ""
        self._thread_name = thread_name
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ended = False
        self._state: ReaderState = "connecting"
        self._backoff = Backoff(policy, self._stop)

    def start(self) -> None:
        """Start the reader thread (a daemon)."""
        if self._thread is not None:
            raise RuntimeError(f"{self._what} was already started")
        self._thread = threading.Thread(target=self._run, name=self._thread_name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop reading and wait up to ``timeout`` s for the thread.

        Back-off waits, pacing and waits for the consumer are interrupted at once; a blocked network
        read ends within the input's timeout, after which the thread exits by itself.
        """
        self._stop.set()
        with self._cond:
            if self._state not in ("finished", "failed"):
                self._state = "stopped"
            self._backoff.waited()
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        """True while the reader thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def _read(self) -> None:
        """Read until the input ends (return) or the reader stops or gives up (``Stopped``)."""
        raise NotImplementedError

    def _run(self) -> None:
        try:
            self._read()
        except Stopped:
            pass
        except Exception as error:  # a bug here must not take the service down
            log.exception("%s: reader crashed", self._what)
            with self._cond:
                self._state = "failed"
                self._backoff.error = mask_credentials(f"internal error: {type(error).__name__}: {error}")
        finally:
            with self._cond:
                if self._state not in ("finished", "failed"):
                    self._state = "stopped"
                self._ended = True
                self._cond.notify_all()

    def _fail(self, message: str) -> None:
        """Record a failure and wait out the back-off; raises Stopped when giving up or stopped."""
        with self._cond:
            self._check_stop()
            delay = self._backoff.fail(message)
            if delay is None:
                self._state = "failed"
                self._cond.notify_all()
                log.error("%s: giving up after %d attempts: %s%s", self._what, self._backoff.attempts,
                          self._backoff.error, self._aside)
                raise Stopped
            # "retrying" lasts until the input opens again, so it covers the reconnect attempt too.
            self._state = "retrying"
            self._cond.notify_all()
        log.warning("%s: %s; retrying in %.1f s (failure %d)%s", self._what, self._backoff.error, delay,
                    self._backoff.attempts, self._aside)
        if not self._backoff.wait(delay):
            raise Stopped
        with self._cond:
            self._backoff.waited()

    def _check_stop(self) -> None:
        if self._stop.is_set():
            raise Stopped

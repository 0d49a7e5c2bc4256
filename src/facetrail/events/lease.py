"""The delivery lease: one outbox dispatcher per database, whatever the number of processes.

Two processes draining one outbox would both send every message. So a
dispatcher delivers only while it holds the lease:

* PostgreSQL: a session-level advisory lock on a connection of its own. The
  server lets go of it when that connection ends, so a killed holder frees it
  at once.
* SQLite (and any other database): a row in ``dispatch_leases`` with an
  expiry that the holder renews every third of ``ttl_s``. A killed holder's
  row lapses after ``ttl_s``; a holder that stops deletes its row.

Either way ``held`` also lapses on the holder's own clock after ``ttl_s``
without a successful renewal, so a holder cut off from the database stops
sending before another can take over.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import uuid
from abc import ABC, abstractmethod
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from facetrail.store.db import Database
from facetrail.store.models import DispatchLeaseRecord, as_utc, utcnow

log = logging.getLogger(__name__)

LEASE_NAME = "outbox"
DEFAULT_TTL_S = 15.0
_ADVISORY_KEY = 0x6661636564697370  # "facedisp"; the audit chain's lock is another key


def holder_name() -> str:
    """This process, as other processes see it: host, pid and a random tag (pids are reused)."""
    return f"{socket.gethostname()[:100]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Lease(ABC):
    """Who may deliver the outbox; :meth:`acquire` takes or renews it, call it every :attr:`renew_s`."""

    def __init__(self, ttl_s: float = DEFAULT_TTL_S, holder: str | None = None) -> None:
        if ttl_s <= 0:
            raise ValueError("the lease's ttl_s must be positive")
        self.ttl_s = ttl_s
        self.holder = holder or holder_name()
        self.other: str | None = None  # who holds it, when another process does (as far as known)
        self._valid_until = -float("inf")

    @property
    def renew_s(self) -> float:
        """How often the holder renews (and a waiting process tries again)."""
        return self.ttl_s / 3

    @property
    def held(self) -> bool:
        """Whether this process holds the lease now (by its own clock)."""
        return time.monotonic() < self._valid_until

    def acquire(self) -> bool:
        """Take the lease, or renew it; True while held. Database errors count as not held."""
        started = time.monotonic()
        try:
            taken = self._acquire()
        except SQLAlchemyError as exc:
            log.warning("could not take or renew the delivery lease: %s", exc.__class__.__name__)
            taken = False
        # Measured from before the attempt: the database's view may be that old already.
        self._valid_until = started + self.ttl_s if taken else -float("inf")
        if taken:
            self.other = None
        return taken

    def release(self) -> None:
        """Give the lease up, so that another process can take over now rather than after ``ttl_s``."""
        self._valid_until = -float("inf")
        try:
            self._release()
        except SQLAlchemyError as exc:
            log.warning("could not release the delivery lease (it lapses by itself): %s", exc.__class__.__name__)

    @abstractmethod
    def _acquire(self) -> bool: ...

    @abstractmethod
    def _release(self) -> None: ...


class RowLease(Lease):
    """A ``dispatch_leases`` row with an expiry: for SQLite, whose file has no session locks."""

    def __init__(self, db: Database, ttl_s: float = DEFAULT_TTL_S, holder: str | None = None) -> None:
        super().__init__(ttl_s, holder)
        self.db = db

    def _acquire(self) -> bool:
        try:
            # SQLite's BEGIN IMMEDIATE (store/db.py) makes this read-then-write one writer at a time.
            with self.db.session() as session:
                now = utcnow()
                row = session.get(DispatchLeaseRecord, LEASE_NAME)
                if row is None:
                    session.add(DispatchLeaseRecord(name=LEASE_NAME, holder=self.holder, acquired_at=now,
                                                    expires_at=now + timedelta(seconds=self.ttl_s)))
                    return True
                if row.holder != self.holder and as_utc(row.expires_at) > now:
                    self.other = row.holder
                    return False
                if row.holder != self.holder:
                    log.warning("the delivery lease of %s lapsed; taking over", row.holder)
                    row.holder, row.acquired_at = self.holder, now
                row.expires_at = now + timedelta(seconds=self.ttl_s)
                return True
        except IntegrityError:  # another process inserted the row first
            return False

    def _release(self) -> None:
        with self.db.session() as session:
            session.execute(sa.delete(DispatchLeaseRecord).where(
                DispatchLeaseRecord.name == LEASE_NAME, DispatchLeaseRecord.holder == self.holder))


class AdvisoryLease(Lease):
    """A PostgreSQL session-level advisory lock, held on a connection of its own."""

    def __init__(self, db: Database, ttl_s: float = DEFAULT_TTL_S, holder: str | None = None) -> None:
        super().__init__(ttl_s, holder)
        # Its own engine without a pool: the lock lives exactly as long as this one connection.
        self._engine = sa.create_engine(
            db.engine.url, poolclass=NullPool,
            connect_args={"application_name": f"facetrail delivery {self.holder}"[:63]})
        self._connection: sa.Connection | None = None

    def _acquire(self) -> bool:
        if self._connection is not None:
            try:
                self._connection.execute(sa.text("SELECT 1"))  # the lock lasts while the connection does
                return True
            except SQLAlchemyError:
                log.warning("lost the connection that held the delivery lease")
                self._drop()
                raise
        connection = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            taken = bool(connection.scalar(sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": _ADVISORY_KEY}))
            if not taken:
                self.other = self._lock_holder(connection)
                connection.close()
                return False
        except SQLAlchemyError:
            connection.close()
            raise
        self._connection = connection
        return True

    def _lock_holder(self, connection: sa.Connection) -> str | None:
        # A bigint key shows in pg_locks as classid (high 32 bits), objid (low 32 bits), objsubid 1.
        name = connection.scalar(sa.text(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
            "AND l.classid = :high AND l.objid = :low LIMIT 1"),
            {"high": _ADVISORY_KEY >> 32, "low": _ADVISORY_KEY & 0xFFFFFFFF})
        return str(name).removeprefix("facetrail delivery ") if name else None

    def _release(self) -> None:
        self._drop()  # closing the connection ends its session, and with it the lock

    def _drop(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(SQLAlchemyError):
                self._connection.close()
            self._connection = None


def open_lease(db: Database, ttl_s: float = DEFAULT_TTL_S) -> Lease:
    """The lease that suits ``db``: an advisory lock on PostgreSQL, a row with an expiry elsewhere."""
    if db.dialect == "postgresql":
        return AdvisoryLease(db, ttl_s)
    return RowLease(db, ttl_s)

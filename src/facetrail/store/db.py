"""Opening the database: SQLite (WAL, one file) by default, PostgreSQL by URL; migrations on open.

Thread-safety: a ``Database`` may be shared by threads; each unit of work
takes its own session from ``session()``.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from facetrail.store.errors import DatabaseUnavailableError

if TYPE_CHECKING:
    from facetrail.store.crypto import KeyRing

log = logging.getLogger(__name__)

DB_FILENAME = "facetrail.db"
BUSY_TIMEOUT_S = 30.0  # how long a SQLite connection waits for another one's lock before it reports it
_pause = time.sleep  # between tries to switch a fresh database to WAL (a test watches it)


def sqlite_url(data_dir: Path) -> str:
    """The URL of the embedded default database inside ``data_dir``."""
    return f"sqlite:///{(data_dir / DB_FILENAME).resolve()}"


class Database:
    """A migrated database and a session factory.

    ``url``: any SQLAlchemy URL; ``sqlite:///path`` and
    ``postgresql+psycopg://user@host/db`` are the tested ones.
    """

    def __init__(self, url: str, *, migrate: bool = True) -> None:
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise DatabaseUnavailableError(f"not a database URL: {url!r}") from None
        self.url = url
        self.keys: KeyRing | None = None  # set by whoever opens it with the master key (the gallery)
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite" and parsed.database and not parsed.database.startswith("file:"):
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        self.engine: Engine = create_engine(url, pool_pre_ping=True)
        if self.dialect == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "begin", _sqlite_begin_immediate)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        shown = parsed.render_as_string(hide_password=True)
        try:
            with self.engine.connect() as connection:
                connection.execute(text("select 1"))
            if migrate:
                self.migrate()
        except DBAPIError as exc:  # unreachable, refused, or not a database at all (a corrupt or foreign file)
            reason = str(exc.orig).splitlines()[0]
            hint = ("; restore it from a backup, or move it away to start an empty one"
                    if "not a database" in reason or "malformed" in reason else "")
            raise DatabaseUnavailableError(f"cannot open database {shown}: {reason}{hint}") from None

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision."""
        from facetrail.store.migrate import upgrade_to_head

        upgrade_to_head(self.engine)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose work is committed on success and rolled back on any error."""
        session = self._sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def _sqlite_begin_immediate(connection: Any) -> None:
    # Take the write lock when a transaction starts: two writers then queue (busy_timeout)
    # instead of failing when a reader tries to upgrade its lock.
    try:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    except OperationalError as error:
        if "readonly" not in str(error.orig):
            raise
        connection.exec_driver_sql("BEGIN")  # a read-only database: reads go on, a write fails with its reason


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # pysqlite's own transaction handling would defeat BEGIN IMMEDIATE; we issue BEGIN ourselves.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")  # first: the switch to WAL may wait too
    _switch_to_wal(cursor)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA secure_delete=ON")  # deleted rows (a destroyed data key) are zeroed in the file
    cursor.close()


def _switch_to_wal(cursor: sqlite3.Cursor) -> None:
    # Switching a fresh database (not yet WAL) takes its exclusive lock from a shared one. When processes open it at
    # once, SQLite refuses at once ("database is locked") a connection whose wait could deadlock with another's,
    # without its busy timeout; it holds no lock after the refusal, so trying again a moment later succeeds.
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
        _pause(random.uniform(0.005, 0.05))  # apart, so the processes refused together do not meet again


__all__ = ["Database", "DatabaseUnavailableError", "SQLAlchemyError", "sqlite_url"]

"""Real databases for the tests: a SQLite file, and a throwaway PostgreSQL database.

PostgreSQL is the machine's server (127.0.0.1:5432, trust auth); each test run
creates its own database and drops it afterwards. FACETRAIL_TEST_PG overrides
the server URL. Tests skip PostgreSQL, with the reason, only when no server answers.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

PG_SERVER = os.environ.get("FACETRAIL_TEST_PG", "postgresql+psycopg://root@127.0.0.1:5432/test")


def postgres_problem() -> str | None:
    """Why PostgreSQL cannot be used here, or None when it can."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'facetrail[postgres]')"
    try:
        engine = sa.create_engine(PG_SERVER)
        with engine.connect() as connection:
            connection.execute(sa.text("select 1"))
        engine.dispose()
    except sa.exc.OperationalError as exc:
        return f"no PostgreSQL server at {PG_SERVER}: {exc.orig}"
    return None


@contextmanager
def throwaway_postgres() -> Iterator[str]:
    """URL of a fresh, empty PostgreSQL database, dropped on exit."""
    name = f"facetrail_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_SERVER, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(PG_SERVER).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

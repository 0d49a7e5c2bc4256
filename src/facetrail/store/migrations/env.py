"""Alembic environment: runs migrations on the engine facetrail hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine, text

from facetrail.store.models import Base

# Processes opening one database at once (a run and the API started together, --processes workers) migrate one
# after the other: each reads the schema's revision and applies what is missing inside one transaction that holds
# the write lock from the read to the commit, so the later ones find the schema at head. On PostgreSQL the lock is
# this transaction-level advisory lock; on SQLite it is BEGIN IMMEDIATE (facetrail.store.db). Alembic would
# otherwise commit after every SQLite migration (it treats SQLite's DDL as non-transactional), and a second
# process could read the revision between two commits and create the same table again ("table ... already
# exists"); on PostgreSQL two could create a table at once ("duplicate key ... pg_type_typname_nsp_index").
MIGRATION_LOCK_KEY = 0x666163656D696772  # "facemigr"; the lease and the audit chain use keys of their own

engine = context.config.attributes.get("engine")
if not isinstance(engine, Engine):  # pragma: no cover - only reachable from the alembic CLI
    raise RuntimeError("run migrations through facetrail (Database(url).migrate()), not the alembic CLI")

with engine.connect() as connection, connection.begin():
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    # configured inside the transaction: Alembic then runs every step in it and commits nothing itself
    context.configure(connection=connection, target_metadata=Base.metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    context.run_migrations()

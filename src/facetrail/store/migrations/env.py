"""Alembic environment: runs migrations on the engine facetrail hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine, text

from facetrail.store.models import Base

# PostgreSQL: processes opening one database at once (a run and the API started together, --processes workers)
# migrate one after the other, each under this transaction-level lock; the later ones find the schema at head.
# Without it two could create the same table at once and one fail ("duplicate key value violates unique
# constraint pg_type_typname_nsp_index"). SQLite's writers already queue (BEGIN IMMEDIATE).
MIGRATION_LOCK_KEY = 0x666163656D696772  # "facemigr"; the lease and the audit chain use keys of their own

engine = context.config.attributes.get("engine")
if not isinstance(engine, Engine):  # pragma: no cover - only reachable from the alembic CLI
    raise RuntimeError("run migrations through facetrail (Database(url).migrate()), not the alembic CLI")

with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        context.run_migrations()
    connection.commit()

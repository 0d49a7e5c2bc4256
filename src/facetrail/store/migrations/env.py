"""Alembic environment: runs migrations on the engine facetrail hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from facetrail.store.models import Base

engine = context.config.attributes.get("engine")
if not isinstance(engine, Engine):  # pragma: no cover - only reachable from the alembic CLI
    raise RuntimeError("run migrations through facetrail (Database(url).migrate()), not the alembic CLI")

with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()

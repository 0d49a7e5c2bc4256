"""The store on a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy import func, select

from facetrail.store import audit
from facetrail.store.db import Database
from facetrail.store.errors import DatabaseUnavailableError
from facetrail.store.models import (
    AuditEntry,
    Base,
    FaceTemplate,
    Identity,
    NegativeExample,
    Watchlist,
    WatchlistMember,
    utcnow,
)
from facetrail.store.people import forget_identity, purge_expired

FORBIDDEN = ("race", "ethnic", "skin", "religio", "health", "attribute", "gender", "sex")


def _person(db: Database, name: str, templates: int = 2) -> int:
    with db.session() as session:
        person = Identity(display_name=name, created_by="test")
        session.add(person)
        session.flush()
        for n in range(templates):
            vector = np.random.default_rng(n).standard_normal(8).astype(np.float32)
            session.add(FaceTemplate(identity_id=person.id, embedding=vector.tobytes(), dim=8, model_id="m",
                                     quality=0.9, image_sha256=f"{name}-{n}", thumbnail_jpeg=b"jpeg"))
        return person.id


def test_migrations_create_the_schema_and_are_idempotent(db_url: str) -> None:
    db = Database(db_url)
    db.migrate()  # a second run changes nothing
    tables = set(sa.inspect(db.engine).get_table_names())
    assert set(Base.metadata.tables) <= tables and "alembic_version" in tables


def test_no_column_can_hold_sensitive_categories() -> None:
    for table in Base.metadata.tables.values():
        for column in table.columns:
            assert not any(word in column.name.lower() for word in FORBIDDEN), column
        assert not any(isinstance(c.type, sa.JSON) for c in table.columns), "no free-form attribute store"


def test_audit_chain_verifies_and_detects_tampering(db_url: str) -> None:
    db = Database(db_url)
    with db.session() as session:
        for n in range(5):
            audit.record(session, actor="ana", action="search", target="gallery", purpose="case 17",
                         result_count=n)
    with db.session() as session:
        assert audit.verify_chain(session) == audit.ChainCheck(True, 5)
    with db.session() as session:
        session.execute(sa.update(AuditEntry).where(AuditEntry.id == 3).values(purpose="nothing to see"))
    with db.session() as session:
        check = audit.verify_chain(session)
    assert not check.ok and check.first_bad_id == 3 and check.checked == 2


def test_audit_chain_detects_a_deleted_row(db_url: str) -> None:
    db = Database(db_url)
    with db.session() as session:
        for n in range(4):
            audit.record(session, actor="ana", action="enrol", target=f"identity:{n}")
    with db.session() as session:
        session.execute(sa.delete(AuditEntry).where(AuditEntry.id == 2))
    with db.session() as session:
        check = audit.verify_chain(session)
    assert not check.ok and check.first_bad_id == 3


def test_forget_removes_every_trace_and_keeps_a_tombstone(db_url: str) -> None:
    db = Database(db_url)
    keep, gone = _person(db, "Keep"), _person(db, "Gone", templates=3)
    with db.session() as session:
        session.add(Watchlist(name="w", purpose="p", created_by="t"))
        session.flush()
        watchlist = session.scalar(select(Watchlist.id))
        session.add(WatchlistMember(watchlist_id=watchlist, identity_id=gone, added_by="t"))
        session.add(NegativeExample(identity_id=gone, embedding=b"\0" * 32, dim=8, model_id="m", created_by="t"))
    with db.session() as session:
        forgotten = forget_identity(session, gone, actor="dpo", reason="deletion request")
    assert len(forgotten.template_ids) == 3 and forgotten.negatives == 1 and forgotten.memberships == 1
    with db.session() as session:
        for model in (FaceTemplate, NegativeExample, WatchlistMember):
            column = model.identity_id  # type: ignore[attr-defined]
            assert session.scalar(select(func.count()).select_from(model).where(column == gone)) == 0
        assert session.get(Identity, gone) is None and session.get(Identity, keep) is not None
        tombstone = session.scalar(select(AuditEntry).where(AuditEntry.action == "forget"))
        assert tombstone is not None and tombstone.target == f"identity:{gone}"
        assert "Gone" not in tombstone.details and "Gone" not in tombstone.target
        assert audit.verify_chain(session).ok


def test_purge_expires_watchlists_and_people_past_retention(db_url: str) -> None:
    db = Database(db_url)
    old, fresh = _person(db, "Old"), _person(db, "Fresh")
    now = utcnow()
    with db.session() as session:
        session.get(Identity, old).retain_until = now - timedelta(days=1)  # type: ignore[union-attr]
        session.get(Identity, fresh).retain_until = now + timedelta(days=30)  # type: ignore[union-attr]
        session.add(Watchlist(name="expired", purpose="p", created_by="t", expires_at=now - timedelta(hours=1)))
        session.add(Watchlist(name="current", purpose="p", created_by="t", expires_at=now + timedelta(days=1)))
    with db.session() as session:
        report = purge_expired(session, now=now)
    assert report.expired_watchlists == ["expired"]
    assert [f.identity_id for f in report.forgotten] == [old] and len(report.template_ids) == 2
    with db.session() as session:
        assert [w.name for w in session.scalars(select(Watchlist))] == ["current"]
        assert session.get(Identity, old) is None and session.get(Identity, fresh) is not None
        actions = list(session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)))
    assert actions == ["watchlist.expire", "forget"]


def test_a_failed_transaction_writes_nothing(db_url: str) -> None:
    db = Database(db_url)
    with pytest.raises(RuntimeError), db.session() as session:
        session.add(Identity(display_name="Half", created_by="t"))
        session.flush()
        audit.record(session, actor="t", action="enrol", target="identity:?")
        raise RuntimeError("crash in the middle")
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Identity)) == 0
        assert session.scalar(select(func.count()).select_from(AuditEntry)) == 0


def test_unreachable_database_is_a_clear_error() -> None:
    with pytest.raises(DatabaseUnavailableError, match="cannot open database"):
        Database("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2")
    with pytest.raises(DatabaseUnavailableError, match="not a database URL"):
        Database("definitely not a url")

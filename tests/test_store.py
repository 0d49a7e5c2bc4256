"""The store on a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from sqlalchemy import func, select

from facetrail.store import audit
from facetrail.store import db as db_module
from facetrail.store.db import Database
from facetrail.store.errors import DatabaseUnavailableError
from facetrail.store.migrate import alembic_config
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

# Every column facetrail stores, reviewed against DESIGN.md's "Lines facetrail does not cross": what is kept
# about a person is a name, an optional reference, notes, face templates, memberships and what the cameras saw.
# A new column fails the test below until it is reviewed and added here.
REVIEWED_COLUMNS: dict[str, set[str]] = {
    "api_keys": {"id", "name", "role", "prefix", "secret_sha256", "created_by", "created_at", "revoked_at",
        "last_used_at"},
    "audit_log": {"id", "at", "actor", "action", "target", "purpose", "result_count", "details", "prev_hash",
        "entry_hash"},
    "camera_states": {"camera", "run_id", "state", "source", "error", "attempts", "last_frame_at", "analysed_fps",
        "frames_analysed", "frames_skipped_motion", "frames_dropped", "faces_in_frame", "frame_jpeg", "frame_at",
        "faults", "last_fault", "failing", "updated_at", "target_fps", "dropped_fps", "skipped_motion_fps",
        "frames_skipped_decoder"},
    "camera_placements": {"camera", "run_id", "node", "moved_from", "moved_at", "position_s", "clock_origin",
        "updated_at"},
    "dispatch_leases": {"name", "holder", "acquired_at", "expires_at"},
    "data_keys": {"id", "owner_kind", "owner_id", "wrapped", "created_at"},
    "door_consents": {"id", "identity_id", "door", "method", "recorded_by", "recorded_at", "factor_hash",
        "withdrawn_at", "withdrawn_by"},
    "door_decisions": {"id", "door", "camera", "track_uid", "outcome", "reason", "rule", "identity_id", "score",
        "matched_shots", "liveness", "liveness_reason", "blinks", "depth_residual", "tailgating", "others_present",
        "snapshot_jpeg", "decided_at", "command", "command_error", "command_attempts"},
    "door_states": {"door", "state", "source", "command_id", "reported_at"},
    "event_reviews": {"id", "event_id", "reviewer", "decision", "note", "at"},
    "events": {"id", "uid", "kind", "camera", "sighting_id", "identity_id", "visitor_id", "watchlist_id", "score",
        "started_at", "ended_at", "snapshot_jpeg", "state", "reviewers_required", "created_at"},
    "face_templates": {"id", "identity_id", "embedding", "dim", "model_id", "quality", "image_sha256", "source_name",
        "thumbnail_jpeg", "created_at"},
    "identities": {"id", "display_name", "external_ref", "notes", "retain_until", "created_at", "created_by"},
    "negative_examples": {"id", "identity_id", "embedding", "dim", "model_id", "image_sha256", "created_by",
        "created_at"},
    "outbox": {"id", "message_id", "channel", "destination", "payload", "retain", "created_at", "attempts",
        "next_attempt_at", "delivered_at", "last_error", "identity_id"},
    "sightings": {"id", "track_uid", "camera", "identity_id", "visitor_id", "first_seen", "last_seen", "score",
        "quality", "frames", "watchlist_hit", "embedding", "dim", "model_id", "thumbnail_jpeg"},
    "visitors": {"id", "model_id", "centroid", "dim", "sightings", "first_seen", "last_seen"},
    "watchlist_members": {"watchlist_id", "identity_id", "added_by", "added_at"},
    "watchlists": {"id", "name", "purpose", "threshold", "expires_at", "created_by", "created_at",
        "reviewers_required"},
    "web_sessions": {"id", "token_sha256", "api_key_id", "created_at", "expires_at"},
}


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


OPEN_AT = textwrap.dedent("""
    import sys, time
    from facetrail.store.db import Database
    url, start = sys.argv[1], float(sys.argv[2])
    time.sleep(max(0.0, start - time.time()))  # every process opens the fresh database at the same moment
    Database(url)
    print("migrated", flush=True)
""")


def test_processes_opening_a_fresh_database_at_once_all_migrate_it(db_url: str) -> None:
    start = time.time() + 3.0
    children = [subprocess.Popen([sys.executable, "-c", OPEN_AT, db_url, str(start)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [child.communicate(timeout=120) for child in children]
    assert [out.strip() for out, _ in results] == ["migrated"] * 4, [err for _, err in results]
    tables = set(sa.inspect(Database(db_url, migrate=False).engine).get_table_names())
    assert set(Base.metadata.tables) <= tables


def test_a_fresh_sqlite_database_is_migrated_in_one_transaction(tmp_path: Path) -> None:
    # Another process reading the revision between two steps would plan the same steps again (the race the test
    # above provokes); here an outside connection looks each time the migrating one begins a transaction.
    path = tmp_path / "facetrail.db"
    db = Database(f"sqlite:///{path}", migrate=False)
    seen: list[str | None] = []

    def look_from_outside(_connection: sa.Connection) -> None:
        with closing(sqlite3.connect(path)) as outside:
            try:
                seen.append(outside.execute("SELECT version_num FROM alembic_version").fetchone()[0])
            except sqlite3.OperationalError:  # no such table: nothing committed yet
                seen.append(None)

    sa.event.listen(db.engine, "begin", look_from_outside)
    db.migrate()
    head = ScriptDirectory.from_config(alembic_config(db.engine)).get_current_head()
    with closing(sqlite3.connect(path)) as outside:
        assert outside.execute("SELECT version_num FROM alembic_version").fetchone()[0] == head
    assert seen and set(seen) <= {None, head}, f"a part-migrated schema was visible: {seen}"


def test_a_database_another_connection_is_writing_is_switched_to_wal_once_it_commits(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The other race of the four processes above, made certain: switching a database that is not yet WAL while
    # another connection holds its write lock is refused at once ("database is locked"), without the busy timeout
    # (CI's four processes hit it once); the open tries again until the writer has committed, and loses nothing.
    path = tmp_path / "facetrail.db"
    refused = threading.Event()
    monkeypatch.setattr(db_module, "_pause", lambda seconds: (refused.set(), time.sleep(seconds)))
    opened: list[Database | Exception] = []

    def open_it() -> None:
        try:
            opened.append(Database(f"sqlite:///{path}"))
        except Exception as error:  # reported by the assertion below
            opened.append(error)

    with closing(sqlite3.connect(path, isolation_level=None)) as writer:
        writer.execute("CREATE TABLE written_first (x)")  # a rollback-journal database with a writer in it
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("INSERT INTO written_first VALUES (1)")
        opener = threading.Thread(target=open_it)
        opener.start()
        while not refused.wait(0.05) and opener.is_alive():
            pass
        writer.execute("COMMIT")
    opener.join(timeout=120)
    assert len(opened) == 1 and isinstance(opened[0], Database), opened
    db = opened[0]
    assert refused.is_set()  # the writer held its lock through at least one try
    with db.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("SELECT x FROM written_first").scalar() == 1
        assert "alembic_version" in sa.inspect(connection).get_table_names()
    db.dispose()


def test_every_stored_column_was_reviewed_and_none_is_free_form(db_url: str) -> None:
    db = Database(db_url)
    inspector = sa.inspect(db.engine)
    stored = {table: {c["name"] for c in inspector.get_columns(table)}
              for table in inspector.get_table_names() if table != "alembic_version"}
    assert stored == REVIEWED_COLUMNS, "a column was added or removed: review it against DESIGN.md, then list it"
    for table in Base.metadata.tables.values():
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

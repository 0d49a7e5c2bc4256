"""The audit chain is keyed and anchored outside the database: truncation, deletion and rewrites show.

A real gallery (SQLite file and PostgreSQL) gets audited actions through the
CLI; an attacker with write access to the database (but not to the audit key)
then deletes or rewrites entries with plain SQL, and ``facetrail audit verify``
(the real CLI) must say so and exit 1.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from facetrail.cli.main import main
from facetrail.store import audit
from facetrail.store.db import Database
from facetrail.store.models import AuditEntry

_ENV = {k: v for k, v in os.environ.items() if not k.startswith("FACETRAIL_")}


@dataclass
class Gallery:
    """A gallery's data folder and database, and the CLI run against them."""

    data: Path
    db_url: str

    def cli(self, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
        """Run the CLI in this process; exit status and everything printed."""
        status = main([*args, "--data", str(self.data), "--db", self.db_url, "--actor", "auditor"])
        captured = capsys.readouterr()
        return status, captured.out + captured.err

    def verify(self) -> subprocess.CompletedProcess[str]:
        """`facetrail audit verify` as a user runs it."""
        return subprocess.run([sys.executable, "-m", "facetrail.cli.main", "audit", "verify", "--data", str(self.data),
                               "--db", self.db_url], capture_output=True, text=True, timeout=300,
                              stdin=subprocess.DEVNULL, env=_ENV)

    def sql(self, *statements: sa.Executable) -> None:
        """What someone with write access to the database, and nothing else, can do."""
        engine = sa.create_engine(self.db_url)
        with engine.begin() as connection:
            for statement in statements:
                connection.execute(statement)
        engine.dispose()

    def entries(self) -> list[AuditEntry]:
        database = Database(self.db_url)
        with database.session() as session:
            rows = list(session.scalars(sa.select(AuditEntry).order_by(AuditEntry.id)))
        database.dispose()
        return rows


@pytest.fixture
def gallery(tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str],
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Gallery]:
    """A gallery with 25 audited actions: keys made and revoked, watchlists created."""
    for name in [k for k in os.environ if k.startswith("FACETRAIL_")]:
        monkeypatch.delenv(name)
    made = Gallery(tmp_path / "data", db_url)
    for n in range(10):
        assert made.cli(capsys, "keys", "create", f"camera-{n}", "--role", "viewer")[0] == 0
        assert made.cli(capsys, "watchlist", "create", f"list-{n}", "--purpose", "case 17")[0] == 0
    for n in range(5):
        assert made.cli(capsys, "keys", "revoke", f"camera-{n}")[0] == 0
    yield made


def _plain_rechain(entries: list[AuditEntry]) -> list[sa.Executable]:
    """Recompute every link and hash with plain SHA-256, as anyone without the key can."""
    statements: list[sa.Executable] = []
    previous = audit.GENESIS
    for entry in entries:
        entry.prev_hash = previous
        entry.entry_hash = audit.entry_hash(entry)
        statements.append(sa.update(AuditEntry).where(AuditEntry.id == entry.id)
                          .values(prev_hash=entry.prev_hash, entry_hash=entry.entry_hash))
        previous = entry.entry_hash
    return statements


def test_a_gallery_with_audited_actions_verifies(gallery: Gallery) -> None:
    result = gallery.verify()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "audit log intact: 25 entries verified" in result.stdout
    assert "25 keyed" in result.stdout and "last checkpoint: 25 entries" in result.stdout
    assert all(e.entry_hash.startswith(f"k1:{n}:") for n, e in enumerate(gallery.entries(), start=1))
    key = gallery.data / "audit.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_text().strip() not in json.dumps([e.details for e in gallery.entries()])


def test_deleting_the_last_ten_entries_is_truncation(gallery: Gallery) -> None:
    last = gallery.entries()[-10].id
    gallery.sql(sa.delete(AuditEntry).where(AuditEntry.id >= last))
    result = gallery.verify()
    assert result.returncode == 1
    assert "TAMPERED" in result.stdout and "truncated" in result.stdout
    assert "held 25 entries, it now holds 15" in result.stdout


def test_deleting_every_entry_is_reported(gallery: Gallery) -> None:
    gallery.sql(sa.delete(AuditEntry))
    result = gallery.verify()
    assert result.returncode == 1
    assert "every entry was deleted" in result.stdout and "held 25 entries" in result.stdout


def test_a_chain_recomputed_without_the_key_is_reported(gallery: Gallery, capsys: pytest.CaptureFixture[str]) -> None:
    entries = gallery.entries()
    entries[7].purpose = "nothing to see"
    gallery.sql(sa.update(AuditEntry).where(AuditEntry.id == entries[7].id).values(purpose="nothing to see"),
                *_plain_rechain(entries))
    result = gallery.verify()
    assert result.returncode == 1
    assert "not the one the checkpoint" in result.stdout and "rewritten" in result.stdout

    # the same rewrite in the keyed format, under a key the attacker made up
    forged, previous = secrets.token_bytes(32), audit.GENESIS
    statements: list[sa.Executable] = []
    for position, entry in enumerate(entries, start=1):
        entry.prev_hash = previous
        entry.entry_hash = audit.keyed_hash(entry, forged, position)
        statements.append(sa.update(AuditEntry).where(AuditEntry.id == entry.id)
                          .values(prev_hash=entry.prev_hash, entry_hash=entry.entry_hash))
        previous = entry.entry_hash
    gallery.sql(*statements)
    status, output = gallery.cli(capsys, "audit", "verify")
    assert status == 1
    assert f"entry {entries[0].id}: entry content does not match its keyed hash" in output
    assert "recomputed without the audit key" in output


def test_changing_the_last_entry_and_its_hash_is_reported(gallery: Gallery) -> None:
    last = gallery.entries()[-1]
    last.purpose = "covering tracks"
    gallery.sql(sa.update(AuditEntry).where(AuditEntry.id == last.id)
                .values(purpose=last.purpose, entry_hash=audit.entry_hash(last)))
    result = gallery.verify()
    assert result.returncode == 1
    assert f"entry {last.id}: an unkeyed entry after keyed ones" in result.stdout
    assert "not the one the checkpoint" in result.stdout


def test_a_tampered_checkpoint_file_is_reported(gallery: Gallery) -> None:
    log = gallery.data / "audit-checkpoints.log"
    lines = log.read_text().splitlines()
    point = json.loads(lines[-1])
    point["count"] = 15  # hide a truncation of the last ten entries
    log.write_text("\n".join([*lines[:-1], json.dumps(point)]) + "\n")
    result = gallery.verify()
    assert result.returncode == 1
    assert f"line {len(lines)}: signature does not match" in result.stdout


def test_a_missing_key_or_checkpoint_file_is_reported(gallery: Gallery, capsys: pytest.CaptureFixture[str]) -> None:
    (gallery.data / "audit-checkpoints.log").unlink()
    status, output = gallery.cli(capsys, "audit", "verify")
    assert status == 1 and "audit-checkpoints.log is missing although the log is keyed" in output

    (gallery.data / "audit.key").unlink()
    status, output = gallery.cli(capsys, "audit", "verify")
    assert status == 1 and "CANNOT BE CHECKED" in output and "key is missing" in output
    status, output = gallery.cli(capsys, "keys", "create", "late", "--role", "viewer")
    assert status == 1 and output.startswith("error: the audit log is keyed but its key is missing")
    assert len(gallery.entries()) == 25, "the write without the key was refused, not made unkeyed"


def test_an_old_unkeyed_chain_still_verifies_and_goes_on_keyed(tmp_path: Path, db_url: str,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    old = Database(db_url)  # no data folder, no key: the chain as earlier versions wrote it
    with old.session() as session:
        for n in range(5):
            audit.record(session, actor="ana", action="search", target="gallery", purpose="case 17", result_count=n)
    old.dispose()
    gallery = Gallery(tmp_path / "data", db_url)
    assert all(len(e.entry_hash) == 64 for e in gallery.entries())
    result = gallery.verify()
    assert result.returncode == 0 and "audit log intact: 5 entries verified (unkeyed" in result.stdout

    assert gallery.cli(capsys, "keys", "create", "new", "--role", "viewer")[0] == 0
    entries = gallery.entries()
    assert entries[-1].entry_hash.startswith("k1:6:") and entries[-1].prev_hash == entries[4].entry_hash
    assert (gallery.data / "audit.key").is_file() and (gallery.data / "audit-checkpoints.log").is_file()
    result = gallery.verify()
    assert result.returncode == 0, result.stdout
    assert "6 entries verified (1 keyed, 5 unkeyed before them; last checkpoint: 6 entries" in result.stdout

    gallery.sql(sa.update(AuditEntry).where(AuditEntry.id == entries[2].id).values(purpose="changed"))
    status, output = gallery.cli(capsys, "audit", "verify")
    assert status == 1 and f"entry {entries[2].id}: entry content does not match its hash (altered)" in output


def test_a_failed_checkpoint_never_loses_the_audited_change(gallery: Gallery, capsys: pytest.CaptureFixture[str],
                                                            caplog: pytest.LogCaptureFixture) -> None:
    log = gallery.data / "audit-checkpoints.log"
    log.unlink()
    log.mkdir()  # the checkpoint cannot be written
    status, output = gallery.cli(capsys, "keys", "create", "late", "--role", "viewer")
    assert status == 0, output
    last = gallery.entries()[-1]
    assert (last.action, last.target) == ("key.create", "key:late") and last.entry_hash.startswith("k1:26:")
    assert any("could not write the audit checkpoint" in r.getMessage() for r in caplog.records)
    status, output = gallery.cli(capsys, "audit", "verify")
    assert status == 1 and "cannot read the checkpoint file" in output

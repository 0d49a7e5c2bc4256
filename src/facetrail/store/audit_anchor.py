"""What anchors the audit chain outside the database: its secret key and signed checkpoints of its head.

The key (32 random bytes, base64) comes from ``FACETRAIL_AUDIT_KEY``, else the
file ``FACETRAIL_AUDIT_KEY_FILE`` names, else ``<data_dir>/audit.key``; that
file is created (mode 0600) on the first audited write while the chain holds no
keyed entry. Each keyed entry's hash is an HMAC under it, so a chain rewritten
by someone without the key no longer verifies.

Checkpoints (entry count, last entry id and hash, time, HMAC signature) are
appended, one JSON line each and fsync'd, to ``FACETRAIL_AUDIT_CHECKPOINTS`` or
``<data_dir>/audit-checkpoints.log`` after a commit that appended entries, when
``every`` entries or ``interval_s`` seconds have passed since this process's
last one (by default after every such commit). A log shorter than its last
checkpoint, or without that checkpoint's hash at its position, was truncated or
rewritten.

Gallery code binds an anchor to its database engine with ``attach``; the audit
module finds it from the session (``anchor_for``). A database without an
anchor (a bare ``Database``) keeps writing the unkeyed chain, and refuses to
write once the chain is keyed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from facetrail.store.errors import StoreError

log = logging.getLogger(__name__)

KEY_ENV = "FACETRAIL_AUDIT_KEY"
KEY_FILE_ENV = "FACETRAIL_AUDIT_KEY_FILE"
CHECKPOINTS_ENV = "FACETRAIL_AUDIT_CHECKPOINTS"
KEY_FILENAME = "audit.key"
CHECKPOINTS_FILENAME = "audit-checkpoints.log"
KEY_BYTES = 32
_CHECKPOINT_DOMAIN = b"facetrail-audit-checkpoint-v1\n"


class AuditKeyError(StoreError):
    """The audit key is missing, unreadable or malformed."""


def mac(key: bytes, domain: bytes, body: bytes) -> str:
    """HMAC-SHA256 of ``domain + body``, base64url without padding (43 characters)."""
    digest = hmac.new(key, domain + body, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement: the log held ``count`` entries, the last one ``last_id`` with ``hash``."""

    count: int
    last_id: int
    hash: str
    at: str
    line: int = 0  # line number in the file, for messages

    def body(self) -> bytes:
        """The signed bytes."""
        return json.dumps({"v": 1, "count": self.count, "last_id": self.last_id, "hash": self.hash, "at": self.at},
                          sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class CheckpointFile:
    """What ``AuditAnchor.read_checkpoints`` found: the newest valid checkpoint and one line per bad one."""

    latest: Checkpoint | None
    problems: tuple[str, ...]
    exists: bool


class AuditAnchor:
    """The audit key and the checkpoint file of one gallery."""

    def __init__(self, key_path: Path, checkpoint_path: Path, *, key: bytes | None = None,
                 key_source: str | None = None, every: int = 1, interval_s: float = 300.0) -> None:
        if every < 1 or interval_s <= 0:
            raise ValueError("checkpoint every >= 1 entries and interval_s > 0")
        self.key_path = key_path
        self.checkpoint_path = checkpoint_path
        self.key_source = key_source or str(key_path)
        self.every = every
        self.interval_s = interval_s
        self._key = key
        self._lock = threading.Lock()
        self._last_count = 0
        self._last_time = 0.0

    @classmethod
    def for_data_dir(cls, data_dir: Path, environ: Mapping[str, str] | None = None, **policy: float) -> AuditAnchor:
        """The anchor of a gallery in ``data_dir``, with the environment's overrides."""
        env = os.environ if environ is None else environ
        key_path = Path(env.get(KEY_FILE_ENV) or data_dir / KEY_FILENAME)
        checkpoints = Path(env.get(CHECKPOINTS_ENV) or data_dir / CHECKPOINTS_FILENAME)
        text = env.get(KEY_ENV)
        key = _decode(text, KEY_ENV) if text else None
        return cls(key_path, checkpoints, key=key, key_source=KEY_ENV if key else None,
                   every=int(policy.get("every", 1)), interval_s=float(policy.get("interval_s", 300.0)))

    def key(self) -> bytes | None:
        """The key, or None when there is none yet (AuditKeyError when it cannot be read)."""
        with self._lock:
            if self._key is None and self.key_path.exists():
                try:
                    self._key = _decode(self.key_path.read_text(encoding="ascii"), str(self.key_path))
                except (OSError, UnicodeDecodeError) as error:
                    raise AuditKeyError(f"cannot read the audit key {self.key_path}: {error}") from None
            return self._key

    def create_key(self) -> bytes:
        """The key, made (0600) first when there is none; another process's key wins a race."""
        existing = self.key()
        if existing is not None:
            return existing
        _create_key_file(self.key_path)
        made = self.key()
        assert made is not None
        return made

    def missing_key_message(self) -> str:
        """The one line saying the keyed chain's key is gone."""
        return (f"the audit log is keyed but its key is missing: restore {self.key_path} from its backup "
                f"or set {KEY_ENV}")

    def committed(self, count: int, last_id: int, entry_hash: str) -> None:
        """After a commit that appended entries up to ``count``: write a checkpoint when one is due.

        Never raises: the audited change is already committed; a failure is logged.
        """
        try:
            with self._lock:
                due = (self._last_count == 0 or count - self._last_count >= self.every
                       or time.monotonic() - self._last_time >= self.interval_s)
                if not due or count <= self._last_count:
                    return
            self.write_checkpoint(count, last_id, entry_hash)
        except Exception:
            log.exception("could not write the audit checkpoint to %s", self.checkpoint_path)

    def write_checkpoint(self, count: int, last_id: int, entry_hash: str) -> Checkpoint:
        """Append one signed checkpoint line and fsync it."""
        key = self.key()
        if key is None:
            raise AuditKeyError(self.missing_key_message())
        point = Checkpoint(count, last_id, entry_hash, datetime.now(UTC).isoformat(timespec="seconds"))
        record = json.loads(point.body()) | {"sig": mac(key, _CHECKPOINT_DOMAIN, point.body())}
        line = (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode()
        self.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.checkpoint_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        with self._lock:
            if count > self._last_count:
                self._last_count, self._last_time = count, time.monotonic()
        return point

    def read_checkpoints(self, key: bytes) -> CheckpointFile:
        """Check every line's signature; the valid checkpoint with the highest count is the latest."""
        try:
            raw = self.checkpoint_path.read_bytes()
        except FileNotFoundError:
            return CheckpointFile(None, (), exists=False)
        except OSError as error:
            return CheckpointFile(None, (f"cannot read the checkpoint file {self.checkpoint_path}: {error}",), True)
        lines = raw.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        elif lines:
            lines.pop()  # a last line without its newline is a write cut short, not a checkpoint
        latest: Checkpoint | None = None
        problems: list[str] = []
        for number, text in enumerate(lines, start=1):
            point = _parse(text, number)
            sig = _signature(text)
            if point is None or sig is None or not hmac.compare_digest(
                    sig, mac(key, _CHECKPOINT_DOMAIN, point.body())):
                problems.append(f"checkpoint file {self.checkpoint_path} line {number}: signature does not match "
                                "(the checkpoint file was altered or signed with another key)")
                continue
            if latest is None or point.count > latest.count:
                latest = point
        return CheckpointFile(latest, tuple(problems), exists=True)


def _parse(text: bytes, number: int) -> Checkpoint | None:
    try:
        data = json.loads(text)
        point = Checkpoint(int(data["count"]), int(data["last_id"]), str(data["hash"]), str(data["at"]), number)
    except (ValueError, KeyError, TypeError):
        return None
    return point if data.get("v") == 1 else None


def _signature(text: bytes) -> str | None:
    try:
        sig = json.loads(text).get("sig")
    except (ValueError, AttributeError):
        return None
    return sig if isinstance(sig, str) else None


def _decode(text: str, source: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise AuditKeyError(f"the audit key from {source} is not base64") from None
    if len(key) != KEY_BYTES:
        raise AuditKeyError(f"the audit key from {source} must be {KEY_BYTES} bytes (base64), not {len(key)}")
    return key


def _create_key_file(path: Path) -> None:
    """Write a new key beside, then link it into place: readers never see a half-written key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, base64.b64encode(secrets.token_bytes(KEY_BYTES)) + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(scratch, path)
    except FileExistsError:
        pass  # another process made it first: use theirs
    except OSError as error:
        raise AuditKeyError(f"cannot create the audit key {path}: {error}") from None
    finally:
        scratch.unlink(missing_ok=True)


_ANCHORS: weakref.WeakKeyDictionary[Engine, AuditAnchor] = weakref.WeakKeyDictionary()


def attach(engine: Engine, anchor: AuditAnchor) -> None:
    """Make ``anchor`` the one every audited write and check through ``engine`` uses."""
    _ANCHORS[engine] = anchor


def anchor_for(session: Session) -> AuditAnchor | None:
    """The anchor attached to the session's engine, if any."""
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    return _ANCHORS.get(engine)

"""Faces at rest: AES-GCM under a data key per owner, data keys wrapped by one master key.

Every face template, negative example, sighting embedding, visitor centroid
and face thumbnail is stored as ``seal(...)``: ``FTE1 | data key id (8) |
nonce (12) | ciphertext + tag``. The associated data names the row and column
(``face_templates.embedding:42``), so a ciphertext copied into another row or
column does not open. Data keys belong to an owner: ``identity:<id>`` (its
templates, negatives and named sightings), ``sighting:<id>`` (an unknown
sighting) or ``visitor:<id>`` (an anonymous visitor's centroid). Deleting the
owner's key (``destroy_keys``, ``sweep_orphans``) makes everything sealed
under it unreadable, wherever a copy of the row survives.

The master key (32 random bytes, base64) comes from ``FACETRAIL_MASTER_KEY``
or ``<data_dir>/master.key``, which is created (mode 0600) only while the
database holds no data key. It must be backed up apart from the database:
without it nothing sealed can be read, and with the database beside it a
backup is as good as plaintext.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import struct
import threading
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import delete, exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from facetrail.store.errors import StoreError
from facetrail.store.models import DataKey, Identity, Sighting, Visitor

ENV_VAR = "FACETRAIL_MASTER_KEY"
KEY_FILENAME = "master.key"
MAGIC = b"FTE1"
KEY_BYTES = 32
NONCE_BYTES = 12
_KEY_ID = struct.Struct(">Q")
HEADER_BYTES = len(MAGIC) + _KEY_ID.size
OVERHEAD = HEADER_BYTES + NONCE_BYTES + 16  # bytes a sealed value adds to its plaintext
_CACHE_LIMIT = 100_000

IDENTITY, SIGHTING, VISITOR = "identity", "sighting", "visitor"
_OWNER_TABLES = {IDENTITY: Identity.id, SIGHTING: Sighting.id, VISITOR: Visitor.id}


class CryptoError(StoreError):
    """A sealed value cannot be opened, or the master key is missing or wrong."""


class KeyDestroyedError(CryptoError):
    """The data key a value was sealed with has been destroyed (its owner was forgotten or purged)."""


def aad(table: str, column: str, row_id: int) -> bytes:
    """The associated data binding a sealed value to its row and column."""
    return f"{table}.{column}:{int(row_id)}".encode()


def seal(key: bytes, plaintext: bytes, associated: bytes) -> bytes:
    """``nonce | AES-GCM(key, plaintext, associated)``."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated)


def open_(key: bytes, sealed: bytes, associated: bytes) -> bytes:
    """The plaintext of ``seal(key, plaintext, associated)``; CryptoError when the key, data or row differ."""
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated)
    except (InvalidTag, ValueError):
        raise CryptoError(f"a sealed value of {associated.decode(errors='replace')} does not open: wrong key, "
                          "altered, or copied from another row") from None


def is_sealed(blob: bytes | None) -> bool:
    """True for a value written by ``KeyRing.seal`` (plaintext embeddings and JPEGs never start so)."""
    return blob is not None and blob[:len(MAGIC)] == MAGIC


def key_id_of(blob: bytes) -> int:
    """The id of the data key a sealed value names."""
    value: int = _KEY_ID.unpack_from(blob, len(MAGIC))[0]
    return value


class MasterKey:
    """The key that wraps every data key (AES-GCM, the owner as associated data)."""

    def __init__(self, key: bytes, source: str) -> None:
        if len(key) != KEY_BYTES:
            raise CryptoError(f"the master key from {source} must be {KEY_BYTES} bytes (base64), "
                              f"not {len(key)}")
        self._aead = AESGCM(key)
        self.source = source

    @classmethod
    def load(cls, data_dir: Path, *, may_create: bool) -> MasterKey:
        """From FACETRAIL_MASTER_KEY, else ``data_dir/master.key``; created (0600) there when ``may_create``."""
        text = os.environ.get(ENV_VAR)
        if text:
            return cls(_decode(text, ENV_VAR), ENV_VAR)
        path = data_dir / KEY_FILENAME
        if not path.exists():
            if not may_create:
                raise CryptoError(f"no master key: this database's faces are encrypted; set {ENV_VAR} or restore "
                                  f"{path} from its backup")
            _create_key_file(path)
        try:
            return cls(_decode(path.read_text(encoding="ascii"), str(path)), str(path))
        except (OSError, UnicodeDecodeError) as error:
            raise CryptoError(f"cannot read the master key {path}: {error}") from None

    def wrap(self, owner: str, key: bytes) -> bytes:
        """A data key sealed for storage beside its owner."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, key, owner.encode())

    def unwrap(self, owner: str, wrapped: bytes) -> bytes:
        """The data key of ``owner``; CryptoError when this master key did not wrap it."""
        try:
            return self._aead.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], owner.encode())
        except (InvalidTag, ValueError):
            raise CryptoError(f"the master key from {self.source} does not open this database's data keys "
                              f"(wrong key? restore the one made with this database)") from None


class KeyRing:
    """Data keys of a database: made on first use, unwrapped once and kept in memory, destroyed with the owner.

    Thread-safe: the cache is guarded by a lock; rows are read in the caller's session.
    """

    def __init__(self, master: MasterKey) -> None:
        self.master = master
        self._cache: dict[int, tuple[bytes, bytes]] = {}  # key id -> (wrapped, key)
        self._lock = threading.Lock()

    def seal(self, session: Session, owner: tuple[str, int], plaintext: bytes, associated: bytes) -> bytes:
        """``plaintext`` sealed under ``owner``'s data key (made now if it has none)."""
        key_id, key = self._key_for(session, owner)
        return MAGIC + _KEY_ID.pack(key_id) + seal(key, plaintext, associated)

    def open(self, session: Session, blob: bytes, associated: bytes) -> bytes:
        """The plaintext of a sealed value; KeyDestroyedError when its key is gone, CryptoError when it is altered."""
        return self.open_many(session, [(blob, associated)])[0]

    def open_many(self, session: Session, items: Sequence[tuple[bytes, bytes]]) -> list[bytes]:
        """``open`` for many values, their keys read in one query."""
        if any(not is_sealed(blob) for blob, _ in items):
            raise CryptoError("a stored face is not encrypted; open the gallery once to encrypt existing data")
        wanted = {key_id_of(blob) for blob, _ in items}
        keys = self._keys(session, wanted)
        out = []
        for blob, associated in items:
            key = keys.get(key_id_of(blob))
            if key is None:
                raise KeyDestroyedError(f"the key of {associated.decode(errors='replace')} was destroyed; "
                                        "its face cannot be read")
            out.append(open_(key, blob[HEADER_BYTES:], associated))
        return out

    def _keys(self, session: Session, ids: set[int]) -> dict[int, bytes]:
        found: dict[int, bytes] = {}
        ordered = sorted(ids)
        for start in range(0, len(ordered), 10_000):
            chunk = ordered[start:start + 10_000]
            for row in session.execute(select(DataKey.id, DataKey.owner_kind, DataKey.owner_id, DataKey.wrapped)
                                       .where(DataKey.id.in_(chunk))):
                found[row.id] = self._unwrapped(row.id, f"{row.owner_kind}:{row.owner_id}", row.wrapped)
        return found

    def _unwrapped(self, key_id: int, owner: str, wrapped: bytes) -> bytes:
        with self._lock:
            cached = self._cache.get(key_id)
        if cached is not None and cached[0] == wrapped:
            return cached[1]
        key = self.master.unwrap(owner, wrapped)
        with self._lock:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[key_id] = (wrapped, key)
        return key

    def _key_for(self, session: Session, owner: tuple[str, int]) -> tuple[int, bytes]:
        kind, owner_id = owner
        name = f"{kind}:{int(owner_id)}"
        row = session.execute(select(DataKey.id, DataKey.wrapped).where(
            DataKey.owner_kind == kind, DataKey.owner_id == int(owner_id))).first()
        if row is not None:
            return row.id, self._unwrapped(row.id, name, row.wrapped)
        key = secrets.token_bytes(KEY_BYTES)
        made = DataKey(owner_kind=kind, owner_id=int(owner_id), wrapped=self.master.wrap(name, key))
        try:
            with session.begin_nested():
                session.add(made)
        except IntegrityError:  # another process made it first
            return self._key_for(session, owner)
        return made.id, self._unwrapped(made.id, name, made.wrapped)


def destroy_keys(session: Session, kind: str, owner_ids: Sequence[int]) -> int:
    """Delete the data keys of these owners: what was sealed under them can no longer be opened."""
    if not owner_ids:
        return 0
    result = session.execute(delete(DataKey).where(DataKey.owner_kind == kind,
                                                   DataKey.owner_id.in_([int(i) for i in owner_ids])))
    return int(getattr(result, "rowcount", 0) or 0)


def sweep_orphans(session: Session) -> int:
    """Delete the data keys whose owner row no longer exists (after forget or a retention purge)."""
    removed = 0
    for kind, column in _OWNER_TABLES.items():
        result = session.execute(delete(DataKey).where(
            DataKey.owner_kind == kind, ~exists().where(column == DataKey.owner_id)))
        removed += int(getattr(result, "rowcount", 0) or 0)
    return removed


def open_keyring(session: Session, data_dir: Path) -> KeyRing:
    """The key ring of a database: the master key loaded (or made, for a database without keys) and checked."""
    sample = session.execute(select(DataKey.owner_kind, DataKey.owner_id, DataKey.wrapped)
                             .order_by(DataKey.id).limit(1)).first()
    master = MasterKey.load(data_dir, may_create=sample is None)
    if sample is not None:
        master.unwrap(f"{sample.owner_kind}:{sample.owner_id}", sample.wrapped)
    return KeyRing(master)


def _decode(text: str, source: str) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise CryptoError(f"the master key from {source} is not base64") from None


def _create_key_file(path: Path) -> None:
    """Write a new random master key, readable by its owner only; another process's key wins a race."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(descriptor, "w", encoding="ascii") as file:
        file.write(base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode() + "\n")
        file.flush()
        os.fsync(file.fileno())

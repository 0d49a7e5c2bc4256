"""Strings the API and the dashboard accept: bounded by their column, never a NUL byte; safe upload names.

PostgreSQL refuses NUL bytes in text and strings longer than their column; both
used to surface as 500s. Every string a request carries (body field, query,
path or form parameter) uses one of the types here, so it is refused with a
422 before it reaches the database. FastAPI markers combine with them:
``Annotated[Name, Query(description=...)]``.
"""

from __future__ import annotations

import posixpath
from typing import Annotated

from pydantic import AfterValidator, StringConstraints

NAME_MAX = 200  # String(200): names of people, watchlists, cameras, doors, keys
TEXT_MAX = 2000  # Text columns (purposes, reasons, notes, methods): bounded here, not by the database
UPLOAD_NAME_MAX_BYTES = 255  # the longest file name most file systems store
CODE_MAX = 64  # String(64) and String(32): second factors, door states, command ids
TOKEN_MAX = 1000  # cursors, keys, paths to return to: nothing this server hands out is longer
FALLBACK_UPLOAD_NAME = "upload.jpg"


def no_nul(value: str) -> str:
    """``value`` unchanged; a ValueError (a 422) when it holds a NUL byte."""
    if "\x00" in value:
        raise ValueError("must not contain NUL bytes (\\x00)")
    return value


Name = Annotated[str, StringConstraints(min_length=1, max_length=NAME_MAX), AfterValidator(no_nul)]
"""A name (person, watchlist, camera, door, key): 1 to 200 characters, no NUL."""
Text = Annotated[str, StringConstraints(min_length=1, max_length=TEXT_MAX), AfterValidator(no_nul)]
"""A purpose, reason, note or method: 1 to 2000 characters, no NUL."""
FreeText = Annotated[str, StringConstraints(max_length=TEXT_MAX), AfterValidator(no_nul)]
"""Like ``Text``, but may be empty (dashboard forms, where the page explains what is missing)."""
FreeName = Annotated[str, StringConstraints(max_length=NAME_MAX), AfterValidator(no_nul)]
"""Like ``Name``, but may be empty (dashboard forms)."""
FreeCode = Annotated[str, StringConstraints(max_length=CODE_MAX), AfterValidator(no_nul)]
"""Like ``Code``, but may be empty (dashboard forms)."""
Code = Annotated[str, StringConstraints(min_length=1, max_length=CODE_MAX), AfterValidator(no_nul)]
"""A PIN, card number, state or command id: 1 to 64 characters, no NUL."""
DoorState = Annotated[str, StringConstraints(min_length=1, max_length=32), AfterValidator(no_nul)]
"""A door's state as a controller reports it (String(32)), no NUL."""
Factor = Annotated[str, StringConstraints(min_length=4, max_length=CODE_MAX), AfterValidator(no_nul)]
"""A PIN or card number as recorded with a consent: 4 to 64 characters, no NUL."""
Token = Annotated[str, StringConstraints(max_length=TOKEN_MAX), AfterValidator(no_nul)]
"""An opaque value the caller passes back (cursor, key, next page): bounded, no NUL."""


def upload_name(filename: str | None, fallback: str = FALLBACK_UPLOAD_NAME) -> str:
    """A file name that is safe to store and to write in a folder: the last path part, no NUL, at most 255 bytes.

    ``..``, ``.``, ``/``, empty and NUL-only names become ``fallback``; a long name keeps its extension.
    """
    name = (filename or "").replace("\x00", "").replace("\\", "/")
    name = posixpath.basename(name.rstrip("/")).strip()
    if name in ("", ".", ".."):
        return fallback
    if len(name.encode()) <= UPLOAD_NAME_MAX_BYTES:
        return name
    stem, dot, extension = name.rpartition(".")
    suffix = f".{extension}" if dot and stem and len(extension.encode()) <= 16 else ""
    room = UPLOAD_NAME_MAX_BYTES - len(suffix.encode())
    kept = (stem if suffix else name).encode()[:room].decode(errors="ignore")
    return (kept + suffix) if kept.strip(".") else fallback

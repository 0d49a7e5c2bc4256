"""One error envelope for every failure: ``{"error": {"code", "message", "details"}}``, never a traceback.

A database that cannot be written (read-only, or its disk full) makes each
write a 503 that says so; reads go on answering.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from facetrail.events.review import ReviewError
from facetrail.gallery.errors import GalleryError
from facetrail.store.audit_anchor import AuditKeyError
from facetrail.store.errors import StoreError
from facetrail.vision.errors import VisionError

log = logging.getLogger(__name__)

# What a database says when it cannot be written: SQLite's messages, PostgreSQL's SQLSTATEs
# (25006 read_only_sql_transaction: a standby or default_transaction_read_only; 53100 disk_full).
UNWRITABLE_SQLITE = ("attempt to write a readonly database", "database or disk is full")
UNWRITABLE_SQLSTATES = frozenset({"25006", "53100"})


class ApiError(Exception):
    """A failure the caller can act on: HTTP status, a short code and a sentence saying what to do."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


def envelope(status: int, code: str, message: str, details: Any = None) -> JSONResponse:
    """The JSON body every error has."""
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status)


def problems(error: RequestValidationError) -> list[dict[str, str]]:
    """Each invalid field and what is wrong with it."""
    return [{"field": ".".join(str(p) for p in e.get("loc", ())), "problem": e.get("msg", "")}
            for e in error.errors()]


def invalid_request(error: RequestValidationError) -> JSONResponse:
    """422 with each invalid field in the details."""
    return envelope(422, "invalid_request", "the request is not valid; see details", problems(error))


def unwritable_reason(error: DBAPIError) -> str | None:
    """Why the database refused a write (read-only, disk full), or None when the error is another one."""
    reason = (str(error.orig).strip().splitlines() or [""])[0]
    if getattr(error.orig, "sqlstate", None) in UNWRITABLE_SQLSTATES:
        return reason
    return next((known for known in UNWRITABLE_SQLITE if known in reason), None)


def install(app: FastAPI) -> None:
    """Map every exception to the envelope."""

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, error: ApiError) -> JSONResponse:
        return envelope(error.status, error.code, error.message, error.details)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, error: RequestValidationError) -> JSONResponse:
        return invalid_request(error)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, error: StarletteHTTPException) -> JSONResponse:
        return envelope(error.status_code, "http_error", str(error.detail))

    @app.exception_handler(VisionError)
    async def bad_image(_request: Request, error: VisionError) -> JSONResponse:
        return envelope(422, "bad_image", str(error))

    @app.exception_handler(GalleryError)
    async def gallery_error(_request: Request, error: GalleryError) -> JSONResponse:
        message = str(error)
        status = 404 if message.startswith("no ") else 400
        return envelope(status, "not_found" if status == 404 else "rejected", message)

    @app.exception_handler(ReviewError)
    async def review_error(_request: Request, error: ReviewError) -> JSONResponse:
        message = str(error)
        return envelope(404 if message.startswith("no ") else 409, "review_rejected", message)

    @app.exception_handler(StoreError)
    async def store_error(_request: Request, error: StoreError) -> JSONResponse:
        message = str(error)
        if isinstance(error, AuditKeyError):  # the server's set-up, not the request: nothing was changed
            return envelope(503, "audit_key_missing", message)
        if message.startswith("no "):
            return envelope(404, "not_found", message)
        return envelope(400, "rejected", message)

    @app.exception_handler(DBAPIError)
    async def database_error(_request: Request, error: DBAPIError) -> JSONResponse:
        reason = unwritable_reason(error)
        if reason is None:
            log.error("database error", exc_info=error)
            return envelope(500, "internal_error", "something went wrong on the server; the log has the details")
        log.warning("a write was refused: the database cannot be written: %s", reason)
        return envelope(503, "database_unwritable", f"the database cannot be written: {reason}; reads still work")

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return envelope(500, "internal_error", "something went wrong on the server; the log has the details")

"""Refusing a request before its body is read: no valid caller (401, or the login page), or too big a body (413).

FastAPI reads and parses a request's whole body (spooling uploads to disk)
before any dependency runs, so the key check in ``deps.caller`` comes too
late to protect memory and disk. This ASGI middleware runs first: it resolves
the caller from the headers alone (the same ``deps.caller`` and
``auth.authenticate``), refuses a declared ``Content-Length`` over the limit
at once, and counts a streamed body's bytes as they arrive, answering 413 and
closing the connection when the limit is passed.

A refusal while the client is still sending lingers before the connection closes (as nginx's
``lingering_close``): the answer goes out first, then what is still arriving is read and dropped until the
client pauses. Closing a socket with unread bytes makes the kernel send a reset, which can destroy the
answer in the client's buffer before it reads it: the client would see "connection reset", not the 413.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from facetrail.api.auth import authenticate
from facetrail.api.deps import caller
from facetrail.api.errors import ApiError, envelope
from facetrail.gallery.gallery import Gallery
from facetrail.store.keys import Caller

LINGER_QUIET_S = 1.0  # after a refusal, the body is drained until the client sends nothing for this long
LINGER_MAX_S = 10.0  # ... or this long at most, whatever the client does


@dataclass
class GuardRules:
    """What the guard lets through: body limits, the routes open to anyone, where pages without a session go."""

    api_prefix: str
    max_body_bytes: int
    max_public_body_bytes: int = 65_536  # a login form or JSON is a few hundred bytes
    public: set[tuple[str, str]] = field(default_factory=set)  # (method or "*", exact path)
    public_folders: list[str] = field(default_factory=list)  # path prefixes open to anyone (docs, static files)
    login_page: str | None = None  # pages (outside the API) without a session are sent here; None: 401

    def is_public(self, method: str, path: str) -> bool:
        """True for routes anyone may call (they still get the body limit)."""
        if (method, path) in self.public or ("*", path) in self.public:
            return True
        return any(path.startswith(folder) for folder in self.public_folders)


class RequestGuard:
    """The ASGI middleware that applies :class:`GuardRules` before the app reads a byte of the body."""

    def __init__(self, app: ASGIApp, rules: GuardRules) -> None:
        self.app, self.rules = app, rules

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rules, method, path = self.rules, scope["method"], scope["path"]
        public = rules.is_public(method, path)
        limit = rules.max_public_body_bytes if public else rules.max_body_bytes
        request = Request(scope)
        has_body = "transfer-encoding" in request.headers or request.headers.get("content-length", "0") != "0"
        declared = _declared_length(request)
        if declared is not None and declared > limit:
            await _refuse(_too_large(path, rules, limit), scope, receive, send, has_body)
            return
        if not public:
            refusal = await self._check_caller(request, path)
            if refusal is not None:
                await _refuse(refusal, scope, receive, send, has_body)
                return
        body = _BodyLimit(receive, send, limit, _too_large(path, rules, limit))
        try:
            await self.app(scope, body.receive, body.send)
        except Exception:
            if not body.refused:
                raise
            # The app failed on the cut-off body after the 413 went out: nothing more to say.

    async def _check_caller(self, request: Request, path: str) -> Response | None:
        """None when the caller is valid (kept in the request's state); else the answer that refuses it."""
        gallery: Gallery = request.app.state.gallery
        try:
            if path.startswith(self.rules.api_prefix) or self.rules.login_page is None:
                found: Caller | None = await run_in_threadpool(caller, request, gallery,
                                                               request.headers.get("authorization"),
                                                               request.headers.get("x-api-key"))
            else:
                found = await run_in_threadpool(authenticate, request, gallery, None)
        except ApiError as error:
            return envelope(error.status, error.code, error.message, error.details)
        if found is None:  # a page without a live session
            return RedirectResponse(f"{self.rules.login_page}?next={quote(path)}", status_code=303)
        request.state.caller = found  # ``deps.caller`` takes it from here rather than looking the key up again
        return None


def _declared_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    return int(value) if value is not None and value.isdigit() else None  # the HTTP server refuses malformed ones


def _too_large(path: str, rules: GuardRules, limit: int) -> Response:
    message = f"the request body is larger than {_size(limit)}; send less"
    if not rules.is_public("*", path) and limit == rules.max_body_bytes:
        message += " (the server's limit is `facetrail serve --max-body-mb`)"
    if path.startswith(rules.api_prefix) or rules.login_page is None:
        return envelope(413, "body_too_large", message)
    return PlainTextResponse(message[0].upper() + message[1:] + ".", status_code=413)


def _size(limit: int) -> str:
    return f"{limit / 1_000_000:g} MB" if limit >= 1_000_000 else f"{limit / 1000:g} kB"


async def _refuse(response: Response, scope: Scope, receive: Receive, send: Send, has_body: bool) -> None:
    """Answer without reading the body; close the connection when a body is coming, so it is never used."""
    if has_body:
        await _answer_and_close(response, receive, send)
    else:
        await response(scope, receive, send)


async def _answer_and_close(response: Response, receive: Receive, send: Send) -> None:
    """Send ``response`` whole, drop what the client still sends (see the module's note), and close."""
    response.headers["connection"] = "close"
    await send({"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers})
    # The body is whole (its Content-Length is sent), but the response stays open on the server's side so
    # that ``receive`` keeps reading the client's bytes; the last, empty part ends it and closes.
    await send({"type": "http.response.body", "body": response.body, "more_body": True})
    deadline = time.monotonic() + LINGER_MAX_S
    while (left := deadline - time.monotonic()) > 0:
        try:
            message = await asyncio.wait_for(receive(), timeout=min(LINGER_QUIET_S, left))
        except TimeoutError:
            break
        if message["type"] != "http.request" or not message.get("more_body", False):
            break
    await send({"type": "http.response.body", "body": b"", "more_body": False})


class _BodyLimit:
    """A request's ``receive`` counting body bytes (413 and a disconnect past ``limit``) and its silenced ``send``."""

    def __init__(self, receive: Receive, send: Send, limit: int, too_large: Response) -> None:
        self._receive, self._send, self.limit, self.too_large = receive, send, limit, too_large
        self.received, self.started, self.refused = 0, False, False

    async def receive(self) -> Message:
        if self.refused:
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                self.refused = True
                if not self.started:
                    await _answer_and_close(self.too_large, self._receive, self._send)
                return {"type": "http.disconnect"}  # the app stops reading; whatever it answers is dropped
        return message

    async def send(self, message: Message) -> None:
        if self.refused:
            return
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)

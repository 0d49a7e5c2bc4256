"""Who is calling: an API key (header) or a dashboard session (cookie); login with its rate limit.

A session cookie is ``HttpOnly`` and ``SameSite=Strict``; on top of that, a
request that changes something and carries the cookie must come from this
server's own pages (its ``Origin``, when the browser sends one, is this host).

Finding the caller only reads: a key's use is noted in memory (``KeyUse``,
one per app) and written in batches, so reads work on a read-only database.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

from fastapi import FastAPI, Request, Response

from facetrail.api.errors import ApiError
from facetrail.gallery.gallery import Gallery
from facetrail.store.keys import Caller, KeyUse, check_key
from facetrail.store.sessions import SESSION_LIFETIME, check_session, close_session, open_session

COOKIE = "facetrail_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_TRACKED_CLIENTS = 10_000


class LoginLimiter:
    """At most ``attempts`` failed logins per client address in ``window_s``; then 429 until the window passes."""

    def __init__(self, attempts: int = 5, window_s: float = 60.0, *,
                 what: str = "failed logins from this address") -> None:
        self.attempts, self.window_s, self.what = attempts, window_s, what
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, client: str) -> None:
        """Raise 429 when ``client`` has used up its failed attempts."""
        with self._lock:
            failures = self._recent(client)
            if len(failures) >= self.attempts:
                wait = int(self.window_s - (time.monotonic() - failures[0])) + 1
                raise ApiError(429, "too_many_attempts",
                               f"too many {self.what}; try again in {wait} s",
                               {"retry_after_s": wait})

    def failed(self, client: str) -> None:
        """Count one failed attempt."""
        with self._lock:
            if len(self._failures) > MAX_TRACKED_CLIENTS:  # many addresses: forget those whose window passed
                for other in list(self._failures):
                    self._recent(other)
            self._failures.setdefault(client, deque()).append(time.monotonic())

    def succeeded(self, client: str) -> None:
        """Forget the client's failures."""
        with self._lock:
            self._failures.pop(client, None)

    def _recent(self, client: str) -> deque[float]:
        failures = self._failures.get(client, deque())
        while failures and time.monotonic() - failures[0] > self.window_s:
            failures.popleft()
        if not failures:
            self._failures.pop(client, None)
        return failures


def client_address(request: Request) -> str:
    """The peer's address (facetrail does not trust forwarding headers)."""
    return request.client.host if request.client else "unknown"


def log_in(request: Request, gallery: Gallery, key: str, response: Response) -> Caller:
    """Open a session for ``key`` and set its cookie on ``response``; 401 or 429 otherwise."""
    limiter: LoginLimiter = request.app.state.login_limiter
    client = client_address(request)
    limiter.check(client)
    with gallery.db.session() as session:
        opened = open_session(session, key.strip())
    if opened is None:
        limiter.failed(client)
        raise ApiError(401, "unauthenticated", "this API key is unknown or revoked; ask an admin for one "
                                               "(`facetrail keys create NAME --role ROLE`)")
    limiter.succeeded(client)
    token, caller = opened
    response.set_cookie(COOKIE, token, max_age=int(SESSION_LIFETIME.total_seconds()), httponly=True,
                        samesite="strict", secure=request.url.scheme == "https", path="/")
    return caller


def log_out(request: Request, gallery: Gallery, response: Response) -> None:
    """End the cookie's session, if any, and clear the cookie."""
    token = request.cookies.get(COOKIE)
    if token:
        with gallery.db.session() as session:
            close_session(session, token)
    response.delete_cookie(COOKIE, path="/")


def authenticate(request: Request, gallery: Gallery, key: str | None) -> Caller | None:
    """The caller behind an API key, else behind the session cookie; None when neither is valid."""
    if key:
        with gallery.db.session() as session:
            found = check_key(session, key)
        if found is not None:
            key_use(request.app, gallery).note(found.name)
        return found
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    if request.method not in SAFE_METHODS and not _same_origin(request):
        raise ApiError(403, "cross_origin", "a change with a session cookie must come from facetrail's own pages")
    with gallery.db.session() as session:
        return check_session(session, token)


_KEY_USE_LOCK = threading.Lock()


def key_use(app: FastAPI, gallery: Gallery) -> KeyUse:
    """The app's record of key use (made on first use), written to ``gallery``'s database in batches."""
    with _KEY_USE_LOCK:
        found: KeyUse | None = getattr(app.state, "key_use", None)
        if found is None:
            found = app.state.key_use = KeyUse(gallery.db)
        return found


@asynccontextmanager
async def recording_key_use(app: FastAPI) -> AsyncIterator[None]:
    """The app's lifespan: when the server stops, the key uses still in memory are written."""
    try:
        yield
    finally:
        found: KeyUse | None = getattr(app.state, "key_use", None)
        if found is not None:
            found.close()


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None:
        return True  # browsers send Origin on every cross-site POST; SameSite=Strict covers the rest
    return urlsplit(origin).netloc == request.headers.get("host", "")

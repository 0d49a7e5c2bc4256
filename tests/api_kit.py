"""Helpers of the API and dashboard tests: the app served by a real uvicorn on loopback."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import uvicorn
from fastapi import FastAPI

from facetrail.api.app import PREFIX
from facetrail.gallery.gallery import Gallery
from facetrail.store.keys import create_key
from services import free_port, wait_until

ROLES = ("admin", "operator", "viewer")


@dataclass
class Server:
    url: str
    gallery: Gallery
    keys: dict[str, str]

    def client(self, role: str | None) -> httpx.Client:
        """An API client with the key of ``role`` (None: no key)."""
        headers = {"Authorization": f"Bearer {self.keys[role]}"} if role else {}
        return httpx.Client(base_url=self.url + PREFIX, headers=headers, timeout=120)


def make_keys(gallery: Gallery, *extra: tuple[str, str]) -> dict[str, str]:
    """One key per role (named '<role>-key') and the ``extra`` (name, role) keys, by name or role."""
    keys = {}
    with gallery.db.session() as session:
        for role in ROLES:
            keys[role] = create_key(session, f"{role}-key", role, actor="setup")  # type: ignore[arg-type]
        for name, role in extra:
            keys[name] = create_key(session, name, role, actor="setup")  # type: ignore[arg-type]
    return keys


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` on a free loopback port until the block ends; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, "the API server")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)

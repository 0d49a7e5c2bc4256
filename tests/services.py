"""Real peers for tests: private Mosquitto brokers, an MQTT subscriber, a Standard Webhooks receiver, the CLI's
`facetrail run` in a subprocess."""

from __future__ import annotations

import contextlib
import getpass
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
WAIT_S = 30.0
SECRET_A = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SECRET_B = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"


@contextlib.contextmanager
def facetrail_run(config: Path, *args: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``facetrail run CONFIG ARGS`` in a subprocess, its output in ``log``; killed on the way out if a failed
    assertion left it running."""
    with log.open("w") as out:
        run = subprocess.Popen([sys.executable, "-m", "facetrail.cli.main", "run", str(config), *args],
                               stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        yield run
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()


def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    """Poll ``condition`` until it holds; fail with ``what`` after a generous timeout."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- Mosquitto ------------------------------------------------------------------------------------------------


class Mosquitto:
    """A private broker on ``port``; ``persist``: keeps sessions in ``folder`` across restarts."""

    def __init__(self, folder: Path, port: int, *, persist: bool = False) -> None:
        self.port = port
        self.config = folder / f"mosquitto-{port}.conf"
        lines = [f"listener {port} 127.0.0.1", "allow_anonymous true"]
        if persist:
            # Run as root, mosquitto would drop to its own user, which cannot write into pytest's tmp folder.
            lines += ["persistence true", f"persistence_location {folder}/", f"user {getpass.getuser()}"]
        self.config.write_text("\n".join(lines) + "\n")
        self.log = folder / f"mosquitto-{port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=log, stderr=log)

        def listening() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                pytest.fail(f"mosquitto exited: {self.log.read_text()}")
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", self.port)) == 0

        wait_until(listening, f"mosquitto on port {self.port}")

    def stop(self) -> None:
        """SIGTERM: mosquitto saves its persistent sessions, then exits."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=WAIT_S)
        self.process = None

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)


@dataclass(frozen=True)
class Received:
    topic: str
    payload: str
    retain: bool


class Subscriber:
    """A test MQTT client that records what it receives on ``pattern``."""

    def __init__(self, port: int, pattern: str, *, client_id: str = "", persistent: bool = False) -> None:
        self.port = port
        self.pattern = pattern
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=not persistent)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_args: self._subscribed.set()
        self.client.on_connect = self._on_connect

    def _on_connect(self, client: paho.Client, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
        if flags.session_present:
            self._subscribed.set()
        else:
            client.subscribe(self.pattern, qos=1)

    def _on_message(self, _client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Received(message.topic, message.payload.decode(), bool(message.retain)))

    def connect(self) -> Subscriber:
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        wait_until(self._subscribed.is_set, f"subscription to {self.pattern}")
        return self

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def payloads(self, topic: str) -> list[str]:
        with self._lock:
            return [m.payload for m in self.messages if m.topic == topic]

    def received(self, topic: str, payload: str) -> bool:
        return payload in self.payloads(topic)


def retained(port: int, topic: str) -> Received:
    """What a new subscriber gets first on ``topic``: the retained message."""
    subscriber = Subscriber(port, topic).connect()
    try:
        wait_until(lambda: bool(subscriber.messages), f"the retained message on {topic}")
        return subscriber.messages[0]
    finally:
        subscriber.close()


# --- the webhook receiver -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    path: str
    webhook_id: str
    body: dict[str, Any]
    status: int


class Receiver:
    """A real HTTP server checking Standard Webhooks signatures; paths map to secrets.

    ``script[path]``: status codes to answer first, in order, before 200.
    ``always[path]``: a status code to answer every time.
    """

    def __init__(self, port: int, secrets: dict[str, str]) -> None:
        self.port = port
        self.secrets = secrets
        self.hits: list[Hit] = []
        self.problems: list[str] = []
        self.script: dict[str, list[int]] = {}
        self.always: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                headers = {key: value for key, value in self.headers.items()}
                try:
                    parsed = Webhook(receiver.secrets[self.path]).verify(body, headers)
                except (KeyError, WebhookVerificationError) as exc:
                    with receiver._lock:
                        receiver.problems.append(f"{self.path}: {exc!r}")
                    self.send_response(400)
                    self.end_headers()
                    return
                if self.headers["content-type"] != "application/json":
                    receiver.problems.append(f"content-type {self.headers['content-type']}")
                with receiver._lock:
                    script = receiver.script.get(self.path)
                    status = script.pop(0) if script else receiver.always.get(self.path, 200)
                    receiver.hits.append(Hit(self.path, self.headers["webhook-id"], parsed, status))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def delivered(self, path: str) -> list[str]:
        """Message ids answered with 2xx on ``path``, in arrival order."""
        with self._lock:
            return [h.webhook_id for h in self.hits if h.path == path and 200 <= h.status < 300]

    def attempts(self, path: str) -> list[str]:
        with self._lock:
            return [h.webhook_id for h in self.hits if h.path == path]


class FlakyStream:
    """A TS file over HTTP: the first response stops half-way; later ones wait for ``allow``, then send it all."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.requests = 0
        self.allow = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                first = outer.requests == 1
                if not first:
                    outer.allow.wait(30)
                self.send_response(200)
                self.send_header("Content-Type", "video/mp2t")
                self.end_headers()  # no Content-Length: the body ends when the connection closes
                with contextlib.suppress(OSError):  # the camera went away
                    self.wfile.write(outer.payload[: len(outer.payload) // 2] if first else outer.payload)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/live.ts"

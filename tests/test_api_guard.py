"""Refusals before the body is read (401, 413), forwarded headers, and the bounded search queue, over real HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from api_kit import Server, make_keys, serving
from facetrail.api.app import PREFIX, ApiSettings, create_app
from facetrail.api.heavy import HeavyWork
from facetrail.gallery.gallery import Gallery, GallerySettings
from facetrail.vision.engine import FaceEngine
from facetrail.vision.samples import sample_image
from facetrail.web.app import install_dashboard
from services import WAIT_S, free_port, wait_until

pytestmark = pytest.mark.models
UPLOAD_LIMIT = 2_000_000
BODY_LIMIT = 3_000_000
BOUNDARY = "guardboundary"


@dataclass
class Guarded(Server):
    heavy: HeavyWork  # the server's search and enrolment pool


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, engine: FaceEngine) -> Iterator[Guarded]:
    data = tmp_path_factory.mktemp("guard")
    gallery = Gallery(GallerySettings(data), engine=engine)
    keys = make_keys(gallery)
    app = create_app(ApiSettings(data, max_upload_bytes=UPLOAD_LIMIT, max_body_bytes=BODY_LIMIT, search_workers=1,
                                 search_queue=1), gallery=gallery)
    install_dashboard(app)
    with serving(app) as url:
        yield Guarded(url, gallery, keys, app.state.heavy)
    app.state.heavy.close()
    gallery.db.dispose()


@pytest.fixture
def spool_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The folder the in-process server spools uploads to (its TMPDIR)."""
    folder = tmp_path / "spool"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


# --- raw HTTP: what a client that does not wait for the body to be accepted sees ------------------------------


def connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=WAIT_S)
    return sock


def head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """The response's status, headers and body, read until the server closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    top, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = top.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), headers, body


def multipart_start(name: str = "upload.jpg") -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nguard test\r\n"
            f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode()


def open_files_under(folder: Path) -> list[str]:
    """Files this process holds open under ``folder`` (unnamed temporary files included)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(folder)):
            found.append(target)
    return found


# --- refusing before the body ---------------------------------------------------------------------------------


def test_a_huge_login_body_is_refused_before_the_server_reads_it(server: Server) -> None:
    with connect(server.url) as sock:
        sock.sendall(head("POST", f"{PREFIX}/session", {"Content-Type": "application/json",
                                                        "Content-Length": "50000000"}) + b'{"key": "ft_')
        status, headers, body = answer(sock)  # answered although 49.99 MB of the body were never sent
    assert status == 413, body
    assert b'"body_too_large"' in body and headers.get("connection") == "close"


def test_a_login_body_over_the_public_limit_is_refused_but_a_login_works(server: Server) -> None:
    with connect(server.url) as sock:
        sock.sendall(head("POST", f"{PREFIX}/session", {"Content-Type": "application/json",
                                                        "Content-Length": "200000"}))
        status, _, body = answer(sock)
    assert status == 413 and b"larger than 65.536 kB" in body
    with httpx.Client(base_url=server.url + PREFIX) as client:
        logged_in = client.post("/session", json={"key": server.keys["viewer"]})
        assert logged_in.status_code == 200, logged_in.text
        assert client.get("/session").json()["name"] == "viewer-key"  # the session cookie passes the guard
        assert client.get("/docs").status_code == 200 and client.get("/openapi.json").status_code == 200


def test_an_upload_without_a_key_is_refused_before_its_body_is_sent(server: Server, spool_dir: Path) -> None:
    with connect(server.url) as sock:
        sock.sendall(head("POST", f"{PREFIX}/search/gallery", {
            "Content-Type": f"multipart/form-data; boundary={BOUNDARY}", "Content-Length": str(BODY_LIMIT - 1000)}))
        status, headers, body = answer(sock)  # no body byte was sent: the refusal cannot have waited for it
    assert status == 401 and b'"unauthenticated"' in body and headers.get("connection") == "close"
    with connect(server.url) as sock:  # a wrong key is refused the same way
        sock.sendall(head("POST", f"{PREFIX}/identities/enrolments", {
            "Authorization": "Bearer ft_nope_nope", "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
            "Content-Length": str(BODY_LIMIT - 1000)}) + multipart_start())
        status, _, body = answer(sock)
    assert status == 401 and b"unknown, expired or revoked" in body
    assert list(spool_dir.iterdir()) == [] and open_files_under(spool_dir) == []


def test_a_page_without_a_session_goes_to_the_login_page_before_its_body_is_read(server: Server) -> None:
    with connect(server.url) as sock:
        sock.sendall(head("POST", "/search", {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
                                              "Content-Length": str(BODY_LIMIT - 1000)}))
        status, headers, _ = answer(sock)
    assert status == 303 and headers["location"] == "/login?next=/search"


def test_a_streamed_body_over_the_limit_is_cut_off_with_413(server: Server, spool_dir: Path) -> None:
    chunk = b"\xff" * 65536
    with connect(server.url) as sock:
        sock.sendall(head("POST", f"{PREFIX}/search/gallery", {
            "Authorization": f"Bearer {server.keys['operator']}", "Transfer-Encoding": "chunked",
            "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}))
        start = multipart_start()
        sent = 0
        for part in [start] + [chunk] * (BODY_LIMIT // len(chunk) + 1):
            sock.sendall(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            sent += len(part)
        assert sent > BODY_LIMIT
        status, headers, body = answer(sock)  # the body never ends (no last chunk): the server cut it off
    assert status == 413, body
    assert b'"body_too_large"' in body and b"--max-body-mb" in body and headers.get("connection") == "close"
    wait_until(lambda: open_files_under(spool_dir) == [], "the cut-off upload's spooled file to be closed")


# --- the search queue -----------------------------------------------------------------------------------------


def test_a_burst_over_the_search_queue_gets_503_with_retry_after_and_the_rest_200(
        server: Guarded, engine: FaceEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    heavy = server.heavy
    with server.client("operator") as operator:  # uploads with a valid key still work, within the upload limit
        with sample_image("yaoming.jpg").open("rb") as photo:
            enrolled = operator.post("/identities/enrolments", data={"name": "Yao Ming"},
                                     files={"image": ("yao.jpg", photo, "image/jpeg")})
        assert enrolled.status_code == 201, enrolled.text
        big = operator.post("/search/gallery", data={"purpose": "guard test"},
                            files={"image": ("big.jpg", b"\xff" * (UPLOAD_LIMIT + 1), "image/jpeg")})
        assert big.status_code == 413 and big.json()["error"]["code"] == "too_large"
    release = threading.Event()
    analyze = engine.analyze

    def held(*args: object, **kwargs: object) -> object:
        release.wait(WAIT_S)  # the first search holds the only worker until the burst has been answered
        return analyze(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(engine, "analyze", held)
    photo = sample_image("yaoming.jpg").read_bytes()

    def search() -> httpx.Response:
        with server.client("operator") as operator:
            return operator.post("/search/gallery", data={"purpose": "burst"},
                                 files={"image": ("probe.jpg", photo, "image/jpeg")})

    admitted: list[httpx.Response] = []
    threads = [threading.Thread(target=lambda: admitted.append(search())) for _ in range(2)]
    for thread in threads:
        thread.start()
    wait_until(lambda: heavy.admitted == 2, "one search running and one queued")
    burst = run_together(search, 6)
    release.set()
    for thread in threads:
        thread.join(WAIT_S)
    assert [r.status_code for r in admitted] == [200, 200], [r.text for r in admitted]
    assert all(r.json()["matches"][0]["identity_id"] == enrolled.json()["identity_id"] for r in admitted)
    assert [r.status_code for r in burst] == [503] * 6
    for refused in burst:
        assert refused.json()["error"]["code"] == "busy" and int(refused.headers["retry-after"]) >= 1
    assert all(r.status_code == 200 for r in run_together(search, 2))  # the queue drained: searches run again
    wait_until(lambda: heavy.admitted == 0, "the pool to go idle")


def run_together(call: Callable[[], httpx.Response], count: int) -> list[httpx.Response]:
    results: list[httpx.Response] = []
    threads = [threading.Thread(target=lambda: results.append(call())) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S * 4)
    assert len(results) == count
    return results


# --- forwarded headers: `facetrail serve` ---------------------------------------------------------------------


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., tuple[str, dict[str, str]]]]:
    """Start `facetrail serve` on a loopback port with extra options; yields (base URL, keys)."""
    data = tmp_path / "data"
    gallery = Gallery(GallerySettings(data))
    keys = make_keys(gallery)
    gallery.db.dispose()
    processes: list[subprocess.Popen[bytes]] = []

    def start(*options: str) -> tuple[str, dict[str, str]]:
        port = free_port()
        log = (tmp_path / f"serve-{port}.log").open("wb")
        process = subprocess.Popen([sys.executable, "-m", "facetrail.cli.main", "serve", "--data", str(data),
                                    "--port", str(port), *options], stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        processes.append(process)

        def listening() -> bool:
            if process.poll() is not None:
                pytest.fail(f"facetrail serve exited: {(tmp_path / f'serve-{port}.log').read_text()}")
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", port)) == 0

        wait_until(listening, "facetrail serve", timeout=WAIT_S * 4)
        return f"http://127.0.0.1:{port}", keys

    yield start
    for process in processes:
        process.terminate()
        process.wait(WAIT_S)


def login_checks(url: str, key: str) -> tuple[bool, int]:
    """Whether a login over (claimed) https sets a Secure cookie; then the status a new forwarded address gets
    after 127.0.0.1 used up its failed logins."""
    with httpx.Client(base_url=url + PREFIX, timeout=WAIT_S) as client:
        logged_in = client.post("/session", json={"key": key}, headers={"X-Forwarded-Proto": "https"})
        assert logged_in.status_code == 200, logged_in.text
        secure = "secure" in logged_in.headers["set-cookie"].lower()
        statuses = [client.post("/session", json={"key": "ft_wrong_wrong"}).status_code for _ in range(6)]
        assert statuses == [401] * 5 + [429]
        other = client.post("/session", json={"key": "ft_wrong_wrong"}, headers={"X-Forwarded-For": "203.0.113.9"})
        return secure, other.status_code


def test_serve_trusts_no_forwarded_headers_by_default(serve: Callable[..., tuple[str, dict[str, str]]]) -> None:
    url, keys = serve()
    secure, other = login_checks(url, keys["viewer"])
    assert not secure  # X-Forwarded-Proto from a client is not believed
    assert other == 429  # nor is X-Forwarded-For: the limit stays with the real address


def test_serve_trusts_the_forwarded_headers_of_listed_proxies(
        serve: Callable[..., tuple[str, dict[str, str]]]) -> None:
    url, keys = serve("--forwarded-allow-ips", "127.0.0.1")
    secure, other = login_checks(url, keys["viewer"])
    assert secure
    assert other == 401  # a different client behind the proxy has its own limit

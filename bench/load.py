"""Load benchmark: bounded bursts of concurrent searches and event reads against `facetrail serve` on loopback.

The bench starts its own `facetrail serve` (a subprocess, 127.0.0.1 only) on a
fresh data folder with keys, one enrolled person and ``--events`` stored
events, warms it up (the models load on the first search), then runs
``--bursts`` bursts: ``--concurrency`` clients for ``--duration`` seconds
each, every client alternating searches by photo (``POST /search/gallery``)
and event reads (``GET /events``) by ``--search-share``. A client told 503
waits its ``Retry-After`` (what a well-behaved client does). Between bursts
and after the last, the server idles for ``--settle`` seconds.

Reported: p50/p99 per kind, answers by status (503s are the deliberate
refusals of a full search queue; anything else not 2xx is an error), and the
server's resident memory (``/proc/<pid>/status``): after warm-up ("before"),
the peak during the bursts, and after the last settle ("after"). Goal: no
errors, memory after within 10% of before.

Run: ``.venv/bin/python bench/load.py [--concurrency 50] [--duration 20] [--bursts 2] [--json OUT]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from facetrail.gallery.gallery import Gallery, GallerySettings
from facetrail.store.keys import create_key
from facetrail.store.models import Event, utcnow
from facetrail.vision.samples import sample_image

MAX_CONCURRENCY, MAX_DURATION_S, MAX_BURSTS = 200, 120.0, 10
PREFIX = "/api/v1"


@dataclass
class Tally:
    """Latencies (s) by kind and answers by status, shared by the clients of one burst."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: {"search": [], "events": []})
    statuses: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, status: str, seconds: float) -> None:
        with self.lock:
            self.statuses[f"{kind} {status}"] += 1
            if status.startswith("2"):
                self.latencies[kind].append(seconds)


def rss_mb(pid: int, field_name: str = "VmRSS") -> float:
    """A memory figure of the process from /proc/<pid>/status, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field_name} for process {pid}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prepare(data: Path, events: int) -> str:
    """Keys and stored events in a fresh gallery; returns the operator key."""
    gallery = Gallery(GallerySettings(data))
    try:
        with gallery.db.session() as session:
            key = create_key(session, "load-bench", "operator", actor="bench")
            for number in range(events):
                session.add(Event(uid=f"bench-{number}", kind="unknown_visitor", camera="bench", started_at=utcnow()))
    finally:
        gallery.db.dispose()
    return key


def start_server(data: Path, port: int, args: argparse.Namespace, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, FACETRAIL_MALLOC_TRIM="0" if args.no_trim else "1")
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "facetrail.cli.main", "serve", "--data", str(data),
                                    "--host", "127.0.0.1", "--port", str(port),
                                    "--search-workers", str(args.workers), "--search-queue", str(args.queue)],
                                   stdout=out, stderr=out, stdin=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"facetrail serve exited: {log.read_text()}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return process
        time.sleep(0.1)
    process.kill()
    raise SystemExit("facetrail serve did not start within 120 s")


def client_loop(url: str, key: str, photo: bytes, share: float, until: float, tally: Tally, seed: int) -> None:
    """One client: searches and event reads until ``until``; waits Retry-After when told 503."""
    credit = seed * share % 1.0  # spreads the clients' first requests over both kinds
    with httpx.Client(base_url=url + PREFIX, headers={"Authorization": f"Bearer {key}"}, timeout=120) as client:
        while time.monotonic() < until:
            credit += share
            kind = "search" if credit >= 1.0 else "events"
            credit %= 1.0
            started = time.perf_counter()
            retry_after = 0.0
            try:
                if kind == "search":
                    answer = client.post("/search/gallery", data={"purpose": "load bench"},
                                         files={"image": ("probe.jpg", photo, "image/jpeg")})
                else:
                    answer = client.get("/events", params={"limit": 50})
                status = str(answer.status_code)
                if answer.status_code == 503:
                    retry_after = float(answer.headers.get("retry-after", "1"))
            except httpx.HTTPError as error:
                status = type(error).__name__
            tally.add(kind, status, time.perf_counter() - started)
            if retry_after:
                time.sleep(max(0.0, min(retry_after, until - time.monotonic())))


def percentile(values: list[float], q: int) -> float | None:
    """The q-th percentile in ms."""
    if len(values) < 2:
        return values[0] * 1000 if values else None
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000


def burst(url: str, key: str, photo: bytes, args: argparse.Namespace, pid: int) -> dict[str, Any]:
    """One burst; returns its latencies, statuses and peak memory."""
    tally, peak = Tally(), [rss_mb(pid)]
    until = time.monotonic() + args.duration
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            peak.append(rss_mb(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    clients = [threading.Thread(target=client_loop, args=(url, key, photo, args.search_share, until, tally, n))
               for n in range(args.concurrency)]
    for client in clients:
        client.start()
    for client in clients:
        client.join()
    stop.set()
    sampler.join()
    return {"latency_ms": {kind: {"count": len(values), "p50": percentile(values, 50), "p99": percentile(values, 99)}
                           for kind, values in tally.latencies.items()},
            "statuses": dict(sorted(tally.statuses.items())), "peak_rss_mb": round(max(peak), 1)}


def machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    memory = next(int(line.split()[1]) // 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    return {"cpu": model, "cores": os.cpu_count(), "memory_mb": memory, "python": platform.python_version(),
            "system": platform.platform(), "load_average": os.getloadavg()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=50, help=f"clients per burst (at most {MAX_CONCURRENCY})")
    parser.add_argument("--duration", type=float, default=20.0, help=f"seconds per burst (at most {MAX_DURATION_S:g})")
    parser.add_argument("--bursts", type=int, default=2, help=f"bursts (at most {MAX_BURSTS})")
    parser.add_argument("--settle", type=float, default=5.0, help="idle seconds after each burst")
    parser.add_argument("--search-share", type=float, default=0.5, help="share of requests that are searches")
    parser.add_argument("--events", type=int, default=500, help="stored events to read")
    parser.add_argument("--workers", type=int, default=2, help="the server's --search-workers")
    parser.add_argument("--queue", type=int, default=8, help="the server's --search-queue")
    parser.add_argument("--no-trim", action="store_true", help="run the server without malloc_trim (to compare)")
    parser.add_argument("--image", type=Path, default=sample_image("yaoming.jpg"), help="the search photo")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    if not (1 <= args.concurrency <= MAX_CONCURRENCY and 0 < args.duration <= MAX_DURATION_S
            and 1 <= args.bursts <= MAX_BURSTS and 0.0 <= args.search_share <= 1.0):
        parser.error(f"--concurrency 1..{MAX_CONCURRENCY}, --duration up to {MAX_DURATION_S:g} s, "
                     f"--bursts 1..{MAX_BURSTS}, --search-share 0..1")
    photo = args.image.read_bytes()
    with tempfile.TemporaryDirectory(prefix="facetrail-load-") as folder:
        data = Path(folder) / "data"
        key = prepare(data, args.events)
        port = free_port()
        server = start_server(data, port, args, Path(folder) / "serve.log")
        url = f"http://127.0.0.1:{port}"
        try:
            results = run(url, key, photo, args, server.pid)
        finally:
            server.terminate()
            server.wait(30)
    results["machine"], results["settings"] = machine(), {k: str(v) for k, v in vars(args).items()}
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if results["ok"] else 1


def run(url: str, key: str, photo: bytes, args: argparse.Namespace, pid: int) -> dict[str, Any]:
    started_mb = rss_mb(pid)
    with httpx.Client(base_url=url + PREFIX, headers={"Authorization": f"Bearer {key}"}, timeout=300) as client:
        enrolled = client.post("/identities/enrolments", data={"name": "Bench Person"},
                               files={"image": ("enrol.jpg", photo, "image/jpeg")})
        if enrolled.status_code != 201:
            raise SystemExit(f"enrolment failed: {enrolled.status_code} {enrolled.text}")
        for _ in range(3):  # warm-up: models loaded, first allocations made
            client.post("/search/gallery", data={"purpose": "warm-up"},
                        files={"image": ("probe.jpg", photo, "image/jpeg")}).raise_for_status()
            client.get("/events", params={"limit": 50}).raise_for_status()
    time.sleep(args.settle)
    before_mb = rss_mb(pid)
    bursts = []
    for _ in range(args.bursts):
        bursts.append(burst(url, key, photo, args, pid))
        time.sleep(args.settle)
        bursts[-1]["rss_after_settle_mb"] = round(rss_mb(pid), 1)
    after_mb = rss_mb(pid)
    errors = {status: count for b in bursts for status, count in b["statuses"].items()
              if not status.split()[1].startswith("2") and not status.endswith(" 503")}
    growth = (after_mb - before_mb) / before_mb
    return {"rss_mb": {"started": round(started_mb, 1), "before": round(before_mb, 1),
                       "peak": max(b["peak_rss_mb"] for b in bursts), "after": round(after_mb, 1),
                       "after_vs_before_pct": round(growth * 100, 1), "hwm": round(rss_mb(pid, "VmHWM"), 1)},
            "bursts": bursts, "errors": errors, "ok": not errors and growth <= 0.10}


def report(results: dict[str, Any]) -> None:
    print(f"machine: {results['machine']}")
    print(f"settings: {results['settings']}")
    for number, one in enumerate(results["bursts"], 1):
        print(f"burst {number}: peak {one['peak_rss_mb']} MB, {one['rss_after_settle_mb']} MB after settling")
        for kind, stats in one["latency_ms"].items():
            p50, p99 = (f"{v:.0f} ms" if v is not None else "-" for v in (stats["p50"], stats["p99"]))
            print(f"  {kind:7s} {stats['count']:5d} answered 2xx  p50 {p50:>9s}  p99 {p99:>9s}")
        print("  answers: " + ", ".join(f"{status}: {count}" for status, count in one["statuses"].items()))
    rss = results["rss_mb"]
    print(f"server RSS: started {rss['started']} MB, before {rss['before']} MB, peak {rss['peak']} MB, "
          f"after {rss['after']} MB ({rss['after_vs_before_pct']:+.1f}% vs before)")
    print(f"errors (not 2xx, not a deliberate 503): {results['errors'] or 'none'}; "
          f"goal {'met' if results['ok'] else 'NOT met'}")


if __name__ == "__main__":
    raise SystemExit(main())

"""The video commands as a user runs them: the demo, then events, reviews, timelines and history search."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from facetrail.vision.samples import sample_image

pytestmark = pytest.mark.models


def facetrail(*args: str | Path, actor: str = "cli-test") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "facetrail.cli.main", *map(str, args), *(
        ["--actor", actor] if args[0] in ("events", "sightings", "search", "watchlist") else [])],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("demo") / "facetrail-demo"
    run = facetrail("demo", "--dir", folder)
    assert run.returncode == 0, run.stderr
    return folder, run.stdout


def test_demo_prints_one_alert_per_appearance_and_the_timeline(demo: tuple[Path, str]) -> None:
    folder, output = demo
    assert output.count("ALERT") == 2
    assert "timeline of Yao Ming (UTC):" in output and output.count("camera court") >= 4
    assert "Traceback" not in output
    for name in ("court.mp4", "config.yml", "facetrail.db", "alert-1.jpg", "alert-2.jpg"):
        assert (folder / name).stat().st_size > 0
    assert (folder / "alert-1.jpg").read_bytes()[:2] == b"\xff\xd8"
    rerun = facetrail("config", "validate", folder / "config.yml")
    assert rerun.returncode == 0 and "1 camera(s): court" in rerun.stdout


def test_demo_refuses_a_folder_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    run = facetrail("demo", "--dir", tmp_path)
    assert run.returncode == 1 and "was not made by `facetrail demo`" in run.stderr
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_review_timeline_and_history_from_the_command_line(demo: tuple[Path, str]) -> None:
    folder, _ = demo
    listing = facetrail("events", "list", "--data", folder, "--json")
    assert listing.returncode == 0, listing.stderr
    events = json.loads(listing.stdout)
    alerts = [e for e in events if e["kind"] == "watchlist_hit"]
    assert len(alerts) == 2 and all(e["state"] == "pending" and e["identity"] == "Yao Ming" for e in alerts)
    first = str(alerts[0]["id"])
    confirmed = facetrail("events", "review", first, "confirm", "--note", "it is him", "--data", folder,
                          actor="ana")
    assert confirmed.returncode == 0 and "confirmed" in confirmed.stdout
    twice = facetrail("events", "review", first, "dismiss", "--data", folder, actor="ben")
    assert twice.returncode == 1 and "already confirmed" in twice.stderr
    snapshot = folder / "evidence.jpg"
    assert facetrail("events", "snapshot", first, snapshot, "--data", folder).returncode == 0
    assert snapshot.read_bytes()[:2] == b"\xff\xd8"

    no_purpose = facetrail("sightings", "Yao Ming", "--data", folder)
    assert no_purpose.returncode == 2 and "--purpose" in no_purpose.stderr
    timeline = facetrail("sightings", "Yao Ming", "--purpose", "demo check", "--json", "--data", folder)
    rows = json.loads(timeline.stdout)
    assert len(rows) == 2 and rows[0]["first_seen"] < rows[1]["first_seen"]
    assert all(r["camera"] == "court" and r["watchlist_hit"] for r in rows)

    history = facetrail("search", sample_image("yaoming.jpg"), "--history", "--purpose", "who else",
                        "--json", "--data", folder)
    assert history.returncode == 0, history.stderr
    hits = json.loads(history.stdout)
    assert {h["id"] for h in hits[:2]} == {r["id"] for r in rows}

    audit = facetrail("audit", "list", "--data", folder)
    for action in ("run.start", "run.stop", "event.confirm", "sightings.timeline", "search.history"):
        assert action in audit.stdout, action


def test_serve_with_a_config_watches_the_cameras_and_serves_what_they_saw(demo: tuple[Path, str],
                                                                          tmp_path: Path) -> None:
    import shutil

    import httpx

    from services import free_port, wait_until

    folder = tmp_path / "site"
    shutil.copytree(demo[0], folder)
    key = facetrail("keys", "create", "wall-screen", "--role", "viewer", "--data", folder)
    assert key.returncode == 0, key.stderr
    secret = key.stdout.strip().splitlines()[-1]
    before = [e["kind"] for e in json.loads(facetrail("events", "list", "--data", folder, "--json").stdout)]
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "facetrail.cli.main", "serve", "--config",
                               str(folder / "config.yml"), "--port", str(port)], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    api = httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", headers={"Authorization": f"Bearer {secret}"})

    def finished() -> bool:
        assert server.poll() is None, server.stdout.read() if server.stdout else ""
        try:
            cameras = api.get("/cameras").json()
        except httpx.TransportError:
            return False
        return bool(cameras) and cameras[0]["state"] == "finished"

    try:
        wait_until(finished, "the served pipeline to finish the demo clip", timeout=300)
        camera = api.get("/cameras").json()[0]
        events = api.get("/events").json()["items"]
    finally:
        server.terminate()
        server.wait(timeout=60)
        api.close()
    assert camera["name"] == "court" and camera["configured"] and camera["detect_fps"] is not None
    alerts = [e for e in events if e["kind"] == "watchlist_hit"]
    assert len(alerts) == before.count("watchlist_hit") + 2, "the in-process pipeline alerts on the clip again"
    assert all(e["identity_name"] == "Yao Ming" for e in alerts)

"""`facetrail run --processes N`: the cameras split over worker processes on this machine.

Real clips of an enrolled watchlist member, a real SQLite database, a real Mosquitto and a real webhook
receiver; the real CLI in a subprocess, its workers killed with SIGKILL, the run stopped with SIGTERM.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from facetrail.config.errors import ConfigError
from facetrail.config.loader import load_config, parse_config
from facetrail.pipeline.processes import FILE_RESTARTS, ProcessRun
from facetrail.store.db import Database, sqlite_url
from facetrail.store.models import CameraPlacement, Event, Identity, OutboxMessage, Sighting
from facetrail.store.placements import checkpoint, place, resume_run, start_afresh
from facetrail.vision.engine import FaceEngine
from facetrail.vision.samples import sample_image
from mqtt_kit import Listener
from pipeline_kit import enrol, two_cameras_of_yao
from services import SECRET_A, Mosquitto, Receiver, facetrail_run, free_port, wait_until

RUN_WAIT_S = 600.0  # two engines loading on a busy 2-core machine: generous, never a timing assertion
WORKER = re.compile(r"processes: cameras ([\w, -]+) in worker process (\d+)")


@pytest.fixture
def clips(tmp_path: Path, video_engine: FaceEngine) -> dict[str, Path]:
    """Two cameras; Yao Ming walks past each twice (two watchlist hits per camera)."""
    return two_cameras_of_yao(tmp_path, video_engine)


def site(folder: Path, clips: dict[str, Path], broker: int, webhook: int, *, realtime: bool = False,
         loop: bool = False) -> Path:
    """A site of ``clips`` storing in ``folder``/data, delivering to the broker and the webhook receiver."""
    lines = [f"purpose: processes test\ndata_dir: {folder / 'data'}\n",
             f"mqtt:\n  enabled: true\n  port: {broker}\n",
             f"webhooks:\n  - name: desk\n    url: http://127.0.0.1:{webhook}/hook\n    secret: {SECRET_A}\n",
             "cameras:\n"]
    for name, clip in clips.items():
        lines.append(f"  {name}:\n    inputs:\n      - path: {clip}\n        realtime: {str(realtime).lower()}\n"
                     f"        loop: {str(loop).lower()}\n    detect:\n      fps: 5\n")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "site.yml"
    path.write_text("".join(lines))
    return path


@contextmanager
def started(config: Path, *args: str) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """The run of ``config`` and its log (run.log beside it), killed on the way out if it is still running."""
    log = config.with_name("run.log")
    with facetrail_run(config, *args, log=log) as run:
        yield run, log


@contextmanager
def watched_site(folder: Path, clips: dict[str, Path], engine: FaceEngine, broker: Mosquitto, *,
                 loop: bool = False) -> Iterator[tuple[Path, Receiver]]:
    """Yao Ming on the "vip" watchlist, a webhook receiver, and the site of ``clips`` read in real time."""
    enrol(folder / "data", engine, "Yao Ming", sample_image("yaoming.jpg"), watchlist="vip")
    webhook = free_port()
    receiver = Receiver(webhook, {"/hook": SECRET_A}).start()
    try:
        yield site(folder, clips, broker.port, webhook, realtime=True, loop=loop), receiver
    finally:
        receiver.stop()


def workers(log: Path) -> dict[str, int]:
    """Camera -> pid of the worker process running it (the latest start)."""
    found: dict[str, int] = {}
    for cameras, pid in WORKER.findall(log.read_text()):
        found.update(dict.fromkeys(cameras.split(", "), int(pid)))
    return found


def stored(data: Path) -> tuple[Counter[tuple[str, str | None]], Counter[tuple[str, str | None]], int, set[str]]:
    """(camera, person) of the ended watchlist events and of the sightings; events left open; every event's uid."""
    db = Database(sqlite_url(data), migrate=False)
    try:
        with db.session() as session:
            events = session.execute(select(Event.camera, Identity.display_name, Event.ended_at, Event.uid)
                                     .join(Identity, Identity.id == Event.identity_id, isouter=True)
                                     .where(Event.kind == "watchlist_hit")).all()
            sightings = session.execute(select(Sighting.camera, Identity.display_name)
                                        .join(Identity, Identity.id == Sighting.identity_id, isouter=True)).all()
            waiting = session.scalar(select(func.count()).select_from(OutboxMessage)
                                     .where(OutboxMessage.delivered_at.is_(None)))
            assert waiting == 0  # every message delivered
    finally:
        db.dispose()
    ended: Counter[tuple[str, str | None]] = Counter((camera, name) for camera, name, end, _ in events
                                                     if end is not None)
    return (ended, Counter((camera, name) for camera, name in sightings),
            sum(1 for *_, end, _ in events if end is None), {uid for *_, uid in events})


def hooks_of(data: Path) -> list[str]:
    db = Database(sqlite_url(data), migrate=False)
    try:
        with db.session() as session:
            return list(session.scalars(select(OutboxMessage.message_id).where(OutboxMessage.channel == "webhook")
                                        .order_by(OutboxMessage.id)))
    finally:
        db.dispose()


def heard_once(heard: Listener, events: set[str]) -> None:
    """Every event's new and end message arrived over MQTT, each exactly once."""
    def all_heard() -> bool:
        ends = [m.json() for m in heard.on("facetrail/events") if m.json()["type"] == "end"]
        return {p["after"]["id"] for p in ends} >= events

    wait_until(all_heard, "every event's end over MQTT")
    payloads = [m.json() for m in heard.on("facetrail/events") if m.json()["after"]["id"] in events]
    ids = [p["message_id"] for p in payloads]
    assert len(ids) == len(set(ids))
    assert Counter(p["after"]["id"] for p in payloads if p["type"] == "new") == Counter(events)
    assert Counter(p["after"]["id"] for p in payloads if p["type"] == "end") == Counter(events)


def test_two_processes_store_and_deliver_what_one_does(tmp_path: Path, clips: dict[str, Path],
                                                       video_engine: FaceEngine, broker: Mosquitto) -> None:
    webhook = free_port()
    receiver = Receiver(webhook, {"/hook": SECRET_A}).start()
    outcomes = {}
    try:
        for processes in ("1", "2"):
            folder = tmp_path / f"p{processes}"
            enrol(folder / "data", video_engine, "Yao Ming", sample_image("yaoming.jpg"), watchlist="vip")
            config = site(folder, clips, broker.port, webhook)
            with Listener(broker.port, "facetrail/events") as heard, \
                    started(config, "--processes", processes) as (run, log):
                assert run.wait(timeout=RUN_WAIT_S) == 0, log.read_text()[-3000:]
                ended, sightings, still_open, events = stored(folder / "data")
                heard_once(heard, events)
            output = log.read_text()
            assert "camera gate: finished" in output and "camera hall: finished" in output
            assert len(set(workers(log).values())) == (2 if processes == "2" else 0)
            outcomes[processes] = (ended, sightings, still_open, events)
            delivered = [m for m in receiver.delivered("/hook") if m in set(hooks_of(folder / "data"))]
            assert delivered == hooks_of(folder / "data")  # every webhook once, in order
        one, two = outcomes["1"], outcomes["2"]
        assert one[0] == two[0] == {("gate", "Yao Ming"): 2, ("hall", "Yao Ming"): 2}
        assert one[1] == two[1]  # the same sightings, per camera and person
        assert one[2] == two[2] == 0
        assert not receiver.problems
    finally:
        receiver.stop()


def test_a_killed_file_worker_resumes_from_its_checkpoint_and_announces_nothing_twice(
        tmp_path: Path, clips: dict[str, Path], video_engine: FaceEngine, broker: Mosquitto) -> None:
    with watched_site(tmp_path, clips, video_engine, broker) as (config, receiver), \
            Listener(broker.port, "facetrail/events") as heard, started(config, "--processes", "2") as (run, log):
        db = Database(sqlite_url(tmp_path / "data"), migrate=False)
        try:
            def gate_sighted() -> bool:
                assert run.poll() is None, log.read_text()[-3000:]
                with db.session() as session:
                    return bool(session.scalar(select(func.count()).select_from(Event)
                                               .where(Event.camera == "gate")))

            wait_until(gate_sighted, "gate's first event", timeout=RUN_WAIT_S)
            with db.session() as session:
                placed = session.get(CameraPlacement, "gate")
                assert placed is not None and placed.position_s is not None  # its checkpoint, written as it reads
            os.kill(workers(log)["gate"], signal.SIGKILL)
            assert run.wait(timeout=RUN_WAIT_S) == 0, log.read_text()[-3000:]
            with db.session() as session:
                placed = session.get(CameraPlacement, "gate")
                assert placed is not None and placed.position_s is None and placed.moved_from  # read to its end
        finally:
            db.dispose()
        output = log.read_text()
        assert "camera hall: finished" in output and "camera gate: finished" in output
        assert output.count("their worker process died (killed by signal 9); starting it again in 1 s "
                            "(files from their checkpoints: gate)") == 1, output
        assert "error: cameras failed" not in output
        ended, _, still_open, events = stored(tmp_path / "data")
        # Yao Ming's two walks on each camera, each announced once: the walk the killed worker was following
        # was continued (or ended) by its successor, not raised again
        assert ended == {("gate", "Yao Ming"): 2, ("hall", "Yao Ming"): 2}
        assert still_open == 0
        heard_once(heard, events)
        delivered = [m for m in receiver.delivered("/hook") if m in set(hooks_of(tmp_path / "data"))]
        assert delivered == hooks_of(tmp_path / "data")  # every webhook once, in order


def test_a_file_camera_whose_worker_keeps_dying_fails_in_one_line_and_the_others_finish(
        tmp_path: Path, clips: dict[str, Path], video_engine: FaceEngine, broker: Mosquitto) -> None:
    with watched_site(tmp_path, clips, video_engine, broker) as (config, _), \
            Listener(broker.port, "facetrail/events") as heard, started(config, "--processes", "2") as (run, log):
        killed: set[int] = set()
        for _ in range(FILE_RESTARTS + 1):  # each life of gate's worker killed as soon as it is there
            wait_until(lambda: (workers(log).get("gate") or 0) not in killed | {0},
                       "gate's next worker process", timeout=RUN_WAIT_S)
            pid = workers(log)["gate"]
            os.kill(pid, signal.SIGKILL)
            killed.add(pid)
        assert run.wait(timeout=RUN_WAIT_S) == 1, log.read_text()[-3000:]
        output = log.read_text()
        assert "camera hall: finished" in output
        failed = [line for line in output.splitlines() if line.startswith("error: cameras failed")]
        assert len(failed) == 1, output
        assert f"gate: its worker process died (killed by signal 9), {FILE_RESTARTS + 1} time(s)" in failed[0]
        assert "hall:" not in failed[0]
        assert output.count("starting it again") == FILE_RESTARTS
        ended, _, still_open, events = stored(tmp_path / "data")
        assert ended[("hall", "Yao Ming")] == 2  # the survivor's two walks
        assert still_open == 0  # whatever gate's workers raised was ended when the run stopped
        heard_once(heard, events)


def test_a_worker_that_died_as_the_run_stopped_leaves_no_event_open(
        tmp_path: Path, clips: dict[str, Path], video_engine: FaceEngine, broker: Mosquitto) -> None:
    with watched_site(tmp_path, clips, video_engine, broker) as (config, _):
        run = ProcessRun(load_config(config), 2, actor="tester", notify=lambda _line: None)
        db = Database(sqlite_url(tmp_path / "data"), migrate=False)
        run.start()
        try:
            def gate_event_open() -> bool:
                run.poll(0.1)
                with db.session() as session:
                    return bool(session.scalar(select(func.count()).select_from(Event).where(
                        Event.camera == "gate", Event.ended_at.is_(None))))

            wait_until(gate_event_open, "gate's first event", timeout=RUN_WAIT_S)
            (gate,) = [worker for worker in run.workers if worker.cameras == ["gate"]]
            assert gate.process is not None and gate.process.pid is not None
            os.kill(gate.process.pid, signal.SIGKILL)

            def death_noticed() -> bool:
                run.poll(0.1)
                return gate.restart_at is not None  # waiting its back-off to start again

            wait_until(death_noticed, "the parent to notice gate's worker died", timeout=RUN_WAIT_S)
        finally:
            run.stop()  # within the back-off: gate's worker is never started again
        try:
            with db.session() as session:
                left_open = session.scalar(select(func.count()).select_from(Event).where(Event.ended_at.is_(None)))
        finally:
            db.dispose()
        assert left_open == 0  # the event the dead worker was following was ended by the parent
        assert "the run stopped before it started again" in run.failures["gate"]
        assert "hall" not in run.failures  # stopped mid-file by the stop, as asked


def test_a_killed_live_worker_starts_again_and_sigterm_ends_every_event(
        tmp_path: Path, clips: dict[str, Path], video_engine: FaceEngine, broker: Mosquitto) -> None:
    # Files read in a loop stand for live cameras: they never end, and reading them again duplicates nothing.
    with watched_site(tmp_path, clips, video_engine, broker, loop=True) as (config, _), \
            Listener(broker.port, "facetrail/events") as heard, started(config, "--processes", "2") as (run, log):
        db = Database(sqlite_url(tmp_path / "data"), migrate=False)

        def count(camera: str) -> int:
            with db.session() as session:
                return int(session.scalar(select(func.count()).select_from(Event)
                                          .where(Event.camera == camera)) or 0)

        def both_sighted() -> bool:
            assert run.poll() is None, log.read_text()[-3000:]
            return count("gate") > 0 and count("hall") > 0

        try:
            wait_until(both_sighted, "an event on each camera", timeout=RUN_WAIT_S)
            first = workers(log)["gate"]
            os.kill(first, signal.SIGKILL)
            wait_until(lambda: workers(log)["gate"] != first, "gate's worker to start again", timeout=RUN_WAIT_S)
            before = count("gate")
            wait_until(lambda: count("gate") > before, "a new event on gate after the restart", timeout=RUN_WAIT_S)
            run.send_signal(signal.SIGTERM)
            assert run.wait(timeout=RUN_WAIT_S) == 0, log.read_text()[-3000:]
            with db.session() as session:
                events = list(session.scalars(select(Event)))
        finally:
            db.dispose()
        output = log.read_text()
        assert output.count("their worker process died (killed by signal 9); starting it again") == 1, output
        assert {event.camera for event in events} == {"gate", "hall"}
        # stopped cleanly, and the event the killed worker left open was taken over or ended: nothing left open
        assert all(event.ended_at is not None for event in events)
        heard_once(heard, {event.uid for event in events if event.kind == "watchlist_hit"})


def test_a_new_run_starts_its_files_afresh_and_only_its_own_dead_workers_resume(tmp_path: Path) -> None:
    db = Database(sqlite_url(tmp_path))
    origin = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    try:
        with db.session() as session:  # an earlier run (a cluster's, or a worker's) stopped half-way
            place(session, ["gate"], run_id="run-1", node="process 10", origin=origin)
            checkpoint(session, "gate", 12.4)
        later = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)
        with db.session() as session:  # a new processes run: the file is read from the start
            start_afresh(session, ["gate"], run_id="run-2", node="process 20", origin=later)
        with db.session() as session:
            row = session.get(CameraPlacement, "gate")
            assert row is not None and (row.position_s, row.run_id, row.node, row.moved_from) == \
                (None, "run-2", "process 20", None)
            checkpoint(session, "gate", 3.2)
        with db.session() as session:  # its worker died: the next one resumes this run's checkpoint
            again = resume_run(session, ["gate"], run_id="run-2", node="process 30", origin=datetime.now(UTC))
        assert again["gate"].position_s == 3.2 and again["gate"].clock_origin == later
        with db.session() as session:
            row = session.get(CameraPlacement, "gate")
            assert row is not None and (row.node, row.moved_from) == ("process 30", "process 20")
        with db.session() as session:  # another run's worker died before it placed its file: not run-2's point
            place(session, ["hall"], run_id="run-1", node="process 10", origin=origin)
            checkpoint(session, "hall", 7.5)
        with db.session() as session:
            fresh = resume_run(session, ["hall"], run_id="run-3", node="process 40", origin=later)
        assert fresh["hall"].position_s is None and fresh["hall"].clock_origin == later
        with db.session() as session:
            row = session.get(CameraPlacement, "hall")
            assert row is not None and (row.run_id, row.position_s, row.moved_from) == ("run-3", None, None)
    finally:
        db.dispose()


def test_processes_are_validated() -> None:
    base = "purpose: test\ncameras:\n  a:\n    inputs:\n      - path: a.mp4\n  b:\n    inputs:\n      - path: b.mp4\n"
    assert parse_config(base, "x.yml").worker_processes() == 1
    assert parse_config(base + "processes: 3\n", "x.yml").worker_processes() == 2  # never more than cameras
    auto = parse_config(base + "processes: auto\n", "x.yml")
    assert auto.processes == "auto" and auto.worker_processes(cpus=1) == 1 and auto.worker_processes(cpus=8) == 2
    for bad in ("0", "-1", "many"):
        with pytest.raises(ConfigError, match="processes"):
            parse_config(base + f"processes: {bad}\n", "x.yml")
    cluster = ("database:\n  url: postgresql+psycopg://u@h/db\ncluster:\n  ray:\n    address: 127.0.0.1:6379\n"
               "processes: 2\n")
    with pytest.raises(ConfigError, match="not with cluster"):
        parse_config(base + cluster, "x.yml")
    lite = "index:\n  backend: milvus\n  milvus:\n    uri: milvus.db\n"
    assert parse_config(base + lite, "x.yml").worker_processes() == 1
    with pytest.raises(ConfigError, match="Milvus Lite serves one process"):
        parse_config(base + lite + "processes: 2\n", "x.yml")


def test_the_cli_refuses_processes_with_a_cluster_or_milvus_lite(tmp_path: Path) -> None:
    config = tmp_path / "site.yml"
    config.write_text("purpose: test\ndatabase:\n  url: postgresql+psycopg://u@127.0.0.1:9/db\ncameras:\n"
                      "  a:\n    inputs:\n      - path: a.mp4\n")
    done = subprocess.run([sys.executable, "-m", "facetrail.cli.main", "run", str(config), "--processes", "2",
                           "--ray", "127.0.0.1:9"], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: {config}: --processes / processes: cannot be used with a cluster (its camera groups already are "
        "processes)"]
    bad = subprocess.run([sys.executable, "-m", "facetrail.cli.main", "run", str(config), "--processes", "0"],
                         capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert bad.returncode == 2 and "a number of processes (1 or more) or auto" in bad.stderr
    lite = tmp_path / "lite.yml"
    lite.write_text("purpose: test\nindex:\n  backend: milvus\n  milvus:\n    uri: milvus.db\ncameras:\n"
                    "  a:\n    inputs:\n      - path: a.mp4\n  b:\n    inputs:\n      - path: b.mp4\n")
    refused = subprocess.run([sys.executable, "-m", "facetrail.cli.main", "run", str(lite), "--processes", "2"],
                             capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        f"error: {lite}: --processes: Milvus Lite serves one process at a time; use a Milvus server "
        "(index.milvus.uri: http://...) or processes: 1"]

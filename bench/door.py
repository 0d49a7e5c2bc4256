"""Door access benchmark: how long a resident waits at the door, and what the door decides on real clips.

Everything runs facetrail's real ``Pipeline`` (the camera reader, detection,
tracking, recognition, 106 landmarks, the door rule, the decision log) on
clips made from real photos (``facetrail.synth.door_clips``), each read at
its own speed like a camera (``realtime: true``), with the door command sent
to a real MQTT broker (a private mosquitto, else 127.0.0.1:1883) and a
subscribed "controller". Printed in one run with the machine and settings:

1. Latency over ``--repeat`` approaches of the enrolled resident (a fresh
   pipeline each): from her face first being large enough and usable at the
   door (``DoorTiming.first_usable``) to the decision, and to the door
   command acknowledged by the broker (``command_done``): p50, p95, max.
   Goal: p95 under 1 s to the acknowledged command. Liveness waits for
   evidence (a blink or head motion in depth), so two approaches are timed:
   she blinks as she steps up (eyes open again 0.7 s in; the goal is judged
   on this one), and she keeps still until her blink ends 1.3 s in (the
   test clip), which shows how the wait follows the person.
2. Outcomes (grant / deny / no decision, with the reasons) on the clips: the
   resident, the resident without consent, an unknown person, a printed
   photo moved as a plane, the resident with a stranger beside her
   (tailgating), and ``conditions/spoof/rgb_fake.jpg`` (a face on a screen)
   moved as a plane, when the shared data has it.
3. The peer. No open-source project decides doors, so the peer is the naive
   rule: "open on the first frame whose face matches an allowed person above
   the threshold" (no liveness, no consecutive shots, no tailgating check).
   It is computed from the very same frames and matches of the same runs
   (each frame's matches, as the door saw them) and sends its own real
   command to the same broker; its latency and outcomes are printed beside
   facetrail's. It is faster, and it opens the door for the printed photo.

Run: ``.venv/bin/python bench/door.py [--repeat 10] [--quick] [--json PATH] [--mqtt HOST:PORT]``.
Needs mosquitto (``/usr/sbin/mosquitto``) or a broker at 127.0.0.1:1883.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import select

from cpu_meter import CpuMeter
from face_engine import cpu_model, physical_cores
from facetrail.config.loader import parse_config
from facetrail.config.schema import FacetrailConfig
from facetrail.door.commands import DoorCommand, MqttDoorSender, MqttDoorSettings
from facetrail.door.decision import DoorDecision, Shot
from facetrail.door.liveness import LivenessSettings
from facetrail.gallery.enrol import EnrolOptions, Outcome, enrol_person
from facetrail.gallery.gallery import Gallery, GallerySettings
from facetrail.gallery.watchlists import add_member, create_watchlist
from facetrail.pipeline.batch import FrameBatch
from facetrail.pipeline.consumers import Consumer
from facetrail.pipeline.doors import DoorTiming
from facetrail.pipeline.runner import Pipeline
from facetrail.store.doors import record_consent
from facetrail.store.models import DoorDecisionRecord, Identity
from facetrail.synth import door_clips
from facetrail.vision.engine import EngineConfig, FaceEngine

SHARED = Path(os.environ.get("FACETRAIL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
DOOR, CAMERA, WATCHLIST = "front", "entrance", "residents"
PREFIX, NAIVE_PREFIX = "facetrail/doors", "naive/doors"
GOAL_P95_S = 1.0
REASON_WIDTH = 60
MIN_LIVENESS_FRAMES = LivenessSettings().min_frames
NOISY_BACKGROUND = 0.05  # other processes' share of all CPUs above which timings are flagged
RESIDENT = "Resident"
RESIDENT_PHOTO = door_clips.OPEN_EYES
STRANGER_PHOTO = "faces/biden/biden.jpg"  # beside the resident (tailgating)
UNKNOWN_PHOTO = "faces/paul_rudd/1.jpg"  # nobody enrolled looks like him
PRINTED_PHOTO = "faces/obama/obama.jpg"
SCREEN_PHOTO = "conditions/spoof/rgb_fake.jpg"


# --------------------------------------------------------------------------- the broker and the controller


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


@contextmanager
def broker(folder: Path, fallback: str) -> Iterator[tuple[str, int, str]]:
    """(host, port, what it is): a private mosquitto on a free port, else the broker at ``fallback``."""
    process: subprocess.Popen[bytes] | None = None
    if os.path.exists(MOSQUITTO):
        port = free_port()
        config = folder / "mosquitto.conf"
        config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
        log = (folder / "mosquitto.log").open("ab")
        process = subprocess.Popen([MOSQUITTO, "-c", str(config)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while process.poll() is None and time.monotonic() < deadline and not listening("127.0.0.1", port):
            time.sleep(0.02)
        if process.poll() is None and listening("127.0.0.1", port):
            version = subprocess.run([MOSQUITTO, "-h"], capture_output=True, text=True).stdout.splitlines()
            label = version[0].strip() if version else "mosquitto"
            try:
                yield "127.0.0.1", port, f"private {label} on 127.0.0.1:{port}"
            finally:
                process.terminate()
                process.wait(timeout=10)
                log.close()
            return
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=10)
        log.close()
        print(f"  (private mosquitto did not start: {(folder / 'mosquitto.log').read_text().strip()})")
    host, port_text = fallback.rsplit(":", 1)
    if not listening(host, int(port_text)):
        sys.exit(f"no MQTT broker: {MOSQUITTO} is absent or failed, and nothing listens at {fallback}")
    yield host, int(port_text), f"the broker at {fallback} (not private: other traffic may share it)"


class Controller:
    """A door controller: subscribed to both contenders' command topics, noting when each command arrives."""

    def __init__(self, host: str, port: int) -> None:
        self.arrivals: list[tuple[str, float, dict[str, Any]]] = []  # (topic, monotonic, payload)
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-door-controller-{os.getpid()}")
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_args: self._subscribed.set()
        self.client.connect(host, port)
        self.client.subscribe([(f"{PREFIX}/+/command", 1), (f"{NAIVE_PREFIX}/+/command", 1)])
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("the controller could not subscribe to the door topics")

    def _on_message(self, _client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        arrived = time.monotonic()
        with self._lock:
            self.arrivals.append((message.topic, arrived, json.loads(message.payload)))

    def arrived(self, topic_prefix: str, reason: str) -> float | None:
        """When the first command with ``reason`` arrived under ``topic_prefix``."""
        with self._lock:
            return next((t for topic, t, body in self.arrivals
                         if topic.startswith(topic_prefix + "/") and body.get("reason") == reason), None)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# --------------------------------------------------------------------------- one approach, measured


@dataclass
class FrameCall:
    """One frame at the door: when it was captured and when the door service began and ended with it."""

    captured: float  # monotonic
    entered: float
    left: float


@dataclass
class NaiveOpen:
    """The naive rule opened the door for a track: when, on which score, and when the broker acknowledged."""

    track_uid: str
    identity_id: int
    score: float
    first_usable: float
    decided: float
    command_id: str
    future: Future[tuple[bool, float]] | None = None


@dataclass
class Decision:
    """One decision of one run: facetrail's row, its timing, and what the naive rule did with the same track."""

    track_uid: str
    outcome: str
    reason: str
    identity: str | None
    score: float | None
    liveness: str | None
    command: str | None
    first_usable: float | None = None
    decided: float | None = None
    command_done: float | None = None
    controller_got: float | None = None
    first_captured: float | None = None  # capture of the frame that set first_usable
    decided_captured: float | None = None  # capture of the frame the decision was made on
    naive: str = "deny"
    naive_reason: str = "no frame matched an allowed person above the threshold"
    naive_decided: float | None = None
    naive_command_done: float | None = None
    naive_controller_got: float | None = None
    naive_extra_opens: int = 0  # further opens for the same person (tracks the tracker later joined to this one)

    def since_first(self, moment: float | None) -> float | None:
        return None if moment is None or self.first_usable is None else moment - self.first_usable

    def naive_since_first(self, moment: float | None) -> float | None:
        """Like ``since_first``, from the naive rule's open where it came first (a match on a smaller face)."""
        if moment is None or self.first_usable is None:
            return None
        start = self.first_usable if self.naive_decided is None else min(self.first_usable, self.naive_decided)
        return moment - start


@dataclass
class Run:
    clip: str
    decisions: list[Decision]
    frames_analysed: int
    frames_dropped: int
    seconds: float
    background: float | None


class MergeWatcher(Consumer):
    """Notes every track the tracker joined to an older one (absorbed uid -> survivor uid), from the seam."""

    name = "merge watcher"

    def __init__(self, merged: dict[str, str]) -> None:
        self.merged = merged

    def on_frame(self, batch: FrameBatch) -> None:
        for merge in batch.merges:
            self.merged[merge.absorbed_uid] = merge.survivor_uid


class Probe:
    """Watches one pipeline's door without changing what it does.

    Wraps ``DoorService.frame`` (to note each frame's capture moment), the door decider's ``observe`` (to
    read each frame's shots as the door saw them, and to apply the naive rule to them, sending its command
    on a thread of its own so that the pipeline never waits for it) and the pipeline's track merge (when the
    tracker joins a new track to an older one of the same person, both are one approach, for both rules).
    """

    def __init__(self, pipeline: Pipeline, naive_sender: MqttDoorSender, pool: ThreadPoolExecutor) -> None:
        self.frames: list[FrameCall] = []
        self.opened: dict[str, NaiveOpen] = {}
        self.merged: dict[str, str] = {}  # absorbed track uid -> the uid of the track it joined
        self.service = pipeline.doors
        self.door = self.service.doors[DOOR]
        self.sender, self.pool = naive_sender, pool
        frame, observe = self.service.frame, self.door.decider.observe

        def watched_frame(camera: str, at: datetime, *args: Any, **kwargs: Any) -> None:
            entered = time.monotonic()
            captured = entered - (time.time() - at.timestamp())  # a live frame is stamped on arrival
            try:
                frame(camera, at, *args, **kwargs)
            finally:
                self.frames.append(FrameCall(captured, entered, time.monotonic()))

        def watched_observe(at: datetime, shots: list[Shot]) -> list[DoorDecision]:
            self.naive(shots)
            return observe(at, shots)

        self.service.frame = watched_frame  # type: ignore[method-assign]
        self.door.decider.observe = watched_observe  # type: ignore[method-assign]
        pipeline.consumers.append(MergeWatcher(self.merged))

    def root(self, uid: str) -> str:
        """The track ``uid`` was finally joined to (itself if none)."""
        seen = {uid}
        while uid in self.merged and self.merged[uid] not in seen:
            uid = self.merged[uid]
            seen.add(uid)
        return uid

    def approaches(self) -> dict[str, list[NaiveOpen]]:
        """The naive rule's opens per approach (root track uid), earliest first."""
        grouped: dict[str, list[NaiveOpen]] = {}
        for opened in sorted(self.opened.values(), key=lambda o: o.decided):
            grouped.setdefault(self.root(opened.track_uid), []).append(opened)
        return grouped

    def naive(self, shots: Sequence[Shot]) -> None:
        """Open for the first shot of a track that matches an allowed person above the door's threshold."""
        rule = self.door.decider.rule
        now = time.monotonic()
        for shot in shots:
            uid = self.door.uids.get(shot.track_id, "?")
            if uid in self.opened or not shot.embedded or shot.identity_id is None:
                continue
            if shot.identity_id in rule.allowed and shot.score >= rule.threshold:
                command = DoorCommand(DOOR, "open", reason=f"naive {uid}")
                opened = NaiveOpen(uid, shot.identity_id, shot.score,
                                   self.door.first_usable.get(shot.track_id, now), now, command.command_id)
                opened.future = self.pool.submit(self._send, command)
                self.opened[uid] = opened

    def _send(self, command: DoorCommand) -> tuple[bool, float]:
        result = self.sender.send(command)
        return result.delivered, time.monotonic()

    def captured_before(self, moment: float) -> float | None:
        """Capture moment of the frame the door service was handling at ``moment``."""
        return next((f.captured for f in self.frames if f.entered <= moment <= f.left), None)


def run_clip(name: str, clip: Path, store: Path, engine: FaceEngine, host: str, port: int,
             controller: Controller, naive_sender: MqttDoorSender, pool: ThreadPoolExecutor, fps: float) -> Run:
    """One pipeline over ``clip`` read in real time, until it ends; the decisions it made, timed."""
    config = door_config(store, clip, host, port, fps)
    before = last_decision_id(store, engine)
    pipeline = Pipeline(config, engine=engine, actor="bench")
    probe = Probe(pipeline, naive_sender, pool)
    meter = CpuMeter()
    meter.start()
    started = time.perf_counter()
    pipeline.run(until_done=True)  # stops by waiting for the door commands in flight
    seconds = time.perf_counter() - started
    background = meter.background_share()
    status = pipeline.status()[0]
    for opened in probe.opened.values():
        if opened.future is not None:
            opened.future.result()
    time.sleep(0.2)  # the controller's copy of the last command
    timings = list(pipeline.doors.timings)
    naive_opens = probe.approaches()
    decisions = []
    for row, name_of in decision_rows(store, engine, before):
        timing = match_timing(timings, row.outcome)
        decision = Decision(row.track_uid, row.outcome, row.reason, name_of, row.score, row.liveness, row.command)
        if timing is not None:
            decision.first_usable, decision.decided = timing.first_usable, timing.decided
            decision.command_done = timing.command_done
            decision.first_captured = probe.captured_before(timing.first_usable)
            decision.decided_captured = probe.captured_before(timing.decided)
        if row.outcome == "grant":
            decision.controller_got = controller.arrived(PREFIX, f"decision {row.id}")
        opens = naive_opens.pop(probe.root(row.track_uid), None)
        if opens:
            attach_naive(decision, opens, controller)
        decisions.append(decision)
    for uid, opens in naive_opens.items():  # approaches facetrail never logged (none expected)
        extra = Decision(uid, "none", "no decision logged", None, None, None, None, first_usable=opens[0].first_usable)
        attach_naive(extra, opens, controller)
        decisions.append(extra)
    return Run(name, decisions, status.frames_analysed, status.frames_dropped, seconds, background)


def door_config(store: Path, clip: Path, host: str, port: int, fps: float) -> FacetrailConfig:
    """The front door on camera 'entrance' (the clip read in real time), residents allowed, door defaults."""
    return parse_config(
        f"purpose: door benchmark\ndata_dir: {store}\n"
        f"mqtt:\n  enabled: false\n  host: {host}\n  port: {port}\n  client_id: bench-door\n"
        f"cameras:\n  {CAMERA}:\n    inputs:\n      - path: {clip}\n        realtime: true\n"
        f"    detect:\n      fps: {fps:g}\n"
        f"doors:\n  {DOOR}:\n    camera: {CAMERA}\n    allow: [{WATCHLIST}]\n", "bench-door.yml")


def attach_naive(decision: Decision, opens: list[NaiveOpen], controller: Controller) -> None:
    opened = opens[0]
    decision.naive = "grant"
    decision.naive_extra_opens = len(opens) - 1
    decision.naive_reason = f"first matching frame (score {opened.score:.2f})"
    decision.naive_decided = opened.decided
    if decision.first_usable is None:
        decision.first_usable = opened.first_usable
    if opened.future is not None:
        delivered, done = opened.future.result()
        decision.naive_command_done = done if delivered else None
    decision.naive_controller_got = controller.arrived(NAIVE_PREFIX, f"naive {opened.track_uid}")


def match_timing(timings: list[DoorTiming], outcome: str) -> DoorTiming | None:
    """The first not yet used timing with this outcome (a run's decisions and timings come in the same order)."""
    for k, timing in enumerate(timings):
        if timing.outcome == outcome:
            return timings.pop(k)
    return None


def last_decision_id(store: Path, engine: FaceEngine) -> int:
    gallery = Gallery(GallerySettings(store), engine=engine)
    try:
        with gallery.db.session() as session:
            return max(session.scalars(select(DoorDecisionRecord.id)).all(), default=0)
    finally:
        gallery.close()


def decision_rows(store: Path, engine: FaceEngine, after: int) -> list[tuple[DoorDecisionRecord, str | None]]:
    gallery = Gallery(GallerySettings(store), engine=engine)
    try:
        with gallery.db.session() as session:
            rows = session.execute(
                select(DoorDecisionRecord, Identity.display_name)
                .outerjoin(Identity, Identity.id == DoorDecisionRecord.identity_id)
                .where(DoorDecisionRecord.id > after).order_by(DoorDecisionRecord.id)).all()
            session.expunge_all()
        return [(row, name) for row, name in rows]
    finally:
        gallery.close()


# --------------------------------------------------------------------------- stores and clips


def store_with(folder: Path, engine: FaceEngine, name: str, photo: Path, *, consent: bool) -> Path:
    """A data folder with one person enrolled from ``photo`` on the residents' list (consented or not)."""
    gallery = Gallery(GallerySettings(folder), engine=engine)
    try:
        report = enrol_person(gallery, name, [photo], EnrolOptions(actor="bench", take_largest=True))
        if report.count(Outcome.ENROLLED) != 1:
            raise RuntimeError(f"could not enrol {name} from {photo}: {report.files}")
        create_watchlist(gallery, WATCHLIST, purpose="door benchmark", actor="bench")
        add_member(gallery, WATCHLIST, name, actor="bench")
        if consent:
            with gallery.db.session() as session:
                identity = session.scalar(select(Identity.id).where(Identity.display_name == name))
                assert identity is not None
                record_consent(session, identity, DOOR, method="benchmark", actor="bench")
    finally:
        gallery.close()
    return folder


@dataclass(frozen=True)
class Case:
    """A clip at the door, the gallery behind it, and what should happen to the person it is about."""

    name: str
    clip: Path
    store: Path
    expected: str  # outcome
    expected_reason: str  # how the reason starts ("" for a grant)
    note: str = ""


def build_cases(folder: Path, engine: FaceEngine) -> list[Case]:
    """The clips and their galleries; rgb_fake.jpg only when the shared data has it."""
    clips = folder / "clips"
    clips.mkdir()
    resident = door_clips.resident_clip(engine, SHARED, clips / "resident.mp4")
    stranger = door_clips.head_and_shoulders(engine, SHARED / STRANGER_PHOTO)
    residents = store_with(folder / "residents", engine, RESIDENT, SHARED / RESIDENT_PHOTO, consent=True)
    cases = [
        Case("resident", resident, residents, "grant", "", "enrolled, consented, blinks and turns her head"),
        Case("resident, no consent", resident,
             store_with(folder / "no-consent", engine, RESIDENT, SHARED / RESIDENT_PHOTO, consent=False),
             "deny", "recognised but not allowed", "enrolled on the list, no consent recorded"),
        Case("unknown person", door_clips.unknown_person_clip(engine, SHARED / UNKNOWN_PHOTO,
                                                              clips / "unknown.mp4"),
             residents, "deny", "not recognised", f"{UNKNOWN_PHOTO}; the resident is enrolled"),
        Case("printed photo", door_clips.printed_photo_clip(SHARED / PRINTED_PHOTO, clips / "printed.mp4"),
             store_with(folder / "printed", engine, "Photo owner", SHARED / PRINTED_PHOTO, consent=True),
             "deny", "liveness failed", f"{PRINTED_PHOTO} tilted as a plane; its owner enrolled and consented"),
        Case("resident + stranger", door_clips.resident_clip(engine, SHARED, clips / "two.mp4", stranger=stranger),
             residents, "deny", "tailgating", f"{STRANGER_PHOTO} beside her, not enrolled"),
    ]
    if (SHARED / SCREEN_PHOTO).is_file():
        cases.append(Case("rgb_fake.jpg on a screen",
                          door_clips.screen_photo_clip(engine, SHARED / SCREEN_PHOTO, clips / "screen.mp4"),
                          store_with(folder / "screen", engine, "Screen owner", SHARED / SCREEN_PHOTO,
                                     consent=True),
                          "deny", "liveness failed", f"{SCREEN_PHOTO} cut out and tilted as a plane; the face "
                                                     "on it enrolled (from that photo) and consented"))
    else:
        print(f"  ({SHARED / SCREEN_PHOTO} is absent: that clip is left out)")
    return cases


# --------------------------------------------------------------------------- statistics and printing


def stats(values: Sequence[float | None]) -> dict[str, float | int | None]:
    """p50, p95 (linear interpolation), max in seconds over the values present; n counts them."""
    present = [v for v in values if v is not None]
    if not present:
        return {"n": 0, "p50": None, "p95": None, "max": None}
    array = np.asarray(present, np.float64)
    return {"n": len(present), "p50": float(np.percentile(array, 50)), "p95": float(np.percentile(array, 95)),
            "max": float(array.max())}


def ms(value: float | int | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


def latency_line(label: str, values: Sequence[float | None], runs: int) -> dict[str, float | int | None]:
    found = stats(values)
    missing = f" ({runs - int(found['n'] or 0)} missing)" if (found["n"] or 0) < runs else ""
    print(f"  {label:<58s} {ms(found['p50']):>6s} {ms(found['p95']):>6s} {ms(found['max']):>6s}{missing}")
    return found


def main_decision(run: Run) -> Decision | None:
    """The decision about the person the clip is about: the one recognised as someone, else the first."""
    named = [d for d in run.decisions if d.identity is not None]
    return (named or run.decisions or [None])[0]


def verdict(case: Case, decision: Decision | None) -> bool:
    return (decision is not None and decision.outcome == case.expected
            and decision.reason.startswith(case.expected_reason))


def print_table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> None:
    widths = [max(len(r[k]) for r in [header, *rows]) for k in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def machine() -> dict[str, Any]:
    return {"cpu": cpu_model(), "logical_cpus": os.cpu_count(),
            "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "physical_cores": physical_cores(), "python": platform.python_version(),
            "onnxruntime": ort.__version__, "numpy": np.__version__}


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=10, help="approaches of the resident timed (default 10)")
    parser.add_argument("--quick", action="store_true", help="3 approaches instead of --repeat")
    parser.add_argument("--mqtt", default="127.0.0.1:1883",
                        help="broker to use when no private mosquitto can be started (host:port)")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    args = parser.parse_args()
    repeat = 3 if args.quick else args.repeat
    if repeat < 1:
        parser.error("--repeat must be at least 1")
    if not (SHARED / RESIDENT_PHOTO).is_file():
        sys.exit(f"the shared data folder {SHARED} (its real photos) is needed; set FACETRAIL_SHARED_DATA")
    fps = door_clips.FPS
    engine = FaceEngine(EngineConfig())
    info = machine()
    config_door = door_config(Path("unused"), Path("unused.mp4"), "127.0.0.1", 1883, fps).doors[DOOR]
    threshold = config_door.threshold if config_door.threshold is not None else engine.threshold
    liveness = config_door.liveness
    rule = (f"{config_door.consecutive} consecutive matching shots, threshold {threshold:.4f} (calibrated), "
            f"liveness: blink or depth over >= {liveness.min_frames} frames, face >= {config_door.min_face_px:g} px, "
            f"tailgating {config_door.tailgating}, command over MQTT QoS 1 (MQTT 5), deadline "
            f"{config_door.command.deadline_s:g} s")
    print("facetrail door access benchmark")
    print(f"machine   : {info['cpu']}, {info['logical_cpus']} logical CPUs ({info['usable_cpus']} usable, "
          f"{info['physical_cores']} physical cores), Python {info['python']}, onnxruntime {info['onnxruntime']}")
    print(f"door rule : {rule} (the defaults of a door with `allow: [{WATCHLIST}]`)")
    print(f"settings  : clips {door_clips.SIZE[0]}x{door_clips.SIZE[1]} at {fps:g} fps read in real time, "
          f"analysed at {fps:g} fps (a door camera has no motion gate); detector SCRFD-500M 640x640, recogniser "
          f"w600k_mbf, 2d106 landmarks; {repeat} timed approaches of the resident (a fresh pipeline each, after "
          "one untimed warm-up), one run of every other clip")
    print("peer      : naive rule 'open on the first frame whose face matches an allowed person above the "
          "threshold', on the same frames and matches, with its own real MQTT command")

    results: dict[str, Any] = {"machine": info, "settings": {
        "rule": rule, "fps": fps, "repetitions": repeat, "size": list(door_clips.SIZE), "threshold": threshold,
        "goal_p95_s": GOAL_P95_S}}
    with tempfile.TemporaryDirectory(prefix="facetrail-bench-door-") as tmp:
        folder = Path(tmp)
        with broker(folder, args.mqtt) as (host, port, label):
            print(f"broker    : {label}")
            results["settings"]["broker"] = label
            cases = build_cases(folder, engine)
            controller = Controller(host, port)
            naive_sender = MqttDoorSender(MqttDoorSettings(host=host, port=port, topic_prefix=NAIVE_PREFIX,
                                                           client_id=f"bench-door-naive-{os.getpid()}"))
            naive_sender.start()
            pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="naive-command")
            try:
                wait_for(lambda: naive_sender.connected, "the naive rule's MQTT connection")

                def play(case: Case) -> Run:
                    return run_clip(case.name, case.clip, case.store, engine, host, port, controller,
                                    naive_sender, pool, fps)

                resident = cases[0]
                steps_up = Case("resident blinking as she steps up", door_clips.resident_clip(
                    engine, SHARED, folder / "clips" / "steps-up.mp4", blink_at=0.2), resident.store, "grant", "")
                play(resident)  # warm-up: first inference of every session, file caches
                print(f"\n1a. latency: the resident blinks as she steps up ({repeat} runs, clip read in real time)")
                results["latency"] = report_latency([play(steps_up) for _ in range(repeat)], repeat,
                                                    "her eyes are open again 0.7 s in")
                print(f"\n1b. latency: the resident stands still until she has blinked, 1.3 s in ({repeat} runs)")
                runs = [play(resident) for _ in range(repeat)]
                results["latency_still"] = report_latency(runs, repeat, "her blink is over when her eyes reopen, "
                                                                        "1.3 s in")
                print("\n2. outcomes on the clips (facetrail, and the naive rule on the same frames)")
                outcome_runs = [runs[0], *(play(case) for case in cases[1:])]
                results["outcomes"] = report_outcomes(cases, outcome_runs, runs)
            finally:
                pool.shutdown(wait=True)
                naive_sender.stop()
                controller.close()
    results["summary"] = summary(results)
    final = results["summary"]
    print(f"\nsummary: p95 first usable face -> door command acknowledged {ms(final['p95_first_usable_to_command_s'])} "
          f"ms (goal < {GOAL_P95_S * 1000:.0f} ms: {'met' if final['goal_met'] else 'NOT met'}; "
          f"{ms(final['p95_still_until_blink_s'])} ms when she keeps still until she blinks), naive rule "
          f"{ms(final['p95_naive_first_usable_to_command_s'])} ms; facetrail outcomes as expected: "
          f"{'all' if final['outcomes_as_expected'] else 'NOT all'}; the naive rule opened for: "
          f"{', '.join(final['naive_wrong_opens']) or 'nobody it should not have'}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
        print(f"\nwrote {args.json}")


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.02)


def report_latency(runs: list[Run], repeat: int, evidence: str) -> dict[str, Any]:
    grants = [next((d for d in r.decisions if d.outcome == "grant"), None) for r in runs]
    mains = [main_decision(r) for r in runs]
    outcomes = Counter(d.outcome if d is not None else "none" for d in mains)
    print(f"  outcomes of the {repeat} runs: {dict(outcomes)}; frames analysed per run "
          f"{min(r.frames_analysed for r in runs)}-{max(r.frames_analysed for r in runs)}, dropped "
          f"{sum(r.frames_dropped for r in runs)} in all")
    others = Counter(f"{d.outcome} ({d.reason})" for r, main in zip(runs, mains, strict=True)
                     for d in r.decisions if d is not main)
    if others:
        print("  other decisions in these runs (further tracks of her face the tracker did not join): "
              + "; ".join(f"{what} x{n}" for what, n in others.most_common()))
    backgrounds = [r.background for r in runs if r.background is not None]
    if backgrounds and max(backgrounds) > NOISY_BACKGROUND:
        print(f"  note: other processes used up to {max(backgrounds):.0%} of the CPUs meanwhile: timings are noisy")
    print(f"  {'milliseconds':<58s} {'p50':>6s} {'p95':>6s} {'max':>6s}")
    print("  facetrail")
    got = [g for g in grants if g is not None]
    lines = {
        "facetrail_first_usable_to_decision": [g.since_first(g.decided) for g in got],
        "facetrail_first_usable_to_command_acked": [g.since_first(g.command_done) for g in got],
        "facetrail_first_usable_to_controller": [g.since_first(g.controller_got) for g in got],
        "facetrail_capture_to_command_acked": [None if g.first_captured is None or g.command_done is None
                                               else g.command_done - g.first_captured for g in got],
        "facetrail_evidence_wait": [
            None if g.decided_captured is None or g.first_captured is None else g.decided_captured - g.first_captured
            for g in got],
        "facetrail_decided_capture_to_command_acked": [
            None if g.decided_captured is None or g.command_done is None else g.command_done - g.decided_captured
            for g in got],
        "facetrail_decision_to_command_acked": [None if g.decided is None or g.command_done is None
                                                else g.command_done - g.decided for g in got],
    }
    labels = {
        "facetrail_first_usable_to_decision": "first usable face -> decision (grant)",
        "facetrail_first_usable_to_command_acked": "first usable face -> command acknowledged by broker",
        "facetrail_first_usable_to_controller": "first usable face -> command received by controller",
        "facetrail_capture_to_command_acked": "capture of the first usable frame -> command acknowledged",
        "facetrail_evidence_wait": "  of which: first usable frame -> deciding frame (captures)",
        "facetrail_decided_capture_to_command_acked": "  and: capture of the deciding frame -> command acked",
        "facetrail_decision_to_command_acked": "decision -> command acknowledged",
    }
    found: dict[str, Any] = {}
    for key, values in lines.items():
        found[key] = latency_line(labels[key], values, repeat) | {"samples_s": values}
    print("  naive rule (peer)")
    naive = [next((d for d in r.decisions if d.naive == "grant"), None) for r in runs]
    opened = [n for n in naive if n is not None]
    for key, label, values in (
            ("naive_first_usable_to_decision", "first usable face -> opens",
             [n.naive_since_first(n.naive_decided) for n in opened]),
            ("naive_first_usable_to_command_acked", "first usable face -> command acknowledged by broker",
             [n.naive_since_first(n.naive_command_done) for n in opened]),
            ("naive_first_usable_to_controller", "first usable face -> command received by controller",
             [n.naive_since_first(n.naive_controller_got) for n in opened])):
        found[key] = latency_line(label, values, repeat) | {"samples_s": values}
    p95 = found["facetrail_first_usable_to_command_acked"]["p95"]
    naive_p95 = found["naive_first_usable_to_command_acked"]["p95"]
    met = p95 is not None and p95 < GOAL_P95_S and len(got) == repeat
    print(f"  goal: p95 first usable face -> command acknowledged < {GOAL_P95_S * 1000:.0f} ms: "
          f"{'met' if met else 'NOT met'} ({ms(p95)} ms"
          + (f"; {repeat - len(got)} run(s) without a grant" if len(got) < repeat else "") + ")")
    if p95 is not None and naive_p95:
        print(f"  ratio facetrail / naive (p95 to command acknowledged): {p95 / naive_p95:.1f}x "
              "(the naive rule waits for no blink, no head movement and no second and third matching shot)")
    wait, work = found["facetrail_evidence_wait"]["p50"], found["facetrail_decided_capture_to_command_acked"]["p50"]
    if wait is not None and work is not None:
        print(f"  where facetrail's time goes (p50): {ms(wait)} ms waiting for the evidence the rule asks for "
              f"(3 matching shots and liveness over >= {MIN_LIVENESS_FRAMES} frames; in this clip {evidence}), "
              f"{ms(work)} ms from the deciding frame's capture to the "
              "acknowledged command")
    found["goal_met"] = met
    found["runs"] = [{"frames_analysed": r.frames_analysed, "frames_dropped": r.frames_dropped,
                      "seconds": r.seconds, "background_cpu": r.background,
                      "decisions": [asdict(d) for d in r.decisions]} for r in runs]
    return found


def report_outcomes(cases: list[Case], runs: list[Run], resident_runs: list[Run]) -> list[dict[str, Any]]:
    rows: list[tuple[str, ...]] = []
    out: list[dict[str, Any]] = []
    for case, run in zip(cases, runs, strict=True):
        main = main_decision(run)
        decisions: list[Decision | None] = list(run.decisions) or [None]
        for decision in decisions:
            is_main = decision is main
            who = case.name if is_main else "  (another track)"
            expected = f"{case.expected} ({case.expected_reason})" if case.expected_reason else case.expected
            if not is_main:
                expected = "deny"
            got = decision.outcome if decision else "none"
            ok = verdict(case, decision) if is_main else got == "deny"
            reason = decision.reason if decision else "no decision logged"
            if decision is not None and decision.liveness:
                reason += f" [liveness {decision.liveness}]"
            short = reason if len(reason) <= REASON_WIDTH else reason[:REASON_WIDTH - 3] + "..."
            naive = decision.naive if decision else "deny"
            rows.append((who, expected, f"{got}{'' if ok else ' (!)'}", short, naive))
            out.append({"clip": case.name, "note": case.note, "main": is_main, "expected": expected, "got": got,
                        "as_expected": ok, "reason": reason, "naive": naive,
                        "naive_reason": decision.naive_reason if decision else None,
                        "identity": decision.identity if decision else None})
    print_table(rows, ("clip", "expected", "facetrail", "reason (shortened; in full in --json)", "naive rule"))
    if not all(row["as_expected"] for row in out):
        print("  (!) differs from the expected outcome")
    for row in out:
        if len(row["reason"]) > REASON_WIDTH:
            print(f"  {row['clip']}{'' if row['main'] else ' (another track)'}: {row['reason']}")
    for case in cases:
        if case.note:
            print(f"  {case.name}: {case.note}")
    every = [d for r in [*resident_runs, *runs[1:]] for d in r.decisions]
    ours = Counter(d.outcome for d in every)
    theirs = Counter(d.naive for d in every)
    print(f"  all decisions ({len(resident_runs)} resident runs and the other clips): facetrail "
          f"{fmt_counts(ours)}; naive rule {fmt_counts(theirs)}")
    reasons = Counter(d.reason.split(":")[0] for d in every)
    print("  facetrail's reasons: " + "; ".join(f"{reason} x{n}" for reason, n in reasons.most_common()))
    extra = sum(d.naive_extra_opens for d in every)
    if extra:
        print(f"  the naive rule also sent {extra} further open command(s) for people it had already let in "
              "(new tracks of the same person, which the tracker joined to the first a moment later)")
    wrong_opens = [r["clip"] for r in out if r["naive"] == "grant" and not r["expected"].startswith("grant")]
    print(f"  the naive rule opened the door for: {', '.join(wrong_opens) or 'nobody it should not have'}")
    return out


def fmt_counts(counts: Counter[str]) -> str:
    return ", ".join(f"{key} {counts.get(key, 0)}" for key in ("grant", "deny", "no_decision"))


def summary(results: dict[str, Any]) -> dict[str, Any]:
    latency = results.get("latency", {})
    outcomes = results.get("outcomes", [])
    return {
        "p95_first_usable_to_command_s": latency.get("facetrail_first_usable_to_command_acked", {}).get("p95"),
        "p95_still_until_blink_s": results.get("latency_still", {}).get("facetrail_first_usable_to_command_acked",
                                                                          {}).get("p95"),
        "p95_naive_first_usable_to_command_s": latency.get("naive_first_usable_to_command_acked", {}).get("p95"),
        "goal_met": latency.get("goal_met"),
        "outcomes_as_expected": all(o["as_expected"] for o in outcomes),
        "naive_wrong_opens": [o["clip"] for o in outcomes if o["naive"] == "grant"
                              and not o["expected"].startswith("grant")],
    }


if __name__ == "__main__":
    main()

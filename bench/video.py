"""Video pipeline benchmark on real video: facetrail against a naive per-frame loop, cameras per machine, latency.

The clips: ``street.mp4`` from the shared data (1920x1080, 25 fps, 4.2 s, H.264
High with B-frames and one key frame: a dozen people walking towards a
camera) and a 640x360 cut of it re-encoded the way IP cameras encode
(``live_streams.make_cut``: 25 fps, a key frame every 50 frames, no B-frames).

1. Throughput and who is named. Each clip looped ``--loops`` times (packets
   copied), run through facetrail's pipeline (motion gate, tracking, best-shot
   embedding, one decision per track) and through a naive loop that runs
   InsightFace's FaceAnalysis (the same two ONNX files) on every frame sampled
   at the same 5 fps and matches every face against the same gallery;
   interleaved and repeated. Three people of the clip are enrolled from one
   close-up frame each, with eight people from ``faces/`` who are not in it
   (chances for a false name). A name is false when the face it is given is
   not where that person is at that moment of the clip (hand-annotated
   positions, ``TRUTH``) or the person is not in the clip at all.
2. Capacity: cameras at 5 analysed fps each, every camera a live MPEG-TS
   stream on loopback (``live_streams.LiveStreams``: the clip looped and paced
   in real time, a child process), motion gate off; counts tried in order
   until the first that fails (a camera under 90% of its 5 fps). CPU per
   camera split into decode (reader threads and FFmpeg's), detection,
   recognition and the rest; resident memory per added camera.
3. Latency from a frame's capture to its MQTT message (when a broker runs).

Run: ``.venv/bin/python bench/video.py`` (needs the bench extra: ``make bench``); ``--quick`` for a short run,
``--json PATH`` to keep every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import av
import cv2
import numpy as np
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from cpu_meter import CpuMeter
from face_engine import cpu_model, insightface_app
from facetrail.config.loader import parse_config
from facetrail.gallery.enrol import EnrolOptions, enrol_person
from facetrail.gallery.gallery import Gallery, GallerySettings
from facetrail.gallery.sync import load_vectors, template_ids
from facetrail.gallery.watchlists import add_member, create_watchlist
from facetrail.pipeline.batch import FrameBatch
from facetrail.pipeline.consumers import Consumer
from facetrail.pipeline.processes import ProcessRun, WorkerReport
from facetrail.pipeline.runner import Pipeline
from facetrail.pipeline.settings import engine_config
from facetrail.store.models import FaceTemplate, Identity
from facetrail.vision.engine import FaceEngine
from facetrail.vision.image import BGRImage
from live_streams import LiveStreams, loop_file, make_cut

SHARED = Path(os.environ.get("FACETRAIL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
STREET = SHARED / "video" / "street.mp4"
ANALYSIS_FPS = 5.0
GOAL_SPEEDUP = 5.0
GOAL_CAMERAS = {"640x360": 12, "1080p": 6}
KEEP_UP = 0.9  # a camera keeps up when it is analysed at least this share of its 5 fps
GOAL_P95_MS = 500.0
CLIP_FPS = 25.0
CLIP_S = 105 / CLIP_FPS  # street.mp4's length; a looped clip starts again every CLIP_S seconds
START = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

# Where three people of street.mp4 are (face centre, 1920x1080 pixels) at every 5th frame (the frames a 5 fps
# sampler takes), read off SCRFD's boxes and checked by eye; between two rows the position is interpolated.
TRUTH: dict[str, list[tuple[int, int, int]]] = {
    "Red-haired man": [(0, 706, 597), (5, 739, 619), (10, 763, 614), (15, 759, 632), (20, 720, 646),
                       (25, 681, 625), (30, 668, 636), (35, 662, 686), (40, 654, 673), (45, 634, 665),
                       (50, 603, 690), (55, 577, 667), (60, 566, 665), (65, 566, 689), (70, 560, 666),
                       (75, 542, 675), (80, 493, 681), (85, 487, 628), (90, 484, 640), (95, 480, 653),
                       (100, 426, 639), (104, 420, 640)],
    "Boy in blue hoodie": [(0, 946, 676), (5, 944, 677), (10, 967, 688), (15, 1003, 711), (20, 1019, 698),
                           (25, 1016, 740), (30, 1012, 733), (35, 1024, 747), (40, 1045, 766), (45, 1024, 743),
                           (50, 987, 762), (55, 961, 723), (60, 955, 739), (65, 951, 722), (70, 924, 710),
                           (75, 884, 729), (80, 853, 704), (85, 840, 748), (90, 829, 713), (95, 811, 723),
                           (100, 788, 733), (104, 780, 735)],
    "White-haired woman": [(5, 316, 668), (10, 321, 700), (15, 320, 699), (20, 315, 720), (25, 301, 714),
                           (30, 291, 708), (35, 278, 729), (40, 267, 711), (45, 259, 726), (50, 241, 717),
                           (55, 235, 701), (60, 238, 720), (65, 234, 702), (70, 235, 717), (75, 222, 710),
                           (80, 230, 697), (85, 241, 724), (90, 253, 711)],
}
ENROL_FRAME = {"Red-haired man": 100, "Boy in blue hoodie": 100, "White-haired woman": 90}
OTHERS = {"Biden": "biden/biden2.jpg", "Obama": "obama/obama.jpg", "Kit Harington": "kit_harington/john1.jpeg",
          "Angelina Jolie": "angelina_jolie/1.jpg", "Rose Leslie": "rose_leslie/img1.jpg",
          "Paul Rudd": "paul_rudd/1.jpg", "Kate Siegel": "kate_siegel/1.jpg",
          "Rob Lowe": "rob_lowe/Rob_Lowe_0001.jpg", "Shea Whigham": "shea_whigham/1.jpg"}
RADIUS = 0.055  # a named face this far (share of the frame width) from where the person is, is someone else
EDGE_S = 0.12  # outside the annotated span, the nearest row still counts this long


PIPELINE_DEFAULTS = "purpose: benchmark\ncameras:\n  cam:\n    inputs:\n      - path: clip.mp4\n"


def truth_at(name: str, t: float) -> tuple[float, float] | None:
    """Where ``name`` is (x, y as shares of the frame) ``t`` seconds into the clip, None when not in it."""
    rows = TRUTH.get(name)
    if rows is None:
        return None
    frame = (t % CLIP_S) * CLIP_FPS
    if frame < rows[0][0] - EDGE_S * CLIP_FPS or frame > rows[-1][0] + EDGE_S * CLIP_FPS:
        return None
    frames = [r[0] for r in rows]
    x = float(np.interp(frame, frames, [r[1] for r in rows]))
    y = float(np.interp(frame, frames, [r[2] for r in rows]))
    return x / 1920, y / 1080


def is_right(name: str, t: float, box: np.ndarray, width: int, height: int) -> bool:
    """True when the face in ``box`` (pixels of a width x height frame) at ``t`` is where ``name`` is."""
    where = truth_at(name, t)
    if where is None:
        return False
    cx, cy = (box[0] + box[2]) / 2 / width, (box[1] + box[3]) / 2 / height
    return bool(np.hypot(cx - where[0], (cy - where[1]) * height / width) <= RADIUS)


# --------------------------------------------------------------------------- data


@dataclass
class Naming:
    """Who a contender named, and how often wrongly."""

    named: dict[str, int] = field(default_factory=dict)  # name -> faces (frames x tracks) given it
    false: dict[str, int] = field(default_factory=dict)  # name -> faces given it wrongly
    tracks: dict[str, int] = field(default_factory=dict)  # facetrail: name -> tracks named so
    false_tracks: int = 0

    def add(self, name: str, right: bool) -> None:
        self.named[name] = self.named.get(name, 0) + 1
        if not right:
            self.false[name] = self.false.get(name, 0) + 1

    @property
    def false_names(self) -> int:
        return sum(self.false.values())


@dataclass
class Run:
    contender: str
    clip: str
    frames: int  # sampled frames handled
    analysed: int
    wall_s: float
    cpu_s: float
    faces_embedded: int
    naming: Naming
    others_share: float | None = None  # other processes' share of the machine's CPU meanwhile

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s else 0.0

    @property
    def cpu_ms_per_frame(self) -> float:
        return 1000 * self.cpu_s / self.frames if self.frames else 0.0


def street_crops(folder: Path) -> dict[str, Path]:
    """A close-up crop of each annotated person, from the frame named in ENROL_FRAME, as a PNG."""
    wanted = {index: [] for index in set(ENROL_FRAME.values())}  # type: dict[int, list[str]]
    for name, index in ENROL_FRAME.items():
        wanted[index].append(name)
    crops = {}
    with av.open(str(STREET)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            for name in wanted.get(index, []):
                image = frame.to_ndarray(format="bgr24")
                row = next(r for r in TRUTH[name] if r[0] == index)
                half = 130
                crop = image[row[2] - half:row[2] + half, row[1] - half:row[1] + half]
                crops[name] = folder / f"enrol-{index}-{row[1]}.png"
                cv2.imwrite(str(crops[name]), crop)
    return crops


def build_gallery(folder: Path, engine: FaceEngine, crops: dict[str, Path]) -> tuple[np.ndarray, list[str]]:
    """Enrol the clip's three people and the others into ``folder``; their templates for the naive loop."""
    gallery = Gallery(GallerySettings(folder), engine=engine)
    options = EnrolOptions(actor="bench", take_largest=True)
    for name, path in crops.items():
        enrol_person(gallery, name, [path], options)
    for name, relative in OTHERS.items():
        if (SHARED / "faces" / relative).exists():
            # Kate Siegel's photo scores 0.33 against Angelina Jolie's, which enrolment's duplicate check refuses;
            # they are two people, as an operator would confirm.
            report = enrol_person(gallery, name, [SHARED / "faces" / relative],
                                  EnrolOptions(actor="bench", take_largest=True, allow_duplicate_face=True))
            refused = [f"{f.outcome.value}: {f.detail}" for f in report.files if f.outcome.value != "enrolled"]
            if refused:
                print(f"  ({name} not enrolled: {'; '.join(refused)})")
    gallery.save_index()
    ids = template_ids(gallery.db, gallery.model_id)
    vectors = load_vectors(gallery.db, gallery.model_id, ids, gallery.dim)  # decrypted, as the gallery does
    with gallery.db.session() as session:
        owner = dict(session.query(FaceTemplate.id, Identity.display_name).join(Identity).all())
    gallery.close()
    names = [owner[int(i)] for i in ids]
    missing = set(crops) - set(names)
    if missing:
        raise SystemExit(f"enrolment failed for {sorted(missing)}")
    return vectors, names


# --------------------------------------------------------------------------- measuring


def _ticks() -> float:
    return float(os.sysconf("SC_CLK_TCK"))


def thread_cpu(tid: int) -> float:
    """CPU seconds (user + system) of thread ``tid`` of this process, 0 when it is gone."""
    try:
        fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _ticks()


def thread_ids() -> set[int]:
    return {int(t) for t in os.listdir("/proc/self/task")}


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class StageMeter:
    """CPU of the pipeline's detection and recognition calls: the caller's thread plus the compute pools.

    ``pool``: threads that existed before the pipeline and are not Python's (onnxruntime's and OpenCV's
    workers); while the pipeline thread is inside ``analyse`` or ``embed`` their CPU is that call's.
    """

    def __init__(self, pool: set[int]) -> None:
        self.pool = pool
        self.seconds = {"detection": 0.0, "recognition": 0.0}
        self.calls = {"detection": 0, "recognition": 0}
        self.lock = threading.Lock()

    def _now(self) -> float:
        return time.thread_time() + sum(thread_cpu(t) for t in self.pool)

    def wrap(self, stage: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = self._now()
            try:
                return method(*args, **kwargs)
            finally:
                with self.lock:
                    self.seconds[stage] += self._now() - started
                    self.calls[stage] += 1
        return timed

    def attach(self, pipeline: Pipeline) -> bool:
        """Wrap the pipeline's analyser; False when its shape is not the one this bench knows."""
        analyzer = getattr(pipeline, "analyzer", None)
        if analyzer is None or not hasattr(analyzer, "analyse") or not hasattr(analyzer, "embed"):
            return False
        analyzer.analyse = self.wrap("detection", analyzer.analyse)
        analyzer.embed = self.wrap("recognition", analyzer.embed)
        return True

    def snapshot(self) -> dict[str, float]:
        with self.lock:
            return dict(self.seconds)


class NameLog(Consumer):
    """Records every named track row: when, where, as whom (the clip's time from the frame's capture time)."""

    name = "bench-names"

    def __init__(self) -> None:
        self.rows: list[tuple[float, str, str, np.ndarray, int, int]] = []  # t, uid, name, box, width, height
        self.error: str | None = None  # the pipeline isolates a failing consumer; the bench says so

    def on_frame(self, batch: FrameBatch) -> None:
        try:
            self._record(batch)
        except Exception as error:
            self.error = self.error or f"{type(error).__name__}: {error}"
            raise

    def _record(self, batch: FrameBatch) -> None:
        height, width = batch.frame.image.shape[:2]
        t = (batch.captured_at - START).total_seconds()
        for row in batch.rows():
            verdict = batch.verdicts[row]
            if verdict.status == "named" and verdict.name:
                self.rows.append((t, batch.uids[row], verdict.name, np.array(batch.boxes[row]), width, height))

    def naming(self) -> Naming:
        naming = Naming()
        wrong_tracks: set[str] = set()
        tracks: dict[str, set[str]] = {}
        for t, uid, name, box, width, height in self.rows:
            right = is_right(name, t, box, width, height)
            naming.add(name, right)
            tracks.setdefault(name, set()).add(uid)
            if not right:
                wrong_tracks.add(uid)
        naming.tracks = {name: len(uids) for name, uids in tracks.items()}
        naming.false_tracks = len(wrong_tracks)
        return naming


def camera_yaml(name: str, path: str, motion: bool) -> str:
    gate = "" if motion else "    motion:\n      enabled: false\n"
    return f"  {name}:\n    inputs:\n      - path: {path}\n    detect:\n      fps: {ANALYSIS_FPS}\n{gate}"


def run_facetrail(clip: Path, label: str, store: Path, engine: FaceEngine) -> Run:
    config = parse_config(f"purpose: benchmark\ndata_dir: {store}\ncameras:\n" + camera_yaml("cam", str(clip), True))
    names = NameLog()
    pipeline = Pipeline(config, engine=engine, start_time=START, actor="bench", consumers=[names])
    others = CpuMeter()
    others.start()
    cpu, wall = time.process_time(), time.perf_counter()
    stats = pipeline.run(until_done=True)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    status = pipeline.status()
    analysed = sum(s.frames_analysed for s in status)
    handled = analysed + sum(s.frames_skipped_motion for s in status)
    if names.error:
        print(f"    (the bench's name log failed, names are incomplete: {names.error})")
    return Run("facetrail", label, handled, analysed, wall, cpu, stats.embedded, names.naming(),
               others.background_share())


def run_naive(clip: Path, label: str, app: Any, gallery: tuple[np.ndarray, list[str]], threshold: float) -> Run:
    """FaceAnalysis on every sampled frame, every face matched against the gallery."""
    vectors, names = gallery
    naming = Naming()
    embedded = frames = 0
    others = CpuMeter()
    others.start()
    cpu, wall = time.process_time(), time.perf_counter()
    with av.open(str(clip)) as container:  # decoding counts for both contenders
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # as facetrail reads files
        base, last = None, -1.0
        for frame in container.decode(stream):
            t = float(frame.time or 0.0)
            base = t if base is None else base
            t -= base
            if last >= 0 and t < last + 1 / ANALYSIS_FPS - 1e-6:
                continue
            last = t
            frames += 1
            image = frame.to_ndarray(format="bgr24")
            height, width = image.shape[:2]
            for face in app.get(image):
                embedded += 1
                scores = vectors @ face.normed_embedding.astype(np.float32)
                best = int(np.argmax(scores))
                if scores[best] >= threshold:
                    naming.add(names[best], is_right(names[best], t, face.bbox, width, height))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return Run("naive", label, frames, frames, wall, cpu, embedded, naming, others.background_share())


@dataclass
class Capacity:
    cameras: int
    slowest_fps: float
    mean_fps: float
    dropped_per_s: float
    cpu_cores: float  # process CPU seconds per second
    per_camera_ms: dict[str, float]  # CPU ms per analysed frame... per camera-second, by stage
    rss_mb: float
    connected: bool
    others_share: float | None  # other processes' share of the machine's CPU while measuring
    workers: int = 1  # processes the cameras ran in (their RSS summed)

    @property
    def cpu_ms_per_frame(self) -> float:
        """This process's CPU per analysed frame, all stages."""
        return self.per_camera_ms["total"] / self.mean_fps if self.mean_fps else float("nan")

    @property
    def keeps_up(self) -> bool:
        return self.connected and self.slowest_fps >= KEEP_UP * ANALYSIS_FPS


@contextmanager
def running(pipeline: Pipeline) -> Iterator[None]:
    stop = threading.Event()
    worker = threading.Thread(target=pipeline.run, kwargs={"stop": stop, "until_done": False}, name="bench-pipeline")
    worker.start()
    try:
        yield
    finally:
        stop.set()
        worker.join()


def measure_cameras(urls: list[str], store: Path, engine: FaceEngine, warmup_s: float, seconds: float) -> Capacity:
    """Every camera of ``urls`` at 5 fps (motion gate off) for ``seconds`` after a warm-up; CPU split, RSS."""
    cameras = "".join(camera_yaml(f"cam{i}", url, False) for i, url in enumerate(urls))
    config = parse_config(f"purpose: benchmark\ndata_dir: {store}\ncameras:\n{cameras}")
    python_tids = {t.native_id for t in threading.enumerate() if t.native_id is not None}
    pool = thread_ids() - python_tids
    pipeline = Pipeline(config, engine=engine, actor="bench")
    meter = StageMeter(pool)
    split = meter.attach(pipeline)
    with running(pipeline):
        deadline = time.monotonic() + 20.0
        connected = False
        while time.monotonic() < deadline:
            status = pipeline.status()
            if all(s.frames_analysed > 0 for s in status):
                connected = True
                break
            time.sleep(0.2)
        time.sleep(warmup_s)

        def readers() -> float:
            # Reader threads by name, and threads born since the pipeline started that are not Python's (FFmpeg's).
            named = {t.native_id for t in threading.enumerate() if t.name.startswith("camera-")}
            python_now = {t.native_id for t in threading.enumerate() if t.native_id is not None}
            codec = thread_ids() - pool - python_now
            return sum(thread_cpu(t) for t in named | codec if t is not None)

        meter_others = CpuMeter()
        meter_others.start()
        before = ({s.name: (s.frames_analysed, s.frames_dropped) for s in pipeline.status()}, time.process_time(),
                  readers(), meter.snapshot(), time.perf_counter())
        time.sleep(seconds)
        after = ({s.name: (s.frames_analysed, s.frames_dropped) for s in pipeline.status()}, time.process_time(),
                 readers(), meter.snapshot(), time.perf_counter())
        rss = rss_mb()
        others = meter_others.background_share()
    wall = after[4] - before[4]
    rates = [(after[0][n][0] - before[0][n][0]) / wall for n in after[0]]
    dropped = sum(after[0][n][1] - before[0][n][1] for n in after[0]) / wall
    total = after[1] - before[1]
    decode = after[2] - before[2]
    detection = after[3]["detection"] - before[3]["detection"] if split else float("nan")
    recognition = after[3]["recognition"] - before[3]["recognition"] if split else float("nan")
    rest = total - decode - (detection if split else 0.0) - (recognition if split else 0.0)
    per_camera = {stage: 1000 * value / wall / len(urls) for stage, value in
                  (("decode", decode), ("detection", detection), ("recognition", recognition), ("rest", rest),
                   ("total", total))}
    return Capacity(len(urls), min(rates), statistics.fmean(rates), dropped, total / wall, per_camera, rss, connected,
                    others)


def process_stat(pid: int) -> tuple[float, float]:
    """(CPU seconds, user + system, RSS MB) of process ``pid``; zeros once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    return (int(fields[11]) + int(fields[12])) / _ticks(), int(fields[21]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure_processes(urls: list[str], store: Path, processes: int, warmup_s: float, seconds: float) -> Capacity:
    """As :func:`measure_cameras`, the cameras split over ``processes`` worker processes (pipeline/processes.py).

    Rates come from the workers' own reports (counts and the time each was sent), CPU and RSS from /proc of
    each worker; the stage split is not measured (it would need hooks inside the workers): total CPU only.
    """
    cameras = "".join(camera_yaml(f"cam{i}", url, False) for i, url in enumerate(urls))
    config = parse_config(f"purpose: benchmark\ndata_dir: {store}\ncameras:\n{cameras}")
    run = ProcessRun(config, processes, actor="bench", notify=lambda _line: None)
    stop = threading.Event()
    worker = threading.Thread(target=run.run, kwargs={"stop": stop, "until_done": False}, name="bench-processes")
    worker.start()

    def reports() -> list[WorkerReport]:
        return [w.report for w in run.workers if w.report is not None]

    def sample() -> tuple[dict[str, tuple[int, int, float]], float, float]:
        """camera -> (analysed, dropped, sent_at); the workers' CPU seconds and RSS MB."""
        counts = {s.name: (s.frames_analysed, s.frames_dropped, r.sent_at) for r in reports() for s in r.statuses}
        stats = [process_stat(w.process.pid) for w in run.workers if w.process is not None and w.process.pid]
        return counts, sum(cpu for cpu, _ in stats), sum(rss for _, rss in stats)

    try:
        deadline = time.monotonic() + 60.0  # each worker loads its own engine first
        connected = False
        while time.monotonic() < deadline:
            counts = sample()[0]
            if len(counts) == len(urls) and all(analysed > 0 for analysed, _, _ in counts.values()):
                connected = True
                break
            time.sleep(0.2)
        time.sleep(warmup_s)
        meter_others = CpuMeter()
        meter_others.start()
        before, wall_before = sample(), time.perf_counter()
        time.sleep(seconds)
        after, wall_after = sample(), time.perf_counter()
        others = meter_others.background_share()
    finally:
        stop.set()
        worker.join()
    wall = wall_after - wall_before
    rates = [(after[0][n][0] - before[0][n][0]) / max(1e-3, after[0][n][2] - before[0][n][2])
             for n in after[0] if n in before[0]] or [0.0]
    dropped = sum(after[0][n][1] - before[0][n][1] for n in after[0] if n in before[0]) / wall
    total = after[1] - before[1]
    if others is not None:  # the meter counts the workers as other processes
        others = max(0.0, others - total / (wall * (os.cpu_count() or 1)))
    nan = float("nan")
    per_camera = {"decode": nan, "detection": nan, "recognition": nan, "rest": nan,
                  "total": 1000 * total / wall / len(urls)}
    return Capacity(len(urls), min(rates), statistics.fmean(rates), dropped, total / wall, per_camera, after[2],
                    connected and len(rates) == len(urls), others, len(run.workers))


def capacity(label: str, urls: list[str], template: Path, folder: Path, engine: FaceEngine, counts: list[int],
             warmup_s: float, seconds: float, processes: int = 1) -> tuple[list[Capacity], float]:
    """Counts in order until the first that fails; the RSS before the first count too."""
    results = []
    baseline = rss_mb()
    for count in counts:
        if count > len(urls):
            break
        store = folder / f"capacity-{label}-{count}"
        shutil.copytree(template, store)
        if processes > 1:
            result = measure_processes(urls[:count], store, processes, warmup_s, seconds)
        else:
            result = measure_cameras(urls[:count], store, engine, warmup_s, seconds)
        results.append(result)
        split = result.per_camera_ms
        rss = " (workers summed)" if processes > 1 else ""
        stages = (f" (decode {split['decode']:.0f}, detection {split['detection']:.0f}, recognition "
                  f"{split['recognition']:.0f}, rest {split['rest']:.0f})" if processes == 1 else
                  f" in {processes} worker processes")
        print(f"  {count:2d} camera(s): slowest {result.slowest_fps:.2f} fps, mean {result.mean_fps:.2f}, "
              f"dropped {result.dropped_per_s:.1f}/s; CPU {result.cpu_cores:.2f} cores = per camera "
              f"{split['total']:.0f} ms/s{stages}; RSS {result.rss_mb:.0f} MB{rss}; "
              f"other processes {_share(result.others_share)} of the machine"
              f"{'' if result.connected else ' (not every camera delivered a frame within 20 s)'}"
              f"{'' if result.keeps_up else '  <- falls behind'}", flush=True)
        if not result.keeps_up:
            break
    return results, baseline


def _share(share: float | None) -> str:
    return "?" if share is None else f"{100 * share:.0f}%"


def rss_per_added_camera(results: list[Capacity]) -> float | None:
    """MB of RSS per added camera: the least-squares slope over the counts run in as many processes as the last.

    None with fewer than two such counts: one count's RSS says nothing per camera, and a count run in fewer
    worker processes (one camera, two processes asked) would put a whole process's models in the slope. One 15 s
    window per count is noisy (glibc keeps freed frames until the pipeline trims its heap every 10 s);
    ``bench/camera_memory.py`` (a fresh process per count, medians) is the careful measurement.
    """
    if not results:
        return None
    same = [r for r in results if r.workers == results[-1].workers]
    if len({r.cameras for r in same}) < 2:
        return None
    return statistics.linear_regression([r.cameras for r in same], [r.rss_mb for r in same]).slope


def cpu_budget(results: list[Capacity]) -> float | None:
    """Cameras the machine's cores would carry at this process's measured CPU per analysed frame.

    From the largest count that kept up (shared costs spread over the most cameras; a count that fell behind
    spends CPU on frames it then drops), else the largest measured; an estimate for a machine nobody else uses,
    beside the measured count, which other processes' load lowers.
    """
    usable = [r for r in results if r.mean_fps > 0]
    if not usable:
        return None
    largest = max([r for r in usable if r.keeps_up] or usable, key=lambda r: r.cameras)
    return (os.cpu_count() or 1) * 1000 / (largest.cpu_ms_per_frame * ANALYSIS_FPS)


def latency(url: str, store: Path, engine: FaceEngine, host: str, port: int, seconds: float) -> list[float]:
    """Milliseconds from a frame's capture to its 'new' event arriving over MQTT (a live stream)."""
    arrived: list[float] = []
    lock = threading.Lock()

    def on_message(_c: Any, _u: Any, message: paho.MQTTMessage) -> None:
        payload = json.loads(message.payload)
        if payload.get("type") == "new":
            with lock:
                arrived.append((time.time() - payload["after"]["frame_time"]) * 1000)

    subscriber = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{os.getpid()}")
    subscriber.on_message = on_message
    subscriber.connect(host, port)
    subscriber.subscribe("bench/events", qos=1)
    subscriber.loop_start()
    try:
        config = parse_config(
            f"purpose: benchmark\ndata_dir: {store}\nmqtt:\n  enabled: true\n  host: {host}\n  port: {port}\n"
            f"  topic_prefix: bench\n  client_id: bench-pipeline\n"
            f"cameras:\n" + camera_yaml("cam", url, True))
        with running(Pipeline(config, engine=engine, actor="bench")):
            time.sleep(seconds)
        time.sleep(1.0)
    finally:
        subscriber.loop_stop()
        subscriber.disconnect()
    return arrived


# --------------------------------------------------------------------------- report


def naming_line(naming: Naming) -> str:
    named = ", ".join(f"{name} {count}" + (f" ({naming.false[name]} false)" if name in naming.false else "")
                      for name, count in sorted(naming.named.items()))
    return named or "nobody"


def throughput(clips: list[tuple[str, Path]], folder: Path, template: Path, engine: FaceEngine, app: Any,
               gallery: tuple[np.ndarray, list[str]], repeats: int) -> list[Run]:
    runs = []
    for label, clip in clips:
        print(f"  {label}: {clip.name}", flush=True)
        for repeat in range(repeats):
            order = ("facetrail", "naive") if repeat % 2 == 0 else ("naive", "facetrail")
            for contender in order:
                if contender == "facetrail":
                    store = folder / f"run-{label}-{repeat}"
                    shutil.copytree(template, store)
                    run = run_facetrail(clip, label, store, engine)
                else:
                    run = run_naive(clip, label, app, gallery, engine.threshold)
                runs.append(run)
                tracks = (f"; tracks named {sum(run.naming.tracks.values())}, {run.naming.false_tracks} false"
                          if contender == "facetrail" else "")
                print(f"    {contender:9s} #{repeat + 1}: {run.frames} frames ({run.analysed} analysed) in "
                      f"{run.wall_s:.2f} s wall = {run.fps:.1f} fps, CPU {run.cpu_s:.2f} s = "
                      f"{run.cpu_ms_per_frame:.0f} ms/frame; {run.faces_embedded} faces embedded; named faces: "
                      f"{naming_line(run.naming)}{tracks}; other processes {_share(run.others_share)}", flush=True)
    return runs


def summarise(runs: list[Run], label: str) -> dict[str, Any]:
    ours = [r for r in runs if r.clip == label and r.contender == "facetrail"]
    naive = [r for r in runs if r.clip == label and r.contender == "naive"]
    fps = statistics.median(r.fps for r in ours) / statistics.median(r.fps for r in naive)
    cpu = statistics.median(r.cpu_ms_per_frame for r in naive) / statistics.median(r.cpu_ms_per_frame for r in ours)
    people = set(TRUTH)
    return {"speedup_fps": fps, "speedup_cpu": cpu,
            "facetrail_fps": statistics.median(r.fps for r in ours),
            "naive_fps": statistics.median(r.fps for r in naive),
            "facetrail_cpu_ms_per_frame": statistics.median(r.cpu_ms_per_frame for r in ours),
            "naive_cpu_ms_per_frame": statistics.median(r.cpu_ms_per_frame for r in naive),
            "facetrail_named": sorted(people & set(ours[-1].naming.named)),
            "naive_named": sorted(people & set(naive[-1].naming.named)),
            "facetrail_false_names": max(r.naming.false_names for r in ours),
            "facetrail_false_tracks": max(r.naming.false_tracks for r in ours),
            "naive_false_names": max(r.naming.false_names for r in naive)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loops", type=int, default=3, help="passes of the 4.2 s clip per throughput run")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved runs per contender and clip")
    parser.add_argument("--warmup", type=float, default=3.0, help="capacity: seconds before measuring")
    parser.add_argument("--capacity-seconds", type=float, default=8.0, help="capacity: seconds measured per count")
    parser.add_argument("--cameras-640", default="1,2,3,4,6,8,10,12,14,16", help="640x360 camera counts to try")
    parser.add_argument("--cameras-1080", default="1,2,3,4,5,6,8", help="1080p camera counts to try")
    parser.add_argument("--mqtt", default="127.0.0.1:1883", help="broker for the latency test (host:port)")
    parser.add_argument("--latency-seconds", type=float, default=20.0, help="0 skips the latency test")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: throughput,capacity,latency")
    parser.add_argument("--quick", action="store_true",
                        help="about 1.5 minutes: 1 loop, 1 repeat, 5 s per count, counts 1,2,4,8 and 1,2,3,4,6, "
                             "no latency")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--processes", type=int, default=1,
                        help="capacity: split each count's cameras over N worker processes (facetrail run "
                             "--processes); 1: the one-process pipeline, with its CPU split by stage")
    args = parser.parse_args()
    if args.quick:
        args.loops, args.repeats, args.capacity_seconds, args.warmup = 1, 1, 5.0, 2.0
        args.cameras_640, args.cameras_1080, args.latency_seconds = "1,2,4,8", "1,2,3,4,6", 0.0
    skip = set(filter(None, args.skip.split(",")))
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"insightface\.")
    if not STREET.exists():
        raise SystemExit(f"{STREET} is missing (set FACETRAIL_SHARED_DATA to the shared data folder)")

    # The engine the pipeline builds for itself (pipeline/settings.py): one onnxruntime thread per session.
    engine = FaceEngine(engine_config(parse_config(PIPELINE_DEFAULTS)))
    figures: dict[str, Any] = {
        "machine": {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "python": platform.python_version(),
                    "pyav": av.__version__, "ffmpeg": ".".join(map(str, av.ffmpeg_version_info))
                    if hasattr(av, "ffmpeg_version_info") else None},
        "settings": {"analysis_fps": ANALYSIS_FPS, "loops": args.loops, "repeats": args.repeats,
                     "warmup_s": args.warmup, "capacity_seconds": args.capacity_seconds,
                     "keep_up_share": KEEP_UP, "threshold": engine.threshold},
        "processes": args.processes,
        "date": datetime.now(UTC).isoformat(timespec="seconds")}
    print("facetrail video pipeline benchmark (real video: street.mp4)")
    print(f"machine   : {cpu_model()}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}, "
          f"PyAV {av.__version__}; load average {os.getloadavg()[0]:.2f} at start")
    print(f"settings  : analysis {ANALYSIS_FPS:g} fps for both; facetrail's default engine and pipeline "
          f"(pipeline.settings.engine_config: {engine.config.threads} onnxruntime thread per session); "
          "naive = InsightFace FaceAnalysis det_size 640x640 on the same SCRFD-500M and "
          f"w600k_mbf files, every face matched at facetrail's threshold {engine.threshold:.4f}")
    with tempfile.TemporaryDirectory(prefix="facetrail-bench-video-") as tmp:
        folder = Path(tmp)
        cut = make_cut(STREET, folder / "street-640x360.mp4", 640, 360)
        print("clips     : 1080p = street.mp4 as is (H.264 High, B-frames, one key frame); 640x360 = street.mp4 "
              "scaled (area) and re-encoded by libx264 veryfast CRF 23, 25 fps, GOP 50, no B-frames, no scene-cut "
              "key frames")
        template = folder / "gallery"
        crops = street_crops(folder)
        gallery = build_gallery(template, engine, crops)
        print(f"gallery   : {', '.join(sorted(TRUTH))} (each enrolled from one close-up crop of street.mp4, frames "
              f"{sorted(set(ENROL_FRAME.values()))}) and {len(set(gallery[1]) - set(TRUTH))} people not in the clip "
              f"({', '.join(sorted(set(gallery[1]) - set(TRUTH)))}; not enrolled: "
              f"{', '.join(sorted(set(OTHERS) - set(gallery[1]))) or 'none'})")

        if "throughput" not in skip:
            print(f"\n1. throughput, each clip looped {args.loops}x (packets copied), facetrail vs naive loop, "
                  f"interleaved, {args.repeats} repeat(s); fps = sampled frames handled per wall second "
                  f"(facetrail: analysed or skipped by its motion gate); named faces = face-frames given a name")
            clips = [("1080p", loop_file(STREET, folder / "street-1080p-looped.mp4", args.loops)),
                     ("640x360", loop_file(cut, folder / "street-640x360-looped.mp4", args.loops))]
            (folder / "models").mkdir()
            app = insightface_app(folder / "models", 640, 0)
            for _, clip in clips:  # first calls at a new size build onnxruntime's plans: not timed, for both
                with av.open(str(clip)) as container:
                    sample = cast(BGRImage, next(container.decode(video=0)).to_ndarray(format="bgr24"))
                app.get(sample)
                engine.analyze(sample)
            runs = throughput(clips, folder, template, engine, app, gallery, args.repeats)
            figures["throughput"] = {"runs": [{**asdict(r), "fps": r.fps, "cpu_ms_per_frame": r.cpu_ms_per_frame}
                                              for r in runs]}
            for label, _ in clips:
                summary = summarise(runs, label)
                figures["throughput"][label] = summary
                print(f"  {label}: facetrail {summary['facetrail_fps']:.1f} fps vs naive {summary['naive_fps']:.1f} "
                      f"= {summary['speedup_fps']:.1f}x (goal >= {GOAL_SPEEDUP:g}x); CPU per frame "
                      f"{summary['facetrail_cpu_ms_per_frame']:.0f} vs {summary['naive_cpu_ms_per_frame']:.0f} ms = "
                      f"{summary['speedup_cpu']:.1f}x; clip's people named: facetrail {summary['facetrail_named']}, "
                      f"naive {summary['naive_named']}; false names: facetrail "
                      f"{summary['facetrail_false_names']} ({summary['facetrail_false_tracks']} tracks), naive "
                      f"{summary['naive_false_names']}")

        counts = {"640x360": [int(c) for c in args.cameras_640.split(",")],
                  "1080p": [int(c) for c in args.cameras_1080.split(",")]}
        if "capacity" not in skip:
            print(f"\n2. capacity: cameras at {ANALYSIS_FPS:g} analysed fps each, every camera a live MPEG-TS stream "
                  f"on loopback (the clip looped, paced in real time, served by a child process), motion gate off; "
                  f"{args.warmup:g} s warm-up, {args.capacity_seconds:g} s measured per count; a count fails when a "
                  f"camera is under {KEEP_UP * ANALYSIS_FPS:.1f} fps. CPU per camera in ms per second: decode = "
                  f"reader threads + FFmpeg's threads, detection / recognition = the pipeline's analyse / embed "
                  f"calls (caller + onnxruntime/OpenCV pools), rest = the process's other CPU")
            files = {"640x360": cut, "1080p": STREET}
            figures["capacity"] = {}
            for label, path in files.items():
                with LiveStreams([path], max(counts[label])) as streams:
                    print(f"  {label}:", flush=True)
                    results, baseline = capacity(label, streams.urls[0], template, folder, engine, counts[label],
                                                 args.warmup, args.capacity_seconds, args.processes)
                sustained = max((r.cameras for r in results if r.keeps_up), default=0)
                per_camera_mb = rss_per_added_camera(results)
                figures["capacity"][label] = {"counts": [{**asdict(r), "keeps_up": r.keeps_up} for r in results],
                                              "rss_before_mb": baseline, "rss_per_added_camera_mb": per_camera_mb}
                figures[f"sustained_cameras_{label}"] = sustained
                budget = cpu_budget(results)
                figures["capacity"][label]["cpu_budget_cameras"] = budget
                memory = ("not measured (it needs two camera counts run in as many processes)"
                          if per_camera_mb is None else f"{per_camera_mb:.1f} MB")
                print(f"  {label}: sustained {sustained} camera(s) (goal >= {GOAL_CAMERAS[label]}); RSS per added "
                      f"camera {memory} (goal <= 30; bench/camera_memory.py measures it with care); CPU-budget "
                      f"estimate {'?' if budget is None else f'{budget:.1f}'} camera(s) ({os.cpu_count()} cores / this "
                      f"process's CPU per camera at {ANALYSIS_FPS:g} fps, as if nothing else ran)", flush=True)

        if "latency" not in skip and args.latency_seconds > 0:
            print(f"\n3. latency, frame captured -> MQTT 'new' event received (640x360 live stream, "
                  f"{args.latency_seconds:g} s)")
            host, port = args.mqtt.rsplit(":", 1)
            store = folder / "latency"
            shutil.copytree(template, store)
            watched = Gallery(GallerySettings(store), engine=engine)  # the clip's people raise watchlist hits
            create_watchlist(watched, "bench", purpose="benchmark", actor="bench")
            for name in TRUTH:
                add_member(watched, "bench", name, actor="bench")
            watched.close()
            try:
                with LiveStreams([cut], 1) as streams:
                    samples = latency(streams.urls[0][0], store, engine, host, int(port), args.latency_seconds)
            except OSError as error:
                samples = []
                print(f"  skipped: no MQTT broker at {args.mqtt} ({error})")
            if not samples:
                print("  no 'new' event arrived")
            else:
                p50, p95 = statistics.median(samples), float(np.percentile(samples, 95))
                figures["latency_ms"] = {"events": len(samples), "p50": p50, "p95": p95}
                print(f"  {len(samples)} 'new' events (watchlist hits of the clip's three people): p50 {p50:.0f} ms, "
                      f"p95 {p95:.0f} ms (goal p95 <= {GOAL_P95_MS:g} ms)")

    print("\nsummary:")
    for label in ("1080p", "640x360"):
        if label in figures.get("throughput", {}):
            s = figures["throughput"][label]
            print(f"  {label}: {s['speedup_fps']:.1f}x the naive loop's fps ({s['speedup_cpu']:.1f}x less CPU per "
                  f"frame; goal >= {GOAL_SPEEDUP:g}x), false names {s['facetrail_false_names']} vs "
                  f"{s['naive_false_names']}")
        if f"sustained_cameras_{label}" in figures:
            print(f"  {label}: {figures[f'sustained_cameras_{label}']} camera(s) at {ANALYSIS_FPS:g} fps "
                  f"(goal >= {GOAL_CAMERAS[label]})")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1, default=str) + "\n")
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()

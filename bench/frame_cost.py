"""Where a video frame's CPU goes in facetrail's pipeline, before and after a settings change.

Real frames (``street.mp4`` at 1080p and resized to 640x360, sampled at 5 fps,
decoded once before timing) go through the pipeline's own per-frame path: the
``FrameAnalyzer`` (detector pre-processing and network, low-light check and
enhancement, the rolled-face re-check), ``CameraTracking.observe`` (camera
motion, tracker, alignment and quality of the faces a track needs), the
embedder, and ``CameraTracking.complete`` (decisions against an empty gallery).
Each stage's CPU time (``time.process_time``: this process, onnxruntime's
threads included; nothing else runs in it) and wall time are summed
exclusively: a stage called inside another counts only for itself, except the
detector runs of the rolled-face re-check, which count for the re-check.

Two settings run frame by frame interleaved (the order alternating), each with
its own trackers, over ``--repeat`` passes: "before" is the letterbox
(``detector.video_canvas: square``), "after" the current defaults. The detector's
pre-processing is also timed against the previous implementation (the strided
RGB view), which must give the identical blob.

This is a diagnostic: it wraps the engine's private functions, so it follows
their implementation. Decoding is not included (see bench/video.py).

``--still`` adds a still camera's clip (made by ``facetrail.synth``: real
people walking in, sensor noise), where camera motion is estimated only every
few frames once the camera is found still.

Run: ``.venv/bin/python bench/frame_cost.py [--repeat 3] [--clip PATH ...] [--still]``
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import onnxruntime as ort
from sqlalchemy import select

import facetrail.pipeline.analyzer as analyzer_module
import facetrail.vision.engine as engine_module
from facetrail.config.loader import parse_config
from facetrail.gallery.enrol import EnrolOptions, Outcome, enrol_person
from facetrail.gallery.gallery import Gallery, GallerySettings
from facetrail.gallery.watchlists import add_member, create_watchlist
from facetrail.pipeline import settings as cfg
from facetrail.pipeline.analyzer import FrameAnalyzer
from facetrail.pipeline.runner import Pipeline, PipelineStats
from facetrail.pipeline.tracking import CameraTracking
from facetrail.store.models import Identity, Sighting
from facetrail.synth.door_clips import head_and_shoulders
from facetrail.synth.scenes import Appearance, composite_scene
from facetrail.synth.writer import write_clip
from facetrail.track.camera_motion import CameraMotion
from facetrail.track.tracker import FaceTracker
from facetrail.video.frames import Frame
from facetrail.video.picture import FramePicture
from facetrail.video.sources import open_source
from facetrail.vision import detector as detector_module
from facetrail.vision import upright as upright_module
from facetrail.vision.engine import EngineConfig, FaceEngine
from facetrail.vision.lowlight import LowLightConfig
from facetrail.vision.samples import sample_image

SHARED = Path(os.environ.get("FACETRAIL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
STREET = SHARED / "video" / "street.mp4"
FPS = 5.0
PREPARE = detector_module.ScrfdDetector._prepare  # the implementation, before any wrapping
STAGES = ("detector network", "detector pre-processing", "detector decoding", "low-light check",
          "low-light enhancement", "upright re-check", "camera motion", "tracking", "alignment + quality",
          "embedding", "other")


@dataclass
class _Open:
    name: str
    child_cpu: float = 0.0
    child_wall: float = 0.0


@dataclass
class Meter:
    """Exclusive CPU and wall seconds per stage (a nested stage's time is taken out of its caller's)."""

    cpu: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    wall: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    stack: list[_Open] = field(default_factory=list)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if name.startswith("detector") and any(o.name == "upright re-check" for o in self.stack):
            yield  # the re-check's own detector runs count for the re-check
            return
        self.stack.append(_Open(name))
        cpu0, wall0 = time.process_time(), time.perf_counter()
        try:
            yield
        finally:
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            done = self.stack.pop()
            self.cpu[name] += cpu - done.child_cpu
            self.wall[name] += wall - done.child_wall
            self.counts[name] += 1
            if self.stack:
                self.stack[-1].child_cpu += cpu
                self.stack[-1].child_wall += wall


METER: list[Meter] = [Meter()]  # the meter the wrapped functions charge (switched per setting)


def _timed(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with METER[0].stage(name):
            return function(*args, **kwargs)
    return wrapper


def _counted(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        METER[0].counts[name] += 1
        return function(*args, **kwargs)
    return wrapper


def instrument(engines: list[FaceEngine]) -> None:
    """Wrap the stages of the per-frame path with the current meter."""
    for engine in engines:
        session = engine.detector._session
        session.run = _timed("detector network", session.run)  # type: ignore[method-assign]
        embed_session = getattr(engine.embedder, "_session", None)
        if embed_session is not None:
            embed_session.run = _timed("embedding", embed_session.run)  # type: ignore[method-assign]
    scrfd = detector_module.ScrfdDetector
    scrfd._prepare = _timed("detector pre-processing", scrfd._prepare)  # type: ignore[method-assign]
    scrfd._decode = _timed("detector decoding", scrfd._decode)  # type: ignore[method-assign]
    engine_module.region_to_enhance = _timed("low-light check", engine_module.region_to_enhance)
    engine_module.dark_faces_region = _timed("low-light check", engine_module.dark_faces_region)
    engine_module.enhance = _timed("low-light enhancement", engine_module.enhance)
    engine_module.verify_upright = _timed("upright re-check", engine_module.verify_upright)
    upright_module._second_look = _counted("rolled faces re-checked", upright_module._second_look)
    upright_module._look = _counted("re-check detector runs", upright_module._look)
    analyzer_module.align_faces_of = _timed("alignment + quality", analyzer_module.align_faces_of)
    CameraMotion.estimate = _timed("camera motion", CameraMotion.estimate)  # type: ignore[method-assign]
    CameraTracking.observe = _timed("tracking", CameraTracking.observe)  # type: ignore[method-assign]
    CameraTracking.complete = _timed("tracking", CameraTracking.complete)  # type: ignore[method-assign]
    FrameAnalyzer.embed = _timed("embedding", FrameAnalyzer.embed)  # type: ignore[method-assign]


@dataclass
class Setting:
    """One way of running the pipeline: its engine, analyzer and a fresh tracking per pass."""

    label: str
    yaml: str
    pipeline: Pipeline
    meter: Meter = field(default_factory=Meter)
    frames: int = 0
    faces: int = 0
    tracks: int = 0
    total_cpu: float = 0.0
    total_wall: float = 0.0


def make_setting(label: str, detector_yaml: str, data_dir: Path) -> Setting:
    text = (f"purpose: frame cost bench\ndata_dir: {data_dir}\n{detector_yaml}"
            "cameras:\n  bench:\n    inputs:\n      - path: bench.mp4\n    detect:\n      fps: 5\n")
    config = parse_config(text, "bench.yml")
    engine = FaceEngine(cfg.engine_config(config))
    return Setting(label, detector_yaml.strip().replace("\n", " ") or "(defaults)",
                   Pipeline(config, engine=engine, actor="bench"))


def fresh_tracking(setting: Setting) -> CameraTracking:
    """A new tracker for the bench camera, built as the pipeline builds it."""
    config, old = setting.pipeline.config, setting.pipeline.cameras[0].tracking
    recognition = config.camera_recognition("bench")
    tracker = FaceTracker(cfg.tracker_settings(config), cfg.best_shot_settings(config, recognition))
    return CameraTracking("bench", tracker, old.matcher, old.rule, run_id="bench", model_id=old.model_id,
                          embedding_size=old.embedding_size)


def one_frame(setting: Setting, tracking: CameraTracking, frame: Frame, light: LowLightConfig) -> None:
    METER[0] = setting.meter
    cpu0, wall0 = time.process_time(), time.perf_counter()
    with setting.meter.stage("other"):
        analyser = setting.pipeline.analyzer
        analysed = analyser.analyse([frame.image], [light])[0]
        requests = tracking.observe(frame, analysed)
        vectors = analyser.embed([(r.frame, r.face) for r in requests])
        setting.meter.counts["faces embedded"] += len(requests)
        setting.meter.counts["frames enhanced"] += int(analysed.enhanced)
        tracking.complete(requests, vectors)
    setting.total_cpu += time.process_time() - cpu0
    setting.total_wall += time.perf_counter() - wall0
    setting.frames += 1
    setting.faces += len(analysed)


def decode(path: Path, size: tuple[int, int] | None) -> list[np.ndarray]:
    width, height = size if size else (None, None)
    source = open_source(str(path), fps=FPS, width=width, height=height)
    try:
        return [picture.image for picture in source]
    finally:
        source.close()


def as_frames(images: list[np.ndarray]) -> list[Frame]:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return [Frame("bench", FramePicture(image), i, i / FPS, start + timedelta(seconds=i / FPS), time.monotonic())
            for i, image in enumerate(images)]


def old_prepare(image: np.ndarray, resized: tuple[int, int], out: np.ndarray) -> np.ndarray:
    """The detector's pre-processing before this change (a strided RGB view into the blob)."""
    new_w, new_h = resized
    out.fill(detector_module.PAD_VALUE)
    rgb = cv2.resize(image, resized)[..., ::-1].transpose(2, 0, 1)
    region = out[:, :new_h, :new_w]
    np.subtract(rgb, detector_module.MEAN, out=region, casting="unsafe")
    region *= detector_module.SCALE
    return out


def prepare_rows(images: list[np.ndarray], engine: FaceEngine, repeat: int) -> list[str]:
    """Old and new pre-processing of the same frames on both canvases, interleaved; blobs must be identical."""
    rows = []
    for label, detector in (("square", engine.detector), ("fit", engine.detector.with_input_size(640))):
        h, w = images[0].shape[:2]
        box = detector._letterbox_geometry(w, h)
        out_old = np.empty((3, box.canvas[1], box.canvas[0]), np.float32)
        out_new = np.empty_like(out_old)
        times = {"old": [0.0, 0.0], "new": [0.0, 0.0]}
        for rep in range(repeat):
            for image in images:
                for name in (("old", "new") if rep % 2 == 0 else ("new", "old")):
                    cpu0, wall0 = time.process_time(), time.perf_counter()
                    if name == "old":
                        old_prepare(image, box.resized, out_old)
                    else:
                        PREPARE(detector, image, box, out_new)
                    times[name][0] += time.process_time() - cpu0
                    times[name][1] += time.perf_counter() - wall0
                if not np.array_equal(out_old, out_new):
                    raise SystemExit("the new pre-processing differs from the old one")
        n = repeat * len(images)
        rows.append(f"  {label:6s} canvas {box.canvas[0]}x{box.canvas[1]}: old {times['old'][0] / n * 1e3:.2f} ms CPU "
                    f"({times['old'][1] / n * 1e3:.2f} wall), new {times['new'][0] / n * 1e3:.2f} ms CPU "
                    f"({times['new'][1] / n * 1e3:.2f} wall), blobs identical")
    return rows


def report(settings: list[Setting]) -> None:
    header = f"  {'stage':24s}" + "".join(f"{s.label:>26s}" for s in settings)
    print(header)
    print(f"  {'':24s}" + "".join(f"{'CPU ms (wall) share':>26s}" for _ in settings))
    for stage in STAGES:
        cells = []
        for s in settings:
            cpu, wall = s.meter.cpu.get(stage, 0.0) / s.frames, s.meter.wall.get(stage, 0.0) / s.frames
            cells.append(f"{cpu * 1e3:8.2f} ({wall * 1e3:6.2f}) {cpu / (s.total_cpu / s.frames):5.0%}")
        print(f"  {stage:24s}" + "".join(f"{c:>26s}" for c in cells))
    print(f"  {'total per frame':24s}" + "".join(
        f"{s.total_cpu / s.frames * 1e3:8.2f} ({s.total_wall / s.frames * 1e3:6.2f})      " for s in settings))
    print(f"  {'faces per frame':24s}" + "".join(f"{s.faces / s.frames:>26.2f}" for s in settings))
    for counter in ("confirmed tracks", "faces embedded", "frames enhanced", "rolled faces re-checked",
                    "re-check detector runs"):
        print(f"  {counter + ' (all frames)':24s}" + "".join(f"{s.meter.counts.get(counter, 0):>26d}"
                                                               for s in settings))
    base = settings[0]
    for s in settings[1:]:
        print(f"  {s.label} vs {base.label}: CPU per frame {base.total_cpu / s.total_cpu:.2f}x less, "
              f"wall {base.total_wall / s.total_wall:.2f}x less")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="passes over each clip (default 3)")
    parser.add_argument("--clip", action="append", type=Path, help="more clips (default: street.mp4 only)")
    parser.add_argument("--still", action="store_true",
                        help="also a still camera (most CCTV): 10 s of two real people walking in, 960x540, made by "
                             "facetrail.synth, where camera motion is estimated only now and then")
    parser.add_argument("--names", action="store_true",
                        help="also run the real pipeline on street.mp4 (1080p, 640x360), the demo clip and a door "
                             "clip on both canvases and print who is named")
    parser.add_argument("--names-only", action="store_true", help="only the --names comparison")
    args = parser.parse_args()
    if not STREET.exists():
        raise SystemExit(f"{STREET} is absent (set FACETRAIL_SHARED_DATA)")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, onnxruntime {ort.__version__}, OpenCV {cv2.__version__}")
    print(f"sampling {FPS:g} fps, {args.repeat} passes, frames decoded before timing; CPU = process_time")
    clips: list[tuple[str, Path, tuple[int, int] | None]] = [("street.mp4 1920x1080", STREET, None),
                                                             ("street.mp4 640x360", STREET, (640, 360))]
    clips += [(str(path), path, None) for path in args.clip or []]
    held = tempfile.TemporaryDirectory()
    if args.still:
        clips.append(("still camera 960x540 (synth, yaoming.jpg + biden.jpg)", still_clip(Path(held.name)), None))
    if args.names or args.names_only:
        with tempfile.TemporaryDirectory() as tmp:
            names_section({"square": FaceEngine(EngineConfig(video_canvas="square")),
                           "fit": FaceEngine(EngineConfig(video_canvas="fit"))}, Path(tmp))
        if args.names_only:
            return
    with tempfile.TemporaryDirectory() as tmp:
        before = make_setting("before (square)", "detector:\n  video_canvas: square\n", Path(tmp) / "a")
        after = make_setting("after (defaults)", "", Path(tmp) / "b")
        print(f"settings: before = {before.yaml}; after = {after.yaml} "
              f"(video canvas {after.pipeline.engine.config.video_canvas})")
        instrument([before.pipeline.engine, after.pipeline.engine])
        light = LowLightConfig()
        for name, path, size in clips:
            images = decode(path, size)
            frames = as_frames(images)
            settings = [make_setting_copy(before), make_setting_copy(after)]
            print(f"\n{name}: {len(frames)} frames of {images[0].shape[1]}x{images[0].shape[0]}")
            for s in settings:  # warm-up: the first runs of a new canvas allocate
                one_frame(s, fresh_tracking(s), frames[0], light)
                s.meter, s.frames, s.faces, s.total_cpu, s.total_wall = Meter(), 0, 0, 0.0, 0.0
            for rep in range(args.repeat):
                trackings = [fresh_tracking(s) for s in settings]
                for i, frame in enumerate(frames):
                    order = [0, 1] if (i + rep) % 2 == 0 else [1, 0]
                    for k in order:
                        one_frame(settings[k], trackings[k], frame, light)
                for s, tracking in zip(settings, trackings, strict=True):
                    s.meter.counts["confirmed tracks"] += tracking.counts.tracks
            report(settings)
            print("  detector pre-processing alone, old vs new implementation:")
            for row in prepare_rows(images, after.pipeline.engine, max(1, args.repeat)):
                print(row)
        for s in (before, after):
            s.pipeline.gallery.close()
    held.cleanup()


def still_clip(folder: Path) -> Path:
    """A still camera's 10 s clip of two real people walking in (sensor noise), as the pipeline tests make."""
    engine = FaceEngine(EngineConfig())
    people = [head_and_shoulders(engine, sample_image("yaoming.jpg")),
              head_and_shoulders(engine, SHARED / "faces" / "biden" / "biden.jpg")]
    walks = [Appearance(people[1], 0.0, 9.5, (0.7, 0.52), (0.72, 0.55), 0.495, 0.55),
             Appearance(people[0], 3.0, 9.0, (0.3, 0.52), (0.32, 0.55), 0.495, 0.55)]
    path = folder / "still.mp4"
    write_clip(path, composite_scene(walks, duration_s=10.0, fps=10.0, noise=2.0), fps=10.0)
    return path


def make_setting_copy(setting: Setting) -> Setting:
    return Setting(setting.label, setting.yaml, setting.pipeline)


@dataclass
class NamedRun:
    """What one pipeline run over a clip found and named."""

    stats: PipelineStats
    sightings: int
    named: list[tuple[str, float, float, int]]  # (name, first seen s, last seen s, frames)


def named_run(clip: Path, detect: str, people: list[tuple[str, Path]], engine: FaceEngine, folder: Path) -> NamedRun:
    """The real pipeline over ``clip`` with ``people`` enrolled (on a watchlist), from a fresh store."""
    gallery = Gallery(GallerySettings(folder), engine=engine)
    try:
        create_watchlist(gallery, "bench", purpose="bench", actor="bench")
        for name, photo in people:
            report = enrol_person(gallery, name, [photo], EnrolOptions(actor="bench", take_largest=True))
            if report.count(Outcome.ENROLLED) != 1:
                raise SystemExit(f"could not enrol {name} from {photo}: {report.files}")
            add_member(gallery, "bench", name, actor="bench")
    finally:
        gallery.close()
    text = (f"purpose: frame cost bench\ndata_dir: {folder}\ncameras:\n  cam:\n    inputs:\n      - path: {clip}\n"
            f"    detect:\n      fps: 5\n{detect}")
    pipeline = Pipeline(parse_config(text, "bench.yml"), engine=engine, actor="bench")
    stats = pipeline.run(until_done=True)
    gallery = Gallery(GallerySettings(folder))
    try:
        with gallery.db.session() as session:
            rows = list(session.scalars(select(Sighting).order_by(Sighting.first_seen, Sighting.id)))
            names = dict(session.execute(select(Identity.id, Identity.display_name)).all())  # type: ignore[arg-type]
        start = min((r.first_seen for r in rows), default=None)
        named = [(names[r.identity_id], (r.first_seen - start).total_seconds(), (r.last_seen - start).total_seconds(),
                  r.frames) for r in rows if r.identity_id is not None and start is not None]
        return NamedRun(stats, len(rows), named)
    finally:
        gallery.db.dispose()


def names_section(engines: dict[str, FaceEngine], tmp: Path) -> None:
    """Each clip through the real pipeline on both canvases: the people named, tracks, faces."""
    from facetrail.synth.door_clips import RESIDENT_PHOTOS, head_and_shoulders, resident_clip
    from facetrail.synth.scenes import demo_clip
    from facetrail.vision.samples import sample_image

    any_engine = next(iter(engines.values()))
    walker = tmp / "walker.png"
    cv2.imwrite(str(walker), clearest_frame(any_engine))
    demo = demo_clip(tmp / "demo.mp4").path
    door = resident_clip(any_engine, SHARED, tmp / "door.mp4",
                         stranger=head_and_shoulders(any_engine, SHARED / "faces" / "biden" / "biden.jpg"))
    clips = [("street.mp4 1920x1080", STREET, "", [("Walker", walker)]),
             ("street.mp4 640x360", STREET, "      width: 640\n      height: 360\n", [("Walker", walker)]),
             ("demo clip 640x360 (pan, dark stretch)", demo, "", [("Yao Ming", sample_image("yaoming.jpg"))]),
             ("door clip 1280x720 (resident + stranger)", door, "",
              [("Resident", SHARED / RESIDENT_PHOTOS[0]), ("Biden", SHARED / "faces" / "biden" / "biden2.jpg")])]
    print("\nthe same people named? the real pipeline (5 fps, people enrolled on a watchlist), per video canvas")
    for k, (name, clip, detect, people) in enumerate(clips):
        print(f"{name}:")
        for label, engine in engines.items():
            run = named_run(clip, detect, people, engine, tmp / f"run{k}-{label}")
            named = ", ".join(f"{n} {a:.1f}-{b:.1f} s ({f} frames)" for n, a, b, f in run.named) or "nobody"
            print(f"  {label:7s} frames {run.stats.frames}, faces {run.stats.faces}, tracks {run.stats.tracks}, "
                  f"embedded {run.stats.embedded}, sightings {run.sightings}; named: {named}")


def clearest_frame(engine: FaceEngine) -> np.ndarray:
    """The street.mp4 frame (every 10th) whose best face has the highest quality: the enrolment photo."""
    with av.open(str(STREET)) as container:
        frames = [f.to_ndarray(format="bgr24") for i, f in enumerate(container.decode(video=0)) if i % 10 == 0]
    return max(frames, key=lambda image: max((q.score for q in engine.analyze(image).qualities), default=0.0))


if __name__ == "__main__":
    main()

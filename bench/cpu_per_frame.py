"""CPU per analysed video frame outside the networks: the shared grey copy and one OpenCV thread, before and after.

Real frames (``street.mp4`` at 1080p and resized to 640x360, sampled at
5 fps, decoded once before timing) go through what the pipeline does per
frame from the reader's motion gate on: the gate, the ``FrameAnalyzer``
(detection), ``CameraTracking.observe`` (camera motion, tracker, alignment),
the embedder and ``CameraTracking.complete``. Four contenders take turns, a
whole pass over the clip each (the order rotating; not frame by frame, since
OpenCV's thread pool is the process's and its threads, still spinning after
one contender's frame, would be charged to the next), each pass with a fresh
gate and tracker, over ``--repeat`` rounds:

- ``before``: the motion gate and the camera-motion estimate each make their
  own small grey copy of the frame (the gate shrinks the colour frame), the
  detector's pre-processing and the grey copy allocate their full-size
  intermediates per frame (``previous_prepare``, ``previous_small_grey``
  below: the code before this change), and OpenCV's default thread pool (one
  thread per core);
- ``shared grey``: one small grey copy per frame (``small_grey``), made for
  the gate and carried with the ``Frame`` to the camera-motion estimate, and
  the intermediates in buffers each thread reuses (today's code);
- ``+ 1 OpenCV thread``: the same, with OpenCV on one thread, as the pipeline
  now sets it (``pipeline.settings.use_pipeline_threads``);
- ``+ no profiles``: the same, with today's best-shot rule: a shot of quality
  0 (a face turned past the pose limits) is never embedded as a weak shot.
  The first three contenders use the previous rule (``previous_weak_eligible``
  below), under which it was.

CPU is ``time.process_time`` (this process, every thread: onnxruntime's and
OpenCV's pools included; nothing else runs in it), beside wall time. Each
contender's faces, confirmed tracks and embedded shots are printed: they must
agree. Decoding is not included (bench/decode.py).

Run: ``.venv/bin/python bench/cpu_per_frame.py [--repeat 5]``
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnxruntime as ort

import facetrail.video.frames as frames_module
from facetrail.config.loader import parse_config
from facetrail.pipeline import settings as cfg
from facetrail.pipeline.runner import Pipeline
from facetrail.pipeline.tracking import CameraTracking
from facetrail.track.bestshot import BestShots, Shot
from facetrail.track.camera_motion import CameraMotion
from facetrail.track.tracker import FaceTracker
from facetrail.video.frames import Frame
from facetrail.video.motion import MotionGate
from facetrail.video.picture import FramePicture
from facetrail.video.sources import open_source
from facetrail.vision import detector as detector_module
from facetrail.vision.image import BGRImage, GreyImage, small_grey

SHARED = Path(os.environ.get("FACETRAIL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
STREET = SHARED / "video" / "street.mp4"
FPS = 5.0
START = datetime(2026, 1, 1, tzinfo=UTC)
STAGES = ("grey copy + gate", "detection", "camera motion", "tracking + alignment", "embedding", "decisions")
DEFAULT_OPENCV_THREADS = cv2.getNumThreads()


@dataclass
class Contender:
    """One way of running the per-frame path, and what it cost and found."""

    label: str
    shared_grey: bool
    opencv_threads: int
    profiles_embedded: bool = True
    cpu: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    wall: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    frames: int = 0
    faces: int = 0
    embedded: int = 0
    tracks: int = 0
    passed: int = 0


class _Clock:
    """Charges the CPU and wall time since the last mark to a stage of a contender."""

    def __init__(self, contender: Contender) -> None:
        self.contender = contender
        self.cpu, self.wall = time.process_time(), time.perf_counter()

    def mark(self, stage: str) -> None:
        cpu, wall = time.process_time(), time.perf_counter()
        self.contender.cpu[stage] += cpu - self.cpu
        self.contender.wall[stage] += wall - self.wall
        self.cpu, self.wall = cpu, wall


def fresh_tracking(pipeline: Pipeline) -> CameraTracking:
    """A new tracker for the bench camera, built as the pipeline builds it."""
    config, old = pipeline.config, pipeline.cameras[0].tracking
    recognition = config.camera_recognition("bench")
    tracker = FaceTracker(cfg.tracker_settings(config), cfg.best_shot_settings(config, recognition))
    return CameraTracking("bench", tracker, old.matcher, old.rule, run_id="bench", model_id=old.model_id,
                          embedding_size=old.embedding_size)


def one_frame(contender: Contender, pipeline: Pipeline, gate: MotionGate, tracking: CameraTracking,
              index: int, image: np.ndarray) -> None:
    """The reader's gate and the pipeline's per-frame path for one picture, timed per stage."""
    cv2.setNumThreads(contender.opencv_threads)
    new = contender.shared_grey
    frames_module.small_grey = small_grey if new else previous_small_grey  # type: ignore[assignment]
    detector_module.ScrfdDetector._prepare = PREPARE if new else previous_prepare  # type: ignore[method-assign]
    BestShots.weak_eligible = (previous_weak_eligible if contender.profiles_embedded  # type: ignore[method-assign]
                               else WEAK_ELIGIBLE)
    pts = index / FPS
    clock = _Clock(contender)
    grey = small_grey(image) if contender.shared_grey else None
    picture = FramePicture(image)
    decision = gate.check(picture, pts, grey)
    frame = Frame("bench", picture, index, pts, START + timedelta(seconds=pts), time.monotonic(),
                  motion=decision == "motion", made_grey=grey)
    clock.mark("grey copy + gate")
    contender.passed += decision != "skip"
    analysed = pipeline.analyzer.analyse([frame.image], [pipeline.cameras[0].low_light])[0]
    clock.mark("detection")
    motion_cpu, motion_wall = MOTION[0], MOTION[1]
    requests = tracking.observe(frame, analysed)
    clock.mark("tracking + alignment")
    # camera motion is part of observe: moved to its own row
    for row, total in (("cpu", MOTION[0] - motion_cpu), ("wall", MOTION[1] - motion_wall)):
        getattr(contender, row)["camera motion"] += total
        getattr(contender, row)["tracking + alignment"] -= total
    vectors = pipeline.analyzer.embed([request.source for request in requests])
    clock.mark("embedding")
    tracking.complete(requests, vectors)
    clock.mark("decisions")
    contender.frames += 1
    contender.faces += len(analysed)
    contender.embedded += len(requests)


WEAK_ELIGIBLE = BestShots.weak_eligible
PREPARE = detector_module.ScrfdDetector._prepare


def previous_small_grey(image: BGRImage, width: int = 320) -> GreyImage:
    """The grey copy as camera motion made it before: a new full-size grey picture per frame."""
    height, full = image.shape[:2]
    scale = min(1.0, width / full)
    size = (max(1, round(full * scale)), max(1, round(height * scale)))
    return np.asarray(cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), size, interpolation=cv2.INTER_AREA),
                      np.uint8)


def previous_prepare(self: detector_module.ScrfdDetector, image: BGRImage, box: Any, out: Any = None) -> Any:
    """The detector's pre-processing before: a new resized picture and new planes per frame."""
    new_w, new_h = box.resized
    blob = out if out is not None else np.empty((3, box.canvas[1], box.canvas[0]), np.float32)
    blob[:, new_h:, :].fill(detector_module.PAD_VALUE)
    blob[:, :new_h, new_w:].fill(detector_module.PAD_VALUE)
    same = (image.shape[1], image.shape[0]) == box.resized
    planes = cv2.split(image if same else cv2.resize(image, box.resized))
    for channel, plane in zip(blob, reversed(planes), strict=True):
        region = channel[:new_h, :new_w]
        np.multiply(plane, np.float32(detector_module.SCALE), out=region, casting="unsafe")
        region -= np.float32(detector_module.MEAN * detector_module.SCALE)
    return blob


def previous_weak_eligible(self: BestShots, shot: Shot) -> bool:
    """The best-shot rule before this change: any shot under the gate and over the floor, quality 0 included."""
    return (self.settings.weak_embeddings > 0 and not self.eligible(shot)
            and shot.area >= self.settings.weak_min_area)


MOTION = [0.0, 0.0]  # CPU and wall seconds spent in CameraMotion.estimate so far
_ESTIMATE = CameraMotion.estimate


def _timed_estimate(self: CameraMotion, *args: object, **kwargs: object) -> np.ndarray | None:
    cpu, wall = time.process_time(), time.perf_counter()
    try:
        return _ESTIMATE(self, *args, **kwargs)  # type: ignore[arg-type]
    finally:
        MOTION[0] += time.process_time() - cpu
        MOTION[1] += time.perf_counter() - wall


def decode(size: tuple[int, int] | None) -> list[np.ndarray]:
    width, height = size if size else (None, None)
    source = open_source(str(STREET), fps=FPS, width=width, height=height)
    try:
        return [picture.image for picture in source]
    finally:
        source.close()


def report(contenders: list[Contender]) -> None:
    print(f"  {'stage':22s}" + "".join(f"{c.label:>22s}" for c in contenders))
    print(f"  {'':22s}" + "".join(f"{'CPU ms (wall)':>22s}" for _ in contenders))
    for stage in (*STAGES, "total"):
        cells = []
        for c in contenders:
            cpu = (sum(c.cpu.values()) if stage == "total" else c.cpu.get(stage, 0.0)) / c.frames
            wall = (sum(c.wall.values()) if stage == "total" else c.wall.get(stage, 0.0)) / c.frames
            cells.append(f"{cpu * 1e3:8.2f} ({wall * 1e3:7.2f})")
        print(f"  {stage:22s}" + "".join(f"{cell:>22s}" for cell in cells))
    for label, value in (("frames past the gate", lambda c: c.passed), ("faces", lambda c: c.faces),
                         ("confirmed tracks", lambda c: c.tracks), ("shots embedded", lambda c: c.embedded)):
        print(f"  {label:22s}" + "".join(f"{value(c):>22d}" for c in contenders))
    base = contenders[0]
    for c in contenders[1:]:
        print(f"  {c.label} vs {base.label}: CPU per frame {sum(base.cpu.values()) / sum(c.cpu.values()):.2f}x "
              f"less, wall {sum(base.wall.values()) / sum(c.wall.values()):.2f}x less")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="passes over each clip (default 5)")
    args = parser.parse_args()
    if not STREET.exists():
        raise SystemExit(f"{STREET} is absent (set FACETRAIL_SHARED_DATA)")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, onnxruntime {ort.__version__}, OpenCV {cv2.__version__} "
          f"(default threads {DEFAULT_OPENCV_THREADS}), load average {os.getloadavg()[0]:.2f}")
    print(f"street.mp4 sampled at {FPS:g} fps, {args.repeat} passes, contenders interleaved pass by pass; "
          "CPU = process_time, the pipeline's engine (one onnxruntime thread per session)")
    CameraMotion.estimate = _timed_estimate  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as tmp:
        text = (f"purpose: cpu per frame bench\ndata_dir: {tmp}\n"
                "cameras:\n  bench:\n    inputs:\n      - path: bench.mp4\n    detect:\n      fps: 5\n")
        pipeline = Pipeline(parse_config(text, "bench.yml"), actor="bench")
        try:
            for name, size in (("street.mp4 1920x1080", None), ("street.mp4 640x360", (640, 360))):
                images = decode(size)
                contenders = [Contender("before", False, DEFAULT_OPENCV_THREADS),
                              Contender("shared, reused", True, DEFAULT_OPENCV_THREADS),
                              Contender("+ 1 OpenCV thread", True, 1),
                              Contender("+ no profiles", True, 1, profiles_embedded=False)]
                print(f"\n{name}: {len(images)} frames")
                for c in contenders:  # warm-up: a new canvas allocates on its first runs
                    one_frame(Contender("warm-up", c.shared_grey, c.opencv_threads), pipeline,
                              MotionGate(), fresh_tracking(pipeline), 0, images[0])
                for rep in range(args.repeat):
                    # whole passes in turn, not frame by frame: OpenCV's pool is the process's, and its threads
                    # still spinning after one contender's frame would be charged to the next contender
                    for k in range(len(contenders)):
                        c = contenders[(k + rep) % len(contenders)]
                        gate, tracking = MotionGate(), fresh_tracking(pipeline)
                        for i, image in enumerate(images):
                            one_frame(c, pipeline, gate, tracking, i, image)
                        c.tracks += tracking.counts.tracks
                report(contenders)
        finally:
            pipeline.gallery.close()
            cv2.setNumThreads(DEFAULT_OPENCV_THREADS)
            frames_module.small_grey = small_grey  # type: ignore[assignment]
            detector_module.ScrfdDetector._prepare = PREPARE  # type: ignore[method-assign]
            BestShots.weak_eligible = WEAK_ELIGIBLE  # type: ignore[method-assign]


if __name__ == "__main__":
    main()

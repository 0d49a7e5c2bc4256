"""Graceful overload: when analysis cannot keep up, every camera gets its fair share of fresh frames.

Real clips (real faces pasted by facetrail.synth), real cameras read in real
time, the real pipeline with its real models, real SQLite, real HTTP. The
analysis step is slowed on purpose so the machine is overloaded whatever its
speed; every assertion counts frames, none measures time.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from api_kit import make_keys, serving
from facetrail.api.app import PREFIX, ApiSettings, create_app
from facetrail.cli.overload import OverloadNotice
from facetrail.config.loader import parse_config
from facetrail.gallery.gallery import Gallery, GallerySettings
from facetrail.pipeline.batch import FrameBatch
from facetrail.pipeline.consumers import Consumer
from facetrail.pipeline.runner import Pipeline
from facetrail.store.models import CameraState
from facetrail.video.camera import LIVE_QUEUE, Camera, CameraSettings, CameraStatus, DetectSettings, VideoInput
from facetrail.video.motion import MotionSettings
from facetrail.vision.engine import FaceEngine
from facetrail.vision.samples import sample_image
from facetrail.web.app import install_dashboard
from pipeline_kit import head_and_shoulders, make_clip, walk_in
from services import wait_until

pytestmark = pytest.mark.models

LIVE = ("north", "south", "east", "west")
CLIP_FPS = 10  # pipeline_kit's clips; the cameras ask for every frame, so each is overloaded on its own


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory, video_engine: FaceEngine) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("overload")
    yao = head_and_shoulders(video_engine, sample_image("yaoming.jpg"))
    return {"live": make_clip(folder / "street.mp4", [walk_in(yao, 0.0, 6.0, 0.4)], 6.0),
            "recording": make_clip(folder / "recording.mp4", [walk_in(yao, 0.0, 2.0, 0.6)], 2.0)}


@pytest.fixture
def stuck_source() -> Iterator[str]:
    """A TCP port that accepts connections (the kernel's backlog) and never sends a byte: a hung camera."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"tcp://127.0.0.1:{listener.getsockname()[1]}"


def overload_config(data: Path, clips: dict[str, Path], stuck: str) -> Any:
    """Four live cameras looping the clip in real time, a recording read as fast as it goes, a hung stream."""
    lines = ["purpose: overload test", f"data_dir: {data}", "cameras:"]
    for name in LIVE:
        lines += [f"  {name}:", "    inputs:", f"      - path: {clips['live']}", "        realtime: true",
                  "        loop: true", "    detect:", f"      fps: {CLIP_FPS}", "    motion:", "      enabled: false"]
    lines += ["  recording:", "    inputs:", f"      - path: {clips['recording']}", "    detect:",
              f"      fps: {CLIP_FPS}", "    motion:", "      enabled: false"]
    lines += ["  hung:", "    inputs:", f"      - path: {stuck}", "    timeout_s: 1", "    detect:",
              f"      fps: {CLIP_FPS}", "    reconnect:", "      initial_s: 0.05", "      max_s: 0.2"]
    return parse_config("\n".join(lines) + "\n", "overload.yml")


def slowed(pipeline: Pipeline, seconds: float) -> None:
    """Make every detector batch take at least ``seconds`` longer: analysis falls behind the cameras."""
    analyse = pipeline.analyzer.analyse

    def slow(*args: Any, **kwargs: Any) -> Any:
        time.sleep(seconds)
        return analyse(*args, **kwargs)

    pipeline.analyzer.analyse = slow  # type: ignore[method-assign]


def test_every_live_camera_gets_its_share_a_recording_loses_nothing_and_a_hung_one_holds_nobody(
        tmp_path: Path, video_engine: FaceEngine, clips: dict[str, Path], stuck_source: str) -> None:
    data = tmp_path / "data"
    pipeline = Pipeline(overload_config(data, clips, stuck_source), engine=video_engine, actor="tester",
                        frames_per_step=2)
    slowed(pipeline, 0.1)
    # Six cameras, at most two frames a step: each live camera waits about three steps (0.3 s or more) for its
    # turn while it makes a frame every 0.1 s, so it must drop frames whatever the machine.
    gallery = Gallery(GallerySettings(data), engine=video_engine)
    keys = make_keys(gallery)
    app = create_app(ApiSettings(data), gallery=gallery)
    install_dashboard(app)
    stop = threading.Event()
    worker = threading.Thread(target=pipeline.run, kwargs={"stop": stop, "until_done": False})
    cameras = {runtime.name: runtime.camera for runtime in pipeline.cameras}

    def status(name: str) -> Any:
        return cameras[name].status()

    with serving(app) as url:
        worker.start()
        try:
            wait_until(lambda: cameras["recording"].done and all(status(n).frames_analysed >= 15 for n in LIVE),
                       "the recording to be analysed to its end and 15 frames of every live camera", timeout=300)
            api = httpx.Client(base_url=url + PREFIX, headers={"Authorization": f"Bearer {keys['viewer']}"})

            def reported() -> dict[str, Any]:
                return {c["name"]: c for c in api.get("/cameras").json()}

            wait_until(lambda: all(reported()[n]["overloaded"] for n in LIVE), "the overload in the API")
            shown = reported()
            page = httpx.Client(base_url=url)
            assert page.post("/login", data={"key": keys["viewer"], "next": "/cameras"},
                             follow_redirects=True).status_code == 200
            html = page.get("/cameras").text
        finally:
            stop.set()
            worker.join(60)
    final = {name: camera.status() for name, camera in cameras.items()}

    live = [final[name].frames_analysed for name in LIVE]
    assert max(live) - min(live) <= 2, live  # a fair share each: round robin over the ready cameras
    assert all(final[name].frames_dropped > 0 for name in LIVE)  # behind: older frames gave way to the newest
    # The recording is not live: it waited for its turns, so every frame it decoded was analysed.
    recording = final["recording"]
    assert recording.state == "finished" and recording.frames_dropped == 0
    assert recording.frames_analysed == recording.frames_decoded == 2 * CLIP_FPS
    # The hung stream delivered nothing and held nobody.
    assert final["hung"].frames_analysed == 0 and final["hung"].state in ("connecting", "retrying", "stopped")

    # The status, as the API and the dashboard show it: analysed and dropped rates beside the target.
    for name in LIVE:
        camera = shown[name]
        assert camera["target_fps"] == CLIP_FPS and camera["dropped_fps"] > 0
        assert 0 < camera["analysed_fps"] < CLIP_FPS
    assert not shown["hung"]["overloaded"] and shown["hung"]["analysed_fps"] == 0
    assert "the machine is overloaded" in html and "dropping" in html
    with gallery.db.session() as session:
        rows = {row.camera: row for row in session.scalars(select(CameraState))}
    assert rows["north"].target_fps == CLIP_FPS and rows["recording"].dropped_fps == 0
    gallery.db.dispose()


def test_a_live_camera_keeps_only_its_two_newest_frames_and_reports_the_rate_it_drops(
        clips: dict[str, Path]) -> None:
    camera = Camera(CameraSettings("lobby", VideoInput(str(clips["recording"]), realtime=True),
                                   DetectSettings(fps=CLIP_FPS), motion=MotionSettings(enabled=False)))
    camera.start()
    try:
        wait_until(lambda: camera.status().state == "finished", "the clip to play to its end")
        status = camera.status()
        frames = [camera.get(timeout=0) for _ in range(LIVE_QUEUE + 1)]
    finally:
        camera.stop()

    # Nobody took a frame: each new one pushed out the oldest waiting, so only the last two are left, oldest
    # first (a frame that waited one period behind other cameras' is still analysed), never a backlog.
    last = 2 * CLIP_FPS - 1
    assert LIVE_QUEUE == 2
    assert status.frames_dropped == status.frames_decoded - LIVE_QUEUE == 2 * CLIP_FPS - LIVE_QUEUE
    assert [f.index if f else None for f in frames] == [last - 1, last, None]
    assert status.dropped_fps > 0 and status.overloaded and status.target_fps == CLIP_FPS
    assert status.analysed_fps == 0 and camera.status().frames_analysed == LIVE_QUEUE


def _status(name: str, dropped_fps: float) -> CameraStatus:
    return CameraStatus(name=name, state="connected", last_frame_at=None, error=None, attempts=0,
                        next_retry_at=None, frames_decoded=100, frames_analysed=50, frames_skipped_motion=0,
                        analysed_fps=4.0, target_fps=5.0, dropped_fps=dropped_fps)


def test_a_run_that_stays_overloaded_says_once_what_to_do() -> None:
    calm, behind = [_status("gate", 0.0), _status("hall", 0.0)], [_status("gate", 2.5), _status("hall", 0.5)]
    notice = OverloadNotice(processes=1, cpus=2)
    assert notice.check(behind, now=0.0) is None
    assert notice.check(calm, now=5.0) is None  # it caught up: a burst, not an overload
    assert notice.check(behind, now=6.0) is None
    assert notice.check(behind, now=15.0) is None  # 9 s in a row
    line = notice.check(behind, now=16.0)
    assert line is not None and line.startswith("overloaded: cameras gate, hall drop 3.0 frame(s)/s in all")
    assert "run with --processes auto" in line
    assert notice.check(behind, now=60.0) is None  # said once
    every_core = OverloadNotice(processes=2, cpus=2)
    every_core.check(behind, now=0.0)
    line = every_core.check(behind, now=10.0)
    assert line is not None and "--processes" not in line and "detect.fps" in line and "roles: [record]" in line


class PictureWitness(Consumer):
    """Notes each analysed frame's picture without holding it."""

    name = "picture witness"

    def __init__(self) -> None:
        self.pictures: list[weakref.ref[Any]] = []

    def on_frame(self, batch: FrameBatch) -> None:
        self.pictures.append(weakref.ref(batch.frame.image))


def test_once_a_frame_is_handed_on_no_stage_keeps_its_picture(tmp_path: Path, video_engine: FaceEngine) -> None:
    """The pictures in the pipeline are its batches on their way, not a picture per camera: a stage that has
    handed a frame on keeps nothing of it. The detection thread, waiting for frames that did not come, kept its
    last batch (a camera's reader waiting for its next frame: tests/test_frame_picture.py)."""
    folder = tmp_path / "entrance"
    folder.mkdir()
    shutil.copy(sample_image("yaoming.jpg"), folder / "visitor.jpg")  # one real face, one frame
    config = parse_config(f"purpose: tests\ndata_dir: {tmp_path / 'data'}\ncameras:\n  entrance:\n    inputs:\n"
                          f"      - path: {folder}\n    detect:\n      fps: 5\n")
    pipeline = Pipeline(config, engine=video_engine, actor="tester")
    witness = PictureWitness()
    pipeline.consumers.append(witness)
    stop = threading.Event()
    runner = threading.Thread(target=pipeline.run, kwargs={"stop": stop, "until_done": False})
    runner.start()
    try:
        wait_until(lambda: len(witness.pictures) == 1, "the frame to be analysed")
        wait_until(lambda: witness.pictures[0]() is None, "every stage to let go of the analysed picture")
        assert pipeline.stats.frames == 1 and pipeline.stats.faces >= 1  # it went all the way through
    finally:
        stop.set()
        runner.join()

"""The live view: annotated frames only while someone watches, streamed as MJPEG; in Chromium with an event's clip.

The consumer is fed hand-made batches with a manual clock (no models) for its bounds; the real pipeline runs
a generated clip of a real face in real time beside a real uvicorn server for the stream and the browser.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from api_kit import make_keys, serving
from facetrail.api.app import ApiSettings, create_app
from facetrail.api.routers import cameras as cameras_router
from facetrail.clock import ManualClock
from facetrail.config.loader import parse_config
from facetrail.config.schema import FacetrailConfig
from facetrail.gallery.gallery import Gallery, GallerySettings
from facetrail.pipeline.analyzer import AnalysedFrame
from facetrail.pipeline.batch import PENDING, FrameBatch, TrackVerdict
from facetrail.pipeline.live import COLOURS, LiveView
from facetrail.pipeline.runner import Pipeline
from facetrail.store.media import WATCH_FRESH_S, LiveFrames
from facetrail.video.recording import LiveViewSettings
from facetrail.vision.engine import EngineConfig, FaceEngine
from facetrail.vision.samples import sample_image
from facetrail.vision.types import FaceDetections
from facetrail.web.app import install_dashboard
from pipeline_kit import enrol, head_and_shoulders, make_clip, walk_in
from services import wait_until

T0 = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
BOUNDARY = b"--facetrail-live-frame\r\n"


def coloured_pixels(jpeg: bytes, colour: tuple[int, int, int]) -> int:
    """How many pixels of the decoded JPEG are within 40 levels of ``colour`` (BGR) in every channel."""
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a JPEG"
    return int((np.abs(image.astype(np.int16) - np.array(colour, np.int16)) < 40).all(axis=2).sum())


# -- the consumer's bounds, on hand-made batches ---------------------------------------------------------------


def batch(at: datetime, verdicts: list[TrackVerdict]) -> FrameBatch:
    """One grey 640x360 frame of camera 'door' with one 100x120 face box per verdict."""
    n = len(verdicts)
    boxes = np.array([[40 + 150 * k, 100, 140 + 150 * k, 220] for k in range(n)], np.float32).reshape(-1, 4)
    faces = FaceDetections(xyxy=boxes, scores=np.full(n, 0.9, np.float32), landmarks=np.zeros((n, 5, 2), np.float32))
    frame = AnalysedFrame(np.full((360, 640, 3), 90, np.uint8), faces, False, 1.0)
    return FrameBatch(camera="door", captured_at=at, frame=frame, model_id="test", track_ids=np.arange(n),
                      uids=tuple(f"run:door:{k}" for k in range(n)), face_index=np.arange(n), boxes=boxes,
                      landmarks=np.zeros((n, 5, 2), np.float32), quality=np.full(n, 0.8, np.float32),
                      embeddings=np.zeros((n, 4), np.float32), embedded=np.zeros(n, bool), verdicts=tuple(verdicts),
                      decided=np.zeros(n, bool), started=np.zeros(n, bool))


def test_frames_are_drawn_only_while_watched_and_at_most_at_the_configured_rate(tmp_path: Path) -> None:
    frames = LiveFrames(tmp_path)
    clock = ManualClock()
    live = LiveView(frames, LiveViewSettings(fps=5), ["door"], clock, visitor_of=lambda camera, track: 7)
    named = TrackVerdict("named", identity_id=1, name="Ana Díaz", score=0.8)
    shown = [named, TrackVerdict("unknown"), PENDING]

    for k in range(10):  # nobody watches: nothing drawn, nothing written
        live.on_frame(batch(T0 + timedelta(seconds=k), shown))
        clock.advance(0.5)
    assert live.encoded == 0 and not frames.frame_path("door").exists()

    frames.watch("door")
    touched = clock.now().timestamp()
    os.utime(frames.folder / "door.watch", (touched, touched))  # watched now, by the pipeline's clock
    clock.advance(1.0)  # the marker is looked at once a second
    live.on_frame(batch(T0, shown))
    live.on_frame(batch(T0, shown))  # the same instant: over 5 fps, skipped
    assert live.encoded == 1
    picture = frames.frame_path("door").read_bytes()
    assert coloured_pixels(picture, COLOURS["named"]) > 300  # box and label of the named face
    assert coloured_pixels(picture, COLOURS["unknown"]) > 300  # "visitor 7"
    clock.advance(0.2)
    live.on_frame(batch(T0, shown))
    assert live.encoded == 2

    clock.advance(WATCH_FRESH_S)  # the viewer left: its marker is no longer touched

    live.on_frame(batch(T0, shown))
    assert live.encoded == 2 and not frames.frame_path("door").exists()


# -- the real pipeline, server and browser -------------------------------------------------------------------


@dataclass
class Site:
    url: str
    keys: dict[str, str]
    config: FacetrailConfig
    data: Path
    engine: FaceEngine


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """Yao Ming (watchlist 'vip') in view for most of a 6 s clip read in real time; the API and dashboard served."""
    folder = tmp_path_factory.mktemp("live")
    engine = FaceEngine(EngineConfig())
    yao = head_and_shoulders(engine, sample_image("yaoming.jpg"))
    clip = make_clip(folder / "door.mp4", [walk_in(yao, 0.3, 5.8, 0.4)], 6.0)
    data = folder / "data"
    enrol(data, engine, "Yao Ming", sample_image("yaoming.jpg"), watchlist="vip")
    config = parse_config(
        f"purpose: live view tests\ndata_dir: {data}\ncameras:\n  door:\n    inputs:\n      - path: {clip}\n"
        "        realtime: true\n    detect:\n      fps: 5\n    motion:\n      enabled: false\n"
        "live:\n  fps: 10\nclips:\n  enabled: true\n  pre_s: 1\n  post_s: 1\n", "live-test.yml")
    gallery = Gallery(GallerySettings(data), engine=engine)
    keys = make_keys(gallery)
    app = create_app(ApiSettings(data, config=config), gallery=gallery)
    install_dashboard(app)
    try:
        with serving(app) as url:
            yield Site(url, keys, config, data, engine)
    finally:
        gallery.close()


@dataclass
class Running:
    pipeline: Pipeline
    thread: threading.Thread


def start_pipeline(site: Site) -> Running:
    """The site's pipeline, running its clip in real time on a thread until it ends."""
    pipeline = Pipeline(site.config, engine=site.engine, actor="tester")
    thread = threading.Thread(target=pipeline.run, kwargs={"until_done": True}, daemon=True)
    thread.start()
    return Running(pipeline, thread)


@pytest.fixture
def running(site: Site) -> Iterator[Running]:
    """The site's pipeline, running (see ``start_pipeline``); joined at the end of the test."""
    started = start_pipeline(site)
    yield started
    started.thread.join(timeout=120)
    assert not started.thread.is_alive()


def jpeg_parts(response: httpx.Response, wanted: int, *, limit: int = 400) -> Iterator[bytes]:
    """The JPEG parts of a multipart/x-mixed-replace response, read as they arrive (at most ``limit``)."""
    buffer = b""
    chunks = response.iter_bytes()
    for _ in range(limit):
        while (start := buffer.find(BOUNDARY)) < 0 or (end := buffer.find(b"\r\n\r\n", start)) < 0:
            buffer += next(chunks)
        headers = dict(line.split(": ", 1) for line in buffer[start + len(BOUNDARY):end].decode().split("\r\n"))
        assert headers["Content-Type"] == "image/jpeg"
        size = int(headers["Content-Length"])
        while len(buffer) < end + 4 + size:
            buffer += next(chunks)
        yield buffer[end + 4:end + 4 + size]
        buffer = buffer[end + 4 + size:]


@pytest.mark.models
def test_nothing_is_drawn_or_encoded_while_nobody_watches(site: Site, tmp_path: Path) -> None:
    data = Path(shutil.copytree(site.data, tmp_path / "data"))
    config = site.config.model_copy(update={"data_dir": data})
    pipeline = Pipeline(config, engine=site.engine, actor="tester")
    stats = pipeline.run(until_done=True)
    assert stats.frames >= 20 and stats.named_tracks == 1  # frames were analysed, and the face named
    assert pipeline.live_view.encoded == 0
    assert not (data / "live").exists() or not any((data / "live").iterdir())


@pytest.mark.models
def test_the_live_stream_sends_frames_with_names_drawn_while_a_viewer_reads(site: Site, running: Running) -> None:
    headers = {"Authorization": f"Bearer {site.keys['viewer']}"}
    with httpx.Client(base_url=site.url + "/api/v1", headers=headers, timeout=60) as client:
        assert client.get("/cameras/nowhere/live.mjpeg").status_code == 404
        with client.stream("GET", "/cameras/door/live.mjpeg") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("multipart/x-mixed-replace")
            named = 0
            for part in jpeg_parts(response, 2):
                if coloured_pixels(part, COLOURS["named"]) > 300:  # Yao Ming's green box and name label
                    named += 1
                if named == 2:
                    assert cameras_router.watching["door"] == 1  # this stream, open while it is read
                    break
            assert named == 2
    wait_until(lambda: cameras_router.watching["door"] == 0, "the stream to end with its client")
    assert running.pipeline.live_view.encoded >= 2
    assert httpx.get(site.url + "/api/v1/cameras/door/live.mjpeg").status_code == 401


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(os.environ.get("FACETRAIL_TEST_ARTIFACTS", Path(__file__).parents[1] / "test-artifacts")) / "dashboard"


@pytest.mark.models
def test_chromium_plays_the_live_view_and_an_events_clip(site: Site) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed (Debian package chromium; .ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            page.set_default_timeout(120_000)
            page.goto(site.url + "/login")
            page.fill("input[name=key]", site.keys["viewer"])
            page.click("button[type=submit]")
            page.wait_for_selector("header nav")
            page.goto(site.url + "/cameras")
            page.click("#camera-door a.watch-live")
            live = page.locator("#camera-door img.live")
            live.wait_for(state="attached")
            assert live.get_attribute("src") == "/api/v1/cameras/door/live.mjpeg"
            wait_until(lambda: cameras_router.watching["door"] == 1, "the browser's live stream")
            running = start_pipeline(site)  # the camera comes on while the browser watches
            wait_until(lambda: running.pipeline.live_view.encoded >= 2, "frames drawn for the browser")
            page.wait_for_function("() => document.querySelector('#camera-door img.live').naturalWidth > 0")
            wait_until(lambda: running.pipeline.stats.named_tracks == 1, "Yao Ming named")
            drawn = running.pipeline.live_view.encoded
            wait_until(lambda: running.pipeline.live_view.encoded >= drawn + 2 or not running.thread.is_alive(),
                       "frames with his name drawn")
            SHOTS.mkdir(parents=True, exist_ok=True)
            page.locator("#camera-door").screenshot(path=str(SHOTS / "live-view.png"))
            running.thread.join(timeout=120)  # the clip ends; its event's recording is written at the end
            assert not running.thread.is_alive()
            page.goto(site.url + "/")
            video = page.locator("article.event video.clip").first
            video.wait_for()
            page.wait_for_function("() => { const v = document.querySelector('article.event video.clip');"
                                   " return v.readyState >= 1 || v.error; }")
            state = video.evaluate("v => [v.error && v.error.code, v.videoWidth, v.duration]")
            assert state[0] is None and state[1] > 0 and state[2] > 1, state
            video.screenshot(path=str(SHOTS / "event-clip.png"))
        finally:
            browser.close()

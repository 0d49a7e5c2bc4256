"""facetrail.video on real inputs: clips encoded with PyAV, the street clip, image folders, a loopback HTTP server."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from facetrail.video import (
    Camera,
    CameraSettings,
    CameraStatus,
    DetectSettings,
    Frame,
    FramePicture,
    MotionGate,
    MotionSettings,
    RateSampler,
    ReconnectSettings,
    SourceOpenError,
    VideoInput,
    mask_credentials,
    open_source,
    stream_options,
)
from facetrail.vision.image import small_grey
from services import FlakyStream

W, H, RATE = 160, 120, 25
NO_MOTION_GATE = MotionSettings(enabled=False)
FAST_RETRY = ReconnectSettings(initial_s=0.05, max_s=0.2, max_attempts=3)


def write_clip(path: Path, *, seconds: float, moving: bool = True, noise: bool = False, fmt: str | None = None,
               options: dict[str, str] | None = None) -> Path:
    """A W x H clip at RATE fps: a bright square sliding over grey (or still), or random noise."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w", format=fmt, options=options or {}) as container:
        stream = container.add_stream("libx264", rate=RATE)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for i in range(round(seconds * RATE)):
            if noise:
                image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
            else:
                image = np.full((H, W, 3), 60, np.uint8)
                x = (i * 3) % (W - 30) if moving else 40
                image[40:70, x:x + 30] = 230
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def truncate(path: Path, target: Path) -> Path:
    data = path.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return target


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for: {what}")
        time.sleep(0.01)


def drain(camera: Camera) -> list[Frame]:
    """Every frame of a camera that ends by itself (file), taken as the pipeline would."""
    frames = []
    deadline = time.monotonic() + 60
    while not camera.done and time.monotonic() < deadline:
        frame = camera.get(timeout=1.0)
        if frame is not None:
            frames.append(frame)
    assert camera.done, camera.status()
    return frames


def run_to_end(settings: CameraSettings) -> tuple[list[Frame], CameraStatus]:
    camera = Camera(settings)
    camera.start()
    try:
        frames = drain(camera)
    finally:
        camera.stop()
    return frames, camera.status()


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    return {
        "moving": write_clip(folder / "moving.mp4", seconds=2.0),
        "static": write_clip(folder / "static.mp4", seconds=4.0, moving=False),
        "short": write_clip(folder / "short.mp4", seconds=0.6),
        "ts": write_clip(folder / "moving.ts", seconds=2.0, fmt="mpegts"),
        "noise_faststart": write_clip(folder / "noise.mp4", seconds=1.0, noise=True,
                                      options={"movflags": "+faststart"}),
    }


# -- files and sampling -----------------------------------------------------------------------------------


def test_file_is_sampled_by_media_time_with_captured_at_from_start_time(clips: dict[str, Path]) -> None:
    start = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    frames, status = run_to_end(CameraSettings("gate", VideoInput(str(clips["moving"])), DetectSettings(fps=5),
                                               motion=NO_MOTION_GATE, start_time=start))

    assert [f.index for f in frames] == list(range(10))
    assert [f.pts for f in frames] == pytest.approx([i * 0.2 for i in range(10)])
    assert [f.captured_at for f in frames] == [start + timedelta(seconds=f.pts) for f in frames]
    assert all(f.camera == "gate" and f.image.shape == (H, W, 3) and f.image.dtype == np.uint8 for f in frames)
    assert status.state == "finished" and status.error is None
    assert (status.frames_decoded, status.frames_analysed, status.frames_dropped) == (50, 10, 0)


def test_resize_keeps_the_aspect_ratio_when_one_side_is_given(clips: dict[str, Path]) -> None:
    for width, height, shape in ((80, None, (60, 80, 3)), (None, 30, (30, 40, 3)), (100, 50, (50, 100, 3))):
        source = open_source(str(clips["moving"]), fps=1, width=width, height=height)
        try:
            images = [picture.image for picture in source]
        finally:
            source.close()
        assert len(images) == 2 and all(image.shape == shape for image in images)


def test_variable_frame_rate_is_sampled_by_pts(tmp_path: Path) -> None:
    pts_ms = [0, 30, 100, 190, 210, 600, 1500, 1510, 1790, 1810]
    path = tmp_path / "vfr.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=RATE)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for ms in pts_ms:
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), ms % 256, np.uint8), format="bgr24")
            frame.pts, frame.time_base = ms, Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)

    source = open_source(str(path), fps=5)
    try:
        sampled = [picture.pts for picture in source]
    finally:
        source.close()
    # One frame per 200 ms slot of media time: the first that falls in it; empty slots give nothing.
    assert sampled == pytest.approx([0.0, 0.21, 0.6, 1.5, 1.79, 1.81])
    sampler = RateSampler(5, after=0.6)
    assert [p for p in (0.5, 0.61, 0.7, 0.8, 0.95, 1.0) if sampler.take(p)] == [0.8, 1.0]


def test_street_clip_at_five_fps(data_dir: Path) -> None:
    street = data_dir / "video" / "street.mp4"
    if not street.is_file():
        pytest.skip(f"the real clip {street} is not there (set FACETRAIL_SHARED_DATA)")
    source = open_source(str(street), fps=5)
    try:
        frames = list(source)
    finally:
        source.close()
    assert 20 <= len(frames) <= 22  # 4.2 s at 5 fps
    assert all(picture.image.shape == (1080, 1920, 3) for picture in frames)
    pts = [picture.pts for picture in frames]
    assert pts == sorted(set(pts)) and pts[0] == pytest.approx(0.0)


# -- image folders ------------------------------------------------------------------------------------------


def test_image_folder_in_natural_order_skips_a_corrupt_image(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for name, grey in (("frame_2.png", 20), ("frame_10.png", 100), ("frame_1.png", 10), ("frame_4.jpg", 40)):
        cv2.imwrite(str(tmp_path / name), np.full((H, W, 3), grey, np.uint8))
    (tmp_path / "frame_3.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (tmp_path / "notes.txt").write_text("not an image")

    with caplog.at_level(logging.WARNING, logger="facetrail.video"):
        frames, status = run_to_end(CameraSettings("hall", VideoInput(str(tmp_path)), DetectSettings(fps=2),
                                                   motion=NO_MOTION_GATE))

    greys = [int(np.median(f.image)) for f in frames]
    assert greys == pytest.approx([10, 20, 40, 100], abs=3)
    assert [f.pts for f in frames] == [0.0, 0.5, 1.5, 2.0]  # the unreadable frame_3 keeps its slot in time
    assert "frame_3.jpg" in caplog.text
    assert status.state == "finished" and status.frames_analysed == 4


def test_an_empty_folder_cannot_be_opened(tmp_path: Path) -> None:
    with pytest.raises(SourceOpenError, match="no images"):
        open_source(str(tmp_path))


# -- motion gate ----------------------------------------------------------------------------------------------


def test_motion_gate_lets_only_the_first_frame_and_heartbeats_through_a_static_scene(
        clips: dict[str, Path]) -> None:
    motion = MotionSettings(max_skip_s=1.0)
    frames, status = run_to_end(CameraSettings("still", VideoInput(str(clips["static"])), DetectSettings(fps=5),
                                               motion=motion))

    assert [(round(f.pts, 3), f.motion) for f in frames] == [(0.0, True), (1.0, False), (2.0, False), (3.0, False)]
    assert [f.index for f in frames] == [0, 1, 2, 3]
    assert (status.frames_analysed, status.frames_skipped_motion) == (4, 16)


def test_motion_gate_passes_a_moving_object(clips: dict[str, Path]) -> None:
    frames, status = run_to_end(CameraSettings("moving", VideoInput(str(clips["moving"])), DetectSettings(fps=5)))
    assert len(frames) == 10 and all(f.motion for f in frames)
    assert (status.frames_analysed, status.frames_skipped_motion) == (10, 0)


@pytest.mark.parametrize("size", [None, (640, 360)], ids=["1080p", "640x360"])
def test_the_gate_measures_the_same_change_from_the_shared_grey_copy(data_dir: Path,
                                                                       size: tuple[int, int] | None) -> None:
    street = data_dir / "video" / "street.mp4"
    if not street.exists():
        pytest.skip(f"{street} is absent")
    settings = MotionSettings(min_changed=0.0)  # every frame passes: both gates compare consecutive frames
    own, shared = MotionGate(settings), MotionGate(settings)
    source = open_source(str(street), width=size[0] if size else None, height=size[1] if size else None)
    changed = []
    try:
        for pts, image, _ in source:
            grey = small_grey(image)
            assert grey.shape[1] == 320
            own.check(FramePicture(image), pts)
            shared.check(FramePicture(image), pts, grey)
            changed.append((own.last_changed, shared.last_changed))
    finally:
        source.close()
    assert len(changed) > 100
    mine, theirs = np.array(changed[1:]).T
    assert mine.max() > 0.05  # a hand-held camera: the comparison has changes to measure
    np.testing.assert_allclose(theirs, mine, atol=0.002)  # a pixel in 500 at most, on the colour copy's scale


def test_a_gated_frame_carries_the_grey_copy_the_gate_used(clips: dict[str, Path]) -> None:
    frames, _ = run_to_end(CameraSettings("moving", VideoInput(str(clips["moving"])), DetectSettings(fps=5)))
    assert frames and all(f.made_grey is not None and f.grey is f.made_grey for f in frames)
    # The copy comes from the frame's luma (tests/test_video_decoding.py): the BGR-made one's size, near its levels.
    made = small_grey(frames[0].image)
    assert frames[0].grey.shape == made.shape
    assert np.abs(frames[0].grey.astype(np.int16) - made).mean() < 2.0


# -- failures ---------------------------------------------------------------------------------------------------


def test_damaged_files_retry_then_fail_while_a_good_camera_delivers_everything(
        clips: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    unopenable = truncate(clips["moving"], tmp_path / "no_index.mp4")  # moov atom at the end: cut off
    broken = truncate(clips["noise_faststart"], tmp_path / "half.mp4")  # index up front, data cut mid-way
    cut_ts = truncate(clips["ts"], tmp_path / "half.ts")
    received: dict[str, list[Frame]] = {"broken": [], "cut_ts": []}
    cameras = {
        "unopenable": Camera(CameraSettings("unopenable", VideoInput(str(unopenable)), reconnect=FAST_RETRY)),
        "broken": Camera(CameraSettings("broken", VideoInput(str(broken)), DetectSettings(fps=RATE),  # every frame
                                        motion=NO_MOTION_GATE, reconnect=FAST_RETRY),
                         sink=received["broken"].append),
        "cut_ts": Camera(CameraSettings("cut_ts", VideoInput(str(cut_ts)), motion=NO_MOTION_GATE, reconnect=FAST_RETRY),
                         sink=received["cut_ts"].append),
        "good": Camera(CameraSettings("good", VideoInput(str(clips["moving"])), motion=NO_MOTION_GATE,
                                      reconnect=FAST_RETRY)),
    }
    with caplog.at_level(logging.INFO, logger="facetrail.video"):
        for camera in cameras.values():
            camera.start()
        good_frames = drain(cameras["good"])
        wait_for(lambda: not any(camera.running for camera in cameras.values()), "every camera to end")
    status = {name: camera.status() for name, camera in cameras.items()}

    assert len(good_frames) == 10 and status["good"].state == "finished"

    assert status["unopenable"].state == "failed" and status["unopenable"].attempts == 3
    assert status["unopenable"].error == f"cannot open {unopenable}: Invalid data found when processing input"
    assert caplog.text.count("camera unopenable: cannot open") == 2  # the two retries before giving up
    assert "camera unopenable: giving up after 3 attempts" in caplog.text

    # Opens and decodes, then hits the cut: retried from after the last delivered frame, never repeating one.
    broken_pts = [f.pts for f in received["broken"]]
    assert broken_pts and broken_pts == sorted(set(broken_pts)) and len(broken_pts) < RATE
    assert status["broken"].state == "failed" and status["broken"].attempts == 3
    assert status["broken"].error == f"error reading {broken}: the file is cut short (its last packet is incomplete)"
    assert caplog.text.count("camera broken: error reading") == 2

    # An MPEG-TS file cut mid-way is indistinguishable from a shorter recording: it plays to the cut.
    assert status["cut_ts"].state == "finished" and 0 < len(received["cut_ts"]) < 10


def test_rtsp_to_a_closed_port_retries_with_the_password_masked(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"rtsp://admin:s3cret-pw@127.0.0.1:{port}/live"
    camera = Camera(CameraSettings("yard", VideoInput(url), reconnect=ReconnectSettings(initial_s=60, max_s=60)))
    with caplog.at_level(logging.INFO, logger="facetrail.video"):
        camera.start()
        wait_for(lambda: camera.status().state == "retrying", "the camera to report retrying")
        status = camera.status()
        camera.stop()  # interrupts the 60 s back-off

    assert status.error == f"cannot open rtsp://admin:***@127.0.0.1:{port}/live: Connection refused"
    assert status.attempts == 1 and status.next_retry_at is not None and status.path.startswith("rtsp://admin:***@")
    assert "s3cret" not in caplog.text and "admin:***@" in caplog.text
    assert not camera.running and camera.status().state == "stopped" and camera.done


# -- live streams -----------------------------------------------------------------------------------------------


@pytest.fixture
def flaky_stream(clips: dict[str, Path]) -> Iterator[FlakyStream]:
    stream = FlakyStream(clips["ts"].read_bytes())
    stream.thread.start()
    yield stream
    stream.allow.set()
    stream.server.shutdown()
    stream.server.server_close()


def test_http_stream_that_drops_is_reconnected(flaky_stream: FlakyStream) -> None:
    seen: list[tuple[Frame, CameraStatus]] = []
    settings = CameraSettings("door", VideoInput(flaky_stream.url), DetectSettings(fps=10), motion=NO_MOTION_GATE,
                              reconnect=ReconnectSettings(initial_s=0.05, max_s=0.2))
    camera = Camera(settings, sink=lambda frame: seen.append((frame, camera.status())))
    assert settings.live
    camera.start()
    try:
        wait_for(lambda: camera.status().state == "retrying", "the drop to be reported")
        dropped = camera.status()
        before = len(seen)
        flaky_stream.allow.set()
        wait_for(lambda: any(status.connections == 2 for _, status in seen), "frames after the reconnect")
    finally:
        camera.stop()

    assert before > 0 and dropped.attempts >= 1
    assert dropped.error is not None and flaky_stream.url in dropped.error  # FFmpeg: I/O error, or our "ended"
    reconnected = [status for _, status in seen if status.connections == 2]
    assert all(s.state == "connected" and s.attempts == 0 and s.error is None for s in reconnected)
    pts = [frame.pts for frame, _ in seen]
    assert pts == sorted(set(pts))  # media time keeps going forward across the reconnect
    assert not camera.running and camera.status().state == "stopped"


def test_realtime_queue_keeps_only_the_newest_frames(clips: dict[str, Path]) -> None:
    camera = Camera(CameraSettings("lobby", VideoInput(str(clips["short"]), realtime=True), DetectSettings(fps=10),
                                   motion=NO_MOTION_GATE), queue_size=2)
    camera.start()
    try:
        wait_for(lambda: camera.status().state == "finished", "the paced file to end")
        status = camera.status()
        frames = [camera.get(timeout=0), camera.get(timeout=0), camera.get(timeout=0)]
    finally:
        camera.stop()

    assert status.frames_dropped == 4 and status.frames_analysed == 0
    assert [f.index if f else None for f in frames] == [4, 5, None]
    assert camera.done and camera.status().frames_analysed == 2


# -- options and masking ---------------------------------------------------------------------------------------


def test_stream_options_per_protocol() -> None:
    assert stream_options("rtsp://cam/live", 10) == {"rtsp_transport": "tcp", "timeout": "10000000"}
    assert stream_options("rtsp://cam/live", 2.5, {"rtsp_transport": "udp"}) == {
        "rtsp_transport": "udp", "timeout": "2500000"}
    assert stream_options("https://cam/live.ts", 1) == {"timeout": "1000000", "rw_timeout": "1000000"}
    assert stream_options("/videos/door.mp4", 10, {"probesize": "32"}) == {"probesize": "32"}


def test_credentials_are_masked() -> None:
    assert mask_credentials("rtsp://admin:p@ss@10.0.0.5:554/h264") == "rtsp://admin:***@10.0.0.5:554/h264"
    assert mask_credentials("http://cam/snap.cgi?user=admin&pwd=hunter2&ch=1") == (
        "http://cam/snap.cgi?user=admin&pwd=***&ch=1")
    assert mask_credentials("/recordings/a:b@c.mp4") == "/recordings/a:b@c.mp4"

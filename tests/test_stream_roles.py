"""Frigate's stream roles: faces too small in the detect stream are cut from the camera's record stream.

The clips are one scene rendered by ``facetrail.synth`` from a real photo at two sizes with the same timing,
as a camera's sub-stream (640x360) and main stream (1920x1080), encoded as H.264; the face is about 16 px wide
in the detect stream, under the floor below which a face is never embedded, and about 48 px in the record
stream. Runs go through the whole pipeline into a real SQLite file.
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import av
import numpy as np
import pytest
from sqlalchemy import select

from facetrail.config.errors import ConfigError
from facetrail.config.loader import parse_config
from facetrail.gallery.gallery import Gallery, GallerySettings
from facetrail.pipeline import settings as cfg
from facetrail.pipeline.high_resolution import PART
from facetrail.pipeline.runner import Pipeline
from facetrail.store.cameras import camera_states
from facetrail.store.models import Identity, Sighting
from facetrail.synth.scenes import Appearance, composite_scene
from facetrail.synth.writer import write_clip
from facetrail.track.bestshot import BestShots, BestShotSettings, Shot
from facetrail.video.frames import Frame
from facetrail.video.picture import FramePicture
from facetrail.video.record_stream import RecordStream, RecordStreamSettings
from facetrail.vision.engine import FaceEngine
from pipeline_kit import enrol, face_width, head_and_shoulders
from services import FlakyStream

DETECT_SIZE, RECORD_SIZE = (640, 360), (1920, 1080)
FPS = 10.0
SECONDS = 4.0
FACE_PX = 15.0  # in the detect stream: boxes of about 16x19 px, under ShotGate's weak_min_area (400 px²)
WALKER = ("obama", "obama2.jpg")  # the clip's person; enrolled from another photo of him
ENROLMENT = {"Barack Obama": "obama/obama.jpg", "Joe Biden": "biden/biden.jpg",
             "Kit Harington": "kit_harington/test1.jpg", "Rose Leslie": "rose_leslie/img1.jpg"}
TWO_INPUTS = """\
purpose: x
cameras:
  door:
    inputs:
{inputs}"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "site.yml")
    return caught.value.lines


# -- configuration ---------------------------------------------------------------------------------------


def test_a_camera_may_list_a_detect_and_a_record_input() -> None:
    config = parse_config(TWO_INPUTS.format(inputs="      - path: rtsp://cam/sub\n        roles: [detect]\n"
                                                   "      - path: rtsp://cam/main\n        roles: [record]\n"
                                                   "        decode_skip: 'off'\n        decode_threads: 2\n")
                          + "    record_stream:\n      max_face_px: 48\n", "site.yml")
    door = config.cameras["door"]
    assert door.detect_input.path == "rtsp://cam/sub"
    assert door.record_input is not None and door.record_input.path == "rtsp://cam/main"
    record = cfg.record_stream("door", door)
    assert record is not None and record.settings is door.record_stream  # the section is the reader's settings
    assert (record.settings.max_face_px, record.fps) == (48, 5.0)
    # The record input's decode settings are its own, read by the same decoder as the detect input's.
    assert record.source is door.record_input
    assert (record.source.decode_skip, record.source.decode_threads) == ("off", 2)
    assert door.detect_input.decode_skip == "auto"
    # One input with both roles: nothing to cut from but the detect stream itself.
    both = parse_config(TWO_INPUTS.format(inputs="      - path: a.mp4\n        roles: [detect, record]\n"), "s.yml")
    assert both.cameras["door"].record_input is None and cfg.record_stream("door", both.cameras["door"]) is None


def test_the_example_file_detects_on_the_sub_stream_and_cuts_from_the_main_stream(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from facetrail.config.loader import load_config

    for name in ("FACETRAIL_MQTT_PASSWORD", "FACETRAIL_WEBHOOK_SECRET", "FACETRAIL_CAMERA_PASSWORD"):
        monkeypatch.setenv(name, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" if "WEBHOOK" in name else "s3cret")
    front = load_config(Path(__file__).resolve().parents[1] / "examples" / "config.yml").cameras["front_door"]
    assert front.detect_input.path.endswith("/stream2") and front.record_input is not None
    assert front.record_input.path.endswith("/stream1") and front.record_stream.max_face_px == 64


@pytest.mark.parametrize("inputs, message", [
    ("      - path: a.mp4\n      - path: b.mp4\n        roles: [detect]\n",
     "cameras.door.inputs: exactly one input needs the detect role (found 2)"),
    ("      - path: a.mp4\n      - path: b.mp4\n        roles: [record]\n"
     "      - path: c.mp4\n        roles: [record]\n",
     "cameras.door.inputs: at most one input may have the record role (found 2)"),
    ("      - path: rtsp://cam/sub\n      - path: main.mp4\n        roles: [record]\n",
     "cameras.door.inputs: the record input must be read like the detect input"),
])
def test_roles_are_checked(inputs: str, message: str) -> None:
    lines = problems(TWO_INPUTS.format(inputs=inputs))
    assert len(lines) == 1 and lines[0].startswith("site.yml, line 4, ") and message in lines[0], lines


def test_an_unknown_role_is_refused_with_the_known_ones() -> None:
    lines = problems(TWO_INPUTS.format(inputs="      - path: a.mp4\n      - path: b.mp4\n        roles: [audio]\n"))
    assert lines == ["site.yml, line 7, cameras.door.inputs[1].roles[0]: Input should be 'detect' or 'record'"]


# -- the record stream's reader ----------------------------------------------------------------------------


def detect_frame(pts: float, index: int = 0, captured: datetime | None = None, camera: str = "door") -> Frame:
    """A detect-stream frame at media time ``pts`` (only its times matter to the record stream)."""
    return Frame(camera, FramePicture(np.zeros((2, 2, 3), np.uint8)), index, pts, captured or datetime.now(UTC), 0.0)


@pytest.mark.parametrize("decode_skip, decoded, moves", [
    ("off", (25, 40), 0),  # every frame decoded: the frame at exactly the detect frame's time
    ("auto", (12, 22), 1),  # sampled at 5 of 25 fps: B-frames left undecoded, a shot moves by at most a frame
])
def test_a_file_record_stream_keeps_pace_with_the_detect_stream_and_keeps_only_a_few_frames(
        data_dir: Path, decode_skip: str, decoded: tuple[int, int], moves: int) -> None:
    street = data_dir / "video" / "street.mp4"
    if not street.exists():
        pytest.skip(f"{street} is absent")
    from facetrail.video.camera import VideoInput

    source = VideoInput(path=str(street), decode_skip=decode_skip)  # type: ignore[arg-type]
    record = RecordStream("street", source, RecordStreamSettings(ring_frames=3), fps=5.0)
    record.start()
    try:
        kept = record.nearest(detect_frame(1.0))
        assert kept is not None and kept.size == (1920, 1080)
        assert 1.0 <= kept.pts <= 1.0 + moves / 25 + 1e-6, kept.pts
        status = record.status()
        # The reader stopped just past the detect stream's time: about 1.2 s of 4.2 read, 3 frames kept.
        assert status.state == "connected" and decoded[0] <= status.frames_decoded <= decoded[1], status
        assert status.ring_bytes == 3 * 1920 * 1080 * 3 // 2
        with av.open(str(street)) as container:
            frames = container.decode(video=0)
            whole = next(f for i, f in enumerate(frames) if i == round(kept.pts * 25)).to_ndarray(format="bgr24")
        region, (left, top) = kept.region(901.5, 401, 1100, 651.2)
        assert (left, top) == (900, 400) and region.shape == (252, 200, 3)
        # The same pixels as that frame decoded in full and converted whole: skipping changes no kept frame.
        assert np.array_equal(region, whole[400:652, 900:1100])
        later = record.nearest(detect_frame(3.0, 1))
        assert later is not None and 3.0 <= later.pts <= 3.0 + moves / 25 + 1e-6
        assert record.nearest(detect_frame(9.0, 2)) is None  # past the end: nothing near enough
        assert record.status().state == "finished"
    finally:
        record.stop()


def test_a_live_record_stream_is_stamped_on_arrival_and_matched_to_the_detect_frame_of_the_moment(
        data_dir: Path) -> None:
    street = data_dir / "video" / "street.mp4"
    if not street.exists():
        pytest.skip(f"{street} is absent")
    from facetrail.video.camera import VideoInput

    record = RecordStream("street", VideoInput(path=str(street), realtime=True), RecordStreamSettings(), fps=5.0)
    assert record.live
    record.start()
    try:
        deadline = time.monotonic() + 10
        while record.status().frames_kept < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        now = datetime.now(UTC)
        kept = record.nearest(detect_frame(0.0, 0, now, "street"))
        assert kept is not None and abs(kept.t - now.timestamp()) <= RecordStreamSettings().max_gap_s
        assert 0.5 <= kept.pts <= 3.0  # read at the file's own pace, not as fast as it decodes
        status = record.status()
        assert status.state == "connected" and status.ring_bytes <= 3 * 1920 * 1080 * 3 // 2
        long_ago = datetime.fromtimestamp(now.timestamp() - 5, UTC)
        assert record.nearest(detect_frame(0.0, 1, long_ago, "street")) is None
    finally:
        record.stop()


def test_an_image_folder_as_record_input_fails_with_a_clear_error(tmp_path: Path) -> None:
    from facetrail.video.camera import ReconnectSettings, VideoInput

    record = RecordStream("door", VideoInput(path=str(tmp_path)), RecordStreamSettings(), fps=5.0,
                          reconnect=ReconnectSettings(initial_s=0.01, max_s=0.01, max_attempts=2))
    record.start()
    try:
        deadline = time.monotonic() + 10
        while record.status().state != "failed" and time.monotonic() < deadline:
            time.sleep(0.01)
        status = record.status()
        assert status.state == "failed" and status.attempts == 2, status
        assert record.error == f"cannot open {tmp_path}: it is an image folder, not a video file or stream"
        assert record.nearest(detect_frame(1.0)) is None  # a failed stream never holds the detect stream up
    finally:
        record.stop()


def as_transport_stream(path: Path, target: Path) -> bytes:
    """``path``'s video packets remuxed, unchanged, into MPEG-TS (what a camera's HTTP stream sends)."""
    with av.open(str(path)) as source, av.open(str(target), "w", format="mpegts") as out:
        stream = out.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    return target.read_bytes()


def test_a_live_record_stream_that_drops_is_shown_retrying_and_reconnected(tmp_path: Path, data_dir: Path) -> None:
    street = data_dir / "video" / "street.mp4"
    if not street.exists():
        pytest.skip(f"{street} is absent")
    from facetrail.video.camera import ReconnectSettings, VideoInput

    camera = FlakyStream(as_transport_stream(street, tmp_path / "main.ts"))
    camera.thread.start()
    record = RecordStream("street", VideoInput(path=camera.url), RecordStreamSettings(max_gap_s=5), fps=5.0,
                          reconnect=ReconnectSettings(initial_s=0.05, max_s=0.2))
    record.start()
    try:
        deadline = time.monotonic() + 30
        while record.status().state != "retrying" and time.monotonic() < deadline:
            time.sleep(0.02)
        dropped = record.status()
        assert dropped.state == "retrying" and dropped.frames_kept > 0 and camera.url in (dropped.error or "")
        assert record.error is not None
        now = datetime.now(UTC)
        camera.allow.set()
        while record.status().frames_kept <= dropped.frames_kept and time.monotonic() < deadline:
            time.sleep(0.02)
        back = record.status()
        assert back.state == "connected" and back.error is None and back.attempts == 0, back
        assert record.error is None
        assert back.size == (1920, 1080) and back.ring_bytes <= 3 * 1920 * 1080 * 3 // 2
        kept = record.nearest(detect_frame(0.0, 0, camera="street"))
        assert kept is not None and kept.t >= now.timestamp()  # stamped on arrival, after the reconnect
    finally:
        record.stop()
        camera.allow.set()
        camera.server.shutdown()
        camera.server.server_close()


def shot(quality: float, area: float, *, weak: bool = False) -> Shot:
    return Shot(0, 0.0, quality, area, np.zeros((112, 112, 3), np.uint8), embedding=np.ones(4, np.float32),
                weak=weak)


def test_a_track_asks_for_a_cut_only_when_it_would_embed_the_shot() -> None:
    shots = BestShots(BestShotSettings(min_area=1600, min_quality=0.25, weak_min_area=400, reembed_margin=0.1))
    assert shots.may_embed(0.5, 2000) and shots.may_embed(0.1, 900)  # nothing yet: strong or weak wanted
    assert not shots.may_embed(0.5, 300)  # under the floor: never embedded
    shots.embedded_shots.append(shot(0.4, 2000))
    shots.embeddings_used = 1
    assert not shots.may_embed(0.1, 900)  # a strong shot is embedded: weak ones are no longer taken
    assert not shots.may_embed(0.45, 2000) and shots.may_embed(0.5, 2000)  # better by the re-embed margin
    shots.pending[7] = shot(0.6, 2000)
    assert not shots.may_embed(0.9, 5000)  # one embedding at a time


# -- small faces through the pipeline ----------------------------------------------------------------------


def walker(engine: FaceEngine, data_dir: Path, face_px: float) -> Appearance:
    """The walker standing far away, his face ``face_px`` wide in the detect stream, swaying a little."""
    cut = head_and_shoulders(engine, data_dir / "faces" / WALKER[0] / WALKER[1])
    scale = face_px / face_width(engine, cut) * cut.shape[0] / DETECT_SIZE[1]  # height as a frame fraction
    return Appearance(cut, 0.0, SECONDS, (0.45, 0.4), (0.5, 0.42), scale * 0.97, scale)


def clip(path: Path, people: list[Appearance], size: tuple[int, int]) -> Path:
    write_clip(path, composite_scene(people, duration_s=SECONDS, fps=FPS, size=size, noise=2.0, seed=3), fps=FPS)
    return path


@pytest.fixture(scope="module")
def two_streams(tmp_path_factory: pytest.TempPathFactory, video_engine: FaceEngine,
                data_dir: Path) -> tuple[Path, Path]:
    """The same scene as a 640x360 sub-stream and a 1920x1080 main stream (same timing, same noise seed)."""
    person = walker(video_engine, data_dir, FACE_PX)
    folder = tmp_path_factory.mktemp("streams")
    return clip(folder / "far_640.mp4", [person], DETECT_SIZE), clip(folder / "far_1920.mp4", [person], RECORD_SIZE)


def config_text(store: Path, detect: Path, record: Path | str | None, extra: str = "") -> str:
    lines = ["purpose: pipeline tests", f"data_dir: {store}", "cameras:", "  far:", "    inputs:",
             f"      - path: {detect}", "        roles: [detect]"]
    if record is not None:
        lines += [f"      - path: {record}", "        roles: [record]"]
    lines += ["    detect:", "      fps: 5", "    motion:", "      enabled: false",  # every sampled frame analysed
              "    reconnect:", "      initial_s: 0.05", "      max_attempts: 2"]
    return "\n".join(lines) + "\n" + extra


def enrol_all(store: Path, engine: FaceEngine, data_dir: Path) -> None:
    for name, photo in ENROLMENT.items():
        enrol(store, engine, name, data_dir / "faces" / photo)


def named(store: Path) -> list[str]:
    gallery = Gallery(GallerySettings(store))
    try:
        with gallery.db.session() as session:
            rows = session.execute(select(Identity.display_name).join(Sighting, Sighting.identity_id == Identity.id))
            return sorted(str(name) for (name,) in rows)
    finally:
        gallery.db.dispose()


def stored_status(store: Path) -> dict[str, str | None]:
    gallery = Gallery(GallerySettings(store))
    try:
        with gallery.db.session() as session:
            row = camera_states(session)[0]
            return {"state": row.state, "last_fault": row.last_fault, "failing": row.failing}
    finally:
        gallery.db.dispose()


@pytest.mark.models
def test_a_face_too_small_in_the_detect_stream_is_named_from_the_record_stream(
        tmp_path: Path, two_streams: tuple[Path, Path], video_engine: FaceEngine, data_dir: Path) -> None:
    detect, record = two_streams
    alone = tmp_path / "alone"
    enrol_all(alone, video_engine, data_dir)
    pipeline = Pipeline(parse_config(config_text(alone, detect, None), "t.yml"), engine=video_engine, actor="t")
    stats = pipeline.run(until_done=True)
    assert stats.frames >= 18 and stats.faces >= 15, stats  # the small face is found and tracked...
    assert stats.embedded == 0 and named(alone) == []  # ...but too small to be embedded, let alone named

    both = tmp_path / "both"
    enrol_all(both, video_engine, data_dir)
    pipeline = Pipeline(parse_config(config_text(both, detect, record), "t.yml"), engine=video_engine, actor="t")
    stats = pipeline.run(until_done=True)
    counts = pipeline.cameras[0].tracking.counts
    assert counts.record_shots >= 1 and stats.embedded == counts.record_shots, (stats, counts)
    assert named(both) == ["Barack Obama"]
    status = pipeline.record_status()[0]
    assert status.state in ("finished", "stopped") and status.error is None and status.size == RECORD_SIZE


@pytest.mark.models
def test_when_the_record_frame_shows_no_face_the_detect_streams_shot_is_used(
        tmp_path: Path, video_engine: FaceEngine, data_dir: Path) -> None:
    detect = clip(tmp_path / "near_640.mp4", [walker(video_engine, data_dir, 30.0)], DETECT_SIZE)  # a weak shot
    record = clip(tmp_path / "empty_1920.mp4", [], RECORD_SIZE)  # the same room, nobody in it
    pipeline = Pipeline(parse_config(config_text(tmp_path / "data", detect, record), "t.yml"), engine=video_engine,
                        actor="t")
    stats = pipeline.run(until_done=True)
    tracking = pipeline.cameras[0].tracking
    assert tracking.high_resolution is not None and tracking.high_resolution.counts.no_face >= 1
    assert tracking.high_resolution.counts.cut == 0 and tracking.counts.record_shots == 0
    assert stats.embedded >= 1, stats  # the detect stream's weak shots, as without a record stream
    assert pipeline.record_status()[0].error is None


@pytest.mark.models
@pytest.mark.parametrize("broken", ["missing", "damaged"])
def test_a_broken_record_stream_leaves_detection_running_and_shows_in_the_status(
        tmp_path: Path, two_streams: tuple[Path, Path], video_engine: FaceEngine, broken: str) -> None:
    detect, _ = two_streams
    record = tmp_path / "main.mp4"
    if broken == "damaged":
        record.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40)
    store = tmp_path / "data"
    pipeline = Pipeline(parse_config(config_text(store, detect, record), "t.yml"), engine=video_engine, actor="t")
    stats = pipeline.run(until_done=True)
    assert stats.frames >= 18 and stats.faces >= 15, stats  # every sampled frame analysed, the face tracked
    status = pipeline.record_status()[0]
    assert status.state == "failed" and status.error is not None and "main.mp4" in status.error, status
    assert pipeline.cameras[0].tracking.high_resolution.counts.no_frame >= 1  # type: ignore[union-attr]
    shown = stored_status(store)
    assert shown["state"] == "finished", shown  # the camera itself is fine
    assert shown["last_fault"] is not None and shown["last_fault"].startswith(f"{PART}: "), shown
    assert shown["failing"] == PART, shown


@pytest.mark.models
def test_facetrail_run_shows_a_failed_record_stream_and_still_analyses_the_camera(
        tmp_path: Path, two_streams: tuple[Path, Path]) -> None:
    config = tmp_path / "site.yml"
    config.write_text(config_text(tmp_path / "data", two_streams[0], tmp_path / "gone.mp4"))
    result = subprocess.run([sys.executable, "-m", "facetrail.cli.main", "run", str(config)], capture_output=True,
                            text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("camera far: finished, 20 analysed") for line in lines), result.stdout
    assert any(line.startswith("camera far record stream: failed") and "gone.mp4: no such file" in line
               for line in lines), result.stdout

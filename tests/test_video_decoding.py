"""Decode only what is analysed: the decode policy on real clips (street.mp4, synth clips, short-GOP clips).

Each test decodes the same clip plainly (``decode_skip: off``) and with the policy, and checks that the
camera gets the same pictures at the same rate (pts within one frame period) while the decoder decodes less.
"""

from __future__ import annotations

import logging
import os
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from av.codec.hwaccel import hwdevices_available
from pydantic import ValidationError

from facetrail.config.errors import ConfigError
from facetrail.config.loader import parse_config
from facetrail.synth.scenes import synthetic_background
from facetrail.synth.writer import write_clip
from facetrail.video import Camera, CameraSettings, DetectSettings, MotionSettings, VideoInput, open_source
from facetrail.video.decoding import (
    HARDWARE_DECODE_THREADS,
    HWACCEL_TYPES,
    STREAM_DECODE_THREADS,
    DecodePolicy,
    configure_decoder,
    file_decode_threads,
)
from facetrail.video.frames import Frame
from facetrail.video.sources import AVSource, Picture
from facetrail.vision.image import GREY_WIDTH, small_grey
from services import wait_until

RATE = 25
PERIOD = 1 / RATE


def sample(path: Path, fps: float | None, **settings: object) -> tuple[list[float], AVSource]:
    """The pts a camera analysing ``path`` at ``fps`` gets, and the (closed) source for its counters."""
    source = open_source(str(path), fps=fps, decode=VideoInput(str(path), **settings))  # type: ignore[arg-type]
    assert isinstance(source, AVSource)
    try:
        return [picture.pts for picture in source], source
    finally:
        source.close()


def assert_same_samples(plain: list[float], policy: list[float], tolerance: float = PERIOD) -> None:
    assert len(policy) == len(plain)
    assert max(abs(a - b) for a, b in zip(plain, policy, strict=True)) <= tolerance + 1e-6


def moving_frames(count: int, size: tuple[int, int] = (160, 96)) -> list[np.ndarray]:
    background = synthetic_background(size)
    frames = []
    for i in range(count):
        frame = background.copy()
        x = (i * 5) % (size[0] - 24)
        frame[30:60, x:x + 24] = (40, 200, 240)
        frames.append(frame)
    return frames


def gop_clip(path: Path, *, seconds: float, key_every: int | list[int], bframes: int = 0,
             pyramid: bool = True) -> Path:
    """A 25 fps libx264 clip with a key frame every ``key_every`` frames (a list: exactly at those frames)."""
    frames = moving_frames(round(seconds * RATE))
    keys = set(range(0, len(frames), key_every)) if isinstance(key_every, int) else set(key_every)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=RATE)
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        stream.options = {"preset": "ultrafast", "bf": str(bframes), "g": "1000", "keyint_min": "1000",
                          "sc_threshold": "0", "forced-idr": "1", "b-adapt": "0",
                          "b-pyramid": "normal" if pyramid else "none"}
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts, frame.time_base = i, Fraction(1, RATE)
            if i in keys:
                frame.pict_type = av.video.frame.PictureType.I
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def key_times(path: Path) -> list[float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.time_base is not None
        return sorted(float(p.pts * stream.time_base) for p in container.demux(stream)
                      if p.is_keyframe and p.pts is not None)


@pytest.fixture(scope="module")
def street(data_dir: Path) -> Path:
    path = data_dir / "video" / "street.mp4"
    if not path.is_file():
        pytest.skip(f"the real clip {path} is not there (set FACETRAIL_SHARED_DATA)")
    return path


@pytest.fixture(scope="module")
def synth_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A facetrail.synth clip: libx264 veryfast, 25 fps, with B-frames, one key frame."""
    path = tmp_path_factory.mktemp("synth") / "moving.mp4"
    write_clip(path, moving_frames(75), fps=RATE)
    return path


# -- skipping non-reference frames ------------------------------------------------------------------------


def test_street_at_five_fps_decodes_half_the_frames_and_samples_the_same_moments(street: Path) -> None:
    plain, plain_source = sample(street, 5, decode_skip="off")
    policy, source = sample(street, 5)
    assert len(plain) == 21 and plain_source.frames_decoded == 105 and plain_source.frames_skipped == 0
    assert_same_samples(plain, policy)  # a sample lands at most one frame later
    assert source.decode_mode == "NONREF"
    assert source.frames_decoded < 0.6 * plain_source.frames_decoded
    assert source.frames_decoded + source.frames_skipped == 105
    assert policy == sorted(set(policy))


def test_street_decodes_the_same_pictures_on_the_default_frame_threads_as_on_one(street: Path) -> None:
    def pictures(**settings: object) -> list[Picture]:
        source = open_source(str(street), fps=5, decode=VideoInput(str(street), **settings))  # type: ignore[arg-type]
        try:
            return list(source)
        finally:
            source.close()

    one, default = pictures(decode_threads=1), pictures()  # frame threads with non-reference frames skipped
    assert len(default) == len(one) == 21
    for (t1, image1, _), (t2, image2, _) in zip(one, default, strict=True):
        assert t1 == t2 and np.array_equal(image1, image2), t1


def test_a_synth_clip_with_b_frames_skips_them_at_five_fps(synth_clip: Path) -> None:
    plain, plain_source = sample(synth_clip, 5, decode_skip="off")
    policy, source = sample(synth_clip, 5)
    assert_same_samples(plain, policy)
    assert len(policy) == 15
    assert source.frames_skipped > 0 and source.frames_decoded < plain_source.frames_decoded == 75


@pytest.mark.parametrize("fps", [None, 25.0, 30.0, 15.0])
def test_nothing_is_skipped_when_every_frame_or_most_frames_are_analysed(synth_clip: Path,
                                                                         fps: float | None) -> None:
    # 15 of 25 fps: decoding every second frame would lose samples, so the policy stays off.
    plain, _ = sample(synth_clip, fps, decode_skip="off")
    policy, source = sample(synth_clip, fps)
    assert policy == plain
    assert source.decode_mode == "DEFAULT" and source.frames_skipped == 0 and source.frames_decoded == 75


def test_decoded_frames_further_apart_than_the_period_turn_skipping_off() -> None:
    policy = DecodePolicy(10, 25)  # 0.1 s period, NONREF allowed
    assert policy.mode == "NONREF"
    for t in (0.0, 0.08, 0.16):
        assert policy.after_frame(t) == "NONREF"
    assert policy.after_frame(0.32) == "DEFAULT"  # 0.16 s gap: a sample would be lost
    assert policy.before_packet(False, 0.4) == "DEFAULT"


def test_b_frames_without_a_pyramid_are_skipped_only_where_samples_move_little(tmp_path: Path) -> None:
    # IBBBP: without the three B-frames, decoded frames are 4 frames (0.16 s) apart.
    clip = gop_clip(tmp_path / "ibbbp.mp4", seconds=4.0, key_every=1000, bframes=3, pyramid=False)
    plain, _ = sample(clip, 5, decode_skip="off")
    policy, source = sample(clip, 5)  # a sample could move by 3 of the 5 frames of its slot: decode all
    assert source.decode_mode == "DEFAULT"
    assert_same_samples(plain, policy, tolerance=3 * PERIOD)  # at most the first gap, before it is seen
    assert policy[2:] == plain[2:]
    plain, _ = sample(clip, 1, decode_skip="off")
    policy, source = sample(clip, 1)  # a 1 s period: moving by 3 frames (0.12 s) is allowed
    assert source.decode_mode == "NONREF" and source.frames_decoded <= 100 // 4 + 1
    assert_same_samples(plain, policy, tolerance=3 * PERIOD)


# -- key frames only --------------------------------------------------------------------------------------


def test_key_frames_only_when_they_come_as_often_as_frames_are_analysed(tmp_path: Path) -> None:
    clip = gop_clip(tmp_path / "gop5.mp4", seconds=4.0, key_every=5)  # a key frame every 0.2 s
    assert key_times(clip)[:3] == pytest.approx([0.0, 0.2, 0.4])
    plain, plain_source = sample(clip, 5, decode_skip="off")
    policy, source = sample(clip, 5)
    assert source.decode_mode == "NONKEY"
    assert policy == pytest.approx(plain)  # the key frames open each 0.2 s slot
    assert len(policy) == 20
    # Before the first key-frame intervals are known, non-reference frames only are skipped (none here).
    assert source.frames_decoded <= 20 + 2 * 5 and plain_source.frames_decoded == 100


def test_key_frames_too_rare_for_the_rate_are_not_relied_on(tmp_path: Path) -> None:
    clip = gop_clip(tmp_path / "gop5.mp4", seconds=2.0, key_every=5)
    plain, _ = sample(clip, 10, decode_skip="off")  # 0.1 s period, key frames every 0.2 s
    policy, source = sample(clip, 10)
    assert source.decode_mode == "NONREF" and policy == pytest.approx(plain)
    assert source.frames_decoded == 50


def test_key_frames_becoming_rare_end_key_frame_only_decoding_at_the_next_key_frame(tmp_path: Path) -> None:
    # Key frames every 0.2 s for 1.6 s, then one at 2.4 s and none after: the slots between 1.6 and 2.4 s
    # are lost (their frames refer to frames never decoded), and from 2.4 s every slot has its frame again.
    keys = [*range(0, 41, 5), 60]
    clip = gop_clip(tmp_path / "change.mp4", seconds=4.0, key_every=keys)
    assert key_times(clip) == pytest.approx([k / RATE for k in keys])
    plain, _ = sample(clip, 5, decode_skip="off")
    policy, source = sample(clip, 5)
    assert source.decode_mode == "NONREF"
    assert [t for t in plain if t < 1.6 - 1e-6] == pytest.approx([t for t in policy if t < 1.6 - 1e-6])
    assert [t for t in plain if t >= 2.4 - 1e-6] == pytest.approx([t for t in policy if t >= 2.4 - 1e-6])
    assert not [t for t in policy if 1.7 < t < 2.4 - 1e-6]


def test_pictures_decoded_with_the_policy_are_the_plain_decoders_pictures(tmp_path: Path) -> None:
    clip = gop_clip(tmp_path / "gop5b.mp4", seconds=2.0, key_every=5, bframes=2)
    plain = {round(t * RATE): image for t, image, _ in open_source(str(clip), fps=None,
                                                                decode=VideoInput(str(clip), decode_skip="off"))}
    for fps in (5.0, 10.0):
        for t, image, _ in open_source(str(clip), fps=fps, decode=VideoInput(str(clip))):
            assert np.array_equal(image, plain[round(t * RATE)]), (fps, t)


# -- threads, loop filter, hardware decoding, bad settings ------------------------------------------------


@pytest.mark.parametrize("threads", [0, 2, None])  # None: a file's default, twice FFmpeg's count
def test_decoder_threads_give_the_same_pictures(synth_clip: Path, threads: int | None) -> None:
    plain, _ = sample(synth_clip, 5, decode_threads=1)
    threaded, source = sample(synth_clip, 5, decode_threads=threads)
    assert threaded == plain and source.frames_decoded + source.frames_skipped == 75


def test_files_decode_on_twice_ffmpegs_threads_and_live_inputs_on_one_by_default(synth_clip: Path) -> None:
    cores = len(os.sched_getaffinity(0))
    assert file_decode_threads() == min(16, 2 * (cores + 1)) and STREAM_DECODE_THREADS == 1
    path = str(synth_clip)
    cases = [  # (stream?, the input's settings, threads, frame threads?)
        (False, VideoInput(path), file_decode_threads(), True),  # a file read as fast as it is analysed
        (False, VideoInput(path, realtime=True), STREAM_DECODE_THREADS, False),  # a file read in real time
        (True, VideoInput(path), STREAM_DECODE_THREADS, False),
        (True, VideoInput(path, decode_threads=2), 2, False),
        (False, VideoInput(path, realtime=True, decode_threads=2), 2, False),  # live: slice threads, no latency
    ]
    for stream, settings, threads, frame_threads in cases:
        with av.open(path) as container:
            context = container.streams.video[0].codec_context
            configure_decoder(container.streams.video[0], settings, live=stream)
            assert context.thread_count == threads, settings
            if threads != 1:
                assert str(context.thread_type).upper().endswith("FRAME" if frame_threads else "SLICE"), settings


def test_a_decoder_on_a_hardware_device_keeps_one_thread_unless_asked(synth_clip: Path) -> None:
    # the device decodes; frame threads would only multiply its surfaces (NVDEC refuses more than 32)
    for settings, threads in ((VideoInput(str(synth_clip)), HARDWARE_DECODE_THREADS),
                              (VideoInput(str(synth_clip), decode_threads=4), 4)):
        with av.open(str(synth_clip)) as container:
            configure_decoder(container.streams.video[0], settings, live=False, hardware=True)
            assert container.streams.video[0].codec_context.thread_count == threads
    assert HARDWARE_DECODE_THREADS == 1


def test_skip_loop_filter_changes_the_pictures_only_when_asked(street: Path) -> None:
    def third_second(**settings: object) -> np.ndarray:
        source = open_source(str(street), fps=1, decode=VideoInput(str(street), **settings))  # type: ignore[arg-type]
        try:
            return next(picture.image for picture in source if picture.pts >= 3.0)
        finally:
            source.close()

    plain, lossy = third_second(), third_second(skip_loop_filter=True)
    difference = np.abs(plain.astype(np.int16) - lossy).mean()
    assert 0.1 < difference < 10  # the same picture, without deblocking


def test_undecoded_frames_are_the_pictures_iteration_converts(synth_clip: Path) -> None:
    # The record stream keeps frames as YUV: frames() must sample and skip exactly as iterating does.
    images = {pts: image for pts, image, _ in open_source(str(synth_clip), fps=5, decode=VideoInput(str(synth_clip)))}
    with AVSource(str(synth_clip), live=False, fps=5, decode=VideoInput(str(synth_clip))) as source:
        frames = list(source.frames())
        assert source.frames_skipped > 0 and source.decode_mode == "NONREF"
    assert [pts for pts, _ in frames] == list(images) and len(frames) == 15
    assert all(isinstance(frame, av.VideoFrame) and frame.format.name == "yuv420p" for _, frame in frames)
    for pts, frame in frames:
        assert np.array_equal(frame.to_ndarray(format="bgr24"), images[pts])


def test_resized_pictures_are_pyavs_own_conversion_on_one_converter(synth_clip: Path) -> None:
    # The source converts with one swscale context and one thread for its life: the same pixels as a frame's own.
    with AVSource(str(synth_clip), live=False, fps=5, width=200, decode=VideoInput(str(synth_clip))) as resizing:
        images = list(resizing)
    with AVSource(str(synth_clip), live=False, fps=5, decode=VideoInput(str(synth_clip))) as source:
        frames = list(source.frames())
    assert [pts for pts, _ in frames] == [picture.pts for picture in images] and len(images) == 15
    height = round(frames[0][1].height * 200 / frames[0][1].width)
    for (_, frame), (_, image, _) in zip(frames, images, strict=True):
        assert image.shape == (height, 200, 3)
        assert np.array_equal(frame.to_ndarray(format="bgr24", width=200, height=height, interpolation="AREA"), image)


def _grey_gap(pictures: list[Picture]) -> float:
    """The largest mean gap (grey levels) between a picture's grey copy (from its luma) and its BGR-made one."""
    gaps = []
    for picture in pictures:
        made = small_grey(picture.image)
        assert picture.grey is not None and picture.grey.shape == made.shape
        gaps.append(float(np.abs(picture.grey.astype(np.int16) - made).mean()))
    return max(gaps)


@pytest.mark.parametrize("width", [None, 640])
def test_a_videos_grey_copy_comes_from_its_luma_and_reads_as_the_bgr_made_one(street: Path,
                                                                              width: int | None) -> None:
    # street.mp4 is limited-range (16-235) H.264: its luma is stretched to 0-255 (unstretched it is 6-7 levels off).
    with AVSource(str(street), live=False, fps=5, width=width) as source:
        pictures = list(source)
    assert len(pictures) == 21 and pictures[0].grey is not None and pictures[0].grey.shape[1] == GREY_WIDTH
    assert _grey_gap(pictures) < 2.0


def test_a_full_range_videos_luma_is_taken_as_it_is(street: Path, tmp_path: Path) -> None:
    # Motion JPEG is full-range (yuvj420p): stretching its luma would put it 7 levels off.
    clip = tmp_path / "street.mkv"
    with av.open(str(street)) as container, av.open(str(clip), "w") as output:
        stream = output.add_stream("mjpeg", rate=RATE)
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuvj420p"
        for index, frame in enumerate(container.decode(video=0)):
            if index % 5 == 0:
                output.mux(stream.encode(frame.reformat(width=640, height=360, format="yuvj420p")))
        output.mux(stream.encode())
    with AVSource(str(clip), live=False) as source:
        pictures = list(source)
    assert len(pictures) == 21 and {p.image.shape for p in pictures} == {(360, 640, 3)}
    assert _grey_gap(pictures) < 2.0


def _frames_of(path: Path) -> list[Frame]:
    """Every frame a camera with no motion gate hands on, reading ``path`` to its end."""
    frames: list[Frame] = []
    camera = Camera(CameraSettings("cam", VideoInput(str(path)), DetectSettings(fps=5),
                                   motion=MotionSettings(enabled=False)), sink=frames.append)
    camera.start()
    try:
        wait_until(lambda: camera.status().state == "finished", "the input to be read to its end")
    finally:
        camera.stop()
    return frames


def test_a_camera_hands_on_the_sources_grey_copy_and_makes_one_for_images(tmp_path: Path, synth_clip: Path) -> None:
    folder = tmp_path / "stills"
    folder.mkdir()
    with av.open(str(synth_clip)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index < 3:
                frame.to_image().save(folder / f"{index}.png")
    video, stills = _frames_of(synth_clip), _frames_of(folder)
    assert len(video) == 15 and len(stills) == 3
    # A video's frames carry the copy made from their luma, with the gate off too; an image folder's frames make
    # theirs from the picture when asked (Frame.grey).
    assert all(frame.made_grey is not None for frame in video) and all(f.made_grey is None for f in stills)
    assert all(frame.grey.shape == small_grey(frame.image).shape for frame in video + stills)


@pytest.mark.parametrize("device", ["d3d11va", "cuda"])
def test_hardware_decoding_falls_back_to_the_cpu_with_one_warning(synth_clip: Path, tmp_path: Path, device: str,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    # d3d11va (Windows) is never in a Linux FFmpeg build; cuda is in PyAV's wheels but needs an NVIDIA GPU.
    if device == "cuda" and "cuda" not in hwdevices_available():
        pytest.skip("this FFmpeg build has no cuda support")
    clip = tmp_path / "own-name.mp4"  # the warning is once per input: a name no other test used
    clip.write_bytes(synth_clip.read_bytes())
    plain, _ = sample(clip, 5)
    with caplog.at_level(logging.WARNING, logger="facetrail.video.decoding"):
        first, source = sample(clip, 5, hwaccel=device)
        if source.hwaccel is not None:
            pytest.skip(f"{device} decoding works on this machine: nothing to fall back from")
        second, _ = sample(clip, 5, hwaccel=device)
    assert first == second == plain
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f"hardware decoding with {device} is not available" in warnings[0] and "on the CPU" in warnings[0]


def test_bad_decode_settings_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"unknown hardware decoder 'nvidia'.*cuda"):
        VideoInput("a.mp4", hwaccel="nvidia")
    with pytest.raises(ValidationError, match="decode_threads"):
        VideoInput("a.mp4", decode_threads=-1)
    with pytest.raises(ValidationError, match="decode_skip"):
        VideoInput("a.mp4", decode_skip="nonref")  # type: ignore[arg-type]
    assert set(HWACCEL_TYPES) >= {"cuda", "vaapi", "videotoolbox", "qsv"}
    text = "purpose: test\ncameras:\n  gate:\n    inputs:\n      - path: gate.mp4\n        hwaccel: gpu\n"
    with pytest.raises(ConfigError) as error:
        parse_config(text, "site.yml", base_dir=tmp_path)
    assert "unknown hardware decoder 'gpu'" in str(error.value) and "line 6" in str(error.value)
    config = parse_config(text.replace("gpu", "vaapi") + "        decode_threads: 2\n", "site.yml",
                          base_dir=tmp_path)
    assert (config.cameras["gate"].detect_input.hwaccel, config.cameras["gate"].detect_input.decode_threads) == \
        ("vaapi", 2)


def test_a_camera_decodes_with_its_inputs_settings(street: Path) -> None:
    def run(**settings: object) -> tuple[int, int]:
        camera = Camera(CameraSettings("street", VideoInput(str(street), **settings),  # type: ignore[arg-type]
                                       DetectSettings(fps=5), motion=MotionSettings(enabled=False)))
        camera.start()
        analysed, deadline = 0, time.monotonic() + 60
        try:
            while not camera.done and time.monotonic() < deadline:
                analysed += camera.get(timeout=1.0) is not None
        finally:
            camera.stop()
        return analysed, camera.status().frames_decoded

    assert run(decode_skip="off") == (21, 105)
    assert run() == (21, 53)

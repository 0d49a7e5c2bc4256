"""A live camera's frames stay as decoded until the analysis asks for BGR, which then is what the source gives.

Real video: ``street.mp4`` (1080p H.264) through a real ``Camera`` reader thread.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from facetrail.video import Camera, CameraSettings, DetectSettings, Frame, FramePicture, VideoInput, open_source
from facetrail.video import camera as camera_module
from facetrail.video import picture as picture_module
from facetrail.video.motion import MotionSettings
from facetrail.video.picture import to_bgr
from facetrail.video.sources import AVSource

FRAMES = 4


def first_frames(street: Path, detect: DetectSettings) -> list[Frame]:
    """The first FRAMES frames a camera on ``street`` hands over (read in real time: live, as a stream would be)."""
    camera = Camera(CameraSettings("street", VideoInput(str(street), realtime=True), detect,
                                   motion=MotionSettings(enabled=False)))
    camera.start()
    frames: list[Frame] = []
    try:
        while len(frames) < FRAMES:
            frame = camera.get(timeout=30)
            assert frame is not None, f"the camera ended after {len(frames)} frames: {camera.status().error}"
            frames.append(frame)
    finally:
        camera.stop()
    return frames


def sources_pictures(street: Path, width: int | None) -> dict[float, np.ndarray]:
    """Every picture ``open_source`` gives at 5 fps, by media time."""
    source = open_source(str(street), fps=5, width=width)
    try:
        return {round(pts, 3): image for pts, image, _ in source}
    finally:
        source.close()


@pytest.mark.parametrize("width", [None, 640], ids=["1080p", "resized to 640"])
def test_a_live_camera_hands_over_decoded_frames_that_convert_to_the_sources_pictures(street_mp4: Path,
                                                                                      width: int | None) -> None:
    frames = first_frames(street_mp4, DetectSettings(fps=5, width=width))
    size = (640, 360) if width else (1920, 1080)
    # Handed over unconverted: the reader thread made no BGR picture, yet the size is known.
    assert [(f.picture.converted, f.picture.size) for f in frames] == [(False, size)] * FRAMES
    expected = sources_pictures(street_mp4, width)
    for frame in frames:
        converted = frame.image  # converted here, on the taker's thread
        assert frame.picture.converted and converted.shape == (size[1], size[0], 3)
        assert np.array_equal(converted, expected[round(frame.pts, 3)])  # the same conversion as the source's
        assert frame.image is converted  # once


def test_threads_asking_at_once_share_one_conversion(street_mp4: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    picture = first_frames(street_mp4, DetectSettings(fps=5))[0].picture
    assert not picture.converted
    conversions: list[int] = []

    def slow_to_bgr(frame: av.VideoFrame, size: tuple[int, int] | None = None) -> np.ndarray:
        conversions.append(threading.get_ident())
        time.sleep(0.2)  # widens the race: every thread has asked before the first conversion ends
        return to_bgr(frame, size)

    monkeypatch.setattr(picture_module, "to_bgr", slow_to_bgr)
    start = threading.Barrier(4)
    images: list[np.ndarray] = []

    def convert() -> None:
        start.wait()
        images.append(picture.bgr())

    threads = [threading.Thread(target=convert) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(conversions) == 1  # the others waited for it
    assert len(images) == 4 and all(image is images[0] for image in images)


def test_a_picture_made_from_an_image_is_that_image() -> None:
    image = np.zeros((120, 160, 3), np.uint8)
    picture = FramePicture(image)
    assert picture.converted and picture.size == (160, 120) and picture.bgr() is image


def test_a_source_waiting_for_its_next_frame_holds_no_picture_it_handed_over(street_mp4: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # Between two samples (a sampling period, while the next frames decode) the source must not keep the last
    # picture: once the analysis has converted it, that would keep a BGR frame (6 MB at 1080p) alive per camera.
    source = AVSource(str(street_mp4), live=True, fps=5)
    real_frames = source.frames
    converted: list[weakref.ref[np.ndarray]] = []
    held_while_waiting: list[bool] = []

    def frames_noting_what_is_held() -> Iterator[tuple[float, av.VideoFrame]]:
        decoded = real_frames()
        yield next(decoded)
        held_while_waiting.append(converted[0]() is not None)  # the source is now waiting for this frame
        yield next(decoded)

    monkeypatch.setattr(source, "frames", frames_noting_what_is_held)
    try:
        samples = source.samples()
        first = next(samples)
        image = first.picture.bgr()
        converted.append(weakref.ref(image))
        del first, image
        second = next(samples)
        assert held_while_waiting == [False], "the source held the picture it handed over while it waited"
        assert second.pts > 0
    finally:
        source.close()


def test_a_camera_waiting_for_its_next_frame_holds_no_picture_it_handed_over(
        street_mp4: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The reader's own reference is the one that matters here: the source's next frame does not come (as a
    # stream's does not until its time), and the reader waits for it, as a live camera does most of the time.
    waiting, release = threading.Event(), threading.Event()
    open_real = camera_module.open_source

    def open_then_pause(*args: Any, **kwargs: Any) -> AVSource:
        source = open_real(*args, **kwargs)
        assert isinstance(source, AVSource)
        real_frames = source.frames

        def first_frame_then_wait() -> Iterator[tuple[float, av.VideoFrame]]:
            yield next(real_frames())
            waiting.set()
            release.wait(60)

        monkeypatch.setattr(source, "frames", first_frame_then_wait)
        return source

    monkeypatch.setattr(camera_module, "open_source", open_then_pause)
    camera = Camera(CameraSettings("street", VideoInput(str(street_mp4), realtime=True), DetectSettings(fps=5),
                                   motion=MotionSettings(enabled=False)))
    camera.start()
    try:
        frame = camera.get(timeout=30)
        assert frame is not None, camera.status().error
        image = frame.image
        converted = weakref.ref(image)
        del frame, image
        assert waiting.wait(30), "the reader never asked for its next frame"
        assert converted() is None, "the camera's reader still holds the picture it handed over"
    finally:
        release.set()
        camera.stop()

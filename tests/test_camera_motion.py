"""Camera-motion estimation skips what nobody needs, and the pipeline still tracks and names the same people.

The flow follows 150 corners where it followed 300. A still camera is
estimated only every ``CHECK_EVERY``-th frame once it has been still for
``STILL_FRAMES`` frames, and frames without a track skip the optical flow.
These tests run real clips through the real pipeline twice, with the
shortcuts and with the previous behaviour (300 corners, every frame, the grey
copy shrunk in colour), and
compare every sighting: a still camera of real faces, street.mp4 (a hand-held
camera) at 1080p and 640x360, and the panning demo clip.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest
from sqlalchemy import select

import facetrail.pipeline.tracking as tracking_module
from facetrail.gallery.gallery import Gallery, GallerySettings
from facetrail.pipeline.runner import Pipeline
from facetrail.store.models import Sighting
from facetrail.synth.scenes import demo_clip
from facetrail.track import camera_motion
from facetrail.track.camera_motion import CameraMotion
from facetrail.vision.engine import FaceEngine
from facetrail.vision.image import BGRImage, load_image
from facetrail.vision.samples import sample_image
from pipeline_kit import config_for, enrol, head_and_shoulders, make_clip, walk_in

START = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)  # files replay from here: both runs' times comparable


class EveryFrame(CameraMotion):
    """The previous behaviour: the optical flow of 300 corners on every frame, tracks or not."""

    def __init__(self) -> None:
        super().__init__(max_corners=300, check_every=1)

    def estimate(self, image: BGRImage, *, needed: bool = True,
                 grey: Callable[[], np.ndarray] | None = None) -> np.ndarray | None:
        return super().estimate(image)  # its own grey copy, not the frame's shared one

    def _small(self, image: BGRImage, grey: Callable[[], np.ndarray] | None = None) -> np.ndarray:
        # shrunk in colour, then made grey
        height, width = image.shape[:2]
        self._scale = min(1.0, self.work_width / width)
        size = (max(1, round(width * self._scale)), max(1, round(height * self._scale)))
        return np.asarray(cv2.cvtColor(cv2.resize(image, size, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY),
                          np.uint8)


def _window(photo: BGRImage, x: int, noise: np.random.Generator) -> BGRImage:
    """A 640x360 view of the photo at horizontal offset ``x`` with sensor noise."""
    view = cv2.resize(photo, (1280, 720), interpolation=cv2.INTER_AREA)[120:480, x:x + 640].astype(np.float32)
    return np.clip(view + noise.normal(0, 2.0, view.shape), 0, 255).astype(np.uint8)


def test_a_still_camera_is_checked_now_and_then_and_a_pan_brings_back_every_frame() -> None:
    photo = load_image(sample_image("players.jpg"))
    noise = np.random.default_rng(0)
    motion = CameraMotion()
    still = [motion.estimate(_window(photo, 100, noise)) for _ in range(camera_motion.STILL_FRAMES + 1)]
    assert all(m is not None and abs(m[:, 2]).max() < 1.0 for m in still[1:])  # noise only: about no motion
    assert motion.still and motion.estimated == camera_motion.STILL_FRAMES
    skipped = [motion.estimate(_window(photo, 100, noise)) for _ in range(2 * camera_motion.CHECK_EVERY)]
    assert motion.estimated == camera_motion.STILL_FRAMES + 2  # one check per CHECK_EVERY frames
    assert sum(m is None for m in skipped) == 2 * (camera_motion.CHECK_EVERY - 1)
    # The camera pans 12 px a frame: found at the next check, then estimated on every frame again.
    panned = [motion.estimate(_window(photo, 100 + 12 * k, noise)) for k in range(1, 2 * camera_motion.CHECK_EVERY)]
    found = [m for m in panned if m is not None]
    assert not motion.still and len(found) >= camera_motion.CHECK_EVERY
    first = next(k for k, m in enumerate(panned) if m is not None)
    assert first < camera_motion.CHECK_EVERY
    assert all(m is not None for m in panned[first:])
    for m in found:
        assert m[0, 2] == pytest.approx(-12.0, abs=1.0) and abs(m[1, 2]) < 1.0  # one frame's pan, not five


def test_no_track_means_no_optical_flow_and_the_next_estimate_is_unchanged() -> None:
    photo = load_image(sample_image("players.jpg"))
    frames = [_window(photo, 100 + 8 * k, np.random.default_rng(k)) for k in range(3)]
    lazy, full = CameraMotion(), CameraMotion()
    assert lazy.estimate(frames[0]) is None and full.estimate(frames[0]) is None
    assert lazy.estimate(frames[1], needed=False) is None and lazy.estimated == 0
    full.estimate(frames[1])
    one, other = lazy.estimate(frames[2]), full.estimate(frames[2])
    assert one is not None and other is not None
    np.testing.assert_array_equal(one, other)


# -- the pipeline, with and without the shortcuts ---------------------------------------------------------------


def _run(store: Path, clip: Path, engine: FaceEngine, monkeypatch: pytest.MonkeyPatch, every_frame: bool,
         size: tuple[int, int] | None) -> tuple[list[tuple[Any, ...]], CameraMotion]:
    with monkeypatch.context() as patch:
        if every_frame:
            patch.setattr(tracking_module, "CameraMotion", EveryFrame)
        config = config_for(store, {"cam": clip})
        camera = config.cameras["cam"]
        camera.motion = dataclasses.replace(camera.motion, enabled=False)  # every sampled frame analysed
        if size is not None:
            camera.detect = dataclasses.replace(camera.detect, width=size[0], height=size[1])
        pipeline = Pipeline(config, engine=engine, actor="tester", start_time=START)
        pipeline.run(until_done=True)
    motion = pipeline.cameras[0].tracking.motion
    gallery = Gallery(GallerySettings(store))
    try:
        with gallery.db.session() as session:
            rows = session.scalars(select(Sighting).order_by(Sighting.first_seen, Sighting.id)).all()
            return [(s.track_uid.split(":", 1)[1], s.identity_id, s.first_seen, s.last_seen, s.frames,
                     None if s.score is None else round(s.score, 5), round(s.quality, 5)) for s in rows], motion
    finally:
        gallery.db.dispose()


def _same_with_and_without(tmp_path: Path, clip: Path, engine: FaceEngine, monkeypatch: pytest.MonkeyPatch,
                           name: str, photo: Path, size: tuple[int, int] | None = None,
                           ) -> tuple[list[tuple[Any, ...]], CameraMotion]:
    runs = {}
    for label, every_frame in (("every", True), ("lazy", False)):
        store = tmp_path / label
        enrol(store, engine, name, photo)
        runs[label] = _run(store, clip, engine, monkeypatch, every_frame, size)
    (every, full), (lazy, motion) = runs["every"], runs["lazy"]
    assert full.skipped == 0 and full.estimated > 0
    assert every == lazy, (every, lazy)
    assert any(row[1] is not None for row in lazy), "nobody named: the comparison would prove nothing"
    return lazy, motion


@pytest.mark.models
def test_a_still_camera_names_the_same_tracks_with_a_fraction_of_the_optical_flow(
        tmp_path: Path, video_engine: FaceEngine, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    yao = head_and_shoulders(video_engine, sample_image("yaoming.jpg"))
    biden = head_and_shoulders(video_engine, data_dir / "faces" / "biden" / "biden.jpg")
    clip = make_clip(tmp_path / "still.mp4", [walk_in(biden, 0.0, 9.5, 0.7), walk_in(yao, 3.0, 9.0, 0.3)], 10.0)
    rows, motion = _same_with_and_without(tmp_path, clip, video_engine, monkeypatch, "Yao Ming",
                                          sample_image("yaoming.jpg"))
    assert len(rows) >= 2
    assert motion.skipped > motion.estimated  # the shortcut did happen: most frames had no optical flow


@pytest.mark.models
@pytest.mark.parametrize("size", [None, (640, 360)], ids=["1080p", "640x360"])
def test_street_mp4_names_the_same_tracks(tmp_path: Path, video_engine: FaceEngine, data_dir: Path,
                                          monkeypatch: pytest.MonkeyPatch, size: tuple[int, int] | None) -> None:
    street = data_dir / "video" / "street.mp4"
    if not street.exists():
        pytest.skip(f"{street} is absent")
    # the boy in the blue hoodie, cut from frame 100 of the clip itself (as bench/video.py enrols him)
    with av.open(str(street)) as container:
        image = next(f for k, f in enumerate(container.decode(video=0)) if k == 100).to_ndarray(format="bgr24")
    photo = tmp_path / "boy.png"
    cv2.imwrite(str(photo), image[733 - 130:733 + 130, 788 - 130:788 + 130])
    rows, motion = _same_with_and_without(tmp_path, street, video_engine, monkeypatch, "Boy", photo, size)
    assert len(rows) >= 5 and not motion.still  # a hand-held camera: estimated on every frame with tracks


@pytest.mark.models
def test_the_panning_demo_clip_names_the_same_tracks(tmp_path: Path, video_engine: FaceEngine,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    clip = demo_clip(tmp_path / "demo.mp4")
    rows, motion = _same_with_and_without(tmp_path, clip.path, video_engine, monkeypatch, "Yao Ming",
                                          sample_image("yaoming.jpg"))
    assert len({row[1] for row in rows if row[1] is not None}) == 1 and motion.estimated > 0

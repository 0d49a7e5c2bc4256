"""Synthetic camera clips: the mp4 writer, the scenes and the demo clip, checked with the real engine."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

import facetrail.synth.writer as writer_module
from facetrail.synth import (
    Appearance,
    DemoClip,
    composite_scene,
    demo_clip,
    demo_frames,
    face_crop,
    pan_zoom,
    write_clip,
)
from facetrail.synth.scenes import DEMO_PLAYER_BOX, synthetic_background
from facetrail.vision.engine import FaceEngine
from facetrail.vision.image import BGRImage, as_bgr, load_image
from facetrail.vision.lowlight import mean_luminance
from facetrail.vision.types import FaceEmbeddings

EDGE_S = 0.3  # frames this close to the edge of an appearance may show a partly cut face; they are not asserted on


def decode(path: Path) -> tuple[list[BGRImage], av.video.stream.VideoStream]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [as_bgr(frame.to_ndarray(format="bgr24")) for frame in container.decode(stream)]
    return frames, stream


def gradient_frames(count: int, width: int, height: int) -> Iterator[BGRImage]:
    """Frames that differ from each other (brightness rises with the index) and have spatial detail."""
    ramp = np.linspace(0, 60, width, dtype=np.float32)[None, :, None]
    for i in range(count):
        frame = np.broadcast_to(ramp + 20 * i + 20, (height, width, 3))
        yield np.clip(frame, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def yao_embedding(video_engine: FaceEngine, yaoming: BGRImage) -> FaceEmbeddings:
    faces = video_engine.analyze(yaoming)
    assert len(faces) == 1
    return faces.embeddings


def best_similarity(engine: FaceEngine, frame: BGRImage, reference: FaceEmbeddings) -> float:
    faces = engine.analyze(frame)
    return float(faces.embeddings.similarity(reference).max()) if len(faces) else -1.0


# --- writer -----------------------------------------------------------------------------------------------------------


def test_write_clip_writes_a_readable_h264_mp4_with_padded_odd_size(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    originals = list(gradient_frames(6, 101, 61))
    assert write_clip(path, iter(originals), fps=12.5) == 6
    frames, stream = decode(path)
    assert len(frames) == 6
    assert (stream.width, stream.height) == (102, 62)
    assert stream.average_rate == 12.5
    assert stream.codec_context.name == "h264"
    for original, frame in zip(originals, frames, strict=True):
        # Same frame in the same order, colours kept (no systematic shift from the colour conversion).
        assert abs(float(frame[:61, :101].mean()) - float(original.mean())) < 1.5
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


def test_write_clip_falls_back_to_mpeg4(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer_module, "PREFERRED_CODECS", ("no-such-encoder", "mpeg4"))
    path = tmp_path / "clip.mp4"
    assert write_clip(path, gradient_frames(3, 64, 48), fps=5) == 3
    frames, stream = decode(path)
    assert len(frames) == 3 and stream.codec_context.name == "mpeg4"


def test_a_failing_frame_source_leaves_no_file_and_keeps_the_old_clip(tmp_path: Path) -> None:
    def broken() -> Iterator[BGRImage]:
        yield from gradient_frames(3, 64, 48)
        raise RuntimeError("camera unplugged")

    with pytest.raises(RuntimeError, match="camera unplugged"):
        write_clip(tmp_path / "new.mp4", broken())
    assert list(tmp_path.iterdir()) == []

    old = tmp_path / "old.mp4"
    write_clip(old, gradient_frames(2, 64, 48))
    before = old.read_bytes()
    with pytest.raises(RuntimeError):
        write_clip(old, broken())
    assert old.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["old.mp4"]


def test_write_clip_refuses_no_frames_and_mixed_sizes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no frames"):
        write_clip(tmp_path / "empty.mp4", [])
    mixed = [np.zeros((48, 64, 3), np.uint8), np.zeros((50, 64, 3), np.uint8)]
    with pytest.raises(ValueError, match="frame 1"):
        write_clip(tmp_path / "mixed.mp4", mixed)
    assert list(tmp_path.iterdir()) == []


# --- scenes -----------------------------------------------------------------------------------------------------------


@pytest.mark.models
def test_a_person_is_in_the_composite_scene_only_during_the_appearance(
        video_engine: FaceEngine, data_dir: Path) -> None:
    obama = load_image(data_dir / "faces" / "obama" / "obama.jpg")
    reference = video_engine.analyze(obama).embeddings
    walk_in = Appearance(obama, start_s=1.0, end_s=2.0, start_xy=(0.3, 0.55), end_xy=(0.5, 0.5),
                         start_scale=0.6, end_scale=0.8)
    frames = list(composite_scene([walk_in], duration_s=3.0, fps=5, size=(480, 270), noise=2.0))
    assert len(frames) == 15
    for i, frame in enumerate(frames):
        t = i / 5
        faces = video_engine.analyze(frame)
        if 1.0 <= t <= 2.0:
            assert len(faces) == 1, t
            assert float(faces.embeddings.similarity(reference).max()) >= video_engine.threshold, t
        else:
            assert len(faces) == 0, t
    # The person grows while walking in (end_scale > start_scale).
    first, last = video_engine.analyze(frames[5]), video_engine.analyze(frames[10])
    assert last.detections.areas[0] > first.detections.areas[0] * 1.4


def test_darken_dims_the_frames_it_is_asked_to() -> None:
    frames = list(composite_scene([], duration_s=2.0, fps=4, size=(160, 90),
                                  darken=lambda t: 0.2 if t >= 1.0 else 1.0))
    light = [mean_luminance(f) for f in frames[:4]]
    dark = [mean_luminance(f) for f in frames[4:]]
    assert min(light) > 100
    assert max(dark) < 0.25 * min(light)
    # Without noise the static scene is exactly the same frame after frame.
    assert all(np.array_equal(frames[0], f) for f in frames[1:4])


def test_noise_is_per_frame_and_seeded() -> None:
    a = list(composite_scene([], duration_s=0.4, fps=5, size=(160, 90), noise=4.0, seed=1))
    b = list(composite_scene([], duration_s=0.4, fps=5, size=(160, 90), noise=4.0, seed=1))
    c = list(composite_scene([], duration_s=0.4, fps=5, size=(160, 90), noise=4.0, seed=2))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], a[1])
    assert not np.array_equal(a[0], c[0])
    clean = synthetic_background((160, 90))
    assert 2.0 < float(np.std(a[0].astype(np.float32) - clean)) < 6.0


@pytest.mark.models
def test_pan_zoom_follows_the_keyframes_and_a_cropped_player_walks_in(
        video_engine: FaceEngine, players: BGRImage, yao_embedding: FaceEmbeddings) -> None:
    # Zoom 3 on the left end of the team, then on the right end; the view is kept inside the photo.
    keyframes = [(0.0, 0.0, 0.5, 3.0), (1.0, 1.0, 0.5, 3.0)]
    left, right = pan_zoom(players, duration_s=2.0, fps=1, size=(320, 180), keyframes=keyframes)
    height, width = players.shape[:2]
    view_w = width / 3
    view_h = view_w * 180 / 320
    top = int(round(height / 2 - view_h / 2))
    rows = slice(top, top + int(round(view_h)))
    expected_left = cv2.resize(players[rows, :int(round(view_w))], (320, 180), interpolation=cv2.INTER_AREA)
    expected_right = cv2.resize(players[rows, width - int(round(view_w)):], (320, 180), interpolation=cv2.INTER_AREA)
    assert np.abs(left.astype(int) - expected_left).mean() < 8
    assert np.abs(right.astype(int) - expected_right).mean() < 8
    assert np.abs(left.astype(int) - expected_right).mean() > 30

    # Cut the player of yaoming.jpg out of the team photo and let him walk into an empty room.
    team = video_engine.analyze(players)
    box = team.detections.xyxy[int(np.argmax(team.embeddings.similarity(yao_embedding)[:, 0]))]
    assert np.allclose(box, DEMO_PLAYER_BOX, atol=4)  # the demo's timeline is computed from this box
    crop = face_crop(players, box)
    assert crop.shape[0] > 2 * (box[3] - box[1])
    frame = next(composite_scene([Appearance(crop, 0.0, 1.0, start_scale=0.7, end_scale=0.7)],
                                 duration_s=0.1, size=(320, 180)))
    assert best_similarity(video_engine, frame, yao_embedding) >= video_engine.threshold


# --- the demo clip ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[DemoClip, list[BGRImage]]:
    clip = demo_clip(tmp_path_factory.mktemp("demo") / "demo.mp4")
    frames, _ = decode(clip.path)
    return clip, frames


def test_demo_clip_is_deterministic(demo: tuple[DemoClip, list[BGRImage]], tmp_path: Path,
                                    players: BGRImage) -> None:
    clip, frames = demo
    again = demo_clip(tmp_path / "again.mp4")
    assert again.path.read_bytes() == clip.path.read_bytes()
    hashes = [hashlib.sha256(f.tobytes()).hexdigest() for f in demo_frames(players)]
    assert hashes == [hashlib.sha256(f.tobytes()).hexdigest() for f in demo_frames(players)]
    assert len(hashes) == clip.frames == len(frames)


def test_demo_clip_timeline(demo: tuple[DemoClip, list[BGRImage]]) -> None:
    clip, frames = demo
    assert clip.frames == 70 and clip.duration_s == pytest.approx(7.0)
    assert frames[0].shape == (clip.size[1], clip.size[0], 3)
    (first_in, first_out), (second_in, second_out) = clip.appearances
    assert first_in == 0.0 and second_out == pytest.approx(clip.duration_s)
    assert second_in - first_out >= 1.5  # long enough away to count as two appearances
    # The dark stretch covers part of the second appearance, not all of it.
    assert second_in < clip.dark_to_s < second_out and clip.dark_from_s < second_in + 0.5
    assert "players.jpg" in clip.description


@pytest.mark.models
def test_demo_player_is_found_where_he_should_be_even_in_the_dark(
        demo: tuple[DemoClip, list[BGRImage]], video_engine: FaceEngine, yao_embedding: FaceEmbeddings) -> None:
    clip, frames = demo
    (first_in, first_out), (second_in, second_out) = clip.appearances
    for i, frame in enumerate(frames):
        dark = clip.dark_from_s <= i / clip.fps < clip.dark_to_s
        assert (mean_luminance(frame) < 30) if dark else (mean_luminance(frame) > 80), i / clip.fps
    # Every 4th frame: each frame holds up to 20 faces to embed, so all 70 would be slow on a CPU.
    matched_in_the_dark = 0
    for i in range(0, clip.frames, 4):
        t = i / clip.fps
        similarity = best_similarity(video_engine, frames[i], yao_embedding)
        if first_in <= t < first_out - EDGE_S or second_in + EDGE_S <= t < second_out:
            assert similarity >= video_engine.threshold, (t, similarity)
            matched_in_the_dark += clip.dark_from_s <= t < clip.dark_to_s
        elif first_out + EDGE_S <= t < second_in - EDGE_S:
            assert similarity < video_engine.threshold, (t, similarity)
    assert matched_in_the_dark >= 3

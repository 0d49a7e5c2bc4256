"""Faces the detector used to miss: small photos, tight face crops, dark faces in bright borders.

Every image here is a real photo (LFW View 1 under ../shared/data, or the photos the model package ships),
shrunk, cropped, greyed or darkened the way a camera or an ID photo delivers it; a face counts as found
only when its embedding matches the untouched photo's above the recogniser's calibrated threshold.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from facetrail.gallery.enrol_faces import Outcome, judge
from facetrail.vision.border import add_border, border_geometry, remove_border
from facetrail.vision.detector import ScrfdDetector
from facetrail.vision.engine import EngineConfig, FaceEngine, ImageFaces, align_faces_of
from facetrail.vision.image import BGRImage, load_image
from facetrail.vision.lowlight import LowLightConfig, enhance, is_dark, region_to_enhance, worth_enhancing
from facetrail.vision.types import FaceDetections

pytestmark = pytest.mark.models

CROP_SIZE = (92, 112)  # (width, height) of a camera's face capture, as in the AT&T/ORL face crops
# LFW photos whose night-camera frames (``_night_cctv``) had no face found when dark frames were brightened by CLAHE
NIGHT_PHOTOS = ["Ali_Khamenei/Ali_Khamenei_0001.jpg", "Charles_Taylor/Charles_Taylor_0009.jpg"]


@pytest.fixture(scope="module")
def crops_engine() -> FaceEngine:
    """An engine told that its images are face captures."""
    return FaceEngine(EngineConfig(face_crops=True))


def _lfw(data_dir: Path, relative: str) -> BGRImage:
    return load_image(data_dir / "lfw-view1" / "images" / relative)


def _primary_vector(faces: ImageFaces) -> np.ndarray:
    index = faces.primary()
    assert index is not None, "no face found"
    return np.asarray(faces.embeddings.vectors[index])


def _tight_grey_crop(image: BGRImage, faces: ImageFaces, scale: float = 1.05) -> BGRImage:
    """The primary face's box (times ``scale``), grey, resized to 92x112: nearly all face."""
    index = faces.primary()
    assert index is not None
    x1, y1, x2, y2 = (float(v) for v in faces.detections.xyxy[index])
    height = (y2 - y1) * scale
    width = height * CROP_SIZE[0] / CROP_SIZE[1]
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    crop = cv2.getRectSubPix(grey, (round(width), round(height)), ((x1 + x2) / 2, (y1 + y2) / 2))
    small = cv2.resize(crop, CROP_SIZE, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(np.repeat(small[:, :, None], 3, axis=2))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))


def _darken(image: BGRImage, factor: float, noise: float, seed: int = 7) -> BGRImage:
    rng = np.random.default_rng(seed)
    grey = image[:, :, 0].astype(np.float64) * factor + rng.normal(0, noise, image.shape[:2])
    dark = np.clip(grey, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(dark[:, :, None], 3, axis=2))


@pytest.mark.parametrize("relative", ["Morgan_Freeman/Morgan_Freeman_0002.jpg",
                                      "Lisa_Raymond/Lisa_Raymond_0002.jpg"])
def test_an_lfw_photo_missed_on_the_640_canvas_is_found_at_its_own_size(engine: FaceEngine, data_dir: Path,
                                                                          relative: str) -> None:
    """250x250 photos enlarged 2.56x into 640x640 lost their face; on a 256 canvas it is found and matches."""
    photo = _lfw(data_dir, relative)
    assert engine.detector.canvas_for(250, 250) == (256, 256)
    enlarged = ScrfdDetector(fit_canvas=False)
    assert len(enlarged.detect(photo)) == 0  # what facetrail did before: the face was lost
    faces = engine.analyze(photo)
    name = relative.split("/")[0]
    other = _lfw(data_dir, f"{name}/{name}_0001.jpg")
    assert float(_primary_vector(faces) @ _primary_vector(engine.analyze(other))) >= engine.threshold


@pytest.mark.parametrize("relative", ["Morgan_Freeman/Morgan_Freeman_0002.jpg",
                                      "Lisa_Raymond/Lisa_Raymond_0002.jpg"])
def test_a_tiny_photo_is_enlarged_to_the_smallest_canvas_and_its_face_matches(engine: FaceEngine, data_dir: Path,
                                                                               relative: str) -> None:
    """A 32-px photo is detected on a 160-px canvas (at its own size SCRFD misses most such faces) and matches."""
    tiny = cv2.resize(_lfw(data_dir, relative), (32, 32), interpolation=cv2.INTER_AREA)
    assert engine.detector.canvas_for(32, 32) == (160, 160)
    name = relative.split("/")[0]
    other = _lfw(data_dir, f"{name}/{name}_0001.jpg")
    assert float(_primary_vector(engine.analyze(tiny)) @ _primary_vector(engine.analyze(other))) >= engine.threshold


def test_a_large_frame_is_detected_exactly_as_on_the_full_canvas(plain_engine: FaceEngine,
                                                                  players: BGRImage) -> None:
    """Frames at least as large as the canvas keep InsightFace's 640x640 letterbox, bit for bit."""
    assert plain_engine.detector.canvas_for(players.shape[1], players.shape[0]) == (640, 640)
    fitted = plain_engine.detector.detect(players)
    full = ScrfdDetector(fit_canvas=False).detect(players)
    assert len(fitted) >= 20
    assert np.array_equal(fitted.xyxy, full.xyxy) and np.array_equal(fitted.landmarks, full.landmarks)
    frame = plain_engine.detect_frames([players])[0]
    assert not frame.enhanced and frame.image is players
    assert np.array_equal(frame.faces.scores, full.scores)


def test_a_tight_grey_face_crop_is_found_and_matches_the_photo(engine: FaceEngine, crops_engine: FaceEngine,
                                                               data_dir: Path) -> None:
    photo = _lfw(data_dir, "Rob_Lowe/Rob_Lowe_0001.jpg")
    original = engine.analyze(photo)
    crop = _tight_grey_crop(photo, original)
    assert len(ScrfdDetector(fit_canvas=False).detect(crop)) == 0  # enlarged into 640x640, the face was lost
    for searcher in (engine, crops_engine):
        found = searcher.analyze(crop)
        assert len(found) == 1
        x1, y1, x2, y2 = found.detections.xyxy[0]
        assert 0 <= x1 < x2 <= CROP_SIZE[0] and 0 <= y1 < y2 <= CROP_SIZE[1]
        assert float(_primary_vector(found) @ _primary_vector(original)) >= engine.threshold


def test_a_dark_face_crop_in_a_grey_border_is_enhanced_and_matches(engine: FaceEngine, data_dir: Path) -> None:
    """The whole image is bright (the border), the face is dark: the face's darkness decides."""
    photo = _lfw(data_dir, "Rob_Lowe/Rob_Lowe_0002.jpg")
    original = engine.analyze(photo)
    dark_crop = _darken(_tight_grey_crop(photo, original), factor=0.1, noise=3.0)
    bordered, _ = add_border(dark_crop, 0.5)
    assert not is_dark(bordered)  # the old whole-image rule would never have enhanced it
    assert worth_enhancing(bordered, np.zeros((0, 4), np.float32))
    found = engine.analyze(bordered)
    assert found.enhanced
    assert float(_primary_vector(found) @ _primary_vector(original)) >= engine.threshold


def test_a_dark_grey_face_capture_is_found_and_matches(crops_engine: FaceEngine, data_dir: Path) -> None:
    """A night face capture straight from a camera: tight, grey, at 10% exposure with sensor noise."""
    photo = _lfw(data_dir, "Rob_Lowe/Rob_Lowe_0001.jpg")
    original = crops_engine.analyze(photo)
    dark_crop = _darken(_tight_grey_crop(photo, original), factor=0.1, noise=3.0)
    found = crops_engine.analyze(dark_crop)
    assert found.enhanced
    assert float(_primary_vector(found) @ _primary_vector(original)) >= crops_engine.threshold


def _night_cctv(image: BGRImage, seed: int = 7) -> BGRImage:
    """``image`` degraded as ../shared/tools/night_cctv.py does it: 240 px, 12% exposure, noise 8, JPEG 75.

    Darkened in linear light (sRGB ** 2.2 times the exposure) and stored without re-encoding: a very dark frame.
    """
    scaled = image.astype(np.float32) / 255.0
    height, width = scaled.shape[:2]
    scale = 240 / max(height, width)
    scaled = cv2.resize(scaled, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
    dark = scaled ** 2.2 * 0.12 + np.random.default_rng(seed).normal(0, 8.0 / 255, scaled.shape)
    _, jpeg = cv2.imencode(".jpg", np.clip(dark * 255, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 75])
    return np.ascontiguousarray(cv2.imdecode(jpeg, cv2.IMREAD_COLOR))


@pytest.mark.parametrize("relative", NIGHT_PHOTOS)
def test_a_night_cctv_frame_is_brightened_by_gain_and_tone_curve_and_its_face_matches(
        engine: FaceEngine, data_dir: Path, relative: str) -> None:
    """A night camera frame of an LFW photo: CLAHE brightening found no face here (its local equalisation
    amplified the sensor noise most where the signal was weakest); a gain and the display tone curve find
    it, and it matches the full-size photo."""
    photo = _lfw(data_dir, relative)
    night = _night_cctv(photo)
    assert len(engine.detector.detect(night)) == 0
    found = engine.analyze(night)
    assert found.enhanced
    assert float(_primary_vector(found) @ _primary_vector(engine.analyze(photo))) >= engine.threshold


def test_a_night_face_the_enhanced_look_misses_at_full_size_is_found_at_half_size_and_matches(
        engine: FaceEngine, data_dir: Path) -> None:
    """Brightening a night frame lifts its sensor noise with the face: the detector finds nothing in the enhanced
    frame, plain or inside a border; shrunk to half size (the noise halved), the face is found, mapped back into
    the frame's coordinates, and matches the daylight photo."""
    photo = _lfw(data_dir, "Benedita_da_Silva/Benedita_da_Silva_0001.jpg")
    night = _night_cctv(photo)
    assert len(engine.detector.detect(night)) == 0
    region = region_to_enhance(night, np.zeros((0, 4), np.float32), LowLightConfig())
    assert region is not None
    brightened = enhance(night, LowLightConfig(), region)
    assert [len(f) for f in engine.detector.detect_many([brightened, add_border(brightened)[0]])] == [0, 0]
    found = engine.analyze(night)
    assert found.enhanced and len(found) == 1
    daylight = engine.analyze(photo)
    index = daylight.primary()
    assert index is not None
    assert _iou(found.detections.xyxy[0], daylight.detections.xyxy[index] * (night.shape[0] / photo.shape[0])) > 0.6
    assert float(_primary_vector(found) @ _primary_vector(daylight)) >= engine.threshold


def test_the_half_size_look_of_a_large_frame_is_half_the_canvas_and_its_faces_come_back_in_place(
        engine: FaceEngine, data_dir: Path) -> None:
    """A frame larger than the canvas is already shrunk by the detector: the second look shrinks it to half
    the canvas (a 2000x1428 photo to 320 px wide), not to half its own size, which the detector would see at
    the first look's scale; the faces found there come back in the frame's coordinates."""
    frame = load_image(data_dir / "scenes" / "obama_and_biden.jpg")
    assert frame.shape[1] > 2 * 640
    full = engine.detector.detect(frame)
    half = engine._detect_shrunk([frame], engine.detector)[0]
    assert half.enhanced and half.image is frame
    assert len(full) >= 2 and len(half.faces) >= 2
    for box in full.xyxy[np.argsort(-full.areas)[:2]]:  # the two largest faces
        assert max(_iou(box, other) for other in half.faces.xyxy) > 0.7


def test_a_profile_whose_landmarks_fit_no_frontal_face_is_kept_when_it_is_the_photos_only_face(
        engine: FaceEngine, data_dir: Path) -> None:
    """A full profile: its five landmarks fit the frontal template badly, so video never embeds such a shot, but
    a photo analysed for its face keeps it (flagged by a quality of 0) rather than giving none; it matches
    another photo of the man, and enrolment refuses it as too low quality, asking for a frontal photo."""
    photo = _lfw(data_dir, "George_Clooney/George_Clooney_0002.jpg")
    frame = engine.detect_frames([photo])[0]
    assert len(frame.faces) == 1
    assert not align_faces_of(frame.image, frame.faces, engine.config.max_alignment_residual).fits.any()
    faces = engine.analyze(photo)
    assert len(faces) == 1 and faces.dropped_misaligned == 0
    quality = faces.qualities[0]
    assert quality.parts["alignment"] == 0.0 and quality.score == 0.0
    for number in (5, 8):
        other = engine.analyze(_lfw(data_dir, f"George_Clooney/George_Clooney_000{number}.jpg"))
        assert float(_primary_vector(faces) @ _primary_vector(other)) >= engine.threshold
    verdict = judge(faces)
    assert verdict.outcome is Outcome.LOW_QUALITY and "frontal" in verdict.detail


def test_an_infrared_single_channel_frame_is_searched_enhanced_and_stays_grey(engine: FaceEngine,
                                                                             yaoming: BGRImage) -> None:
    """An infrared camera's grey frame at 4% exposure with sensor noise: the plain look finds nothing."""
    grey = cv2.cvtColor(yaoming, cv2.COLOR_BGR2GRAY)
    noisy = grey * 0.04 + np.random.default_rng(7).normal(0, 3.0, grey.shape)
    image = np.ascontiguousarray(np.repeat(np.clip(noisy, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2))
    assert len(engine.detector.detect(image)) == 0
    frame = engine.detect_frames([image])[0]
    assert len(frame.faces) == 1 and frame.enhanced
    original = engine.detector.detect(yaoming)
    assert _iou(frame.faces.xyxy[0], original.xyxy[0]) > 0.7
    assert np.array_equal(frame.image[:, :, 0], frame.image[:, :, 2])


def test_enhancement_never_loses_a_face_the_plain_image_gives(engine: FaceEngine, data_dir: Path) -> None:
    """Dark photos, some with sensor noise: the face the plain image gives is never replaced by a weaker one.

    The plain look comes first; an enhanced look is taken only when the plain one found no confident face,
    and kept only when its face is more confident.
    """
    plain_kept = enhanced_won = 0
    for relative in ["Rob_Lowe/Rob_Lowe_0001.jpg", "Rob_Lowe/Rob_Lowe_0002.jpg"]:
        photo = _lfw(data_dir, relative)
        for factor, noise in ((0.25, 0.0), (0.12, 0.0), (0.06, 2.0), (0.04, 3.0)):
            dark = (photo.astype(np.float64) * factor + np.random.default_rng(1).normal(0, noise, photo.shape))
            image = np.clip(dark, 0, 255).astype(np.uint8)
            plain = engine.detector.detect(image)
            frame = engine.detect_frames([image])[0]
            assert len(frame.faces), (relative, factor)
            if len(plain):
                assert frame.faces.scores.max() >= plain.scores.max()
            if len(plain) and np.array_equal(frame.faces.xyxy, plain.xyxy):
                plain_kept += 1  # (aligned on an enhanced copy when the face is dark)
            else:
                enhanced_won += 1
                assert frame.enhanced
                assert not len(plain) or plain.scores.max() < frame.faces.scores.max()
    assert plain_kept >= 2 and enhanced_won >= 1


def test_faces_found_inside_a_border_come_back_in_the_image_coordinates() -> None:
    image = np.zeros((112, 92, 3), np.uint8)
    bordered, offset = add_border(image)
    side, geometry_offset = border_geometry(92, 112)
    assert bordered.shape == (side, side, 3) and offset == geometry_offset
    assert np.array_equal(bordered[offset[1]:offset[1] + 112, offset[0]:offset[0] + 92], image)
    box = np.array([[offset[0] - 5.0, offset[1] + 10.0, offset[0] + 50.0, offset[1] + 120.0]], np.float32)
    points = np.tile(np.array([[offset[0] + 30.0, offset[1] + 40.0]], np.float32), (1, 5, 1))
    back = remove_border(FaceDetections(box, np.array([0.9], np.float32), points), offset, 92, 112)
    assert np.allclose(back.xyxy, [[0.0, 10.0, 50.0, 112.0]])
    assert np.allclose(back.landmarks, 30.0 + np.array([0.0, 10.0]))

"""facetrail's embeddings equal InsightFace's own pipeline on the same faces and weights.

This is what lets facetrail claim the models' published accuracy: no detail of
decoding, alignment or normalisation may cost anything. Both paths are covered:
the engine's (photos) and the video pipeline's (``FrameAnalyzer``, on the canvas that fits
video frames). (Faces rolled past
``upright.ROLL_LIMIT`` are re-detected upright on purpose; the photos here are
within it, and ``test_vision_models`` shows the re-detection is the better one.) An image smaller than the
640x640 canvas is detected on a canvas of its own size rounded up to 32 (see ``vision/detector.py``): it is
compared with InsightFace prepared with that ``det_size``; frames at least 640 pixels long are compared at 640.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from facetrail.pipeline.analyzer import FrameAnalyzer
from facetrail.video.sources import open_source
from facetrail.vision.engine import FaceEngine
from facetrail.vision.image import BGRImage, load_image
from facetrail.vision.lowlight import LowLightConfig
from facetrail.vision.registry import SCRFD_500M, W600K_MBF
from facetrail.vision.types import FaceDetections

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def insightface_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    analysis = pytest.importorskip("insightface.app", reason="insightface is in the dev extra")
    folder = tmp_path_factory.mktemp("insightface-models")
    for spec in (SCRFD_500M, W600K_MBF):
        os.symlink(spec.path(), folder / spec.path().name)
    app = analysis.FaceAnalysis(name=str(folder), providers=["CPUExecutionProvider"])
    app.prepare(ctx_id=-1, det_size=(640, 640))
    yield app


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _compare(app: object, engine: FaceEngine, image: BGRImage) -> list[float]:
    ours = engine.analyze(image)
    canvas = engine.detector.canvas_for(image.shape[1], image.shape[0])
    return _cosines(app, image, ours.detections, ours.embeddings.vectors, canvas)


def _reference(app: object, image: BGRImage, canvas: tuple[int, int]) -> list[object]:
    """InsightFace's faces on the canvas facetrail's detector uses for this image."""
    app.prepare(ctx_id=-1, det_size=canvas)  # type: ignore[attr-defined]
    try:
        return list(app.get(image))  # type: ignore[attr-defined]
    finally:
        app.prepare(ctx_id=-1, det_size=(640, 640))  # type: ignore[attr-defined]


def _cosines(app: object, image: BGRImage, faces: FaceDetections, vectors: np.ndarray,
             canvas: tuple[int, int] = (640, 640)) -> list[float]:
    """Cosine of each reference face's embedding with ours of the same face (matched by box)."""
    reference: list = _reference(app, image, canvas)
    assert len(faces) == len(reference) == len(vectors)
    cosines = []
    for face in reference:
        ious = [_iou(face.bbox, box) for box in faces.xyxy]
        match = int(np.argmax(ious))
        assert ious[match] > 0.9
        assert np.allclose(faces.landmarks[match], face.kps, atol=0.05)
        cosines.append(float(vectors[match] @ face.normed_embedding))
    return cosines


def test_embeddings_match_insightface_on_the_team(insightface_app: object, plain_engine: FaceEngine,
                                                  players: BGRImage) -> None:
    cosines = _compare(insightface_app, plain_engine, players)
    assert len(cosines) >= 20
    assert min(cosines) >= 0.999


@pytest.mark.parametrize("relative", ["scenes/multiface.jpg", "scenes/obama_and_biden.jpg",
                                      "faces/biden/biden.jpg", "conditions/pose/right_wryneck.png"])
def test_embeddings_match_insightface_on_shared_photos(insightface_app: object, plain_engine: FaceEngine,
                                                       data_dir: Path, relative: str) -> None:
    cosines = _compare(insightface_app, plain_engine, load_image(data_dir / relative))
    assert cosines and min(cosines) >= 0.999


@pytest.mark.parametrize("relative", ["lfw-view1/images/Rob_Lowe/Rob_Lowe_0001.jpg",
                                      "lfw-view1/images/Morgan_Freeman/Morgan_Freeman_0001.jpg"])
def test_a_small_photo_matches_insightface_on_its_own_canvas(insightface_app: object, plain_engine: FaceEngine,
                                                            data_dir: Path, relative: str) -> None:
    """A 250x250 LFW photo is detected on 256x256, exactly as InsightFace with ``det_size=(256, 256)``."""
    image = load_image(data_dir / relative)
    assert plain_engine.detector.canvas_for(image.shape[1], image.shape[0]) == (256, 256)
    cosines = _compare(insightface_app, plain_engine, image)
    assert len(cosines) == 1 and cosines[0] >= 0.999


def test_the_video_pipelines_path_matches_insightface_on_a_street_frame(insightface_app: object,
                                                                         plain_engine: FaceEngine, players: BGRImage,
                                                                         data_dir: Path) -> None:
    """The pipeline's own path (FrameAnalyzer: frames of two cameras in one batch, faces embedded on demand).

    Video frames are detected on the canvas that fits them (640x384 for this 1920x1080 frame): the same as
    InsightFace prepared with that ``det_size``, which scales and places the frame identically.
    """
    source = open_source(str(data_dir / "video" / "street.mp4"), fps=5)
    try:
        frame = next(picture.image for picture in source if picture.pts >= 3.0)  # people close enough to be recognised
    finally:
        source.close()
    analyzer = FrameAnalyzer(plain_engine)
    frames = analyzer.analyse([frame, players], [LowLightConfig(enabled=False)] * 2)
    video_detector = plain_engine.detector.with_input_size(plain_engine.video_input)
    assert video_detector.canvas_for(frame.shape[1], frame.shape[0]) == (640, 384)
    for image, analysed in zip((frame, players), frames, strict=True):
        assert not analysed.enhanced and analysed.image is image
        vectors = analyzer.embed([(analysed, i) for i in range(len(analysed))])
        canvas = video_detector.canvas_for(image.shape[1], image.shape[0])
        cosines = _cosines(insightface_app, image, analysed.faces, vectors, canvas)
        assert len(cosines) >= 5 and min(cosines) >= 0.999

"""The permissive dlib recogniser, end to end on real faces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facetrail.vision.engine import EngineConfig, FaceEngine
from facetrail.vision.image import load_image

pytestmark = [pytest.mark.models, pytest.mark.dlib]


@pytest.fixture(scope="module")
def dlib_engine() -> FaceEngine:
    pytest.importorskip("dlib", reason="the dlib backend is the optional extra facetrail[dlib]")
    return FaceEngine(EngineConfig(recogniser="dlib"))


def test_dlib_embeddings_are_128d_unit_and_tagged(dlib_engine: FaceEngine, data_dir: Path) -> None:
    result = dlib_engine.analyze(load_image(data_dir / "faces" / "obama" / "obama.jpg"))
    assert result.embeddings.dim == 128
    assert np.allclose(np.linalg.norm(result.embeddings.vectors, axis=1), 1.0, atol=1e-5)
    assert result.embeddings.model_id.startswith("dlib_face_recognition_resnet_model_v1@")


def test_dlib_tells_the_same_person_from_another(dlib_engine: FaceEngine, data_dir: Path) -> None:
    faces = data_dir / "faces"
    obama = [dlib_engine.analyze(load_image(faces / "obama" / n)).embeddings
             for n in ("obama.jpg", "obama2.jpg", "obama3.jpg")]
    biden = dlib_engine.analyze(load_image(faces / "biden" / "biden.jpg")).embeddings
    threshold = dlib_engine.threshold
    for other in obama[1:]:
        assert obama[0].similarity(other)[0, 0] >= threshold
    assert obama[0].similarity(biden)[0, 0] < threshold

"""The detector, embedder and engine on real faces through the real models."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from facetrail.pipeline.settings import PIPELINE_ONNX_THREADS
from facetrail.vision.detector import ScrfdDetector
from facetrail.vision.embedder import CPU_BATCH_PER_THREAD, MAX_BATCH, ArcFaceEmbedder, default_run_length
from facetrail.vision.engine import EngineConfig, FaceEngine
from facetrail.vision.errors import EmbeddingMismatchError
from facetrail.vision.image import BGRImage, load_image
from facetrail.vision.types import FaceEmbeddings

pytestmark = pytest.mark.models

YAO_MING_IN_PLAYERS = (743.0, 167.0)  # centre of number 13's face, back row


def _best_match(team: np.ndarray, probe: np.ndarray) -> tuple[int, np.ndarray]:
    scores = team @ probe
    return int(np.argmax(scores)), scores


def test_detector_finds_the_team(players: BGRImage) -> None:
    faces = ScrfdDetector().detect(players)
    assert 20 <= len(faces) <= 24
    assert np.all(np.diff(faces.scores) <= 0), "sorted by score"
    inside = ((faces.landmarks[..., 0] >= faces.xyxy[:, None, 0] - 2)
              & (faces.landmarks[..., 0] <= faces.xyxy[:, None, 2] + 2))
    assert inside.all(), "landmarks lie within their boxes"


def test_batched_detection_equals_single(players: BGRImage, yaoming: BGRImage) -> None:
    detector = ScrfdDetector()
    batch = detector.detect_many([players, yaoming, players])
    single = detector.detect(players)
    assert len(batch[0]) == len(batch[2]) == len(single)
    assert np.allclose(batch[0].xyxy, single.xyxy, atol=1e-3)
    assert len(batch[1]) == 1


def test_dynamic_canvas_finds_the_same_faces(players: BGRImage) -> None:
    square = ScrfdDetector(input_size=(640, 640)).detect(players)
    dynamic = ScrfdDetector(input_size=640).detect(players)
    assert abs(len(square) - len(dynamic)) <= 1


def test_no_face_image_has_no_face(engine: FaceEngine, data_dir: Path) -> None:
    assert len(engine.analyze(load_image(data_dir / "scenes" / "no_face.png"))) == 0


def test_same_person_scores_far_above_different_people(engine: FaceEngine, players: BGRImage,
                                                       yaoming: BGRImage) -> None:
    team, single = engine.analyze(players), engine.analyze(yaoming)
    assert len(single) == 1
    best, scores = _best_match(team.embeddings.vectors, single.embeddings.vectors[0])
    x1, y1, x2, y2 = team.detections.xyxy[best]
    assert x1 < YAO_MING_IN_PLAYERS[0] < x2 and y1 < YAO_MING_IN_PLAYERS[1] < y2
    others = np.delete(scores, best)
    assert scores[best] >= engine.threshold > others.max()
    assert scores[best] - others.max() > 0.3


def test_embeddings_are_unit_length_and_deterministic(engine: FaceEngine, players: BGRImage) -> None:
    first = engine.analyze(players).embeddings.vectors
    second = engine.analyze(players).embeddings.vectors
    assert first.shape[1] == 512
    assert np.allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(first, second)


def test_batched_embedding_equals_one_at_a_time(engine: FaceEngine, players: BGRImage) -> None:
    embedder = engine.embedder
    assert isinstance(embedder, ArcFaceEmbedder)
    faces = engine.detector.detect(players)
    together = embedder.embed(players, faces).vectors
    alone = np.concatenate([embedder.embed(players, faces.select([i])).vectors
                            for i in range(len(faces))])
    assert np.min(np.sum(together * alone, axis=1)) > 0.9999


def test_the_recogniser_runs_a_few_faces_at_a_time_on_the_cpu(players: BGRImage) -> None:
    """Runs of a few faces per thread bound onnxruntime's arena; the team's faces embed as in one long run."""
    pipeline_like = ArcFaceEmbedder(providers="CPUExecutionProvider", threads=PIPELINE_ONNX_THREADS)
    assert pipeline_like.max_batch == CPU_BATCH_PER_THREAD * PIPELINE_ONNX_THREADS
    assert default_run_length(2, on_cpu=True) == 2 * CPU_BATCH_PER_THREAD
    assert default_run_length(64, on_cpu=True) == default_run_length(1, on_cpu=False) == MAX_BATCH
    network = pipeline_like._session  # every run the network is given, recorded
    runs: list[int] = []

    class Recording:
        def run(self, outputs: None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            runs.append(next(iter(feeds.values())).shape[0])
            return list(network.run(outputs, feeds))

    pipeline_like._session = Recording()
    faces = ScrfdDetector().detect(players)
    assert len(faces) > 4 * pipeline_like.max_batch  # several runs
    in_runs = pipeline_like.embed(players, faces).vectors
    assert sum(runs) == len(faces) and max(runs) == pipeline_like.max_batch
    one_run = ArcFaceEmbedder(providers="CPUExecutionProvider", threads=PIPELINE_ONNX_THREADS,
                              max_batch=len(faces)).embed(players, faces).vectors
    assert in_runs.shape == one_run.shape
    assert np.min(np.sum(in_runs * one_run, axis=1)) > 0.9999


def test_embeddings_of_different_models_refuse_comparison() -> None:
    a = FaceEmbeddings(np.ones((1, 4), np.float32) / 2, "model-a")
    b = FaceEmbeddings(np.ones((1, 4), np.float32) / 2, "model-b")
    with pytest.raises(EmbeddingMismatchError, match="model-a"):
        a.similarity(b)


def test_dark_and_grey_versions_still_match(engine: FaceEngine, yaoming: BGRImage,
                                           plain_engine: FaceEngine) -> None:
    original = engine.analyze(yaoming)
    dark = (yaoming.astype(np.float32) * 0.18).astype(np.uint8)
    grey = cv2.cvtColor(cv2.cvtColor(yaoming, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    dark_result = engine.analyze(dark)
    assert dark_result.enhanced, "a frame this dark is enhanced"
    for variant in (dark_result, engine.analyze(grey)):
        assert len(variant) == 1
        assert variant.embeddings.similarity(original.embeddings)[0, 0] > engine.threshold + 0.3


def test_enhancement_helps_a_dark_face(engine: FaceEngine, plain_engine: FaceEngine,
                                       yaoming: BGRImage) -> None:
    original = plain_engine.analyze(yaoming)
    night = (yaoming.astype(np.float32) * 0.08).astype(np.uint8)
    enhanced = engine.analyze(night)
    raw = plain_engine.analyze(night)
    assert enhanced.enhanced and len(enhanced) == 1
    enhanced_score = enhanced.embeddings.similarity(original.embeddings)[0, 0]
    raw_score = raw.embeddings.similarity(original.embeddings)[0, 0] if len(raw) else -1.0
    assert enhanced_score > engine.threshold
    assert enhanced_score >= raw_score - 0.05


@pytest.mark.parametrize("name", ["r90.jpg", "r180.jpg", "r270.jpg"])
def test_rotated_faces_are_found_and_aligned_upright(engine: FaceEngine, data_dir: Path, name: str) -> None:
    folder = data_dir / "conditions" / "rotation"
    upright = engine.analyze(load_image(folder / "r0.jpg"))
    turned = engine.analyze(load_image(folder / name))
    assert len(turned) == 1, "documented: rotated faces are found by the rotation search"
    assert turned.embeddings.similarity(upright.embeddings)[0, 0] > 0.9


@pytest.mark.parametrize("name", ["r90.jpg", "r180.jpg", "r270.jpg"])
def test_without_rotation_search_a_turned_face_is_never_misaligned(data_dir: Path, name: str) -> None:
    folder = data_dir / "conditions" / "rotation"
    engine = FaceEngine(EngineConfig(try_rotations=False))
    upright = engine.analyze(load_image(folder / "r0.jpg"))
    turned = engine.analyze(load_image(folder / name))
    # Either reported as not found, or found and aligned right: never a wrong embedding.
    if len(turned):
        assert turned.embeddings.similarity(upright.embeddings)[0, 0] > 0.9


def test_a_tilted_face_is_embedded_better_than_without_the_upright_check(
        engine: FaceEngine, yaoming: BGRImage) -> None:
    # Yao Ming's photo turned 100 degrees: the detector's own landmarks are unreliable there.
    height, width = yaoming.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), -100, 1.0)
    tilted = cv2.warpAffine(yaoming, matrix, (width, height))
    reference = engine.analyze(yaoming).embeddings
    checked = engine.analyze(tilted)
    assert len(checked) == 1 and abs(checked.qualities[0].roll) > 60
    raw = engine.detector.detect(tilted)
    unchecked = engine.embedder.embed(tilted, raw)
    checked_score = checked.embeddings.similarity(reference)[0, 0]
    assert checked_score > 0.9
    assert checked_score >= unchecked.similarity(reference).max() - 0.01


def test_quality_prefers_sharp_large_frontal_faces(engine: FaceEngine, yaoming: BGRImage,
                                                   data_dir: Path) -> None:
    sharp = engine.analyze(yaoming).qualities[0]
    blurred = engine.analyze(cv2.GaussianBlur(yaoming, (0, 0), 3.0)).qualities[0]
    small = engine.analyze(cv2.resize(yaoming, None, fx=0.25, fy=0.25)).qualities[0]
    profile = engine.analyze(load_image(data_dir / "conditions" / "pose" / "left_face.jpeg")).qualities[0]
    assert sharp.sharpness > 2 * blurred.sharpness and sharp.score > blurred.score
    assert small.face_px < sharp.face_px / 3 and small.score < sharp.score
    assert abs(profile.yaw) > 45 > abs(sharp.yaw) and profile.score < sharp.score
    assert set(sharp.parts) == {"size", "sharpness", "pose", "detector", "alignment"}


def test_the_recogniser_rewrites_give_the_stock_embeddings(engine: FaceEngine, players: BGRImage) -> None:
    import onnx
    import onnxruntime as ort

    from facetrail.vision.align import align_faces
    from facetrail.vision.graph_rewrite import prelu_as_convs, recogniser_for_x86
    from facetrail.vision.registry import W600K_MBF

    crops = align_faces(players, engine.detector.detect(players).landmarks).crops
    blob = cv2.dnn.blobFromImages(list(crops), 1.0 / 127.5, (112, 112), (127.5, 127.5, 127.5), swapRB=True)
    rewritten = recogniser_for_x86(W600K_MBF.path())
    outputs = []
    for source in (str(W600K_MBF.path()), prelu_as_convs(W600K_MBF.path()), rewritten):
        session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
        raw = session.run(None, {session.get_inputs()[0].name: blob})[0]
        outputs.append(raw / np.linalg.norm(raw, axis=1, keepdims=True))
    assert len(crops) > 10
    for output in outputs[1:]:
        assert np.min(np.sum(outputs[0] * output, axis=1)) > 0.99999

    # What the rewrites removed: onnxruntime's slow paths (PRelu, a convolution on groups of two channels).
    def slow_nodes(graph: onnx.GraphProto) -> list[str]:
        weights = {init.name: init for init in graph.initializer}
        paired = [n.name for n in graph.node if n.op_type == "Conv" and n.input[1] in weights
                  and list(weights[n.input[1]].dims[1:2]) == [2]]
        return [n.op_type for n in graph.node if n.op_type == "PRelu"] + paired

    stock, used = onnx.load(str(W600K_MBF.path())).graph, onnx.load_from_string(rewritten).graph
    assert slow_nodes(stock).count("PRelu") == 34 and len(slow_nodes(stock)) == 35
    assert slow_nodes(used) == []

"""Where facetrail's ``FaceEngine.analyze`` spends its time, stage by stage.

Times each stage of one analyze call on one image (detector preprocessing,
detector network, decoding, alignment, embedder preprocessing, embedder
network, quality), then the whole call, all round-robin with
time.perf_counter. With ``--variants`` it also times the two networks under
other onnxruntime session settings (thread spinning, thread count, a
fixed-shape detector graph, one face per embedder call, the recogniser's
PRelu nodes rewritten as layout-friendly ops, then also its convolution on
channel pairs as depthwise ones) to show what each is worth on this
machine. Each variant is timed alone: a spinning session looks as fast
or faster here, but inside the engine its spinning threads slow the network
that runs next (on a 2-core EPYC, analyze took about 115 ms with both
sessions spinning against 82 ms with neither), which is why facetrail turns
spinning off.

This is a diagnostic: it reaches into the detector's and embedder's private
attributes, so it follows their implementation and may need updating with it.

Run: ``.venv/bin/python bench/engine_stages.py [IMAGE] [--repeat N] [--variants]``
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from facetrail.vision.align import ARCFACE_SIZE, align_faces
from facetrail.vision.embedder import ArcFaceEmbedder, l2_normalise
from facetrail.vision.engine import EngineConfig, FaceEngine
from facetrail.vision.graph_rewrite import prelu_as_convs, recogniser_for_x86
from facetrail.vision.image import load_image
from facetrail.vision.lowlight import LowLightConfig
from facetrail.vision.quality import assess
from facetrail.vision.registry import SCRFD_500M, W600K_MBF

DEFAULT_IMAGE = Path("/work/shared/data/scenes/multiface.jpg")

Task = Callable[[], Any]


GAP_S = 0.02  # untimed pause before each call: lets a spinning session's threads go idle


def time_tasks(tasks: dict[str, Task], warmup: int, repeat: int) -> dict[str, float]:
    """Median ms of each task, one call of each per repetition, the order rotating."""
    names = list(tasks)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(warmup + repeat):
        shift = rep % len(names)
        for name in [*names[shift:], *names[:shift]]:
            time.sleep(GAP_S)
            start = time.perf_counter()
            tasks[name]()
            if rep >= warmup:
                samples[name].append((time.perf_counter() - start) * 1000.0)
    return {name: float(np.median(values)) for name, values in samples.items()}


def stage_tasks(engine: FaceEngine, image: npt.NDArray[np.uint8]) -> tuple[dict[str, Task], int]:
    """One task per stage of analyze, fed with the outputs of the stage before; and the face count."""
    detector, embedder = engine.detector, engine.embedder
    if not isinstance(embedder, ArcFaceEmbedder):
        raise SystemExit("engine_stages profiles the ArcFace recogniser only")
    box = detector._letterbox_geometry(image.shape[1], image.shape[0])
    det_blob = detector._prepare(image, box)[None]
    det_feed = {detector._input_name: det_blob}
    outputs = detector._session.run(None, det_feed)
    faces = detector._decode([o[0] for o in outputs], box.canvas, box.scale)
    aligned = align_faces(image, faces.landmarks)
    crops = list(aligned.crops)

    def embed_blob() -> npt.NDArray[np.float32]:
        return np.asarray(cv2.dnn.blobFromImages(crops, 1.0 / 127.5, (ARCFACE_SIZE, ARCFACE_SIZE),
                                                 (127.5, 127.5, 127.5), swapRB=True), np.float32)

    emb_feed = {embedder._input_name: embed_blob()}
    raw = embedder._session.run(None, emb_feed)[0]
    tasks: dict[str, Task] = {
        "detector: resize + letterbox + blob": lambda: detector._prepare(image, box),
        f"detector: network {box.canvas[0]}x{box.canvas[1]}": lambda: detector._session.run(None, det_feed),
        "detector: decode + NMS": lambda: detector._decode([o[0] for o in outputs], box.canvas, box.scale),
        "align: similarity + warpAffine": lambda: align_faces(image, faces.landmarks),
        "embedder: blob": embed_blob,
        f"embedder: network (batch {len(crops)})": lambda: embedder._session.run(None, emb_feed),
        "embedder: L2 normalise": lambda: l2_normalise(raw),
        "quality: assess": lambda: assess(faces, aligned),
    }
    return tasks, len(faces)


def session(model: str | bytes, *, spinning: bool, threads: int = 0) -> ort.InferenceSession:
    """A CPU session with facetrail's options, spinning and threads as given."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


def fixed_shape_model(path: Path, batch: int, height: int | None = None, width: int | None = None) -> bytes:
    """The ONNX graph with its symbolic input dimensions made fixed (needs the onnx package)."""
    import onnx

    model = onnx.load(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for dim, value in zip(dims, (batch, 3, height, width), strict=False):
        if value is not None and dim.dim_param:
            dim.ClearField("dim_param")
            dim.dim_value = value
    serialised: bytes = model.SerializeToString()
    return serialised


def rewrite_cosine(image_crops: npt.NDArray[np.float32], stock: ort.InferenceSession,
                   rewritten: ort.InferenceSession) -> float:
    """Lowest cosine between the stock and the rewritten recogniser's embeddings."""
    outputs = [l2_normalise(s.run(None, {s.get_inputs()[0].name: image_crops})[0])
               for s in (stock, rewritten)]
    return float((outputs[0] * outputs[1]).sum(axis=1).min())


def variant_tasks(engine: FaceEngine, image: npt.NDArray[np.uint8]) -> dict[str, Task]:
    """The detector and embedder networks under other session settings, same inputs."""
    detector = engine.detector
    box = detector._letterbox_geometry(image.shape[1], image.shape[0])
    det_blob = detector._prepare(image, box)[None]
    faces = detector.detect(image)
    crops = list(align_faces(image, faces.landmarks).crops)
    emb_blob = np.asarray(cv2.dnn.blobFromImages(crops, 1.0 / 127.5, (ARCFACE_SIZE, ARCFACE_SIZE),
                                                 (127.5, 127.5, 127.5), swapRB=True), np.float32)
    det_path, emb_path = str(SCRFD_500M.path()), str(W600K_MBF.path())
    width, height = box.canvas
    det_sessions = {
        "no spinning (facetrail)": session(det_path, spinning=False),
        "spinning (ORT default)": session(det_path, spinning=True),
        "1 thread": session(det_path, spinning=False, threads=1),
        f"fixed shape {width}x{height}": session(fixed_shape_model(SCRFD_500M.path(), 1, height, width),
                                                 spinning=False),
        f"fixed shape {width}x{height}, spinning": session(
            fixed_shape_model(SCRFD_500M.path(), 1, height, width), spinning=True),
    }
    emb_sessions = {
        "stock graph, no spinning": session(emb_path, spinning=False),
        "spinning (ORT default)": session(emb_path, spinning=True),
        "1 thread": session(emb_path, spinning=False, threads=1),
        f"fixed batch {len(crops)}": session(fixed_shape_model(W600K_MBF.path(), len(crops)), spinning=False),
        "PRelu as NCHWc-friendly convs": session(prelu_as_convs(W600K_MBF.path()), spinning=False),
        "+ pairs as depthwise (facetrail)": session(recogniser_for_x86(W600K_MBF.path()), spinning=False),
    }
    for label in ("PRelu as NCHWc-friendly convs", "+ pairs as depthwise (facetrail)"):
        cosine = rewrite_cosine(emb_blob, emb_sessions["stock graph, no spinning"], emb_sessions[label])
        print(f"{label}: lowest embedding cosine against the stock graph {cosine:.7f}")
    tasks: dict[str, Task] = {}
    for label, det in det_sessions.items():
        tasks[f"detector network, {label}"] = _runner(det, det_blob)
    for label, emb in emb_sessions.items():
        tasks[f"embedder network batch {len(crops)}, {label}"] = _runner(emb, emb_blob)
    for label in ("stock graph, no spinning", "spinning (ORT default)"):
        tasks[f"embedder network 1 face x {len(crops)}, {label}"] = _one_by_one(emb_sessions[label], emb_blob)
    return tasks


def _runner(sess: ort.InferenceSession, blob: npt.NDArray[np.float32]) -> Task:
    feed = {sess.get_inputs()[0].name: blob}
    return lambda: sess.run(None, feed)


def _one_by_one(sess: ort.InferenceSession, blob: npt.NDArray[np.float32]) -> Task:
    name = sess.get_inputs()[0].name

    def run() -> None:
        for i in range(blob.shape[0]):
            sess.run(None, {name: blob[i:i + 1]})

    return run


def print_rows(title: str, results: dict[str, float], total: float | None = None) -> None:
    print(title)
    for name, ms in results.items():
        share = f"{ms / total:6.1%}" if total else ""
        print(f"  {name:<58} {ms:8.2f} ms {share}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("image", nargs="?", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--det-size", type=int, default=640)
    parser.add_argument("--dynamic", action="store_true",
                        help="use the dynamic canvas (detector_input=det_size) instead of the square one")
    parser.add_argument("--variants", action="store_true", help="also time other session settings")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    image = load_image(args.image)
    size = args.det_size
    config = EngineConfig(detector_input=size if args.dynamic else (size, size),
                          low_light=LowLightConfig(enabled=False), try_rotations=False)
    engine = FaceEngine(config)
    tasks, faces = stage_tasks(engine, image)
    results = time_tasks({**tasks, "analyze (whole call)": lambda: engine.analyze(image)},
                         args.warmup, args.repeat)
    total = results.pop("analyze (whole call)")
    print(f"{args.image.name} {image.shape[1]}x{image.shape[0]}, {faces} faces, "
          f"detector_input={config.detector_input}, onnxruntime {ort.__version__}, "
          f"median of {args.repeat}")
    print_rows("stages", results, total)
    print(f"  {'sum of stages':<58} {sum(results.values()):8.2f} ms")
    print(f"  {'analyze (whole call)':<58} {total:8.2f} ms")
    if args.variants:
        print_rows("network variants", time_tasks(variant_tasks(engine, image), args.warmup, args.repeat))
    return 0


if __name__ == "__main__":
    sys.exit(main())

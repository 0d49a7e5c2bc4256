"""Verification accuracy on LFW View 1 under degradation: facetrail beside InsightFace and face_recognition.

Every pipeline sees the same decoded images of the same pairs, under each
condition: the original photo, shrunk to 112/64/32/24 px (longest side), dark
(../shared/tools/night_cctv.py's degradation, imported and run exactly as the
tool runs it over the whole image tree), and as a tight crop (the face box
facetrail finds on the original, grey, 92x112). Each image contributes its
primary face (the same choice for every pipeline: the largest face, weighted
towards the centre). A pair with a missing face is a wrong decision for every
pipeline, at every threshold. Accuracy is 10-fold cross-validated as LFW's
protocol does (per fold, the best threshold on the other nine); the fixed
threshold beside it is facetrail's calibrated one (also applied to
InsightFace, which runs the same model files) and face_recognition's own
default tolerance (distance 0.6).

Run: ``.venv/bin/python bench/accuracy.py [--pairs test|train|both] [--limit N] [--json PATH]``
"""

from __future__ import annotations

import argparse
import importlib.resources
import importlib.util
import json
import sys
import tempfile
import time
import types
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from face_engine import insightface_app, machine_info
from facetrail.eval.pairs import Pair, read_lfw_pairs
from facetrail.eval.runner import Metrics, measure
from facetrail.vision.engine import CENTRE_SPREAD, EngineConfig, FaceEngine
from facetrail.vision.errors import ImageError
from facetrail.vision.image import load_image
from facetrail.vision.registry import W600K_MBF

Image = npt.NDArray[np.uint8]
Vector = npt.NDArray[np.float64]

SHARED = Path(__file__).resolve().parents[2] / "shared"
LFW = SHARED / "data" / "lfw-view1"
NIGHT_TOOL = SHARED / "tools" / "night_cctv.py"
PAIR_FILES = {"test": ("pairsDevTest.txt",), "train": ("pairsDevTrain.txt",),
              "both": ("pairsDevTrain.txt", "pairsDevTest.txt")}
SIZES = (112, 64, 32, 24)
CONDITIONS = ("original", *(f"{s}px" for s in SIZES), "dark", "crop")
CROP_SIZE = (92, 112)  # width, height: the AT&T/ORL face format
FACE_RECOGNITION_TOLERANCE = 0.6  # face_recognition.compare_faces' default distance

FACETRAIL = "facetrail"
INSIGHTFACE = "insightface"
FACE_RECOGNITION = "face_recognition"
PEERS = (INSIGHTFACE, FACE_RECOGNITION)


# --------------------------------------------------------------------------- images per condition


def shrink(image: Image, size: int) -> Image:
    """Longest side ``size`` px, area interpolation (as night_cctv.py resizes)."""
    height, width = image.shape[:2]
    scale = size / max(height, width)
    return cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))),
                      interpolation=cv2.INTER_AREA)


def tight_crop(image: Image, box: npt.NDArray[np.float32]) -> Image:
    """The face box only, grey, resized to 92x112, back in three channels for every pipeline."""
    height, width = image.shape[:2]
    x1, y1 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
    x2, y2 = min(width, int(np.ceil(box[2]))), min(height, int(np.ceil(box[3])))
    grey = cv2.cvtColor(image[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY)
    small = cv2.resize(grey, CROP_SIZE, interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_GRAY2BGR)


def night_images(tool: Path, images_root: Path, wanted: set[Path]) -> dict[Path, Image]:
    """What ``night_cctv.py images_root DST`` writes for ``wanted``, decoded as facetrail decodes files.

    The tool draws its noise from one generator (seed 7) over the whole tree in
    sorted order, so the whole tree is degraded in that order and the wanted
    images kept; each is JPEG-encoded at quality 75 as the tool saves it.
    """
    spec = importlib.util.spec_from_file_location("night_cctv", tool)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import {tool}")
    night = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(night)
    size, exposure, noise = 240, 0.12, 8.0  # the tool's defaults
    rng = np.random.default_rng(7)
    kept: dict[Path, Image] = {}
    for path in sorted(p for p in images_root.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"}):
        image = cv2.imread(str(path))
        if image is None:
            continue
        dark = night.degrade(image, size, exposure, noise, rng)
        if path in wanted:
            ok, jpeg = cv2.imencode(".jpg", dark, [cv2.IMWRITE_JPEG_QUALITY, 75])
            if ok:
                kept[path] = load_image(jpeg.tobytes(), name=str(path))
    return kept


# --------------------------------------------------------------------------- pipelines


def primary_index(xyxy: npt.NDArray[np.float32], width: int, height: int) -> int | None:
    """facetrail's choice of the main face (``ImageFaces.primary``), applied to every pipeline's boxes."""
    if len(xyxy) == 0:
        return None
    areas = (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1])
    dx = ((xyxy[:, 0] + xyxy[:, 2]) / 2 - width / 2) / width
    dy = ((xyxy[:, 1] + xyxy[:, 3]) / 2 - height / 2) / height
    return int(np.argmax(areas * np.exp(-(np.hypot(dx, dy) / CENTRE_SPREAD) ** 2)))


@dataclass
class Pipeline:
    """One recogniser under test: ``embed`` gives the primary face's embedding and box, or None."""

    key: str
    label: str
    embed: Callable[[Image], tuple[Vector, npt.NDArray[np.float32]] | None]
    score: Callable[[Vector, Vector], float]
    fixed_name: str
    fixed_threshold: float  # on ``score``
    notes: str


def cosine(a: Vector, b: Vector) -> float:
    return float(np.dot(a, b))


def facetrail_pipeline(threads: int) -> Pipeline:
    engine = FaceEngine(EngineConfig(threads=threads))

    def embed(image: Image) -> tuple[Vector, npt.NDArray[np.float32]] | None:
        faces = engine.analyze(image)
        index = faces.primary()
        if index is None:
            return None
        return faces.embeddings.vectors[index].astype(np.float64), faces.detections.xyxy[index]

    calibration = W600K_MBF.calibration
    assert calibration is not None
    return Pipeline(FACETRAIL, "facetrail", embed, cosine, "calibrated", calibration.threshold,
                    "FaceEngine(EngineConfig()), the default engine: SCRFD-500M 640x640 (smaller images on "
                    "their own canvas, at least 160 px; a bordered and an enhanced look when no face is "
                    "confident, then the enhanced image at half size), w600k_mbf")


def insightface_pipeline(model_dir: Path, threads: int) -> Pipeline:
    app = insightface_app(model_dir, 640, threads)

    def embed(image: Image) -> tuple[Vector, npt.NDArray[np.float32]] | None:
        faces = app.get(image)
        boxes = np.array([f.bbox for f in faces], np.float32).reshape(-1, 4)
        index = primary_index(boxes, image.shape[1], image.shape[0])
        if index is None:
            return None
        return np.asarray(faces[index].normed_embedding, np.float64), boxes[index]

    calibration = W600K_MBF.calibration
    assert calibration is not None
    return Pipeline(INSIGHTFACE, "InsightFace", embed, cosine, "facetrail's calibrated", calibration.threshold,
                    "FaceAnalysis on the same two ONNX files, det_size (640, 640), CPU provider")


def install_pkg_resources_shim() -> None:
    """face_recognition_models calls ``pkg_resources.resource_filename``; setuptools 84 has no pkg_resources.

    For this benchmark only, a stand-in module answers that one call from
    importlib.resources, so face_recognition imports; no dependency changes.
    """
    if importlib.util.find_spec("pkg_resources") is not None:
        return
    shim = types.ModuleType("pkg_resources")

    def resource_filename(package: str, resource: str) -> str:
        return str(importlib.resources.files(package).joinpath(resource))

    shim.resource_filename = resource_filename  # type: ignore[attr-defined]
    sys.modules["pkg_resources"] = shim


def face_recognition_pipeline() -> Pipeline:
    install_pkg_resources_shim()
    import face_recognition

    def embed(image: Image) -> tuple[Vector, npt.NDArray[np.float32]] | None:
        rgb = np.ascontiguousarray(image[:, :, ::-1])
        locations = face_recognition.face_locations(rgb)  # HOG, upsample 1: its defaults
        boxes = np.array([(left, top, right, bottom) for top, right, bottom, left in locations],
                         np.float32).reshape(-1, 4)
        index = primary_index(boxes, image.shape[1], image.shape[0])
        if index is None:
            return None
        encoding = face_recognition.face_encodings(rgb, [locations[index]])[0]  # 5-point, 1 jitter
        return np.asarray(encoding, np.float64), boxes[index]

    def negative_distance(a: Vector, b: Vector) -> float:
        return -float(np.linalg.norm(a - b))

    return Pipeline(FACE_RECOGNITION, "face_recognition", embed, negative_distance, "own tolerance",
                    -FACE_RECOGNITION_TOLERANCE,
                    "face_locations (HOG, upsample 1) + face_encodings (5-point, 1 jitter); score = -distance")


# --------------------------------------------------------------------------- measuring


@dataclass
class Cell:
    """One pipeline on one condition."""

    metrics: Metrics
    missing_images: int
    failed_pairs: int
    seconds: float

    @property
    def kfold(self) -> float:
        assert self.metrics.kfold is not None
        return self.metrics.kfold.mean


@dataclass
class Row:
    condition: str
    note: str
    images: int
    cells: dict[str, Cell] = field(default_factory=dict)


def read_pairs(files: Sequence[str], root: Path, limit: int | None) -> list[Pair]:
    """The pairs of the chosen files in order; ``limit`` keeps the first N/2 same and N/2 different pairs."""
    pairs = [pair for name in files for pair in read_lfw_pairs(root / name, images_root=root / "images").pairs]
    if limit is None:
        return pairs
    same = [p for p in pairs if p.same][:(limit + 1) // 2]
    different = [p for p in pairs if not p.same][:limit // 2]
    return same + different


def condition_images(condition: str, originals: dict[Path, Image], boxes: dict[Path, npt.NDArray[np.float32]],
                     dark: dict[Path, Image]) -> tuple[dict[Path, Image], str]:
    """The images of one condition (absent: nothing to give, e.g. no face box to crop to) and a note."""
    if condition == "original":
        return originals, "LFW deep-funneled 250x250 as shipped"
    if condition.endswith("px"):
        size = int(condition.removesuffix("px"))
        return {p: shrink(im, size) for p, im in originals.items()}, f"longest side {size} px (INTER_AREA)"
    if condition == "dark":
        return dark, "night_cctv.py defaults: 240 px, 12% exposure in linear light, noise 8, JPEG 75, seed 7"
    if condition == "crop":
        return ({p: tight_crop(originals[p], box) for p, box in boxes.items()},
                f"facetrail's face box on the original, grey, {CROP_SIZE[0]}x{CROP_SIZE[1]} "
                f"({len(originals) - len(boxes)} images without a box cannot be cropped: missing for all)")
    raise ValueError(condition)


def run_cell(pipeline: Pipeline, pairs: Sequence[Pair], images: dict[Path, Image], all_paths: Sequence[Path],
             same: npt.NDArray[np.bool_]) -> tuple[Cell, dict[Path, npt.NDArray[np.float32]]]:
    """Embed every image of the condition, score the pairs, measure; also the boxes found."""
    start = time.perf_counter()
    vectors: dict[Path, Vector] = {}
    boxes: dict[Path, npt.NDArray[np.float32]] = {}
    for path in all_paths:
        image = images.get(path)
        found = pipeline.embed(image) if image is not None else None
        if found is not None:
            vectors[path], boxes[path] = found
    scores = np.full(len(pairs), -1.0)
    failed = np.ones(len(pairs), bool)
    for i, pair in enumerate(pairs):
        a, b = vectors.get(pair.first), vectors.get(pair.second)
        if a is not None and b is not None:
            scores[i], failed[i] = pipeline.score(a, b), False
    metrics = measure(scores, same, failed, far_levels=(),
                      thresholds={pipeline.fixed_name: pipeline.fixed_threshold})
    cell = Cell(metrics, len(all_paths) - len(vectors), int(failed.sum()), time.perf_counter() - start)
    return cell, boxes


# --------------------------------------------------------------------------- output


def print_header(machine: dict[str, Any], args: argparse.Namespace, pipelines: Sequence[Pipeline],
                 pairs: Sequence[Pair], images: int) -> None:
    print("facetrail accuracy benchmark (LFW View 1 verification, degraded)")
    print(f"machine   : {machine['cpu']}, {machine['logical_cpus']} logical CPUs, Python {machine['python']}")
    print(f"libraries : onnxruntime {machine['onnxruntime']}, opencv {machine['opencv']}, insightface "
          f"{machine['insightface']}, face_recognition {machine['face_recognition']}, dlib-bin {machine['dlib']}")
    genuine = sum(p.same for p in pairs)
    print(f"pairs     : {', '.join(PAIR_FILES[args.pairs])}: {genuine} same + {len(pairs) - genuine} different "
          f"({images} images){f', --limit {args.limit}' if args.limit else ''}; onnxruntime threads "
          f"{args.threads}")
    print("protocol  : 10-fold accuracy (stratified consecutive folds in file order; per fold the best threshold "
          "on the other nine); a pair with a missing face is wrong at every threshold, for every pipeline; "
          "primary face = largest, weighted towards the centre, for every pipeline")
    print("pipelines :")
    for p in pipelines:
        print(f"  {p.label:<17} {p.notes}; fixed threshold: {p.fixed_name} {p.fixed_threshold:g}")
    print()


def cell_text(cell: Cell | None, fixed: bool) -> str:
    if cell is None:
        return "-"
    if fixed:
        decisions = next(iter(cell.metrics.fixed.values()))
        return f"{decisions.accuracy:.2%}"
    kfold = cell.metrics.kfold
    return f"{kfold.mean:.2%} ±{kfold.std:.1%}" if kfold else "-"


def print_table(rows: Sequence[Row], pipelines: Sequence[Pipeline]) -> None:
    heads = [f"{p.label} 10-fold" for p in pipelines] + [f"{p.label} @{p.fixed_threshold:g}" for p in pipelines]
    widths = [max(len(h), 15) for h in heads]
    print(f"{'condition':<10} " + " ".join(f"{h:>{w}}" for h, w in zip(heads, widths, strict=True))
          + "   images without a face")
    for row in rows:
        cells = [cell_text(row.cells.get(p.key), False) for p in pipelines] + [
            cell_text(row.cells.get(p.key), True) for p in pipelines]
        missing = " / ".join(str(row.cells[p.key].missing_images) if p.key in row.cells else "-" for p in pipelines)
        print(f"{row.condition:<10} " + " ".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True))
              + f"   {missing}")
    print(f"(images without a face: {' / '.join(p.label for p in pipelines)}; of {rows[0].images} per condition)")


def cell_json(cell: Cell) -> dict[str, Any]:
    m = cell.metrics
    fixed = {name: {"threshold": d.threshold, "accuracy": d.accuracy, "tar": d.tar, "far": d.far}
             for name, d in m.fixed.items()}
    return {"kfold_mean": m.kfold.mean if m.kfold else None, "kfold_std": m.kfold.std if m.kfold else None,
            "kfold_mean_threshold": m.kfold.mean_threshold if m.kfold else None,
            "per_fold": m.kfold.accuracies.tolist() if m.kfold else [],
            "best_threshold": m.best.threshold, "best_accuracy": m.best.accuracy, "fixed": fixed,
            "images_without_face": cell.missing_images, "failed_pairs": cell.failed_pairs,
            "usable_pairs_kfold_mean": (m.usable.kfold.mean if m.usable is not None and m.usable.kfold else None),
            "seconds": round(cell.seconds, 1)}


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pairs", choices=tuple(PAIR_FILES), default="test",
                        help="pairsDevTest (default), pairsDevTrain, or both")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="only the first N/2 same and N/2 different pairs (quick runs)")
    parser.add_argument("--conditions", nargs="+", choices=CONDITIONS, default=list(CONDITIONS),
                        help="conditions to run (default: all)")
    parser.add_argument("--peers", nargs="*", choices=PEERS, default=list(PEERS),
                        help="peers beside facetrail (default: both)")
    parser.add_argument("--lfw", type=Path, default=LFW, help=f"LFW View 1 folder (default {LFW})")
    parser.add_argument("--night-tool", type=Path, default=NIGHT_TOOL,
                        help=f"the night-CCTV degradation script (default {NIGHT_TOOL})")
    parser.add_argument("--threads", type=int, default=1,
                        help="onnxruntime intra-op threads for facetrail and InsightFace (default 1: accuracy "
                             "does not depend on it, and it keeps a shared machine usable; 0 = library default)")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure here")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 4:
        parser.error("--limit needs at least 4 pairs (two of each kind for the folds)")
    if args.threads < 0:
        parser.error("--threads must be 0 or more")
    if not (args.lfw / "images").is_dir():
        parser.error(f"no LFW View 1 images under {args.lfw / 'images'} (pass --lfw)")
    if "dark" in args.conditions and not args.night_tool.is_file():
        parser.error(f"the dark condition needs {args.night_tool} (pass --night-tool, or leave out 'dark')")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"insightface\.")
    pairs = read_pairs(PAIR_FILES[args.pairs], args.lfw, args.limit)
    same = np.array([p.same for p in pairs], bool)
    paths = list(dict.fromkeys(path for p in pairs for path in (p.first, p.second)))
    originals: dict[Path, Image] = {}
    for path in paths:
        try:
            originals[path] = load_image(path)
        except ImageError as error:
            print(f"warning: {error}", file=sys.stderr)
    machine = machine_info()
    with tempfile.TemporaryDirectory(prefix="facetrail-bench-models-") as model_dir:
        pipelines = [facetrail_pipeline(args.threads)]
        if INSIGHTFACE in args.peers:
            pipelines.append(insightface_pipeline(Path(model_dir), args.threads))
        if FACE_RECOGNITION in args.peers:
            pipelines.append(face_recognition_pipeline())
        print_header(machine, args, pipelines, pairs, len(paths))
        dark = night_images(args.night_tool, args.lfw / "images", set(paths)) if "dark" in args.conditions else {}
        crop_boxes: dict[Path, npt.NDArray[np.float32]] = {}
        order = ["original", *(c for c in CONDITIONS if c != "original")]
        wanted = [c for c in order if c in args.conditions or (c == "original" and "crop" in args.conditions)]
        rows: list[Row] = []
        for condition in wanted:
            images, note = condition_images(condition, originals, crop_boxes, dark)
            row = Row(condition, note, len(paths))
            for pipeline in pipelines:
                cell, boxes = run_cell(pipeline, pairs, images, paths, same)
                row.cells[pipeline.key] = cell
                if condition == "original" and pipeline.key == FACETRAIL:
                    crop_boxes = boxes
                print(f"  {condition:<9} {pipeline.label:<17} 10-fold {cell_text(cell, False):>14}, "
                      f"{pipeline.fixed_name} {cell_text(cell, True)}, {cell.missing_images} images without "
                      f"a face, {cell.seconds:.0f} s", flush=True)
            if condition in args.conditions:
                rows.append(row)
    print()
    print_table(rows, pipelines)
    for row in rows:
        print(f"  {row.condition:<9} {row.note}")
    if args.json:
        payload = {"machine": machine,
                   "settings": {"pairs": PAIR_FILES[args.pairs], "limit": args.limit, "pair_count": len(pairs),
                                "images": len(paths), "peers": list(args.peers), "threads": args.threads},
                   "pipelines": {p.key: {"label": p.label, "notes": p.notes, "fixed_threshold": p.fixed_threshold,
                                         "fixed_name": p.fixed_name} for p in pipelines},
                   "conditions": [{"condition": r.condition, "note": r.note,
                                   "results": {k: cell_json(c) for k, c in r.cells.items()}} for r in rows]}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

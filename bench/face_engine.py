"""Face engine benchmark: facetrail against InsightFace FaceAnalysis and face_recognition.

All pipelines run in this one process on the same decoded images, timed
round-robin (one call of each pipeline per repetition, the order rotating) so
that machine noise falls on all of them alike. facetrail and InsightFace run
the very same two ONNX files (SCRFD-500M and w600k_mbf); an exactness check
matches their faces by box IoU and compares the embeddings, and the script
exits with status 1 when they disagree.

Run: ``.venv/bin/python bench/face_engine.py [--images PATH ...] [--repeat N]``
(``make bench`` runs it with the defaults).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from cpu_meter import CpuMeter
from facetrail.vision.engine import EngineConfig, FaceEngine, ImageFaces
from facetrail.vision.image import load_image
from facetrail.vision.lowlight import LowLightConfig
from facetrail.vision.registry import SCRFD_500M, W600K_MBF
from facetrail.vision.samples import sample_image

Image = npt.NDArray[np.uint8]

SCENES = Path("/work/shared/data/scenes")
MIN_IOU = 0.5
MIN_COSINE = 0.999
NOISY_BACKGROUND = 0.05  # other processes' share of all CPUs above which timings are flagged
GOAL_VS_INSIGHTFACE = 1.5
GOAL_VS_FACE_RECOGNITION = 10.0

FACETRAIL = "facetrail"
FACETRAIL_DYNAMIC = "facetrail-dynamic"
INSIGHTFACE = "insightface"
FACE_RECOGNITION = "face_recognition"
PEERS = (INSIGHTFACE, FACE_RECOGNITION)


def default_images() -> list[Path]:
    """The ~6-face target frame first, then a crowded and a large two-face photo."""
    return [SCENES / "multiface.jpg", sample_image("players.jpg"), SCENES / "obama_and_biden.jpg"]


# --------------------------------------------------------------------------- pipelines


@dataclass
class Pipeline:
    """One face pipeline under test: ``run`` takes the image in the colour order it wants."""

    key: str
    label: str
    run: Callable[[Image], Any]
    count: Callable[[Any], int]
    wants_rgb: bool = False
    notes: str = ""


def facetrail_config(detector_input: tuple[int, int] | int, threads: int) -> EngineConfig:
    """facetrail with nothing that would change the pixels InsightFace sees."""
    return EngineConfig(detector_input=detector_input, low_light=LowLightConfig(enabled=False),
                        try_rotations=False, threads=threads)


def facetrail_pipeline(key: str, label: str, engine: FaceEngine, notes: str) -> Pipeline:
    return Pipeline(key, label, engine.analyze, len, notes=notes)


def insightface_app(model_dir: Path, det_size: int, threads: int) -> Any:
    """FaceAnalysis on the two ONNX files facetrail uses, CPU only, one 640x640-style pass."""
    from insightface.app import FaceAnalysis

    for spec in (SCRFD_500M, W600K_MBF):
        source = spec.path()
        (model_dir / source.name).symlink_to(source)
    kwargs: dict[str, Any] = {"providers": ["CPUExecutionProvider"]}
    if threads:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        kwargs["sess_options"] = options
    app = FaceAnalysis(name=str(model_dir), **kwargs)
    app.prepare(ctx_id=-1, det_size=(det_size, det_size))
    return app


def face_recognition_run(rgb: Image) -> list[npt.NDArray[np.float64]]:
    """face_recognition with its defaults: HOG detector (upsample 1), 5-point ResNet, 1 jitter."""
    import face_recognition

    locations = face_recognition.face_locations(rgb)
    encodings: list[npt.NDArray[np.float64]] = face_recognition.face_encodings(rgb, locations)
    return encodings


def build_pipelines(args: argparse.Namespace, model_dir: Path) -> tuple[list[Pipeline], Any]:
    """The pipelines to time, facetrail's default first; also the InsightFace app (or None)."""
    size = args.det_size
    threads_note = f"intra_op_num_threads={args.threads} (0 = ORT default), no spinning"
    fixed = FaceEngine(facetrail_config((size, size), args.threads))
    dynamic = FaceEngine(facetrail_config(size, args.threads))
    pipelines = [
        facetrail_pipeline(FACETRAIL, f"facetrail {size}x{size} (default)", fixed,
                           f"EngineConfig default canvas {size}x{size}; {threads_note}"),
        facetrail_pipeline(FACETRAIL_DYNAMIC, f"facetrail dynamic {size}", dynamic,
                           f"EngineConfig(detector_input={size}): longest side {size}, "
                           "canvas rounded up to a multiple of 32"),
    ]
    app = None
    if INSIGHTFACE in args.peers:
        app = insightface_app(model_dir, size, args.threads)
        threads = f"intra_op_num_threads={args.threads}" if args.threads else "ORT default session options"
        pipelines.append(Pipeline(INSIGHTFACE, f"InsightFace {size}x{size}", app.get, len,
                                  notes=f"FaceAnalysis det_size=({size}, {size}) (insightface 2.1's "
                                        "default is multi-scale [(128,128),(640,640)]); "
                                        f"CPUExecutionProvider; {threads}"))
    if FACE_RECOGNITION in args.peers:
        pipelines.append(Pipeline(FACE_RECOGNITION, "face_recognition (dlib)", face_recognition_run, len,
                                  wants_rgb=True, notes="dlib HOG detector + face_encodings, defaults"))
    return pipelines, app


# --------------------------------------------------------------------------- timing


@dataclass
class Timing:
    """Per-call wall times of one pipeline on one image."""

    faces: int = 0
    samples_ms: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return float(np.median(self.samples_ms))

    @property
    def p90(self) -> float:
        return float(np.percentile(self.samples_ms, 90))


def time_round_robin(pipelines: Sequence[Pipeline], bgr: Image, rgb: Image,
                     warmup: int, repeat: int, gap_s: float = 0.0) -> dict[str, Timing]:
    """Warm every pipeline up, then time one call of each per repetition, rotating the order.

    ``gap_s`` of untimed sleep before each call lets the previous pipeline's
    spinning onnxruntime threads go idle, so they do not slow the next one.
    """
    timings = {p.key: Timing() for p in pipelines}
    for rep in range(warmup + repeat):
        shift = rep % len(pipelines)
        for pipeline in [*pipelines[shift:], *pipelines[:shift]]:
            image = rgb if pipeline.wants_rgb else bgr
            time.sleep(gap_s)
            start = time.perf_counter()
            result = pipeline.run(image)
            elapsed = (time.perf_counter() - start) * 1000.0
            if rep >= warmup:
                timings[pipeline.key].samples_ms.append(elapsed)
                timings[pipeline.key].faces = pipeline.count(result)
    return timings


# --------------------------------------------------------------------------- exactness


@dataclass
class Exactness:
    """facetrail faces matched to InsightFace faces by box IoU, with embedding cosines."""

    facetrail_faces: int
    insightface_faces: int
    matched: int
    only_facetrail: int
    only_insightface: int
    min_cosine: float | None
    mean_cosine: float | None

    @property
    def passed(self) -> bool:
        same_faces = (self.facetrail_faces == self.insightface_faces
                      and self.only_facetrail == 0 and self.only_insightface == 0)
        return same_faces and (self.min_cosine is None or self.min_cosine >= MIN_COSINE)


def box_iou(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """IoU matrix (len(a), len(b)) of xyxy boxes."""
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(bottom_right - top_left, 0, None).prod(axis=2)
    area_a = (a[:, 2:] - a[:, :2]).prod(axis=1)
    area_b = (b[:, 2:] - b[:, :2]).prod(axis=1)
    iou: npt.NDArray[np.float64] = inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)
    return iou


def greedy_match(iou: npt.NDArray[np.float64], threshold: float) -> list[tuple[int, int]]:
    """Pairs (row, col), best IoU first, each row and column used once, IoU >= threshold."""
    iou = iou.copy()
    pairs = []
    while iou.size and iou.max() >= threshold:
        row, col = np.unravel_index(int(np.argmax(iou)), iou.shape)
        pairs.append((int(row), int(col)))
        iou[row, :] = -1.0
        iou[:, col] = -1.0
    return pairs


def compare(ours: ImageFaces, theirs: list[Any]) -> Exactness:
    """Match facetrail's faces to InsightFace's and measure embedding agreement."""
    their_boxes = np.array([f.bbox for f in theirs], np.float32).reshape(-1, 4)
    pairs = greedy_match(box_iou(ours.detections.xyxy, their_boxes), MIN_IOU)
    cosines = [float(np.dot(ours.embeddings.vectors[i], theirs[j].normed_embedding)) for i, j in pairs]
    return Exactness(len(ours), len(theirs), len(pairs), len(ours) - len(pairs), len(theirs) - len(pairs),
                     min(cosines) if cosines else None,
                     float(np.mean(cosines)) if cosines else None)


# --------------------------------------------------------------------------- reporting


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def physical_cores() -> int | None:
    """Distinct (physical id, core id) pairs in /proc/cpuinfo; None where it cannot tell."""
    try:
        blocks = Path("/proc/cpuinfo").read_text().split("\n\n")
    except OSError:
        return None
    cores = set()
    for block in blocks:
        fields = dict(line.split(":", 1) for line in block.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        if "core id" in fields:
            cores.add((fields.get("physical id", "0"), fields["core id"]))
    return len(cores) or None


def machine_info() -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "physical_cores": physical_cores(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "onnxruntime_providers": ort.get_available_providers(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "insightface": package_version("insightface"),
        "face_recognition": package_version("face_recognition"),
        "dlib": package_version("dlib-bin"),
    }


def print_header(machine: dict[str, Any], args: argparse.Namespace, pipelines: Sequence[Pipeline],
                 images: Sequence[tuple[str, Image]]) -> None:
    print("facetrail face engine benchmark")
    print(f"machine   : {machine['cpu']}, {machine['logical_cpus']} logical CPUs "
          f"({machine['usable_cpus']} usable, {machine['physical_cores']} physical cores), "
          f"Python {machine['python']}")
    print(f"libraries : onnxruntime {machine['onnxruntime']} (providers: "
          f"{', '.join(machine['onnxruntime_providers'])}), numpy {machine['numpy']}, "
          f"opencv {machine['opencv']}, insightface {machine['insightface']}, "
          f"face_recognition {machine['face_recognition']}, dlib-bin {machine['dlib']}")
    print(f"settings  : det size {args.det_size}x{args.det_size}, threads {args.threads} "
          f"(0 = onnxruntime default: one per physical core), warm-up {args.warmup}, "
          f"repetitions {args.repeat}, timed round-robin with time.perf_counter, "
          f"{args.gap_ms:g} ms untimed pause before each call")
    print("            images decoded once (BGR; RGB copy for face_recognition) before timing; "
          "facetrail low-light off, try_rotations off")
    print(f"images    : {', '.join(f'{name} ({img.shape[1]}x{img.shape[0]})' for name, img in images)}")
    print("pipelines :")
    for pipeline in pipelines:
        print(f"  {pipeline.label:<28} {pipeline.notes}")
    print()


def speedup(peer: Timing | None, ours: Timing) -> float | None:
    return peer.median / ours.median if peer is not None and ours.median > 0 else None


def print_image_table(name: str, image: Image, pipelines: Sequence[Pipeline],
                      timings: dict[str, Timing]) -> None:
    print(f"{name}  {image.shape[1]}x{image.shape[0]}")
    print(f"  {'pipeline':<28} {'faces':>5} {'median ms':>10} {'p90 ms':>9} "
          f"{'vs facetrail default':>21} {'vs facetrail dynamic':>21}")
    for pipeline in pipelines:
        t = timings[pipeline.key]
        ratios = [speedup(t, timings[ref]) for ref in (FACETRAIL, FACETRAIL_DYNAMIC)]
        cells = [f"{r:.2f}x" if r is not None else "-" for r in ratios]
        print(f"  {pipeline.label:<28} {t.faces:>5} {t.median:>10.1f} {t.p90:>9.1f} "
              f"{cells[0]:>21} {cells[1]:>21}")
    print("  (vs columns: that row's median time / facetrail's; above 1 means facetrail is faster)")


def print_exactness(label: str, check: Exactness, gated: bool) -> None:
    cos = ("no matched faces" if check.min_cosine is None
           else f"cosine min {check.min_cosine:.6f} mean {check.mean_cosine:.6f}")
    verdict = ("PASS" if check.passed else "FAIL") if gated else (
        "(informational: different canvas)" + ("" if check.passed else " differs"))
    print(f"  exactness {label:<8}: facetrail {check.facetrail_faces} faces, InsightFace "
          f"{check.insightface_faces}; {check.matched} matched (IoU >= {MIN_IOU}), "
          f"{check.only_facetrail} only facetrail, {check.only_insightface} only InsightFace; "
          f"{cos} -> {verdict}")


def describe_ratio(ratio: float | None, peer: str) -> str:
    if ratio is None:
        return f"not compared with {peer}"
    if ratio >= 1.0:
        return f"{_times(ratio)} faster than {peer}"
    return f"{_times(1.0 / ratio)} slower than {peer}"


def _times(ratio: float) -> str:
    """2 decimals below 10x (so 1.46x does not read as the 1.5x goal), 1 above."""
    return f"{ratio:.2f}x" if ratio < 10.0 else f"{ratio:.1f}x"


def summary_line(name: str, timings: dict[str, Timing], key: str) -> str:
    ours = timings[key]
    parts = [describe_ratio(speedup(timings.get(INSIGHTFACE), ours), "InsightFace FaceAnalysis"),
             describe_ratio(speedup(timings.get(FACE_RECOGNITION), ours), "face_recognition")]
    return f"facetrail is {parts[0]} and {parts[1]} on {name} ({ours.faces} faces)"


def goal_line(timings: dict[str, Timing]) -> str:
    vs_if = speedup(timings.get(INSIGHTFACE), timings[FACETRAIL])
    vs_fr = speedup(timings.get(FACE_RECOGNITION), timings[FACETRAIL])
    met = (vs_if is not None and vs_if >= GOAL_VS_INSIGHTFACE
           and vs_fr is not None and vs_fr >= GOAL_VS_FACE_RECOGNITION)
    return (f"goal (default config, >= {GOAL_VS_INSIGHTFACE}x InsightFace and >= "
            f"{GOAL_VS_FACE_RECOGNITION:.0f}x face_recognition on the first image): "
            f"{'met' if met else 'NOT met'}")


# --------------------------------------------------------------------------- main


@dataclass
class ImageResult:
    name: str
    width: int
    height: int
    timings: dict[str, Timing]
    exactness: Exactness | None
    exactness_dynamic: Exactness | None
    background: float | None


def run_image(name: str, bgr: Image, pipelines: Sequence[Pipeline], app: Any,
              args: argparse.Namespace) -> ImageResult:
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    by_key = {p.key: p for p in pipelines}
    exact = exact_dynamic = None
    if app is not None:
        theirs = app.get(bgr)
        exact = compare(by_key[FACETRAIL].run(bgr), theirs)
        exact_dynamic = compare(by_key[FACETRAIL_DYNAMIC].run(bgr), theirs)
    meter = CpuMeter()
    meter.start()
    timings = time_round_robin(pipelines, bgr, rgb, args.warmup, args.repeat, args.gap_ms / 1000.0)
    background = meter.background_share()
    print_image_table(name, bgr, pipelines, timings)
    if background is not None:
        noisy = background > NOISY_BACKGROUND
        warning = "  (noisy: other processes were busy; rerun on a quiet machine)" if noisy else ""
        print(f"  background CPU use by other processes while timing: {background:.0%}{warning}")
    if exact is not None and exact_dynamic is not None:
        print_exactness("default", exact, gated=True)
        print_exactness("dynamic", exact_dynamic, gated=False)
    print()
    return ImageResult(name, bgr.shape[1], bgr.shape[0], timings, exact, exact_dynamic, background)


def write_json(path: Path, machine: dict[str, Any], args: argparse.Namespace,
               results: Sequence[ImageResult], passed: bool) -> None:
    def timing_dict(t: Timing) -> dict[str, Any]:
        return {"faces": t.faces, "median_ms": t.median, "p90_ms": t.p90, "samples_ms": t.samples_ms}

    payload = {
        "machine": machine,
        "settings": {"det_size": args.det_size, "threads": args.threads, "warmup": args.warmup,
                     "repeat": args.repeat, "gap_ms": args.gap_ms, "peers": list(args.peers)},
        "exactness_passed": passed,
        "images": [{
            "name": r.name, "width": r.width, "height": r.height, "background_cpu_share": r.background,
            "pipelines": {k: timing_dict(t) for k, t in r.timings.items()},
            "speedup_vs_insightface": speedup(r.timings.get(INSIGHTFACE), r.timings[FACETRAIL]),
            "speedup_vs_face_recognition": speedup(r.timings.get(FACE_RECOGNITION), r.timings[FACETRAIL]),
            "exactness": asdict(r.exactness) | {"passed": r.exactness.passed} if r.exactness else None,
            "exactness_dynamic": asdict(r.exactness_dynamic) if r.exactness_dynamic else None,
        } for r in results],
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--images", nargs="+", type=Path, default=None,
                        help="images to run on (default: multiface.jpg, players.jpg, obama_and_biden.jpg)")
    parser.add_argument("--repeat", type=int, default=20, help="timed repetitions per image (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls first (default 3)")
    parser.add_argument("--threads", type=int, default=0,
                        help="onnxruntime intra-op threads for facetrail and InsightFace "
                             "(default 0: each library's default)")
    parser.add_argument("--gap-ms", type=float, default=50.0,
                        help="untimed pause before each call, so spinning threads of the "
                             "previous pipeline settle (default 50)")
    parser.add_argument("--det-size", type=int, default=640,
                        help="detector canvas side for both (default 640)")
    parser.add_argument("--peers", nargs="*", choices=PEERS, default=list(PEERS),
                        help="peers to compare with (default: both)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.warmup < 0 or args.threads < 0 or args.det_size < 32 or args.gap_ms < 0:
        parser.error("need --repeat >= 1, --warmup >= 0, --threads >= 0, --det-size >= 32, --gap-ms >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # insightface 2.1's norm_crop calls a scikit-image API that warns on every face.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"insightface\.")
    paths = args.images or default_images()
    images = [(path.name, load_image(path)) for path in paths]
    machine = machine_info()
    with tempfile.TemporaryDirectory(prefix="facetrail-bench-models-") as model_dir:
        pipelines, app = build_pipelines(args, Path(model_dir))
        print_header(machine, args, pipelines, images)
        results = [run_image(name, bgr, pipelines, app, args) for name, bgr in images]
    passed = all(r.exactness.passed for r in results if r.exactness is not None)
    print("summary")
    for r in results:
        print(f"  {summary_line(r.name, r.timings, FACETRAIL)}")
        print(f"    dynamic canvas: {summary_line(r.name, r.timings, FACETRAIL_DYNAMIC)}")
    print(f"  {goal_line(results[0].timings)}")
    if app is not None:
        print(f"  exactness vs InsightFace (same ONNX files, cosine >= {MIN_COSINE}, same faces): "
              f"{'PASS' if passed else 'FAIL'}")
    else:
        print("  exactness vs InsightFace: not run (InsightFace not among --peers)")
    if args.json:
        write_json(args.json, machine, args, results, passed)
        print(f"  results written to {args.json}")
    print(summary_line(results[0].name, results[0].timings, FACETRAIL))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())

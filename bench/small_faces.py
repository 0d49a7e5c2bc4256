"""Small, blurred faces in video: false match and false non-match rates of weak shots and of k-shot agreement.

    .venv/bin/python bench/small_faces.py [--split DevTrain|DevTest] [--widths 24,28,32] [--full cache.npz]

The calibration behind ``facetrail.track.decision.WEAK_SHOT_THRESHOLDS`` and
``facetrail.track.bestshot.WEAK_MIN_AREA`` / ``WEAK_VOTES``. For each pair of
LFW View 1's list the second image is the probe: shrunk so its face (the box
the default engine finds at full size) is each of ``--widths`` px wide,
pasted 18 to a 640x360 grey frame, blurred (Gaussian sigma 1) and saved as
JPEG 75, then detected, aligned and embedded as the video pipeline does. The
gallery is every image of the list at full size. Impostor pairs: every probe
shot against every gallery image of another person; genuine pairs: the list's
same-person pairs. k of n: at least k of a probe's n shots (one per width) at
or above the threshold. ``--full``: a cached npz of the full-size images
(``paths`` Name/Name_NNNN.jpg, ``embeddings``, ``found``, ``boxes``);
without it they are embedded first (~4 minutes on one core).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from facetrail.pipeline.analyzer import FrameAnalyzer
from facetrail.vision.engine import EngineConfig, FaceEngine
from facetrail.vision.image import load_image
from facetrail.vision.lowlight import LowLightConfig

ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw-view1"
NAMED = 0.2323  # the default recogniser's calibrated threshold
THRESHOLDS = (0.2, 0.2323, 0.25, 0.28, 0.3, 0.32, 0.35)
FRAME, COLS, ROWS = (640, 360), 6, 3


def read_pairs(split: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(same-person pairs, different-person pairs) as relative image paths."""
    same, diff = [], []
    for line in (ROOT / f"pairs{split}.txt").read_text().splitlines()[1:]:
        f = line.split()
        if len(f) == 3:
            same.append((f"{f[0]}/{f[0]}_{int(f[1]):04d}.jpg", f"{f[0]}/{f[0]}_{int(f[2]):04d}.jpg"))
        elif len(f) == 4:
            diff.append((f"{f[0]}/{f[0]}_{int(f[1]):04d}.jpg", f"{f[2]}/{f[2]}_{int(f[3]):04d}.jpg"))
    return same, diff


def full_size(engine: FaceEngine, paths: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Embedding and face box of each image at full size (primary face), for those with a face."""
    out = {}
    for path in paths:
        faces = engine.analyze(load_image(ROOT / "images" / path))
        k = faces.primary()
        if k is not None:
            out[path] = (faces.embeddings.vectors[k], faces.detections.xyxy[k])
    return out


def shrunk_shots(analyzer: FrameAnalyzer, probes: list[str], boxes: dict[str, np.ndarray], width: int,
                 rng: np.random.Generator) -> np.ndarray:
    """(n, d) embeddings of the probes with faces ``width`` px wide in video-like frames; NaN rows: no face."""
    per_frame = COLS * ROWS
    cell_w, cell_h = FRAME[0] // COLS, FRAME[1] // ROWS
    out = np.full((len(probes), 512), np.nan, np.float32)
    for start in range(0, len(probes), per_frame):
        frame = np.full((FRAME[1], FRAME[0], 3), 128, np.uint8)
        expected = []
        for cell, j in enumerate(range(start, min(start + per_frame, len(probes)))):
            x1, y1, x2, y2 = boxes[probes[j]]
            scale = width / (x2 - x1)
            small = cv2.resize(load_image(ROOT / "images" / probes[j]), None, fx=scale, fy=scale,
                               interpolation=cv2.INTER_AREA)
            h, w = small.shape[:2]
            cx = (cell % COLS) * cell_w + cell_w // 2 + int(rng.integers(-4, 5))
            cy = (cell // COLS) * cell_h + cell_h // 2 + int(rng.integers(-4, 5))
            left, top = max(0, min(FRAME[0] - w, cx - w // 2)), max(0, min(FRAME[1] - h, cy - h // 2))
            frame[top:top + h, left:left + w] = small[:FRAME[1] - top, :FRAME[0] - left]
            expected.append((j, left + scale * (x1 + x2) / 2, top + scale * (y1 + y2) / 2))
        _, jpeg = cv2.imencode(".jpg", cv2.GaussianBlur(frame, (0, 0), 1.0), [cv2.IMWRITE_JPEG_QUALITY, 75])
        analysed = analyzer.analyse([cv2.imdecode(jpeg, cv2.IMREAD_COLOR)], [LowLightConfig()])[0]
        if not len(analysed):
            continue
        centres = (analysed.faces.xyxy[:, :2] + analysed.faces.xyxy[:, 2:]) / 2
        wanted, rows = [], []
        for j, ex, ey in expected:
            distance = np.hypot(centres[:, 0] - ex, centres[:, 1] - ey)
            k = int(np.argmin(distance))
            if distance[k] <= width / 2 and analysed.shot(k).usable:
                wanted.append((analysed, k))
                rows.append(j)
        if wanted:
            out[rows] = analyzer.embed(wanted)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--split", default="DevTrain", choices=["DevTrain", "DevTest"])
    parser.add_argument("--widths", default="24,28,32", help="face widths in px, one shot each")
    parser.add_argument("--full", type=Path, help="cached npz of the full-size images")
    args = parser.parse_args()
    widths = [int(w) for w in args.widths.split(",")]
    same, diff = read_pairs(args.split)
    engine = FaceEngine(EngineConfig(threads=1))
    listed = sorted({p for pair in same + diff for p in pair})
    if args.full:
        cache = np.load(args.full)
        at = {str(p): i for i, p in enumerate(cache["paths"])}
        known = {p: (cache["embeddings"][at[p]], cache["boxes"][at[p]]) for p in listed if cache["found"][at[p]]}
    else:
        known = full_size(engine, listed)
    gallery = [p for p in listed if p in known]
    probes = sorted({b for _, b in same + diff if b in known})
    g_vectors = np.stack([known[p][0] for p in gallery])
    g_people = np.array([p.split("/")[0] for p in gallery])
    p_people = np.array([p.split("/")[0] for p in probes])
    impostor = p_people[:, None] != g_people[None, :]
    g_at, p_at = {p: i for i, p in enumerate(gallery)}, {p: i for i, p in enumerate(probes)}
    genuine = [(p_at[b], g_at[a]) for a, b in same if a in g_at and b in p_at]

    full = np.stack([known[p][0] for p in probes]) @ g_vectors.T
    print(f"{args.split}: {len(genuine)} genuine pairs, {int(impostor.sum())} impostor pairs")
    rates = "  ".join(f"{t}: {np.mean([full[i, j] < t for i, j in genuine]):.4f}/{np.mean(full[impostor] >= t):.1e}"
                      for t in THRESHOLDS)
    print(f"full size, one shot  FNMR/FMR  {rates}")

    analyzer, rng = FrameAnalyzer(engine), np.random.default_rng(7)
    scores = {}
    for width in widths:
        shots = shrunk_shots(analyzer, probes, {p: known[p][1] for p in probes}, width, rng)
        score = np.nan_to_num(shots @ g_vectors.T, nan=-1.0)
        scores[width] = score
        found = np.mean(~np.isnan(shots[:, 0]))
        rates = "  ".join(f"{t}: {np.mean([score[i, j] < t for i, j in genuine]):.4f}/"
                          f"{np.mean(score[impostor] >= t):.1e}" for t in THRESHOLDS)
        print(f"{width} px, one shot ({found:.1%} found)  FNMR/FMR  {rates}")
    for k in range(1, len(widths) + 1):
        rates = []
        for t in THRESHOLDS:
            agree = sum((scores[w] >= t).astype(np.int32) for w in widths) >= k
            rates.append(f"{t}: {np.mean([not agree[i, j] for i, j in genuine]):.4f}/{np.mean(agree[impostor]):.1e}")
        print(f"{k} of {len(widths)} shots agree  FNMR/FMR  {'  '.join(rates)}")


if __name__ == "__main__":
    main()

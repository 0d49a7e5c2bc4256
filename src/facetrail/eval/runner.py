"""Run a pair evaluation: embed every distinct image once through a ``FaceEngine``, score, measure.

Each image contributes the embedding of its primary face. Images that cannot
be read or show no face are recorded as failures; every pair touching one
counts as a wrong decision in accuracy and scores -1 in rates (see ``facetrail.eval.metrics``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facetrail.eval import metrics
from facetrail.eval.metrics import FAILED_SCORE, BoolArray, Decisions, Float64Array, KFold
from facetrail.eval.pairs import PairList
from facetrail.vision.engine import FaceEngine
from facetrail.vision.errors import ImageError
from facetrail.vision.image import load_image
from facetrail.vision.types import FloatArray

FOLDS = 10
MIN_IMPOSTORS_PER_FAR = 10  # TAR@FAR is reported only with at least this many / FAR impostor pairs
FAILURE_RULE = ("accuracy counts every pair with an unusable image as a wrong decision; TAR, FAR, ROC "
                "and AUC give such pairs the score -1 (rejected at any threshold above -1: a false "
                "reject for a same-person pair)")

Progress = Callable[[Path], None]


@dataclass(frozen=True)
class ImageFailure:
    """An image the evaluation could not use, and why."""

    path: Path
    reason: str


@dataclass(frozen=True)
class Embeddings:
    """The primary-face embedding of each usable image, and the images that failed."""

    vectors: dict[Path, FloatArray]
    failures: list[ImageFailure]
    model_id: str
    seconds: float


def embed_images(engine: FaceEngine, paths: Sequence[Path], progress: Progress | None = None) -> Embeddings:
    """Embed the primary face of each distinct image once; ``progress`` is called after each image."""
    vectors: dict[Path, FloatArray] = {}
    failures: list[ImageFailure] = []
    start = time.perf_counter()
    for path in dict.fromkeys(paths):
        try:
            faces = engine.analyze(load_image(path))
        except ImageError as error:
            failures.append(ImageFailure(path, error.problem))
        else:
            index = faces.primary()
            if index is None:
                dropped = faces.dropped_misaligned
                extra = f" ({dropped} face(s) dropped as misaligned)" if dropped else ""
                failures.append(ImageFailure(path, "no face found" + extra))
            else:
                vectors[path] = faces.embeddings.vectors[index]
        if progress is not None:
            progress(path)
    return Embeddings(vectors, failures, engine.recogniser.model_id, time.perf_counter() - start)


def score_pairs(pairs: PairList, embeddings: Embeddings) -> tuple[Float64Array, BoolArray]:
    """Cosine similarity of each pair and whether the pair failed (score -1 then)."""
    scores = np.full(len(pairs), FAILED_SCORE, np.float64)
    failed = np.ones(len(pairs), bool)
    for i, pair in enumerate(pairs.pairs):
        a, b = embeddings.vectors.get(pair.first), embeddings.vectors.get(pair.second)
        if a is not None and b is not None:
            scores[i] = float(np.dot(a.astype(np.float64), b.astype(np.float64)))
            failed[i] = False
    return scores, failed


@dataclass(frozen=True)
class TarResult:
    """TAR at one FAR, or why it is not reported."""

    far: float
    tar: float | None
    threshold: float | None
    reason: str | None = None


@dataclass(frozen=True)
class Metrics:
    """Every number of an evaluation that depends only on scores and labels."""

    pairs: int
    genuine: int
    impostors: int
    failed_pairs: int
    failed_genuine: int
    failed_impostors: int
    auc: float
    best: Decisions  # at the single threshold that is most accurate over all pairs
    kfold: KFold | None
    folds: int
    kfold_note: str | None
    tar: list[TarResult]
    fixed: dict[str, Decisions] = field(default_factory=dict)
    usable: Metrics | None = None  # the same measures on the pairs whose two images were usable


def measure(scores: Float64Array, same: BoolArray, failed: BoolArray, *,
            far_levels: Sequence[float] = (1e-3, 1e-2),
            thresholds: dict[str, float] | None = None) -> Metrics:
    """Accuracy (global best and 10-fold), AUC, TAR at each FAR, and decisions at fixed thresholds."""
    genuine, impostors = int(same.sum()), int((~same).sum())
    threshold, _ = metrics.best_threshold(scores, same, failed)
    folds = min(FOLDS, genuine, impostors)
    if folds >= 2:
        fold_of = metrics.stratified_folds(same, folds)
        kfold: KFold | None = metrics.kfold_accuracy(scores, same, fold_of, failed)
        note = None
    else:
        kfold, note = None, "k-fold accuracy needs at least 2 same-person and 2 different-person pairs"
    tars = [_tar(scores, same, failed, far, impostors) for far in dict.fromkeys(far_levels)]
    fixed = {name: metrics.at_threshold(scores, same, value, failed)
             for name, value in (thresholds or {}).items()}
    usable_pairs = ~failed
    usable = (measure(scores[usable_pairs], same[usable_pairs], failed[usable_pairs], far_levels=far_levels,
                      thresholds=thresholds)
              if failed.any() and same[usable_pairs].any() and not same[usable_pairs].all() else None)
    return Metrics(
        pairs=int(same.size), genuine=genuine, impostors=impostors, failed_pairs=int(failed.sum()),
        failed_genuine=int((failed & same).sum()), failed_impostors=int((failed & ~same).sum()),
        auc=metrics.auc(scores, same, failed), best=metrics.at_threshold(scores, same, threshold, failed),
        kfold=kfold, folds=folds, kfold_note=note, tar=tars, fixed=fixed, usable=usable)


def _tar(scores: Float64Array, same: BoolArray, failed: BoolArray, far: float, impostors: int) -> TarResult:
    needed = int(np.ceil(MIN_IMPOSTORS_PER_FAR / far))
    if impostors < needed:
        return TarResult(far, None, None, f"needs at least {needed} different-person pairs "
                                          f"({MIN_IMPOSTORS_PER_FAR}/FAR), have {impostors}")
    tar, threshold = metrics.tar_at_far(scores, same, far, failed)
    return TarResult(far, tar, threshold)


@dataclass(frozen=True)
class Evaluation:
    """The outcome of ``evaluate``: inputs, scores, failures and metrics."""

    pairs: PairList
    recogniser: str
    model_id: str
    scores: Float64Array
    same: BoolArray
    failed: BoolArray
    failures: list[ImageFailure]
    images: int
    embed_seconds: float
    metrics: Metrics


def evaluate(engine: FaceEngine, pairs: PairList, *, far_levels: Sequence[float] = (1e-3, 1e-2),
             thresholds: dict[str, float] | None = None, progress: Progress | None = None) -> Evaluation:
    """Embed the images of ``pairs`` with ``engine``, score every pair and measure."""
    images = pairs.images()
    embeddings = embed_images(engine, images, progress)
    scores, failed = score_pairs(pairs, embeddings)
    same = pairs.labels()
    return Evaluation(
        pairs=pairs, recogniser=engine.recogniser.name, model_id=embeddings.model_id, scores=scores,
        same=same, failed=failed, failures=embeddings.failures, images=len(images),
        embed_seconds=embeddings.seconds,
        metrics=measure(scores, same, failed, far_levels=far_levels, thresholds=thresholds))

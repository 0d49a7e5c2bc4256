"""Verification metrics on pair scores, in plain NumPy.

A pair is accepted (called "same person") when its score is at or above the
threshold. Pairs marked ``failed`` (an image unreadable or without a face)
are handled the conservative way:

* accuracy counts them as wrong decisions at every threshold, whatever their label;
* rates (TAR, FAR, ROC, AUC) give them the score -1, the lowest cosine, so a
  failed same-person pair is a false reject at any threshold above -1 and a
  failed different-person pair a (correct) reject, like the generalised rates
  of ISO/IEC 19795 that count failures to acquire as rejections.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from facetrail.vision.types import IntArray

BoolArray = npt.NDArray[np.bool_]
Float64Array = npt.NDArray[np.float64]
ArrayLike = npt.ArrayLike

FAILED_SCORE = -1.0  # the score a failed pair gets in rates
EDGE_MARGIN = 1e-6  # how far beyond the extreme scores the accept-none / accept-all thresholds lie


@dataclass(frozen=True)
class Sweep:
    """Every distinct decision on a set of scores, from accepting nothing to accepting every pair.

    State k accepts the pairs whose score is among the k highest distinct
    scores. ``tp``/``fp`` count accepted same/different pairs (failed pairs
    scored -1); ``correct`` counts right decisions on usable pairs only;
    ``roc_thresholds[k]`` is the lowest accepted score (+inf for k = 0) and
    ``cut_thresholds[k]`` a threshold midway to the next score, which is what
    a calibration stores.
    """

    tp: IntArray
    fp: IntArray
    correct: IntArray
    roc_thresholds: Float64Array
    cut_thresholds: Float64Array
    positives: int
    negatives: int

    @property
    def tar(self) -> Float64Array:
        """True accept rate of each state."""
        rate: Float64Array = self.tp / self.positives
        return rate

    @property
    def far(self) -> Float64Array:
        """False accept rate of each state."""
        rate: Float64Array = self.fp / self.negatives
        return rate

    @property
    def accuracy(self) -> Float64Array:
        """Share of all pairs decided right in each state (failed pairs are always wrong)."""
        rate: Float64Array = self.correct / (self.positives + self.negatives)
        return rate


def _arrays(scores: ArrayLike, same: ArrayLike,
            failed: ArrayLike | None) -> tuple[Float64Array, BoolArray, BoolArray]:
    """Validated flat arrays; failed pairs get ``FAILED_SCORE``."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(same, dtype=bool).reshape(-1)
    f = np.zeros_like(y) if failed is None else np.asarray(failed, dtype=bool).reshape(-1)
    if not s.shape == y.shape == f.shape:
        raise ValueError(f"scores, labels and failed flags differ in length: {s.size}, {y.size}, {f.size}")
    if y.all() or not y.any():
        raise ValueError("need both same-person and different-person pairs")
    s = np.where(f, FAILED_SCORE, s)
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    return s, y, f


def sweep(scores: ArrayLike, same: ArrayLike, failed: ArrayLike | None = None) -> Sweep:
    """All decision states of the scores (see ``Sweep``)."""
    s, y, f = _arrays(scores, same, failed)
    order = np.argsort(-s, kind="stable")
    ranked, labels, broken = s[order], y[order], f[order]
    last_of_group = np.flatnonzero(np.append(ranked[1:] != ranked[:-1], True))

    def accepted(flags: BoolArray) -> IntArray:
        counts: IntArray = np.concatenate([[0], np.cumsum(flags)[last_of_group]]).astype(np.int64)
        return counts

    usable_negatives = int((~y & ~f).sum())
    correct = accepted(labels & ~broken) + usable_negatives - accepted(~labels & ~broken)
    distinct = ranked[last_of_group]
    cuts = np.concatenate([[distinct[0] + EDGE_MARGIN], (distinct[:-1] + distinct[1:]) / 2,
                           [distinct[-1] - EDGE_MARGIN]])
    return Sweep(tp=accepted(labels), fp=accepted(~labels), correct=correct,
                 roc_thresholds=np.concatenate([[np.inf], distinct]), cut_thresholds=cuts,
                 positives=int(y.sum()), negatives=int((~y).sum()))


def auc(scores: ArrayLike, same: ArrayLike, failed: ArrayLike | None = None) -> float:
    """Area under the ROC (TAR against FAR), by the trapezoid rule from (0, 0)."""
    states = sweep(scores, same, failed)
    far = np.concatenate([[0.0], states.far])
    tar = np.concatenate([[0.0], states.tar])
    return float(np.sum(np.diff(far) * (tar[1:] + tar[:-1]) / 2))


def best_threshold(scores: ArrayLike, same: ArrayLike,
                   failed: ArrayLike | None = None) -> tuple[float, float]:
    """The threshold with the highest accuracy, and that accuracy.

    Thresholds lie midway between consecutive distinct scores; when several
    give the same accuracy the middle one of them is taken.
    """
    states = sweep(scores, same, failed)
    accuracy = states.accuracy
    best = np.flatnonzero(accuracy == accuracy.max())
    k = int(best[(best.size - 1) // 2])
    return float(states.cut_thresholds[k]), float(accuracy[k])


@dataclass(frozen=True)
class Decisions:
    """How a fixed threshold does on a set of pairs."""

    threshold: float
    accuracy: float
    tar: float
    far: float


def at_threshold(scores: ArrayLike, same: ArrayLike, threshold: float,
                 failed: ArrayLike | None = None) -> Decisions:
    """Accuracy, TAR and FAR when pairs scoring at or above ``threshold`` are accepted."""
    s, y, f = _arrays(scores, same, failed)
    accepted = s >= threshold
    return Decisions(threshold=float(threshold), accuracy=_accuracy(s, y, f, threshold),
                     tar=float(accepted[y].mean()), far=float(accepted[~y].mean()))


def _accuracy(s: Float64Array, y: BoolArray, f: BoolArray, threshold: float) -> float:
    """Share of right decisions, failed pairs counted wrong (works on a single class too)."""
    return float((((s >= threshold) == y) & ~f).mean())


def tar_at_far(scores: ArrayLike, same: ArrayLike, far: float,
               failed: ArrayLike | None = None) -> tuple[float, float]:
    """The highest TAR whose FAR is at most ``far``, and the lowest score accepted for it."""
    states = sweep(scores, same, failed)
    allowed = np.flatnonzero(states.far <= far)  # never empty: accepting nothing has FAR 0
    k = int(allowed[np.argmax(states.tar[allowed])])
    return float(states.tar[k]), float(states.roc_thresholds[k])


def stratified_folds(same: ArrayLike, folds: int = 10) -> IntArray:
    """Fold number of each pair: each class split into ``folds`` consecutive runs in input order.

    For LFW files (same pairs then different pairs, per set) this reproduces
    consecutive folds with the same/different balance; it is deterministic.
    """
    y = np.asarray(same, dtype=bool).reshape(-1)
    fold = np.zeros(y.size, np.int64)
    for label in (True, False):
        members = np.flatnonzero(y == label)
        fold[members] = np.arange(members.size) * folds // max(members.size, 1)
    return fold


@dataclass(frozen=True)
class KFold:
    """Per-fold accuracy on the held-out fold with the threshold chosen on the others."""

    accuracies: Float64Array
    thresholds: Float64Array

    @property
    def mean(self) -> float:
        """Mean held-out accuracy."""
        return float(self.accuracies.mean())

    @property
    def std(self) -> float:
        """Standard deviation of the held-out accuracies (population, as LFW results quote)."""
        return float(self.accuracies.std())

    @property
    def mean_threshold(self) -> float:
        """Mean of the thresholds chosen on the training folds."""
        return float(self.thresholds.mean())


def kfold_accuracy(scores: ArrayLike, same: ArrayLike, folds: ArrayLike,
                   failed: ArrayLike | None = None) -> KFold:
    """Cross-validated accuracy: per fold, the best threshold on the rest measured on the fold.

    Folds without pairs are skipped; a training set must hold both classes.
    """
    s, y, f = _arrays(scores, same, failed)
    fold = np.asarray(folds, dtype=np.int64).reshape(-1)
    if fold.shape != s.shape:
        raise ValueError("one fold number per pair is needed")
    accuracies, thresholds = [], []
    for k in np.unique(fold):
        test = fold == k
        threshold, _ = best_threshold(s[~test], y[~test], f[~test])
        accuracies.append(_accuracy(s[test], y[test], f[test], threshold))
        thresholds.append(threshold)
    return KFold(np.array(accuracies, np.float64), np.array(thresholds, np.float64))


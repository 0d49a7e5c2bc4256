"""The evaluation report: ``summary.json`` (every number), ``roc.png`` and ``scores.csv``.

The plot is drawn on matplotlib's Agg canvas directly, so no GUI backend is
touched and the global backend choice is left alone.
"""

from __future__ import annotations

import csv
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from facetrail import __version__
from facetrail.eval import metrics
from facetrail.eval.metrics import Decisions
from facetrail.eval.runner import FAILURE_RULE, Evaluation, Metrics


def rounded(value: float | None, digits: int = 6) -> float | None:
    """``value`` rounded for JSON; None for None, NaN and infinities (JSON has no such numbers)."""
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


def _decisions(decisions: Decisions) -> dict[str, Any]:
    return {"threshold": rounded(decisions.threshold), "accuracy": rounded(decisions.accuracy),
            "tar": rounded(decisions.tar), "far": rounded(decisions.far)}


def summary_document(evaluation: Evaluation) -> dict[str, Any]:
    """Everything the evaluation measured, JSON-ready."""
    m, pairs = evaluation.metrics, evaluation.pairs
    return {
        "facetrail_version": __version__,
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "dataset": {"name": pairs.name, "kind": pairs.kind, "source": str(pairs.source),
                    "note": pairs.note, "pairs": m.pairs, "genuine_pairs": m.genuine,
                    "impostor_pairs": m.impostors, "images": evaluation.images},
        "recogniser": evaluation.recogniser,
        "model_id": evaluation.model_id,
        **_measures(m),
        "failures": {
            "images": len(evaluation.failures),
            "pairs": m.failed_pairs, "genuine_pairs": m.failed_genuine, "impostor_pairs": m.failed_impostors,
            "rule": FAILURE_RULE,
            "list": [{"path": str(f.path), "reason": f.reason} for f in evaluation.failures],
        },
        "usable_pairs_only": (
            {"pairs": m.usable.pairs, "note": "the same measures without the failed pairs: the recogniser "
                                              "alone, not counting detection failures",
             **_measures(m.usable)} if m.usable else None),
        "timing": {"embed_seconds": round(evaluation.embed_seconds, 2),
                   "images_per_second": round(evaluation.images / max(evaluation.embed_seconds, 1e-9), 2)},
    }


def _measures(m: Metrics) -> dict[str, Any]:
    kfold = m.kfold
    return {
        "accuracy": {
            "kfold_mean": rounded(kfold.mean) if kfold else None,
            "kfold_std": rounded(kfold.std) if kfold else None,
            "folds": m.folds if kfold else None,
            "kfold_mean_threshold": rounded(kfold.mean_threshold) if kfold else None,
            "per_fold": [rounded(a) for a in kfold.accuracies] if kfold else [],
            "per_fold_thresholds": [rounded(t) for t in kfold.thresholds] if kfold else [],
            "protocol": "stratified consecutive folds in input order; per fold, the most accurate "
                        "threshold on the other folds is measured on it",
            "note": m.kfold_note,
        },
        "best_threshold": {**_decisions(m.best),
                           "note": "single most accurate threshold over all pairs (what a calibration "
                                   "stores); its accuracy is optimistic, quote the k-fold figure"},
        "auc": rounded(m.auc),
        "tar_at_far": [{"far": t.far, "tar": rounded(t.tar), "threshold": rounded(t.threshold),
                        "reason": t.reason} for t in m.tar],
        "fixed_thresholds": {name: _decisions(d) for name, d in m.fixed.items()},
    }


def write_summary(document: dict[str, Any], path: Path) -> None:
    """Write the summary as indented JSON."""
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def write_scores(evaluation: Evaluation, path: Path) -> None:
    """One row per pair: the two images, the label, the score (empty when the pair failed)."""
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["file_x", "file_y", "same", "score"])
        for pair, score, failed in zip(evaluation.pairs.pairs, evaluation.scores, evaluation.failed,
                                       strict=True):
            writer.writerow([pair.first, pair.second, int(pair.same), "" if failed else f"{score:.6f}"])


def plot_roc(evaluation: Evaluation, path: Path) -> None:
    """ROC curve on a log FAR axis with the best threshold (and any fixed ones) marked."""
    m = evaluation.metrics
    states = metrics.sweep(evaluation.scores, evaluation.same, evaluation.failed)
    floor = 10.0 ** math.floor(math.log10(0.5 / m.impostors))  # FAR 0 is drawn on this left edge
    figure = Figure(figsize=(6.4, 5.2), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot(np.maximum(states.far, floor), states.tar, color="tab:blue", label=f"ROC (AUC {m.auc:.4f})")
    # The best threshold is a large hollow ring drawn on top, so a fixed threshold at the same point shows.
    colours = ("tab:green", "tab:purple", "tab:orange", "tab:brown")
    points = [*((name, d, "s", colours[i % len(colours)], 5.0, colours[i % len(colours)])
                for i, (name, d) in enumerate(m.fixed.items())),
              ("best threshold", m.best, "o", "tab:red", 11.0, "none")]
    for name, decisions, marker, colour, size, face in points:
        axes.plot([max(decisions.far, floor)], [decisions.tar], marker=marker, color=colour, markersize=size,
                  markerfacecolor=face, markeredgewidth=1.5, linestyle="", clip_on=False, zorder=3,
                  label=f"{name} {decisions.threshold:.3f}: TAR {decisions.tar:.3f} "
                        f"@ FAR {decisions.far:.4f}, acc {decisions.accuracy:.2%}")
    axes.set_xscale("log")
    axes.set_xlim(floor, 1.0)
    axes.set_ylim(0.0, 1.01)
    axes.set_xlabel("false accept rate (log; FAR 0 drawn at the left edge)")
    axes.set_ylabel("true accept rate")
    accuracy = (f"10-fold accuracy {m.kfold.mean:.2%} ± {m.kfold.std:.2%}" if m.kfold
                else f"accuracy {m.best.accuracy:.2%} at the best threshold")
    axes.set_title(f"{evaluation.pairs.name}: {m.genuine}+{m.impostors} pairs, {evaluation.recogniser}\n"
                   f"{accuracy}", fontsize=10)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, format="png")


def write_report(evaluation: Evaluation, out_dir: Path) -> dict[str, Any]:
    """Write summary.json, roc.png and scores.csv into ``out_dir``; return the summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    document = summary_document(evaluation)
    plot_roc(evaluation, out_dir / "roc.png")
    write_scores(evaluation, out_dir / "scores.csv")
    write_summary(document, out_dir / "summary.json")
    return document

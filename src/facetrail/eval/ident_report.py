"""The 1:N report: ``summary.json`` (every figure), ``det.png`` (DET and CMC) and ``probes.csv``.

Like the pairs report, the plot is drawn on matplotlib's Agg canvas directly,
so no GUI backend is touched.
"""

from __future__ import annotations

import csv
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from facetrail import __version__
from facetrail.eval.ident import IdentEvaluation
from facetrail.eval.ident_groups import GroupReport
from facetrail.eval.report import rounded, write_summary

PROTOCOL = (
    "1:N search in the manner of NIST FRVT: each probe is compared with every enrolled person (best of "
    "their templates); rank-1 and CMC count mated probes whose mate is within rank r whatever the score; "
    "FNIR(T) is the share of mated probes whose mate is not at rank 1 with a score >= T; FPIR(T) the share "
    "of non-mated probes whose best score is >= T; FNIR at FPIR x uses the threshold where FPIR <= x, "
    "reported only with at least 10/x non-mated probes")
FAILURE_RULE = (
    "an image with no face is a failure: a mated probe with no face is a miss at every rank and threshold; "
    "a non-mated probe with no face returns no candidate (never a false positive); an enrolled person none "
    "of whose enrolment images has a face has no template, so their mated probes are misses")


def summary_document(evaluation: IdentEvaluation) -> dict[str, Any]:
    """Everything the 1:N evaluation measured, JSON-ready."""
    s, m, t = evaluation.ident_set, evaluation.metrics, evaluation.templates
    gallery_images = {path for images in s.gallery.values() for path in images}
    return {
        "facetrail_version": __version__,
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "dataset": {"name": s.name, "kind": s.kind, "source": str(s.source), "note": s.note,
                    "enrolled_people": len(s.gallery), "gallery_images": len(gallery_images),
                    "probes": len(s.probes), "mated_probes": m.mated, "non_mated_probes": m.non_mated,
                    "held_out_people": list(s.held_out), "images": evaluation.images},
        "recogniser": evaluation.recogniser,
        "model_id": evaluation.model_id,
        "protocol": PROTOCOL,
        "gallery": {"people_with_template": len(t.persons), "templates": int(t.vectors.shape[0]),
                    "people_without_template": t.without_template},
        "rank1": rounded(m.rank1),
        "cmc": [{"rank": r + 1, "rate": rounded(v)} for r, v in enumerate(m.cmc)],
        "operating_threshold": {"name": m.operating_name, "threshold": rounded(m.operating.threshold),
                                "fnir": rounded(m.operating.fnir), "fpir": rounded(m.operating.fpir)},
        "fnir_at_fpir": [{"fpir": f.fpir, "fnir": rounded(f.fnir), "threshold": rounded(f.threshold),
                          "reason": f.reason} for f in m.fnir_at_fpir],
        "det": ({"fpir": [rounded(v) for v in m.det.fpir], "fnir": [rounded(v) for v in m.det.fnir],
                 "thresholds": [rounded(v) for v in m.det.thresholds]} if m.det is not None else None),
        "failures": {
            "images": len(evaluation.failures),
            "mated_probes_without_face": m.failed_mated,
            "non_mated_probes_without_face": m.failed_non_mated,
            "mated_probes_whose_person_has_no_template": m.mated_without_template,
            "rule": FAILURE_RULE,
            "list": [{"path": str(f.path), "reason": f.reason,
                      "role": "enrolment" if f.path in gallery_images else "probe"}
                     for f in evaluation.failures],
        },
        "groups": group_document(evaluation.groups) if evaluation.groups is not None else None,
        "timing": {"embed_seconds": round(evaluation.embed_seconds, 2),
                   "images_per_second": round(evaluation.images / max(evaluation.embed_seconds, 1e-9), 2)},
    }


def group_document(report: GroupReport) -> dict[str, Any]:
    """The per-group part of the summary."""
    return {
        "source": str(report.source),
        "note": report.note,
        "threshold": rounded(report.threshold),
        "definitions": {"fnmr": "mated probes scoring below the threshold against their own mate (1:1)",
                        "fmr": "comparisons with enrolled people of the same group scoring at or above "
                               "the threshold (1:1, same-group impostors)",
                        "fnir": "mated probes not found at rank 1 at the threshold (1:N)",
                        "fpir": "non-mated probes with any candidate at the threshold (1:N)"},
        "per_group": [{"group": g.group, "people": g.persons, "mated_probes": g.mated,
                       "non_mated_probes": g.non_mated, "impostor_comparisons": g.impostor_comparisons,
                       "fnmr": rounded(g.fnmr), "fmr": rounded(g.fmr), "fnir": rounded(g.fnir),
                       "fpir": rounded(g.fpir),
                       "fnir_at_fpir": [{"fpir": f.fpir, "fnir": rounded(f.fnir), "threshold": rounded(f.threshold),
                                         "reason": f.reason} for f in g.fnir_at_fpir]}
                      for g in report.groups],
        "highest_to_lowest": {s.rate: {"highest": _labelled(s.highest), "lowest": _labelled(s.lowest),
                                       "ratio": rounded(s.ratio), "reason": s.reason} for s in report.spreads},
        "people_without_group": report.ungrouped,
        "people_in_file_not_evaluated": report.unknown,
    }


def _labelled(item: tuple[str, float] | None) -> dict[str, Any] | None:
    return None if item is None else {"group": item[0], "value": rounded(item[1])}


def write_probes(evaluation: IdentEvaluation, path: Path) -> None:
    """One row per probe: who, whether mated, where the mate came, and the best candidate."""
    r, persons = evaluation.ranked, evaluation.templates.persons
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["path", "person", "mated", "face", "mate_rank", "mate_score", "top_person", "top_score"])
        for i, probe in enumerate(evaluation.ident_set.probes):
            face = not r.failed[i]
            writer.writerow([probe.path, probe.person, int(probe.mated), int(face),
                             int(r.mate_rank[i]) or "", _score(r.mate_score[i]),
                             persons[r.top_person[i]] if face else "", _score(r.top_score[i])])


def _score(value: float) -> str:
    return f"{value:.6f}" if math.isfinite(value) else ""


def plot_det(evaluation: IdentEvaluation, path: Path) -> None:
    """DET (FNIR against FPIR, log axes) beside the CMC, as one PNG."""
    figure = Figure(figsize=(11.0, 4.8), dpi=100)
    FigureCanvasAgg(figure)
    det_axes, cmc_axes = figure.subplots(1, 2)
    _draw_det(evaluation, det_axes)
    _draw_cmc(evaluation, cmc_axes)
    m = evaluation.metrics
    figure.suptitle(f"{evaluation.ident_set.name}: {m.gallery_size} enrolled, {m.mated} mated + {m.non_mated} "
                    f"non-mated probes, {evaluation.recogniser}", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, format="png")


def _draw_det(evaluation: IdentEvaluation, axes: Axes) -> None:
    m = evaluation.metrics
    if m.det is None:
        axes.text(0.5, 0.5, "no DET curve:\nit needs both mated and non-mated probes", ha="center",
                  va="center", transform=axes.transAxes)
        axes.set_axis_off()
        return
    x_floor = 10.0 ** math.floor(math.log10(0.5 / max(m.non_mated, 1)))  # rate 0 is drawn on the edge
    y_floor = 10.0 ** math.floor(math.log10(0.5 / max(m.mated, 1)))
    axes.step(np.maximum(m.det.fpir, x_floor), np.maximum(m.det.fnir, y_floor), where="post",
              color="tab:blue", label="DET (rank 1)")
    op = m.operating
    if op.fpir is not None and op.fnir is not None:
        axes.plot([max(op.fpir, x_floor)], [max(op.fnir, y_floor)], marker="o", markersize=10,
                  markerfacecolor="none", color="tab:red", linestyle="", markeredgewidth=1.5, zorder=3,
                  label=f"{m.operating_name} {op.threshold:.3f}: FNIR {op.fnir:.3f} @ FPIR {op.fpir:.4f}")
    for point in m.fnir_at_fpir:
        if point.fnir is not None:
            axes.plot([point.fpir], [max(point.fnir, y_floor)], marker="s", color="tab:green", linestyle="",
                      label=f"FNIR {point.fnir:.3f} @ FPIR {point.fpir:g}")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlim(x_floor, 1.0)
    axes.set_ylim(y_floor, 1.05)
    axes.set_xlabel("FPIR: false positive identification rate (log; 0 drawn at the edge)")
    axes.set_ylabel("FNIR: false negative identification rate (log)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="upper right", fontsize=8)


def _draw_cmc(evaluation: IdentEvaluation, axes: Axes) -> None:
    m = evaluation.metrics
    ranks = np.arange(1, m.cmc.size + 1)
    axes.plot(ranks, m.cmc, marker="o", color="tab:purple")
    axes.set_xticks(ranks)
    axes.set_ylim(min(0.9, float(m.cmc.min()) - 0.05) if m.cmc.size else 0.0, 1.01)
    axes.set_xlabel("rank")
    axes.set_ylabel("share of mated probes found within rank")
    axes.set_title(f"CMC: rank-1 {m.rank1:.2%}", fontsize=10)
    axes.grid(True, alpha=0.3)


def write_ident_report(evaluation: IdentEvaluation, out_dir: Path, json_path: Path | None = None) -> dict[str, Any]:
    """Write summary.json, det.png and probes.csv into ``out_dir`` (and the summary to ``json_path``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    document = summary_document(evaluation)
    plot_det(evaluation, out_dir / "det.png")
    write_probes(evaluation, out_dir / "probes.csv")
    write_summary(document, out_dir / "summary.json")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        write_summary(document, json_path)
    return document

"""Run a 1:N evaluation: embed every image once, enrol the gallery, search every probe, measure.

Each image contributes the embedding of its primary face, exactly as
``facetrail eval pairs`` does (``runner.embed_images``). An enrolled person
gets one template per enrolment image with a face; a person none of whose
enrolment images has a face has no template, cannot be found, and is
listed. A probe with no face is a failure: a miss when mated, no candidate
when non-mated. See ``ident_metrics`` for the rates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from facetrail.eval.ident_groups import GroupReport, Groups, group_report
from facetrail.eval.ident_metrics import (
    FPIR_LEVELS,
    NO_MATE,
    Det,
    FnirAtFpir,
    Ranked,
    Rates,
    cmc,
    det_curve,
    fnir_at_fpir_levels,
    rank_probes,
    rates_at,
)
from facetrail.eval.ident_sets import IdentSet, IdentSetError
from facetrail.eval.metrics import Float64Array
from facetrail.eval.runner import Embeddings, ImageFailure, Progress, embed_images
from facetrail.vision.engine import FaceEngine
from facetrail.vision.types import IntArray

DEFAULT_MAX_RANK = 10


@dataclass(frozen=True)
class Templates:
    """The searchable gallery: one row per template, ``owner`` its column in ``persons``."""

    persons: list[str]  # enrolled people with at least one template, sorted
    vectors: Float64Array
    owner: IntArray
    without_template: list[str]  # enrolled people none of whose enrolment images had a face


def build_templates(ident_set: IdentSet, embeddings: Embeddings) -> Templates:
    """Templates from the enrolment images that have a face."""
    rows: list[tuple[str, np.ndarray]] = [
        (person, embeddings.vectors[path]) for person, images in ident_set.gallery.items()
        for path in images if path in embeddings.vectors]
    persons = sorted({person for person, _ in rows})
    column = {person: i for i, person in enumerate(persons)}
    dim = rows[0][1].shape[0] if rows else 0
    vectors = (np.stack([v for _, v in rows]).astype(np.float64) if rows else np.zeros((0, dim), np.float64))
    owner = np.array([column[person] for person, _ in rows], np.int64)
    missing = sorted(person for person in ident_set.gallery if person not in column)
    return Templates(persons, vectors, owner, missing)


def person_scores(probes: Float64Array, templates: Templates) -> Float64Array:
    """Cosine of each probe (rows) with each enrolled person (columns): the best of their templates."""
    by_template = probes @ templates.vectors.T
    scores = np.full((probes.shape[0], len(templates.persons)), -np.inf)
    for column in range(len(templates.persons)):
        scores[:, column] = by_template[:, templates.owner == column].max(axis=1)
    return scores


@dataclass(frozen=True)
class IdentMetrics:
    """Every figure of a 1:N evaluation that follows from the scores."""

    mated: int
    non_mated: int
    gallery_size: int  # enrolled people with a template
    rank1: float
    cmc: Float64Array  # rank 1..min(max_rank, gallery_size)
    operating: Rates
    operating_name: str
    fnir_at_fpir: list[FnirAtFpir]
    det: Det | None  # None without both mated and non-mated probes
    failed_mated: int
    failed_non_mated: int
    mated_without_template: int  # mated probes whose person has no template


@dataclass(frozen=True)
class IdentEvaluation:
    """The outcome of ``evaluate_ident``: the set, per-probe results, failures and metrics."""

    ident_set: IdentSet
    recogniser: str
    model_id: str
    templates: Templates
    scores: Float64Array  # probes x templates.persons
    ranked: Ranked
    failures: list[ImageFailure]
    images: int
    embed_seconds: float
    metrics: IdentMetrics
    groups: GroupReport | None


def evaluate_embedded(ident_set: IdentSet, embeddings: Embeddings, *, threshold: float, threshold_name: str,
                      max_rank: int = DEFAULT_MAX_RANK, fpir_levels: Sequence[float] = FPIR_LEVELS,
                      groups: Groups | None = None, recogniser: str = "") -> IdentEvaluation:
    """Search every probe of ``ident_set`` with already computed ``embeddings`` and measure."""
    templates = build_templates(ident_set, embeddings)
    if not templates.persons:
        raise IdentSetError("no enrolment image has a face, so the gallery is empty")
    probes = ident_set.probes
    dim = templates.vectors.shape[1]
    failed = np.array([p.path not in embeddings.vectors for p in probes], bool)
    vectors = np.stack([embeddings.vectors[p.path].astype(np.float64) if not bad else np.zeros(dim)
                        for p, bad in zip(probes, failed, strict=True)])
    scores = person_scores(vectors, templates)
    column = {person: i for i, person in enumerate(templates.persons)}
    mated = np.array([p.mated for p in probes], bool)
    mate = np.array([column.get(p.person, NO_MATE) if p.mated else NO_MATE for p in probes], np.int64)
    ranked = rank_probes(scores, mate, mated, failed)
    both = bool(mated.any() and (~mated).any())
    measured = IdentMetrics(
        mated=int(mated.sum()), non_mated=int((~mated).sum()), gallery_size=len(templates.persons),
        rank1=float(cmc(ranked, 1)[0]), cmc=cmc(ranked, min(max_rank, len(templates.persons))),
        operating=rates_at(ranked, threshold), operating_name=threshold_name,
        fnir_at_fpir=fnir_at_fpir_levels(ranked, fpir_levels), det=det_curve(ranked) if both else None,
        failed_mated=int((failed & mated).sum()), failed_non_mated=int((failed & ~mated).sum()),
        mated_without_template=int((mated & ~failed & (mate == NO_MATE)).sum()))
    report = None
    if groups is not None:
        report = group_report(groups, probe_persons=[p.person for p in probes],
                              gallery_persons=templates.persons, scores=scores, ranked=ranked,
                              threshold=threshold, fpir_levels=fpir_levels, all_persons=ident_set.persons())
    images = ident_set.images()
    return IdentEvaluation(ident_set, recogniser, embeddings.model_id, templates, scores, ranked,
                           embeddings.failures, len(images), embeddings.seconds, measured, report)


def evaluate_ident(engine: FaceEngine, ident_set: IdentSet, *, threshold: float, threshold_name: str,
                   max_rank: int = DEFAULT_MAX_RANK, fpir_levels: Sequence[float] = FPIR_LEVELS,
                   groups: Groups | None = None, progress: Progress | None = None) -> IdentEvaluation:
    """Embed the images of ``ident_set`` with ``engine``, then search and measure."""
    embeddings = embed_images(engine, ident_set.images(), progress)
    return evaluate_embedded(ident_set, embeddings, threshold=threshold, threshold_name=threshold_name,
                             max_rank=max_rank, fpir_levels=fpir_levels, groups=groups,
                             recogniser=engine.recogniser.name)


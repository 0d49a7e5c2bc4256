"""1:N identification metrics in the manner of NIST FRVT, in plain NumPy.

Each probe is searched against every enrolled person; a person's score is the
best of their templates (as facetrail's gallery keeps the best template per
identity). With a threshold T and candidates at rank 1 (what facetrail's
open-set decision returns):

* a *mated* probe is a miss unless its mate is at rank 1 with a score >= T;
  FNIR(T) is the share of mated probes that miss. A probe with no face, or
  whose mate has no template (no face in any enrolment image), is a miss at
  every threshold and every rank.
* a *non-mated* probe is a false positive when its best score is >= T;
  FPIR(T) is the share of non-mated probes that are. A non-mated probe with
  no face returns no candidate and is never a false positive.
* CMC(r): share of mated probes whose mate is among the r highest-scoring
  people, whatever the score (closed-set); CMC(1) is the rank-1 rate.

FNIR at a chosen FPIR is read off the same sweep the 1:1 metrics use
(``facetrail.eval.metrics``): mated probes play same-person pairs scored by
their rank-1 mate score, non-mated probes different-person pairs scored by
their best score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from facetrail.eval import metrics
from facetrail.eval.metrics import BoolArray, Float64Array
from facetrail.eval.runner import MIN_IMPOSTORS_PER_FAR
from facetrail.vision.types import IntArray

NO_MATE = -1  # mate column of a non-mated probe, or of a mated probe whose person has no template
FPIR_LEVELS = (0.1, 0.01, 0.001)


@dataclass(frozen=True)
class Ranked:
    """Per probe: where its mate came, with what score, and the best score of all.

    ``mate_rank`` is 1-based, 0 when the mate cannot be found (non-mated,
    probe without a face, mate without a template). A mate ties with another
    person at the worse rank. ``top_score`` is -inf for a probe without a face.
    """

    mate_rank: IntArray
    mate_score: Float64Array
    top_score: Float64Array
    top_person: IntArray
    mated: BoolArray
    failed: BoolArray

    def rank1_hit_scores(self) -> Float64Array:
        """The mate's score where the mate is at rank 1, else NaN: what a threshold is applied to."""
        hits: Float64Array = np.where(self.mate_rank == 1, self.mate_score, np.nan)
        return hits

    def select(self, keep: BoolArray) -> Ranked:
        """The probes where ``keep`` is True."""
        return Ranked(self.mate_rank[keep], self.mate_score[keep], self.top_score[keep],
                      self.top_person[keep], self.mated[keep], self.failed[keep])


def rank_probes(scores: Float64Array, mate: IntArray, mated: BoolArray, failed: BoolArray) -> Ranked:
    """Rank every probe's mate among the gallery columns of ``scores`` (probes x people)."""
    probes, people = scores.shape
    if not mate.shape == mated.shape == failed.shape == (probes,):
        raise ValueError("need one mate column, mated flag and failed flag per probe")
    if people == 0:
        raise ValueError("the gallery has no template to search")
    rows = np.arange(probes)
    findable = mated & ~failed & (mate != NO_MATE)
    safe_mate = np.where(findable, mate, 0)
    mate_score = np.where(findable, scores[rows, safe_mate], np.nan)
    at_least_as_good = (scores >= mate_score[:, None]).sum(axis=1)  # the mate itself included
    mate_rank = np.where(findable, at_least_as_good, 0).astype(np.int64)
    top_person = np.argmax(scores, axis=1).astype(np.int64)
    top_score = np.where(failed, -np.inf, scores[rows, top_person])
    return Ranked(mate_rank, mate_score.astype(np.float64), top_score.astype(np.float64),
                  np.where(failed, -1, top_person).astype(np.int64), mated.copy(), failed.copy())


def cmc(ranked: Ranked, max_rank: int) -> Float64Array:
    """Share of mated probes whose mate is within rank r, for r = 1..``max_rank``."""
    ranks = ranked.mate_rank[ranked.mated]
    if ranks.size == 0:
        raise ValueError("no mated probe: a CMC needs probes of enrolled people")
    found = ranks[ranks > 0]
    counts = np.bincount(found, minlength=max_rank + 1)[1:max_rank + 1]
    curve: Float64Array = np.cumsum(counts) / ranks.size
    return curve


@dataclass(frozen=True)
class Rates:
    """FNIR and FPIR at one threshold (None where there is no probe of that kind)."""

    threshold: float
    fnir: float | None
    fpir: float | None
    mated: int
    non_mated: int


def rates_at(ranked: Ranked, threshold: float) -> Rates:
    """FNIR (rank 1) and FPIR at ``threshold``."""
    hits = ranked.rank1_hit_scores()[ranked.mated]
    tops = ranked.top_score[~ranked.mated]
    fnir = float(1.0 - np.mean(np.nan_to_num(hits, nan=-np.inf) >= threshold)) if hits.size else None
    fpir = float(np.mean(tops >= threshold)) if tops.size else None
    return Rates(float(threshold), fnir, fpir, int(hits.size), int(tops.size))


def _as_pairs(ranked: Ranked) -> tuple[Float64Array, BoolArray, BoolArray]:
    """Mated probes as same-person 'pairs' scored by their rank-1 hit, non-mated ones by their best score."""
    hits = ranked.rank1_hit_scores()
    scores = np.where(ranked.mated, hits, ranked.top_score)
    failed = ~np.isfinite(scores)
    return np.where(failed, metrics.FAILED_SCORE, scores), ranked.mated.copy(), failed


@dataclass(frozen=True)
class FnirAtFpir:
    """FNIR at one FPIR and the threshold that gives it, or why it is not reported."""

    fpir: float
    fnir: float | None
    threshold: float | None
    reason: str | None = None


def needed_non_mated(fpir: float) -> int:
    """Non-mated probes needed to measure ``fpir``: as many as 1:1 needs different-person pairs per FAR."""
    return int(math.ceil(MIN_IMPOSTORS_PER_FAR / fpir - 1e-9))


def fnir_at_fpir(ranked: Ranked, fpir: float) -> FnirAtFpir:
    """The lowest FNIR whose FPIR is at most ``fpir`` (rank 1), where there are enough non-mated probes."""
    non_mated, mated = int((~ranked.mated).sum()), int(ranked.mated.sum())
    needed = needed_non_mated(fpir)
    if non_mated < needed:
        return FnirAtFpir(fpir, None, None, f"not enough non-mated probes: FPIR {fpir:g} needs at least "
                                            f"{needed} ({MIN_IMPOSTORS_PER_FAR}/FPIR), have {non_mated}")
    if mated == 0:
        return FnirAtFpir(fpir, None, None, "no mated probe")
    scores, same, failed = _as_pairs(ranked)
    tar, threshold = metrics.tar_at_far(scores, same, fpir, failed)
    return FnirAtFpir(fpir, 1.0 - tar, threshold)


@dataclass(frozen=True)
class Det:
    """The DET curve: FNIR against FPIR over every threshold that changes a decision."""

    fpir: Float64Array
    fnir: Float64Array
    thresholds: Float64Array


def det_curve(ranked: Ranked) -> Det:
    """FNIR and FPIR at each distinct score, from the strictest threshold to accepting every score above -1."""
    scores, same, failed = _as_pairs(ranked)
    if same.all() or not same.any():
        raise ValueError("a DET curve needs both mated and non-mated probes")
    states = metrics.sweep(scores, same, failed)
    keep = states.roc_thresholds > metrics.FAILED_SCORE  # not the state that accepts failures too
    return Det(states.far[keep], 1.0 - states.tar[keep], states.roc_thresholds[keep])


def fnir_at_fpir_levels(ranked: Ranked, levels: Sequence[float] = FPIR_LEVELS) -> list[FnirAtFpir]:
    """``fnir_at_fpir`` at each level, in the order given."""
    return [fnir_at_fpir(ranked, level) for level in dict.fromkeys(levels)]

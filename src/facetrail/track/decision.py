"""Who is this track? One decision per track from its embedded shots, not one per frame.

``aggregate`` matches the quality-weighted mean of the track's embeddings
once (noise of single frames averages out); ``vote`` matches each shot and
names the person only when a strict majority of shots agree.

A track with only weak shots (a face too small or blurred for the shot gate,
see ``facetrail.track.bestshot``) is decided by ``decide_weak``: named only
when at least ``weak_votes`` of its shots match the same person at or above a
threshold calibrated for weak shots, never "unknown" (a small face that
matches nobody is no evidence of a stranger).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Self

import numpy as np
from pydantic import Field, model_validator
from pydantic.dataclasses import dataclass as pydantic_dataclass

from facetrail.track.bestshot import STRICT, Shot
from facetrail.vision.registry import Calibration

Matcher = Callable[[np.ndarray], list[tuple[int | None, float]]]
DecisionMethod = Literal["aggregate", "vote"]
UNKNOWN_FRACTION = 0.8  # default unknown_score as a fraction of the recognition threshold
LEGACY_CEILING = 0.8  # recognition_threshold above this is a confidence-scale value (Frigate's 0.9), refused
# The weak-shot threshold per recogniser (model id: weights and preprocessing). Calibration of w600k_mbf: LFW
# View 1, each pair's second image shrunk so its face is 24, 28 and 32 px wide (three shots of one track),
# pasted 18 to a 640x360 grey frame, Gaussian blur sigma 1, JPEG 75, then detected, aligned and embedded as the
# pipeline does; compared with the full-size first images. False match rate (FMR) over every different-person
# pair (6.5M DevTrain, 1.3M DevTest), false non-match rate (FNMR) over the same-person pairs (1,089 / 499).
#   full size, one shot, cosine 0.2323 (the named threshold):  FMR 8.1e-4 / 9.2e-4,  FNMR 0.5% / 1.2%
#   weak, 1 of 3 shots at 0.25:                                FMR 4.4e-4 / 4.5e-4,  FNMR 7.7% / 5.2%
#   weak, 2 of 3 shots at 0.2323:                              FMR 3.1e-4 / 3.2e-4,  FNMR 11.4% / 9.0%
#   weak, 2 of 3 shots at 0.25 (chosen):                       FMR 1.4e-4 / 1.4e-4,  FNMR 14.9% / 13.0%
#   weak, 3 of 3 shots at 0.25:                                FMR 5e-5 / 4e-5,      FNMR 31.0% / 33.3%
#   weak, 2 of 3 shots at 0.25, faces 20/24/28 px:             FMR 9e-5 / 8e-5,      FNMR 30.2% / 31.9%
# (DevTrain / DevTest.) 2 of 3 at 0.25 names small faces at a sixth of the strong shots' false-name rate, a margin
# for what LFW lacks (motion blur, odd light); at stricter named thresholds the higher one applies to weak shots too
# (0.28: strong FMR 1.1e-4, weak 2 of 3 3e-5). Reproduce: bench/small_faces.py (another random placement of
# the shots gave DevTest 2 of 3 at 0.25: FMR 1.4e-4, FNMR 11.8%).
WEAK_SHOT_THRESHOLDS: dict[str, float] = {
    "w600k_mbf@9cc6e4a75f0e/arcface112-rgb-127.5-127.5-v1": 0.25,
}


@pydantic_dataclass(frozen=True, config=STRICT)
class RecognitionThresholds:
    """When a track is named, and when it is an unknown visitor (the configuration's ``face_recognition:``).

    The naming threshold is given once: as a false match rate (turned into a cosine by the recogniser's
    calibration table, ``for_recogniser``) or as a cosine similarity (``recognition_threshold`` is the old,
    Frigate-like name of ``min_cosine_similarity``; it is not a confidence, hence refused above 0.8).
    """

    false_match_rate: float | None = Field(default=None, gt=0, lt=1, title="False match rate",
        description="How often a stranger may be named as an enrolled person, as a share of face pairs compared: "
                    "1e-4 is one stranger pair in 10,000. The recogniser's calibration table (LFW View 1, 1e-1 to "
                    "1e-6) turns it into a cosine similarity. Set this or min_cosine_similarity, not both. Empty "
                    "(both): the recogniser's calibrated threshold.")
    min_cosine_similarity: float | None = Field(default=None, ge=-1, le=1, title="Minimum cosine similarity",
        description="Cosine similarity of two face embeddings (not a confidence) at or above which a person is "
                    "named. arcface: calibrated 0.232 (about 1 stranger pair in 1,200), 0.28 is 1 in 10,000; no "
                    "face pair reaches 0.8. Empty: the recogniser's calibrated threshold.")
    recognition_threshold: float | None = Field(default=None, ge=-1, le=1, title="Recognition threshold (deprecated)",
        description="Old name of min_cosine_similarity, kept for existing files; refused above 0.8 (values on "
                    "Frigate's 0-1 confidence scale). Use false_match_rate or min_cosine_similarity.")
    unknown_score: float | None = Field(default=None, ge=-1, le=1, title="Unknown score",
        description="At or below this similarity a face is an unknown visitor; between this and the recognition "
                    "threshold it is uncertain (neither). Empty: 0.8 x the recognition threshold.")

    @model_validator(mode="after")
    def _ordered(self) -> RecognitionThresholds:
        legacy = self.recognition_threshold
        if legacy is not None and legacy > LEGACY_CEILING:
            raise ValueError(
                f"recognition_threshold {legacy} is read as a cosine similarity, not a confidence: two photos of "
                f"the same person score about 0.3 to 0.8 and almost never above {LEGACY_CEILING}, so nobody would "
                "ever be recognised. Say how often a stranger may be named instead, e.g. false_match_rate: 1e-4 "
                "(one stranger pair in 10,000), or set min_cosine_similarity (arcface's calibrated value is 0.232; "
                "dlib's scale is higher, 0.908, so give it as min_cosine_similarity)")
        given = [name for name in ("false_match_rate", "min_cosine_similarity", "recognition_threshold")
                 if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(f"set one naming threshold, not {' and '.join(given)} (recognition_threshold is the "
                             "old name of min_cosine_similarity)")
        named, unknown = self.min_cosine, self.unknown_score
        if named is not None and unknown is not None and unknown > named:
            raise ValueError(f"unknown_score ({unknown}) must not be above the naming threshold ({named})")
        return self

    @property
    def min_cosine(self) -> float | None:
        """The cosine threshold as configured under either name (None: by false match rate, or calibrated)."""
        return self.min_cosine_similarity if self.min_cosine_similarity is not None else self.recognition_threshold

    def for_recogniser(self, calibration: Calibration | None, recogniser: str) -> Self:
        """These settings with ``false_match_rate`` turned into ``min_cosine_similarity`` through the
        recogniser's table; ValueError (saying what to set) without a table, outside it, or above its ceiling."""
        cosine = self.min_cosine
        if self.false_match_rate is not None:
            table = calibration.fmr_table if calibration is not None else None
            if table is None:
                known = f" (its calibrated value is {calibration.threshold})" if calibration is not None else ""
                raise ValueError(f"false_match_rate needs a calibration table, and the {recogniser} recogniser has "
                                 f"none; set min_cosine_similarity instead{known}")
            cosine = table.cosine_at(self.false_match_rate)
            if self.unknown_score is not None and self.unknown_score > cosine:
                raise ValueError(f"unknown_score ({self.unknown_score}) must not be above the cosine of "
                                 f"false_match_rate {self.false_match_rate:g} ({cosine})")
            return dataclasses.replace(self, false_match_rate=None, min_cosine_similarity=cosine)
        if cosine is not None and calibration is not None and cosine > calibration.ceiling:
            raise ValueError(f"min_cosine_similarity {cosine} is above {calibration.ceiling}, a similarity two photos "
                             f"of the same person almost never reach with the {recogniser} recogniser: nobody would "
                             "be recognised. Use false_match_rate (e.g. 1e-4) or a lower similarity")
        return self

    def resolve(self, calibrated: float, calibration: Calibration | None = None) -> tuple[float, float]:
        """(recognition threshold, unknown score), the recogniser's ``calibrated`` threshold filling in.

        A ``false_match_rate`` needs ``calibration`` (or settings already passed through ``for_recogniser``).
        """
        settled = self.for_recogniser(calibration, "configured") if self.false_match_rate is not None else self
        named = settled.min_cosine if settled.min_cosine is not None else calibrated
        unknown = self.unknown_score if self.unknown_score is not None else UNKNOWN_FRACTION * named
        return named, min(unknown, named)


@dataclass(frozen=True)
class Decision:
    """The track's identity (None: not named) and the score behind it."""

    identity_id: int | None
    score: float
    method: str
    votes: dict[int, int] = field(default_factory=dict)


def aggregate_template(shots: Sequence[Shot]) -> np.ndarray:
    """Quality-weighted mean of the shots' unit embeddings, renormalised (shots without one are skipped)."""
    if not any(s.embedding is not None for s in shots):
        raise ValueError("no shot has an embedding")
    vectors = np.stack([np.asarray(s.embedding, np.float32) for s in shots if s.embedding is not None])
    weights = np.array([max(s.quality, 1e-3) for s in shots if s.embedding is not None], np.float32)
    mean = (weights[:, None] * vectors).sum(axis=0)
    return np.asarray(mean / max(float(np.linalg.norm(mean)), 1e-12), np.float32)


def weak_threshold(model_id: str, configured: float | None) -> float | None:
    """The similarity a weak shot needs to vote: the configured one, else the recogniser's calibrated one.

    None: weak shots of this recogniser never name anyone (no calibration, nothing configured).
    """
    return configured if configured is not None else WEAK_SHOT_THRESHOLDS.get(model_id)


def decide_weak(shots: Sequence[Shot], matcher: Matcher, *, threshold: float, votes: int) -> Decision:
    """Name a track of weak shots when ``votes`` or more of them match one person at or above ``threshold``.

    The winner must also have more agreeing shots than any other person; ``score`` is the winner's best score
    (unnamed: the best score of any shot). Single weak shots are too often wrong (see the calibration above).
    """
    embedded = [s for s in shots if s.embedding is not None]
    if not embedded:
        return Decision(None, -1.0, "weak")
    results = matcher(np.stack([np.asarray(s.embedding, np.float32) for s in embedded]))
    agreeing = Counter(identity for identity, score in results if identity is not None and score >= threshold)
    best_score = max(score for _, score in results)
    ranked = agreeing.most_common(2)
    if ranked and ranked[0][1] >= votes and (len(ranked) == 1 or ranked[1][1] < ranked[0][1]):
        winner = ranked[0][0]
        winner_score = max(score for identity, score in results if identity == winner)
        return Decision(winner, float(winner_score), "weak", dict(agreeing))
    return Decision(None, float(best_score), "weak", dict(agreeing))


def decide(shots: Sequence[Shot], matcher: Matcher, *, method: DecisionMethod,
           threshold: float) -> Decision:
    """Name the track when its shots match someone at or above ``threshold``."""
    embedded = [s for s in shots if s.embedding is not None]
    if not embedded:
        return Decision(None, -1.0, method)
    if method == "aggregate":
        identity, score = matcher(aggregate_template(embedded)[None, :])[0]
        named = identity if identity is not None and score >= threshold else None
        return Decision(named, float(score), method, {named: 1} if named is not None else {})
    results = matcher(np.stack([np.asarray(s.embedding, np.float32) for s in embedded]))
    votes = Counter(identity for identity, score in results if identity is not None and score >= threshold)
    best_score = max(score for _, score in results)
    if votes:
        winner, count = votes.most_common(1)[0]
        if count * 2 > len(embedded):
            winner_score = max(score for identity, score in results if identity == winner)
            return Decision(winner, float(winner_score), method, dict(votes))
    return Decision(None, float(best_score), method, {k: v for k, v in votes.items() if k is not None})

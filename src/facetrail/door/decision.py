"""One decision per person approaching a door: grant, deny, or no decision, each with its reason.

A door watches the tracks of its camera (inside its zone). Each analysed
frame of a track gives an observation: whether the face is good enough to
judge, who it matched and how well, and its 106 landmarks for liveness.
The door grants only when the same allowed person matched above the door's
threshold on ``consecutive`` usable shots in a row, liveness passed, the
hour is allowed, nobody unauthorised stands beside them, and (where the
rule asks) a second factor arrived in time. It never decides on one frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time
from typing import Literal
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from facetrail.door.liveness import LivenessCheck, LivenessSettings, LivenessVerdict

# "pending": face and liveness passed, the second factor has not arrived yet (the door service settles it).
Outcome = Literal["grant", "deny", "no_decision", "pending"]
Tailgating = Literal["deny", "event", "allow"]
# Why a shot could not be judged, in the words the decision log uses.
TOO_SMALL, TOO_BLURRED, TURNED_AWAY = "face too small", "face too blurred", "face turned away"


@dataclass(frozen=True)
class DoorRule:
    """Who may pass a door, when, how sure the match must be, and what else is required."""

    door: str
    camera: str
    allowed: frozenset[int]  # identity ids (members of the door's watchlists with a recorded consent)
    threshold: float
    consecutive: int = 3
    zone: tuple[float, float, float, float] | None = None  # x1, y1, x2, y2 as fractions of the frame
    hours: tuple[tuple[time, time], ...] = ()  # local opening hours; empty: always
    timezone: str = "UTC"
    min_face_px: float = 100.0  # FaceQuality.face_px (2.5 x the eye distance); liveness needs 40 px between the eyes
    min_quality: float = 0.35
    max_yaw: float = 35.0
    second_factor: bool = False
    tailgating: Tailgating = "deny"
    decide_within_s: float = 8.0  # from the first observation; then "no decision"
    liveness: LivenessSettings = field(default_factory=LivenessSettings)

    def open_at(self, moment: datetime) -> bool:
        """Whether ``moment`` falls within the door's hours."""
        if not self.hours:
            return True
        local = moment.astimezone(ZoneInfo(self.timezone)).time()
        return any(start <= local < end if start <= end else (local >= start or local < end)
                   for start, end in self.hours)

    def in_zone(self, box: npt.ArrayLike, width: int, height: int) -> bool:
        """Whether a face box's centre lies in the door's zone."""
        if self.zone is None:
            return True
        x1, y1, x2, y2 = (float(v) for v in np.asarray(box)[:4])
        cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
        return self.zone[0] <= cx <= self.zone[2] and self.zone[1] <= cy <= self.zone[3]


@dataclass(frozen=True)
class Shot:
    """One analysed frame of one track at the door."""

    track_id: int
    at: datetime
    face_px: float
    quality: float
    yaw: float
    embedded: bool = False  # matched against the gallery this frame (identity and score below are its answer)
    identity_id: int | None = None  # best gallery match; None when the gallery had no candidate
    score: float = -1.0
    points106: npt.NDArray[np.floating] | None = None


@dataclass(frozen=True)
class DoorDecision:
    """A door's decision about one approaching person, with its evidence."""

    door: str
    track_id: int
    outcome: Outcome
    reason: str
    at: datetime
    identity_id: int | None
    score: float | None  # mean score over the consecutive matching shots
    matched_shots: int
    liveness: LivenessVerdict | None
    tailgating: bool = False
    others_present: int = 0


@dataclass
class _Approach:
    track_id: int
    first_at: datetime
    liveness: LivenessCheck
    points: list[npt.NDArray[np.floating]] = field(default_factory=list)  # landmarks fed to liveness, for a merge
    streak_identity: int | None = None
    streak_scores: list[float] = field(default_factory=list)
    judged: int = 0
    unmatched: int = 0  # judged shots in a row that matched nobody above the threshold
    unusable: dict[str, int] = field(default_factory=dict)
    decided: bool = False
    allowed_now: bool = False  # the last shot matched an allowed person


class DoorDecider:
    """The decisions of one door, fed frame by frame; keeps nothing once a track has gone."""

    def __init__(self, rule: DoorRule) -> None:
        self.rule = rule
        self._approaches: dict[int, _Approach] = {}
        self._latest: datetime | None = None  # the time of the last frame observed (the clock decisions use)

    def observe(self, at: datetime, shots: list[Shot]) -> list[DoorDecision]:
        """Take one frame's shots (every track in the zone); returns the decisions made now."""
        decisions: list[DoorDecision] = []
        self._latest = at
        for shot in shots:
            approach = self._approaches.get(shot.track_id)
            if approach is None:
                approach = self._approaches[shot.track_id] = _Approach(shot.track_id, at,
                                                                       LivenessCheck(self.rule.liveness))
            if not approach.decided:
                self._take(approach, shot)
        for shot in shots:
            approach = self._approaches[shot.track_id]
            if not approach.decided:
                decision = self._judge(approach, at, others=len(shots) - 1, shots=shots)
                if decision is not None:
                    approach.decided = True
                    decisions.append(decision)
        return decisions

    def ended(self, track_id: int, at: datetime) -> DoorDecision | None:
        """The track left: 'no decision' with the reason, if it was never decided."""
        approach = self._approaches.pop(track_id, None)
        if approach is None or approach.decided:
            return None
        return self._no_decision(approach, at)

    def merge(self, survivor_id: int, absorbed_id: int) -> None:
        """The tracker found that track ``absorbed_id`` (newer) is the person of ``survivor_id``: one approach.

        The absorbed track's frames follow the survivor's, so its landmarks are replayed into the survivor's
        liveness check and its matching shots continue the survivor's streak. A person already decided stays so.
        """
        absorbed = self._approaches.pop(absorbed_id, None)
        if absorbed is None:
            return
        survivor = self._approaches.get(survivor_id)
        if survivor is None:
            absorbed.track_id = survivor_id
            self._approaches[survivor_id] = absorbed
            return
        if survivor.decided or absorbed.decided:
            survivor.decided = True
            return
        for points in absorbed.points:
            survivor.liveness.add(points)
        survivor.points.extend(absorbed.points)
        if absorbed.streak_scores:
            if absorbed.streak_identity != survivor.streak_identity:
                survivor.streak_identity, survivor.streak_scores = absorbed.streak_identity, []
            survivor.streak_scores.extend(absorbed.streak_scores)
        if absorbed.judged:
            survivor.unmatched, survivor.allowed_now = absorbed.unmatched, absorbed.allowed_now
        survivor.judged += absorbed.judged
        for problem, count in absorbed.unusable.items():
            survivor.unusable[problem] = survivor.unusable.get(problem, 0) + count
        survivor.first_at = min(survivor.first_at, absorbed.first_at)

    def reopen(self, track_id: int) -> bool:
        """Decide this track afresh (its pending decision expired while the person is still at the door).

        The next decision needs new consecutive matching shots; the liveness seen so far still counts. False when
        the track has gone.
        """
        approach = self._approaches.get(track_id)
        if approach is None:
            return False
        approach.decided, approach.first_at = False, self._latest or approach.first_at
        approach.streak_identity, approach.streak_scores, approach.unmatched = None, [], 0
        return True

    def _take(self, approach: _Approach, shot: Shot) -> None:
        rule = self.rule
        problem = (TOO_SMALL if shot.face_px < rule.min_face_px else TURNED_AWAY if abs(shot.yaw) > rule.max_yaw
                   else TOO_BLURRED if shot.quality < rule.min_quality else None)
        if problem is not None:
            approach.unusable[problem] = approach.unusable.get(problem, 0) + 1
            return
        if shot.points106 is not None:
            approach.liveness.add(shot.points106)
            approach.points.append(shot.points106)
        if not shot.embedded:
            return
        approach.judged += 1
        if shot.identity_id is not None and shot.score >= rule.threshold:
            if shot.identity_id != approach.streak_identity:
                approach.streak_identity, approach.streak_scores = shot.identity_id, []
            approach.streak_scores.append(shot.score)
            approach.unmatched = 0
            approach.allowed_now = shot.identity_id in rule.allowed
        else:
            approach.streak_identity, approach.streak_scores = None, []
            approach.unmatched += 1
            approach.allowed_now = False

    def _judge(self, approach: _Approach, at: datetime, *, others: int, shots: list[Shot]) -> DoorDecision | None:
        rule = self.rule
        if approach.unmatched >= rule.consecutive:
            return self._decision(approach, at, "deny", "not recognised: no enrolled person matched above the "
                                                         f"door's threshold on {approach.unmatched} shots in a row")
        if len(approach.streak_scores) < rule.consecutive:
            return self._timeout(approach, at)
        identity = approach.streak_identity
        if identity not in rule.allowed:
            return self._decision(approach, at, "deny", "recognised but not allowed at this door (no watchlist "
                                                         "of the door, or no recorded consent)")
        if not rule.open_at(at):
            return self._decision(approach, at, "deny", "outside the door's hours")
        verdict = approach.liveness.verdict()
        if verdict.state == "spoof":
            return self._decision(approach, at, "deny", f"liveness failed: {verdict.reason}", verdict)
        if verdict.state != "live":
            return self._timeout(approach, at)
        strangers = sum(1 for s in shots if s.track_id != approach.track_id
                        and not self._approaches[s.track_id].allowed_now)
        if strangers and rule.tailgating != "allow":
            return self._decision(approach, at, "deny", f"tailgating: {strangers} other person(s) at the door not "
                                                         "allowed through", verdict, tailgating=True,
                                  others=others)
        if rule.second_factor:
            return self._decision(approach, at, "pending", "recognised, live and allowed; awaiting the second "
                                                            "factor (PIN or card)", verdict, others=others)
        return self._decision(approach, at, "grant", "recognised, live and allowed", verdict, others=others)

    def _timeout(self, approach: _Approach, at: datetime) -> DoorDecision | None:
        if (at - approach.first_at).total_seconds() < self.rule.decide_within_s:
            return None
        return self._no_decision(approach, at)

    def _no_decision(self, approach: _Approach, at: datetime) -> DoorDecision:
        if approach.judged == 0 and approach.unusable:
            reason = max(approach.unusable, key=lambda k: approach.unusable[k])
        elif len(approach.streak_scores) >= self.rule.consecutive:
            reason = f"liveness undecided: {approach.liveness.verdict().reason}"
        else:
            reason = (f"too few matching shots ({len(approach.streak_scores)} of {self.rule.consecutive} in a row)"
                      if approach.judged else "no usable shot")
        return self._decision(approach, at, "no_decision", reason,
                              approach.liveness.verdict() if approach.liveness.frames else None)

    def _decision(self, approach: _Approach, at: datetime, outcome: Outcome, reason: str,
                  liveness: LivenessVerdict | None = None, *, tailgating: bool = False, others: int = 0,
                  ) -> DoorDecision:
        scores = approach.streak_scores
        return DoorDecision(self.rule.door, approach.track_id, outcome, reason, at, approach.streak_identity,
                            float(np.mean(scores)) if scores else None, len(scores), liveness,
                            tailgating=tailgating, others_present=others)

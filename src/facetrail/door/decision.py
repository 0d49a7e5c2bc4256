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

import dataclasses
import re
from dataclasses import dataclass, field
from datetime import datetime, time
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import numpy.typing as npt
from pydantic import ConfigDict, Field, field_validator
from pydantic.dataclasses import dataclass as pydantic_dataclass

from facetrail.door.liveness import LivenessCheck, LivenessRequirements, LivenessSettings, LivenessVerdict

# "pending": face and liveness passed, the second factor has not arrived yet (the door service settles it).
Outcome = Literal["grant", "deny", "no_decision", "pending"]
Tailgating = Literal["deny", "event", "allow"]
# Why a shot could not be judged, in the words the decision log uses.
TOO_SMALL, TOO_BLURRED, TURNED_AWAY = "face too small", "face too blurred", "face turned away"
HOURS = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class DoorSettings:
    """One door: its camera and the rule of who may pass (the configuration's door, less who is allowed, the
    second factor's time-out and where the command goes)."""

    camera: str = Field(title="Camera", description="The camera that watches the door.")
    zone: tuple[float, float, float, float] | None = Field(
        default=None, title="Zone",
        description="x1, y1, x2, y2 as fractions of the frame; faces outside are ignored.")
    hours: list[str] = Field(default_factory=list, title="Hours",
                             description="Opening hours, e.g. ['07:00-22:00']; empty: always.")
    timezone: str = Field(default="UTC", title="Time zone", description="For the hours, e.g. Europe/Paris.")
    threshold: float | None = Field(default=None, ge=-1, le=1, title="Threshold",
                                    description="Cosine a shot must reach; empty: the model's calibrated one.")
    consecutive: int = Field(default=3, ge=1, le=20, title="Consecutive shots",
                             description="Shots in a row that must match the same allowed person.")
    # FaceQuality.face_px (2.5 x the eye distance); liveness needs 40 px between the eyes
    min_face_px: float = Field(default=100, ge=20, title="Smallest face",
                               description="Face size in pixels (2.5 times the eye distance); liveness needs 100.")
    second_factor: bool = Field(default=False, title="Second factor",
                                description="Also require the person's PIN or card, sent by the keypad or reader.")
    tailgating: Tailgating = Field(
        default="deny", title="Tailgating",
        description="An authorised and an unauthorised person at the door together: deny, or deny and raise an "
                    "event for review, or allow.")
    decide_within_s: float = Field(default=8, gt=0, le=120, title="Decide within",
                                   description="Seconds after which an undecided approach is logged as no decision.")
    liveness: LivenessRequirements = Field(default_factory=LivenessRequirements, title="Liveness",
                                           description="Liveness requirements.")

    @field_validator("zone")
    @classmethod
    def _zone(cls, zone: tuple[float, float, float, float] | None) -> tuple[float, float, float, float] | None:
        if zone is not None and not (0 <= zone[0] < zone[2] <= 1 and 0 <= zone[1] < zone[3] <= 1):
            raise ValueError("a zone is x1, y1, x2, y2 with 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1")
        return zone

    @field_validator("hours")
    @classmethod
    def _hours(cls, hours: list[str]) -> list[str]:
        for span in hours:
            found = HOURS.match(span)
            if not found or int(found[1]) > 23 or int(found[3]) > 24 or int(found[2]) > 59 or int(found[4]) > 59:
                raise ValueError(f"hours {span!r}: write HH:MM-HH:MM, e.g. 07:00-22:00")
        return hours

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {name!r}; use an IANA name such as Europe/Paris") from None
        return name

    def opening_hours(self) -> tuple[tuple[time, time], ...]:
        """The hours as (start, end) local times; 24:00 is read as the end of the day."""
        spans = []
        for span in self.hours:
            found = HOURS.match(span)
            assert found is not None
            end = time(23, 59, 59, 999999) if found[3] == "24" else time(int(found[3]), int(found[4]))
            spans.append((time(int(found[1]), int(found[2])), end))
        return tuple(spans)

    def open_at(self, moment: datetime) -> bool:
        """Whether ``moment`` falls within the door's hours."""
        if not self.hours:
            return True
        local = moment.astimezone(ZoneInfo(self.timezone)).time()
        return any(start <= local < end if start <= end else (local >= start or local < end)
                   for start, end in self.opening_hours())


@pydantic_dataclass(frozen=True, kw_only=True, config=ConfigDict(extra="forbid"))
class DoorRule(DoorSettings):
    """Who may pass a door, when, how sure the match must be, and what else is required: a door's settings, with
    who is allowed now, the threshold in force and the liveness thresholds."""

    door: str = Field(title="Door", description="The door's name.")
    allowed: frozenset[int] = Field(title="Allowed", description="Identity ids that may pass: members of the door's "
                                                                 "watchlists with a recorded consent.")
    threshold: float = Field(title="Threshold", description="The configured threshold, else the calibrated one.")
    liveness: LivenessSettings = Field(default_factory=LivenessSettings, title="Liveness",
                                       description="The door's liveness requirements and the signals' thresholds.")
    min_quality: float = 0.35
    max_yaw: float = 35.0

    @classmethod
    def for_door(cls, name: str, door: DoorSettings, *, allowed: frozenset[int], calibrated: float) -> DoorRule:
        """The rule of the door ``name`` as configured: its threshold, else ``calibrated``."""
        settings = {f.name: getattr(door, f.name) for f in dataclasses.fields(DoorSettings)}
        settings.update(threshold=door.threshold if door.threshold is not None else calibrated,
                        liveness=LivenessSettings.of(door.liveness))
        return cls(door=name, allowed=allowed, **settings)

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

"""Liveness from the video itself: blinks and head depth of one tracked face over several frames.

Two signals, both from the 106 landmarks of ``facetrail.vision.landmarks106``:

- **Blink.** Eye openness (lid gap over eye width) drops below a "closed"
  level and comes back above an "open" level, both relative to the track's
  own open-eye baseline so that it works across faces.
- **Depth.** A photo or a phone moved in front of the camera moves as one
  plane: its landmarks in any frame are those of the first frame under a
  homography. A real head that turns or nods shows parallax (the nose moves
  against the face outline), which no homography explains.

A perfectly still head cannot be told from a still photo; such a track stays
"undecided" until it blinks or moves. The thresholds below were measured on
the project's real photos (see the constants' comments); they are a first
line, not a certified presentation-attack detector: a video replayed on a
screen held still, or a 3D mask, passes them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt
from pydantic import ConfigDict, Field, model_validator
from pydantic.dataclasses import dataclass as pydantic_dataclass

from facetrail.vision.align import similarity_transform

# InsightFace 2d106 markup, checked on open, closed and winking eyes. "Left" and
# "right" are as seen in the image. Lid pairs are (upper, lower) points.
LEFT_EYE_CORNERS = (35, 39)
LEFT_EYE_LIDS = ((41, 36), (40, 33), (42, 37))
RIGHT_EYE_CORNERS = (89, 93)
RIGHT_EYE_LIDS = ((95, 90), (94, 87), (96, 91))
# Points that move with the skull: face outline 0-32, nose 72-86, eye corners.
# Mouth, lids, pupils and brows move on their own and are left out.
RIGID_POINTS: tuple[int, ...] = (*range(33), *range(72, 87), *LEFT_EYE_CORNERS, *RIGHT_EYE_CORNERS)

# Openness of 26 photos with open eyes: 0.19-0.33 (median 0.28); of 3 with shut
# eyes: 0.04-0.11. A track whose eyes are never seen above this is not judged
# for blinks (a face looking down reads as closed eyes).
MIN_OPEN_BASELINE = 0.15
# Same person, eyes closed over eyes open: 0.063 / 0.309 = 0.20; one eye winked:
# 0.49 for that eye, 0.57 for the mean of both. A photo tilted by up to 30 degrees
# never fell below 0.84 of its baseline, so half the baseline is safe both ways.
CLOSED_FRACTION = 0.5
OPEN_FRACTION = 0.8

# Depth, in units of the eye distance. Landmark jitter on a still photo with
# camera noise: deformation <= 0.01. Warped photo clips (tilts of 20, 30 and 45
# degrees, 189 clips): median planar residual 0.021 / 0.021 / 0.035. Two
# different photos of one real person (LFW, 369 pairs that moved this much):
# residual 5th percentile 0.031, median 0.077.
MIN_MOTION = 0.04  # frames deformed less than this (beyond a similarity) are not judged
MIN_MOVED_FRAMES = 3
PLANAR_SPOOF_MAX = 0.035  # 75% of warped clips at or below, and 9% of real pairs (false spoofs)
PARALLAX_LIVE_MIN = 0.06  # 68% of real pairs at or above, and 5% of warped clips (45-degree tilts)
MIN_EYE_DISTANCE_PX = 40.0  # smaller faces: landmarks too coarse for lids or parallax
MIN_FRAMES = 8

State = Literal["live", "spoof", "undecided"]
Points = npt.NDArray[np.floating]


def _eye(points: Points, corners: tuple[int, int], lids: tuple[tuple[int, int], ...]) -> float:
    width = float(np.linalg.norm(points[corners[0]] - points[corners[1]]))
    gap = float(np.mean([np.linalg.norm(points[up] - points[down]) for up, down in lids]))
    return gap / width if width > 0 else 0.0


def eye_openness_per_eye(points106: Points) -> tuple[float, float]:
    """Openness (lid gap / eye width) of the image-left and image-right eye; ~0.28 open, ~0.06 shut."""
    pts = _checked(points106)
    return (_eye(pts, LEFT_EYE_CORNERS, LEFT_EYE_LIDS), _eye(pts, RIGHT_EYE_CORNERS, RIGHT_EYE_LIDS))


def eye_openness(points106: Points) -> float:
    """Eye aspect ratio averaged over both eyes (see ``eye_openness_per_eye``)."""
    left, right = eye_openness_per_eye(points106)
    return (left + right) / 2


def eye_distance(points106: Points) -> float:
    """Pixels between the two eyes' centres (midpoints of their corners)."""
    pts = _checked(points106)
    left = pts[list(LEFT_EYE_CORNERS)].mean(axis=0)
    right = pts[list(RIGHT_EYE_CORNERS)].mean(axis=0)
    return float(np.linalg.norm(left - right))


def deformation(reference106: Points, points106: Points) -> tuple[float, float]:
    """(motion, planar residual) of a face against a reference frame, in eye distances.

    ``motion`` is the RMS residual of the best similarity (shift, scale,
    in-plane rotation) on the rigid points: how much the face changed shape
    in the image. ``planar residual`` is the same after the best homography
    (least squares): what a flat object could not have done. NaN residual
    when no homography can be fitted.
    """
    ref = _checked(reference106)[list(RIGID_POINTS)].astype(np.float64)
    cur = _checked(points106)[list(RIGID_POINTS)].astype(np.float64)
    scale = eye_distance(points106)
    if scale <= 0:
        return 0.0, float("nan")
    matrix = similarity_transform(ref, cur)
    motion = _rms(ref @ matrix[:, :2].T + matrix[:, 2] - cur) / scale
    homography, _ = cv2.findHomography(ref, cur, 0)
    if homography is None:
        return motion, float("nan")
    projected = cv2.perspectiveTransform(ref.reshape(-1, 1, 2), homography).reshape(-1, 2)
    return motion, _rms(projected - cur) / scale


def count_blinks(openness: npt.ArrayLike, *, closed_fraction: float = CLOSED_FRACTION,
                 open_fraction: float = OPEN_FRACTION,
                 min_open_baseline: float = MIN_OPEN_BASELINE) -> int:
    """Open -> closed -> open cycles in a sequence of openness values.

    The baseline is the sequence's 75th percentile (its usual open level);
    closed means at most ``closed_fraction`` of it, open at least
    ``open_fraction``. 0 when the eyes are never seen clearly open.
    """
    values = np.asarray(openness, dtype=np.float64)
    if values.size < 3:
        return 0
    baseline = float(np.percentile(values, 75))
    if baseline < min_open_baseline:
        return 0
    closed_level, open_level = closed_fraction * baseline, open_fraction * baseline
    blinks, seen_open, seen_closed = 0, False, False
    for value in values:
        if value >= open_level:
            if seen_closed:
                blinks += 1
            seen_open, seen_closed = True, False
        elif value <= closed_level and seen_open:
            seen_closed = True
    return blinks


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class LivenessRequirements:
    """What proves a live face at this door (see the README for what it stops and what it does not).

    ``min_frames``: usable frames before any verdict (at 5 analysed frames a
    second, 8 is 1.6 s). ``require_blink`` / ``require_depth``: "live" needs
    that signal; by default either one is enough. Requiring depth stops a
    video replayed on a screen held still (it blinks), at the cost of asking
    people to turn their head. These are a door's ``liveness:`` settings.
    """

    require_blink: bool = Field(default=False, title="Require a blink",
                                description="Grant only after an eye blink (an active check; slower).")
    require_depth: bool = Field(default=False, title="Require depth",
                                description="Grant only after head movement in depth (stops a replayed video held "
                                            "still; asks people to turn their head a little).")
    min_frames: int = Field(default=MIN_FRAMES, ge=3, le=100, title="Frames",
                            description="Frames of the face needed to judge.")


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class LivenessSettings(LivenessRequirements):
    """How much evidence a track needs: a door's requirements, and the thresholds of the signals.

    The thresholds are explained where their defaults are defined, in eye distances or fractions of the open
    baseline; they are not configuration settings.
    """

    closed_fraction: float = CLOSED_FRACTION
    open_fraction: float = OPEN_FRACTION
    min_open_baseline: float = MIN_OPEN_BASELINE
    min_motion: float = MIN_MOTION
    min_moved_frames: int = MIN_MOVED_FRAMES
    planar_spoof_max: float = PLANAR_SPOOF_MAX
    parallax_live_min: float = PARALLAX_LIVE_MIN
    min_eye_distance_px: float = MIN_EYE_DISTANCE_PX

    @model_validator(mode="after")
    def _consistent(self) -> LivenessSettings:
        if self.min_moved_frames < 1:
            raise ValueError("min_moved_frames must be at least 1")
        if not 0 < self.closed_fraction < self.open_fraction <= 1:
            raise ValueError("need 0 < closed_fraction < open_fraction <= 1")
        if not 0 <= self.planar_spoof_max < self.parallax_live_min:
            raise ValueError("need 0 <= planar_spoof_max < parallax_live_min")
        if self.min_motion <= 0 or self.min_eye_distance_px < 0:
            raise ValueError("min_motion must be positive and min_eye_distance_px not negative")
        return self

    @classmethod
    def of(cls, requirements: LivenessRequirements) -> LivenessSettings:
        """A door's requirements with the default thresholds (or the settings themselves)."""
        if isinstance(requirements, LivenessSettings):
            return requirements
        return cls(**{f.name: getattr(requirements, f.name) for f in dataclasses.fields(LivenessRequirements)})


@dataclass(frozen=True)
class LivenessVerdict:
    """A track's liveness so far, with the signals behind it.

    ``depth_residual``: median planar residual over the frames that moved
    enough (eye distances), None when fewer than ``min_moved_frames`` did;
    ``max_planar_residual`` and ``max_motion``: largest over all frames.
    """

    state: State
    reason: str
    blink_seen: bool
    blinks: int
    max_planar_residual: float
    max_motion: float
    depth_residual: float | None
    moved_frames: int
    frames: int
    skipped_frames: int


class LivenessCheck:
    """Collects one tracked face's landmarks frame by frame and judges liveness.

    One per track; the first usable frame is the reference every later frame
    is compared with. Keeps three numbers per frame. Not thread-safe.
    """

    def __init__(self, settings: LivenessSettings | None = None) -> None:
        self.settings = settings or LivenessSettings()
        self._reference: Points | None = None
        self._openness: list[float] = []
        self._motion: list[float] = []
        self._residual: list[float] = []
        self._skipped = 0

    @property
    def frames(self) -> int:
        """Usable frames added so far."""
        return len(self._openness)

    def add(self, points106: Points) -> None:
        """Add one frame's (106, 2) landmarks in pixels; frames with too small a face are skipped."""
        pts = _checked(points106).astype(np.float64)
        if eye_distance(pts) < self.settings.min_eye_distance_px:
            self._skipped += 1
            return
        if self._reference is None:
            self._reference = pts
            motion, residual = 0.0, 0.0
        else:
            motion, residual = deformation(self._reference, pts)
            if np.isnan(residual):
                self._skipped += 1
                return
        self._openness.append(eye_openness(pts))
        self._motion.append(motion)
        self._residual.append(residual)

    def verdict(self) -> LivenessVerdict:
        """The verdict on the frames so far; cheap, call it after every frame if needed."""
        s = self.settings
        motion, residual = np.asarray(self._motion), np.asarray(self._residual)
        blinks = count_blinks(self._openness, closed_fraction=s.closed_fraction,
                              open_fraction=s.open_fraction, min_open_baseline=s.min_open_baseline)
        moved = motion >= s.min_motion
        depth = float(np.median(residual[moved])) if moved.sum() >= s.min_moved_frames else None

        def make(state: State, reason: str) -> LivenessVerdict:
            return LivenessVerdict(
                state, reason, blinks > 0, blinks,
                float(residual.max()) if residual.size else 0.0,
                float(motion.max()) if motion.size else 0.0,
                depth, int(moved.sum()), self.frames, self._skipped)

        if self.frames < s.min_frames:
            skipped = f" ({self._skipped} skipped: face too small)" if self._skipped else ""
            return make("undecided", f"only {self.frames} usable frame(s) of the {s.min_frames} "
                                     f"needed{skipped}")
        # Checked before the blink: a video replayed on a screen that is moved blinks too.
        if depth is not None and depth <= s.planar_spoof_max:
            return make("spoof", f"the face changed shape in {int(moved.sum())} frames but always as "
                                 f"one flat plane (residual {depth:.3f} <= {s.planar_spoof_max} eye "
                                 "distances): a photo or a screen moved in front of the camera")
        has_depth = depth is not None and depth >= s.parallax_live_min
        evidence = []
        if blinks:
            evidence.append(f"blinked {blinks} time(s)")
        if has_depth:
            evidence.append(f"head moved in depth (parallax {depth:.3f} eye distances)")
        missing = []
        if s.require_blink and not blinks:
            missing.append("a blink (required)")
        if s.require_depth and not has_depth:
            missing.append("head motion in depth (required)")
        if evidence and not missing:
            return make("live", "; ".join(evidence))
        lacking = None
        if depth is None:
            lacking = ("too little head motion to tell a face from a photo (a still head looks "
                       "like a still picture)")
        elif not has_depth:
            lacking = (f"depth unclear (residual {depth:.3f} between {s.planar_spoof_max} and "
                       f"{s.parallax_live_min} eye distances)")
        if not missing:
            missing.append("a blink or head motion in depth")
        found = [*evidence, lacking] if lacking else evidence
        return make("undecided", f"{'; '.join(found)}; waiting for {' and '.join(missing)}")


def _checked(points106: Points) -> Points:
    pts = np.asarray(points106)
    if pts.shape != (106, 2):
        raise ValueError(f"expected (106, 2) landmarks, got {pts.shape}")
    return pts


def _rms(diff: npt.NDArray[np.float64]) -> float:
    return float(np.sqrt((diff ** 2).sum(axis=1).mean()))

"""Which face of an enrolment photo to take, and whether it makes a useful template.

A photo with several faces is refused unless the caller says which one to
take: a face number (as the refusal and ``facetrail faces`` number them),
the largest, or the one nearest the centre weighted by size (the engine's
``ImageFaces.primary``). Guessing silently would enrol a bystander.

The refusal floors are measured, not guessed: on LFW View 1 the first photo
of each pair was shrunk or blurred and enrolled, the second verified against
it at full size; a face is refused where its templates verify at under 95%
of the full-size accuracy (``MIN_FACE_PX``, ``MIN_SHARPNESS``) and enrolled
with a warning where they verify measurably worse.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from facetrail.vision.engine import ImageFaces
from facetrail.vision.types import FaceQuality

# Measured on LFW View 1 pairsDevTest (500 same + 500 different pairs): the first photo of each pair degraded and
# enrolled, the second (full size) verified against it at the recogniser's calibrated threshold (0.2323), pairs
# whose enrolment face was found; accuracy per bin of the enrolment face's measure, pooled over the degradations.
# As shot (face ~130 px, sharpness ~143): 99.4%. A template stops being useful where it verifies under 95% of that.
#
# Face size (FaceQuality.face_px), photos shrunk with area interpolation (faces of 12 to 130 px):
#   under 14 px 70.5% | 14-17 84.2% | 17-20 92.8% | 20-23 95.2% | 23-26 98.4% | 26-30 96.8% (63 pairs) |
#   30 px and up 99.3-99.5%. Under 20 px a template verifies at 93% of full size: refused. Misses, not false
#   matches, are what small templates cost (false accepts stayed <= 0.2% in every bin).
MIN_FACE_PX = 20.0
WARN_FACE_PX = 30.0  # from 30 px a template verifies as well as a full-size one; under it, a warning
# Sharpness (FaceQuality.sharpness: blur relative to the face, see facetrail.vision.quality), faces of 80 px and
# up, Gaussian blur of sigma 2, 3, 4 and 6 px on the 250 px photo (the face's sharpness ~143 as shot, ~15, 6, 4
# and 2.7 after):
#   under 3 76.8% | 3-4 92.1% | 4-5 97.5% | 5-6 96.6% | 6-8 98.8% | 8 and up 98.4-100%.
#   Under 4 a template verifies at 93% of full size: refused. (Blurred more, sigma 8 to 14, the detector mostly
#   fails or takes the whole photo for a face; those false faces are no measure of sharpness and were left out.)
# Known gap: small AND blurred together. A 48 px face blurred by sigma 2 (sharpness 5.6) verifies at 81.9% and one of
# 32 px by sigma 1 (sharpness 25) at 93.2%: the size scaling of sharpness fits sharp faces, and overrates blurred
# small ones, so the second passes both floors. A combined (effective resolution) measure would close it.
MIN_SHARPNESS = 4.0
WARN_SHARPNESS = 6.0  # under 6 a template verifies at about 97% of full size: a warning
MIN_OTHER_QUALITY = 0.2  # pose x detector x alignment parts: a turned or doubtful face


class Outcome(StrEnum):
    """What happened to one file."""

    ENROLLED = "enrolled"
    NO_FACE = "no face"
    SEVERAL_FACES = "several faces"
    LOW_QUALITY = "too low quality"
    DUPLICATE = "duplicate image"
    DUPLICATE_FACE = "duplicate face"
    UNREADABLE = "unreadable"


class FacePick(StrEnum):
    """How to choose among several faces when no face number is given."""

    REFUSE = "refuse"  # the default: an ambiguous photo is refused, its faces listed
    LARGEST = "largest"
    CENTRE = "centre"  # nearest the image centre, weighted by size


@dataclass(frozen=True)
class PhotoFace:
    """One face of a photo as shown to the person choosing: number, box (x1, y1, x2, y2 in pixels), size."""

    index: int
    box: tuple[int, int, int, int]
    size_px: int  # FaceQuality.face_px, the size the quality floors use

    def describe(self) -> str:
        """``#1 (120,40,210,150) 95 px``: what a refusal or a report lists."""
        x1, y1, x2, y2 = self.box
        return f"#{self.index} ({x1},{y1},{x2},{y2}) {self.size_px} px"


@dataclass(frozen=True)
class Verdict:
    """The engine's faces judged for enrolment: the face taken (``index``), or the outcome that refuses the photo.

    ``detail`` says why (or which face was taken); ``warning`` flags a usable but weak face; ``faces`` lists every
    face on the photo so the caller can pick one.
    """

    outcome: Outcome
    detail: str
    faces: tuple[PhotoFace, ...] = ()
    index: int | None = None
    warning: str = ""

    @property
    def face(self) -> PhotoFace | None:
        """The face taken, if one was."""
        return self.faces[self.index] if self.index is not None else None


@dataclass(frozen=True)
class QualityBar:
    """Where a face is refused (the floors) and where it is enrolled with a warning."""

    min_face_px: float = MIN_FACE_PX
    min_sharpness: float = MIN_SHARPNESS
    min_other: float = MIN_OTHER_QUALITY
    warn_face_px: float = WARN_FACE_PX
    warn_sharpness: float = WARN_SHARPNESS


def parse_face_choice(text: str | None) -> tuple[int | None, FacePick]:
    """A caller's face choice: a face number ('2'), 'largest', 'centre' (or 'center'), or nothing (refuse).

    Raises ValueError with a message saying what is accepted.
    """
    value = (text or "").strip().lower()
    if not value:
        return None, FacePick.REFUSE
    if value.isdigit() and len(value) <= 3:
        return int(value), FacePick.REFUSE
    if value in ("largest", "centre", "center"):
        return None, FacePick.LARGEST if value == "largest" else FacePick.CENTRE
    raise ValueError(f"Which face: {text!r} is neither a face number from the list (0, 1, ...) nor 'largest' "
                     "or 'centre'.")


def photo_faces(faces: ImageFaces) -> tuple[PhotoFace, ...]:
    """Every face of the photo, numbered in the engine's order (as ``facetrail faces`` prints them)."""
    return tuple(PhotoFace(i, (int(round(float(x1))), int(round(float(y1))), int(round(float(x2))),
                               int(round(float(y2)))), int(round(faces.qualities[i].face_px)))
                 for i, (x1, y1, x2, y2) in enumerate(faces.detections.xyxy))


def judge(faces: ImageFaces, *, face: int | None = None, pick: FacePick = FacePick.REFUSE,
          bar: QualityBar = QualityBar()) -> Verdict:
    """Choose the face to enrol and judge it against ``bar``; every refusal says why and what to do."""
    listed = photo_faces(faces)
    if len(faces) == 0:
        return Verdict(Outcome.NO_FACE, "no face found; use a photo where the face is clearly visible")
    index, how = _choose(faces, face, pick)
    if index is None:
        return Verdict(Outcome.SEVERAL_FACES, how, listed)
    quality = faces.qualities[index]
    problem = _too_poor(quality, bar)
    taken = f"face {listed[index].describe()}" + (f" ({how})" if how else "")
    if problem:
        return Verdict(Outcome.LOW_QUALITY, f"{taken}: {problem}", listed)
    return Verdict(Outcome.ENROLLED, f"{taken}, quality {quality.score:.2f}", listed, index,
                   _weakness(quality, bar))


def _choose(faces: ImageFaces, face: int | None, pick: FacePick) -> tuple[int | None, str]:
    """The chosen face and how it was chosen, or None and the refusal listing the faces."""
    listing = "; ".join(f.describe() for f in photo_faces(faces))
    if face is not None:
        if not 0 <= face < len(faces):
            return None, (f"there is no face #{face}: the photo has {len(faces)} face(s), numbered from 0: "
                          f"{listing}")
        return face, "chosen by number" if len(faces) > 1 else ""
    if len(faces) == 1:
        return 0, ""
    if pick is FacePick.LARGEST:
        return int(np.argmax(faces.detections.areas)), "the largest"
    if pick is FacePick.CENTRE:
        return faces.primary(), "nearest the centre"
    return None, f"{len(faces)} faces: {listing}; say which one to enrol (by its number, the largest or the centre)"


def _too_poor(quality: FaceQuality, bar: QualityBar) -> str:
    """Why the face makes no useful template, or ''."""
    if quality.face_px < bar.min_face_px:
        return (f"the face is {quality.face_px:.0f} px, under the {bar.min_face_px:.0f} px below which templates "
                "stop verifying reliably; use a photo where the face is larger (closer, or at a higher resolution)")
    if quality.sharpness < bar.min_sharpness:
        return (f"the face is too blurred (sharpness {quality.sharpness:.1f} < {bar.min_sharpness:.0f}); "
                "use a sharper photo (in focus, no motion blur)")
    other = {k: v for k, v in quality.parts.items() if k not in ("size", "sharpness")}
    score = float(np.prod(list(other.values()))) if other else 1.0
    if score < bar.min_other:
        weakest = min(other, key=lambda k: other[k])
        return (f"quality {score:.2f} < {bar.min_other:.2f} (weakest: {weakest}); "
                "use a frontal photo of the face, looking at the camera")
    return ""


def _weakness(quality: FaceQuality, bar: QualityBar) -> str:
    """A warning for a face that is enrolled but makes a weaker template, or ''."""
    if quality.face_px < bar.warn_face_px:
        return (f"low resolution: the face is {quality.face_px:.0f} px (under {bar.warn_face_px:.0f} px templates "
                "match less reliably); add a larger photo when you can")
    if quality.sharpness < bar.warn_sharpness:
        return (f"blurred: sharpness {quality.sharpness:.1f} (under {bar.warn_sharpness:.0f} templates match less "
                "reliably); add a sharper photo when you can")
    return ""

"""Enrolment: turning photos of a person into face templates, atomically and idempotently.

One person is one database transaction (identity, templates, watchlist
membership and the audit entry together), so a crash never leaves half a
person. Image hashes make re-running the same enrolment a no-op. A face
already enrolled under ANOTHER identity (by embedding similarity, so a
re-encoded or resized copy of the photo counts) is refused as
``DUPLICATE_FACE``, naming that identity, unless the caller confirms it
(``EnrolOptions.allow_duplicate_face``). Templates and thumbnails are sealed
under the identity's data key (``facetrail.store.crypto``) in the same
transaction.

Which face of a photo is taken, and whether it is good enough, is
``facetrail.gallery.enrol_faces``: a photo with several faces is refused
with its faces listed unless the caller picks one; a small or soft but
usable face is enrolled with a warning; only faces under measured floors
are refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from facetrail.gallery.enrol_faces import FacePick, Outcome, PhotoFace, QualityBar, Verdict, judge
from facetrail.gallery.errors import GalleryError
from facetrail.gallery.gallery import Gallery
from facetrail.gallery.search import Match, match_many
from facetrail.store import audit
from facetrail.store.models import FaceTemplate, Identity, Watchlist, WatchlistMember
from facetrail.store.sealed import seal_into
from facetrail.vision.engine import ImageFaces
from facetrail.vision.errors import ImageError
from facetrail.vision.image import load_image
from facetrail.vision.types import FaceQuality

__all__ = ["IMAGE_SUFFIXES", "EnrolOptions", "EnrolReport", "FacePick", "FileReport", "Outcome", "PhotoFace",
           "duplicate_threshold", "enrol_folder", "enrol_person", "person_folders"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
Progress = Callable[[Path], None]


@dataclass(frozen=True)
class FileReport:
    """The outcome for one file, with a human detail and the template it made.

    ``face``: the face taken (number and box); ``faces``: every face on the photo (listed when it was
    refused as ambiguous); ``quality``: the taken face's quality; ``warning``: why a usable face makes a
    weaker template (say, a low-resolution ID photo), '' when it does not.
    """

    path: Path
    person: str
    outcome: Outcome
    detail: str = ""
    template_id: int | None = None
    other: Match | None = None  # DUPLICATE_FACE: the other identity that already has this face
    face: PhotoFace | None = None
    faces: tuple[PhotoFace, ...] = ()
    quality: FaceQuality | None = None
    warning: str = ""


@dataclass(frozen=True)
class EnrolOptions:
    """How strict enrolment is.

    A photo with several faces is refused (its faces listed) unless ``face``
    (the face's number, as the refusal lists it), ``take_largest`` or
    ``take_centre`` (nearest the centre, weighted by size) says which to take.
    ``min_quality``: faces whose pose, detector and alignment quality (0-1,
    see ``facetrail.vision.quality``) is under this are refused; size and
    sharpness have their own measured floors (``bar``), above which a small or
    soft face is enrolled with a warning. ``watchlist``: add the person to
    this existing watchlist. ``allow_duplicate_face``: enrol a face even when
    it is already enrolled under another identity (confirmed by the
    operator); otherwise it is refused as ``Outcome.DUPLICATE_FACE``.
    """

    actor: str
    take_largest: bool = False
    min_quality: float = 0.2
    watchlist: str | None = None
    thumbnails: bool = True
    allow_duplicate_face: bool = False
    face: int | None = None
    take_centre: bool = False
    bar: QualityBar = field(default_factory=QualityBar)

    def __post_init__(self) -> None:
        if sum((self.face is not None, self.take_largest, self.take_centre)) > 1:
            raise GalleryError("choose the face one way: a face number, the largest or the one nearest the centre")
        if self.face is not None and self.face < 0:
            raise GalleryError(f"face numbers start at 0; {self.face} is not one")

    @property
    def pick(self) -> FacePick:
        """How a photo with several faces is handled when no face number is given."""
        return FacePick.LARGEST if self.take_largest else FacePick.CENTRE if self.take_centre else FacePick.REFUSE

    def quality_bar(self) -> QualityBar:
        """The floors and warning levels, with ``min_quality`` as the pose/detector/alignment floor."""
        return replace(self.bar, min_other=self.min_quality)


@dataclass
class EnrolReport:
    """Every file's outcome and the identities touched (name -> id)."""

    files: list[FileReport] = field(default_factory=list)
    identities: dict[str, int] = field(default_factory=dict)

    def count(self, outcome: Outcome) -> int:
        """How many files ended with ``outcome``."""
        return sum(1 for f in self.files if f.outcome is outcome)


@dataclass
class _Candidate:
    path: Path
    digest: str
    template: FaceTemplate | None = None
    vector: np.ndarray | None = None
    thumbnail: bytes | None = None
    note: str = ""
    verdict: Verdict | None = None
    quality: FaceQuality | None = None


def person_folders(root: Path) -> list[tuple[str, list[Path]]]:
    """``root/<person>/*.jpg`` as (person, sorted image paths), people sorted by name."""
    if not root.is_dir():
        raise GalleryError(f"{root}: not a folder (expected {root}/<person name>/*.jpg)")
    people = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if images:
            people.append((folder.name, images))
    if not people:
        raise GalleryError(f"{root}: no person folders with images (expected {root}/<person name>/*.jpg)")
    return people


def enrol_folder(gallery: Gallery, root: Path, options: EnrolOptions,
                 progress: Progress | None = None) -> EnrolReport:
    """Enrol every ``root/<person>/`` folder; one transaction per person."""
    report = EnrolReport()
    for person, images in person_folders(root):
        enrol_person(gallery, person, images, options, report, progress)
    gallery.save_index()
    return report


def enrol_person(gallery: Gallery, name: str, images: Sequence[Path], options: EnrolOptions,
                 report: EnrolReport | None = None, progress: Progress | None = None) -> EnrolReport:
    """Enrol the faces of ``images`` as the person ``name`` (created if new)."""
    report = report if report is not None else EnrolReport()
    name = name.strip()
    if not name:
        raise GalleryError("a person needs a non-empty name")
    accepted = _accepted_faces(gallery, name, images, options, report, progress)
    accepted = _not_enrolled_elsewhere(gallery, name, accepted, options, report)
    if not accepted:
        return report
    with gallery.db.session() as session:
        identity = _identity_for(session, name, options.actor)
        watchlist = _watchlist(session, options.watchlist) if options.watchlist else None
        for candidate in accepted:
            assert candidate.template is not None and candidate.vector is not None  # set by _accepted_faces
            candidate.template.identity_id = identity.id
            session.add(candidate.template)
            session.flush()  # the row id is the ciphertexts' associated data
            seal_into(gallery.keys, session, candidate.template, "embedding", candidate.vector.tobytes())
            seal_into(gallery.keys, session, candidate.template, "thumbnail_jpeg", candidate.thumbnail)
        if watchlist is not None and session.get(WatchlistMember, (watchlist.id, identity.id)) is None:
            session.add(WatchlistMember(watchlist_id=watchlist.id, identity_id=identity.id,
                                        added_by=options.actor))
        session.flush()
        audit.record(session, actor=options.actor, action="enrol", target=f"identity:{identity.id}",
                     result_count=len(accepted),
                     details={"watchlist": options.watchlist, "templates": len(accepted)})
        identity_id = identity.id
    ids = [int(c.template.id) for c in accepted if c.template is not None]
    gallery.add_to_index(ids, np.stack([c.vector for c in accepted if c.vector is not None]))
    report.identities[name] = identity_id
    report.files.extend(_enrolled(c, name, t) for c, t in zip(accepted, ids, strict=True))
    return report


def _not_enrolled_elsewhere(gallery: Gallery, name: str, accepted: list[_Candidate], options: EnrolOptions,
                            report: EnrolReport) -> list[_Candidate]:
    """Candidates whose face is not already enrolled under another identity (or confirmed anyway).

    "Already enrolled" is the recogniser's calibrated same-person decision
    (the one search makes): a face that search would take for someone else is
    the ambiguity to warn about, whether it is the same photo re-encoded or
    another photo of that person.
    """
    if not accepted:
        return accepted
    gallery.refresh()  # enrolments made by other processes count too
    with gallery.db.session() as session:
        own = session.scalar(select(Identity.id).where(Identity.display_name == name))
    threshold = duplicate_threshold(gallery)
    matches = match_many(gallery, np.stack([c.vector for c in accepted if c.vector is not None]))
    kept = []
    for candidate, match in zip(accepted, matches, strict=True):
        if match is None or match.identity_id == own or match.score < threshold:
            kept.append(candidate)
            continue
        said = (f"this face is already enrolled as {match.display_name!r} (identity {match.identity_id}, "
                f"similarity {match.score:.2f})")
        if options.allow_duplicate_face:
            candidate.note = f"{said}; confirmed"
            kept.append(candidate)
        else:
            verdict = candidate.verdict
            report.files.append(FileReport(candidate.path, name, Outcome.DUPLICATE_FACE, said, other=match,
                                           face=verdict.face if verdict else None,
                                           faces=verdict.faces if verdict else ()))
    return kept


def duplicate_threshold(gallery: Gallery) -> float:
    """Similarity at or above which a face counts as already enrolled: the recogniser's calibrated threshold."""
    return gallery.spec.calibration.threshold if gallery.spec.calibration else 0.5


def _accepted_faces(gallery: Gallery, name: str, images: Iterable[Path], options: EnrolOptions,
                    report: EnrolReport, progress: Progress | None) -> list[_Candidate]:
    """Read, deduplicate, detect and judge each image; report every refusal."""
    candidates: list[_Candidate] = []
    seen: set[str] = set()
    for path in images:
        try:
            data = path.read_bytes()
            image = load_image(data, name=str(path))
        except (ImageError, OSError) as error:
            problem = error.problem if isinstance(error, ImageError) else str(error)
            report.files.append(FileReport(path, name, Outcome.UNREADABLE, problem))
            _tick(progress, path)
            continue
        digest = hashlib.sha256(data).hexdigest()
        if digest in seen or _already_enrolled(gallery, digest):
            report.files.append(FileReport(path, name, Outcome.DUPLICATE, "this image is already enrolled"))
            _tick(progress, path)
            continue
        seen.add(digest)
        faces = gallery.engine.analyze(image)
        verdict = judge(faces, face=options.face, pick=options.pick, bar=options.quality_bar())
        if verdict.index is None:
            quality = faces.qualities[verdict.face.index] if verdict.face else None
            report.files.append(FileReport(path, name, verdict.outcome, verdict.detail, faces=verdict.faces,
                                           quality=quality))
        elif len(faces) > 1 and _already_enrolled(gallery, face_digest(digest, verdict.index)):
            report.files.append(FileReport(path, name, Outcome.DUPLICATE, f"face #{verdict.index} of this image is "
                                           "already enrolled", face=verdict.face, faces=verdict.faces))
        else:
            key = face_digest(digest, verdict.index) if len(faces) > 1 else digest
            candidates.append(_candidate(gallery, path, key, faces, verdict, options))
        _tick(progress, path)
    return candidates


def _enrolled(candidate: _Candidate, name: str, template_id: int) -> FileReport:
    """The report line of an enrolled candidate: which face was taken, its quality and any warning."""
    verdict = candidate.verdict
    detail = "; ".join(part for part in (verdict.detail if verdict else "", candidate.note) if part)
    return FileReport(candidate.path, name, Outcome.ENROLLED, detail, template_id=template_id,
                      face=verdict.face if verdict else None, faces=verdict.faces if verdict else (),
                      quality=candidate.quality, warning=verdict.warning if verdict else "")


def _candidate(gallery: Gallery, path: Path, digest: str, faces: ImageFaces, verdict: Verdict,
               options: EnrolOptions) -> _Candidate:
    index = verdict.index
    assert index is not None  # only accepted verdicts become candidates
    vector = faces.embeddings.vectors[index].astype(np.float32)
    thumbnail = None
    if options.thumbnails and faces.aligned is not None:
        ok, encoded = cv2.imencode(".jpg", faces.aligned.crops[index], [cv2.IMWRITE_JPEG_QUALITY, 85])
        thumbnail = encoded.tobytes() if ok else None
    template = FaceTemplate(embedding=b"", dim=int(vector.shape[0]), model_id=gallery.model_id,  # sealed later
                            quality=float(faces.qualities[index].score), image_sha256=digest,
                            source_name=path.name)
    return _Candidate(path, digest, template, vector, thumbnail, verdict=verdict,
                      quality=faces.qualities[index])


def face_digest(image_digest: str, index: int) -> str:
    """The hash a template from face ``index`` of a photo with several faces is stored under.

    Each face of a group photo may be enrolled (as different people), so the photo's own hash cannot
    mark it done; the face's hash keeps re-running the same choice a no-op.
    """
    return hashlib.sha256(f"{image_digest}#face{index}".encode()).hexdigest()


def _already_enrolled(gallery: Gallery, digest: str) -> bool:
    with gallery.db.session() as session:
        return session.scalar(select(FaceTemplate.id).where(
            FaceTemplate.image_sha256 == digest, FaceTemplate.model_id == gallery.model_id)) is not None


def _identity_for(session: Session, name: str, actor: str) -> Identity:
    matches = list(session.scalars(select(Identity).where(Identity.display_name == name)))
    if len(matches) > 1:
        raise GalleryError(f"{len(matches)} identities are called {name!r}; enrol by identity id instead")
    if matches:
        return matches[0]
    identity = Identity(display_name=name, created_by=actor)
    session.add(identity)
    session.flush()
    return identity


def _watchlist(session: Session, name: str) -> Watchlist:
    watchlist = session.scalar(select(Watchlist).where(Watchlist.name == name))
    if watchlist is None:
        raise GalleryError(f"no watchlist called {name!r}; create it first: "
                           f"facetrail watchlist create {name!r} --purpose TEXT")
    return watchlist


def _tick(progress: Progress | None, path: Path) -> None:
    if progress is not None:
        progress(path)

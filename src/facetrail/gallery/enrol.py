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
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import cv2
import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from facetrail.gallery.errors import GalleryError
from facetrail.gallery.gallery import Gallery
from facetrail.gallery.search import Match, match_many
from facetrail.store import audit
from facetrail.store.models import FaceTemplate, Identity, Watchlist, WatchlistMember
from facetrail.store.sealed import seal_into
from facetrail.vision.engine import ImageFaces
from facetrail.vision.errors import ImageError
from facetrail.vision.image import load_image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
Progress = Callable[[Path], None]


class Outcome(StrEnum):
    """What happened to one file."""

    ENROLLED = "enrolled"
    NO_FACE = "no face"
    SEVERAL_FACES = "several faces"
    LOW_QUALITY = "too low quality"
    DUPLICATE = "duplicate image"
    DUPLICATE_FACE = "duplicate face"
    UNREADABLE = "unreadable"


@dataclass(frozen=True)
class FileReport:
    """The outcome for one file, with a human detail and the template it made."""

    path: Path
    person: str
    outcome: Outcome
    detail: str = ""
    template_id: int | None = None
    other: Match | None = None  # DUPLICATE_FACE: the other identity that already has this face


@dataclass(frozen=True)
class EnrolOptions:
    """How strict enrolment is.

    ``take_largest``: on a photo with several faces, enrol the largest instead
    of refusing the photo. ``min_quality``: faces under this quality score
    (0-1, see ``facetrail.vision.quality``) are refused. ``watchlist``: add
    the person to this existing watchlist. ``allow_duplicate_face``: enrol a
    face even when it is already enrolled under another identity (confirmed by
    the operator); otherwise it is refused as ``Outcome.DUPLICATE_FACE``.
    """

    actor: str
    take_largest: bool = False
    min_quality: float = 0.2
    watchlist: str | None = None
    thumbnails: bool = True
    allow_duplicate_face: bool = False


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
    report.files.extend(FileReport(c.path, name, Outcome.ENROLLED, c.note, template_id=t)
                        for c, t in zip(accepted, ids, strict=True))
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
            report.files.append(FileReport(candidate.path, name, Outcome.DUPLICATE_FACE, said, other=match))
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
        verdict = _judge(faces, options)
        if isinstance(verdict, str):
            outcome, _, detail = verdict.partition(":")
            report.files.append(FileReport(path, name, Outcome(outcome), detail.strip()))
        else:
            candidates.append(_candidate(gallery, path, digest, faces, verdict, options))
        _tick(progress, path)
    return candidates


def _judge(faces: ImageFaces, options: EnrolOptions) -> int | str:
    """Index of the face to enrol, or 'outcome: detail' saying why none is."""
    if len(faces) == 0:
        return f"{Outcome.NO_FACE}: no face found"
    if len(faces) > 1 and not options.take_largest:
        return f"{Outcome.SEVERAL_FACES}: {len(faces)} faces; use --largest to enrol the largest"
    index = faces.primary()
    assert index is not None
    quality = faces.qualities[index]
    if quality.score < options.min_quality:
        weakest = min(quality.parts, key=lambda k: quality.parts[k])
        return (f"{Outcome.LOW_QUALITY}: quality {quality.score:.2f} < {options.min_quality:.2f} "
                f"(weakest: {weakest})")
    return index


def _candidate(gallery: Gallery, path: Path, digest: str, faces: ImageFaces, index: int,
               options: EnrolOptions) -> _Candidate:
    vector = faces.embeddings.vectors[index].astype(np.float32)
    thumbnail = None
    if options.thumbnails and faces.aligned is not None:
        ok, encoded = cv2.imencode(".jpg", faces.aligned.crops[index], [cv2.IMWRITE_JPEG_QUALITY, 85])
        thumbnail = encoded.tobytes() if ok else None
    template = FaceTemplate(embedding=b"", dim=int(vector.shape[0]), model_id=gallery.model_id,  # sealed later
                            quality=float(faces.qualities[index].score), image_sha256=digest,
                            source_name=path.name)
    return _Candidate(path, digest, template, vector, thumbnail)


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

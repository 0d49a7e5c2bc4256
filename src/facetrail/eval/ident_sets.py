"""1:N evaluation sets: who is enrolled from which images, and which images are searched.

A set is read from a folder tree (``DIR/<person>/*.jpg``) or from a CSV with
the columns ``path,person,role``. In the tree, each person's first
``enrol`` images (by file name) are enrolled and the rest are *mated* probes
(their person is in the gallery); a share of the people, drawn at random
with a seed, is held out of the gallery entirely and all their images are
*non-mated* probes, which is what false positive identification rates are
measured on. People with no image left after enrolment stay in the gallery
as enrolled people nobody searches for: they make the search harder, as the
rest of a real gallery does. In a CSV the roles are given; a probe whose
person has no enrolment row is non-mated. Every problem with the input is an
``IdentSetError`` whose message names the file (and line) and what to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from facetrail.eval.csv_table import Row, read_rows
from facetrail.eval.pairs import IMAGE_SUFFIXES

SourceKind = Literal["folder", "csv"]
DEFAULT_NON_MATED_FRACTION = 0.2
ENROL_ROLES = frozenset({"enrol", "enroll", "enrolment", "enrollment", "gallery"})
PROBE_ROLES = frozenset({"probe", "search", "query"})


class IdentSetError(ValueError):
    """An evaluation set that cannot be read; the message is one line for the user."""


@dataclass(frozen=True)
class Probe:
    """One image searched against the gallery; ``mated`` when its person is enrolled."""

    path: Path
    person: str
    mated: bool


@dataclass(frozen=True)
class IdentSet:
    """Gallery images per enrolled person, and the probes, in a fixed order.

    ``gallery`` maps each enrolled person (sorted by name) to their enrolment
    images; ``held_out`` names the people kept out of the gallery on purpose.
    """

    name: str
    kind: SourceKind
    source: Path
    gallery: dict[str, tuple[Path, ...]]
    probes: tuple[Probe, ...]
    held_out: tuple[str, ...] = ()
    note: str = ""

    @property
    def mated(self) -> int:
        """Number of probes whose person is enrolled."""
        return sum(p.mated for p in self.probes)

    @property
    def non_mated(self) -> int:
        """Number of probes whose person is not enrolled."""
        return len(self.probes) - self.mated

    def images(self) -> list[Path]:
        """Distinct images, gallery first, in order of first use."""
        paths = [path for images in self.gallery.values() for path in images]
        return list(dict.fromkeys([*paths, *(p.path for p in self.probes)]))

    def persons(self) -> list[str]:
        """Every person of the set, sorted: enrolled and not."""
        return sorted(set(self.gallery) | {p.person for p in self.probes})


def read_ident(source: Path, *, enrol: int | None = None, non_mated_fraction: float | None = None,
               seed: int = 0, images_root: Path | None = None) -> IdentSet:
    """A set from a folder tree or a CSV, whichever ``source`` is."""
    if source.is_dir():
        if images_root is not None:
            raise IdentSetError("--images-root applies to a CSV source only; a folder holds its images")
        return folder_ident(source, enrol=1 if enrol is None else enrol,
                            non_mated_fraction=(DEFAULT_NON_MATED_FRACTION if non_mated_fraction is None
                                                else non_mated_fraction), seed=seed)
    if not source.exists():
        raise IdentSetError(f"{source}: no such file or folder")
    if enrol is not None or non_mated_fraction is not None:
        raise IdentSetError(f"{source}: --enrol and --non-mated-fraction apply to a folder tree only; "
                            "a CSV gives each image's role itself")
    return read_ident_csv(source, images_root=images_root)


def person_images(root: Path) -> list[tuple[str, list[Path]]]:
    """``(person, sorted images)`` of each sub-folder of ``root`` that holds images, by name."""
    try:
        folders = sorted(p for p in root.iterdir() if p.is_dir())
    except OSError as exc:
        raise IdentSetError(f"{root}: cannot be read ({exc.strerror or exc})") from None
    return [(folder.name, images) for folder in folders
            if (images := sorted(f for f in folder.iterdir()
                                 if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES))]


def held_out_people(persons: list[str], fraction: float, seed: int) -> list[str]:
    """The people kept out of the gallery: ``round(fraction * n)`` of them drawn with ``seed``.

    At least one when ``fraction`` > 0, and never all (someone must be enrolled).
    """
    if not 0.0 <= fraction < 1.0:
        raise IdentSetError(f"--non-mated-fraction must be at least 0 and below 1, got {fraction:g}")
    count = round(fraction * len(persons))
    if fraction > 0:
        count = max(count, 1)
    count = min(count, len(persons) - 1)
    if count <= 0:
        return []
    order = np.random.default_rng(seed).permutation(len(persons))
    return sorted(persons[int(i)] for i in order[:count])


def folder_ident(root: Path, *, enrol: int = 1, non_mated_fraction: float = DEFAULT_NON_MATED_FRACTION,
                 seed: int = 0) -> IdentSet:
    """The set of a folder tree: first ``enrol`` images enrolled, the rest mated probes, some people held out."""
    if enrol < 1:
        raise IdentSetError(f"--enrol must be 1 or more, got {enrol}")
    people = person_images(root)
    if not people:
        raise IdentSetError(f"{root}: no person folders with {'/'.join(IMAGE_SUFFIXES)} images "
                            "(expected DIR/<person>/<image>)")
    if len(people) < 2 and non_mated_fraction > 0:
        raise IdentSetError(f"{root}: only one person folder; holding people out of the gallery needs two "
                            "(or pass --non-mated-fraction 0)")
    held = set(held_out_people([name for name, _ in people], non_mated_fraction, seed))
    gallery = {name: tuple(images[:enrol]) for name, images in people if name not in held}
    probes = tuple(Probe(path, name, name not in held)
                   for name, images in people
                   for path in (images if name in held else images[enrol:]))
    mated = sum(p.mated for p in probes)
    if mated == 0:
        raise IdentSetError(f"{root}: no enrolled person has more than {enrol} image(s), so there is nothing "
                            "to search for (lower --enrol or add photos)")
    gallery_only = sum(len(images) <= enrol for name, images in people if name not in held)
    note = (f"folder tree of {len(people)} people: the first {enrol} image(s) of each enrolled person form "
            f"the gallery, the rest are mated probes; {len(held)} people ({non_mated_fraction:g} of them, "
            f"drawn with seed {seed}) are held out of the gallery and all their images are non-mated "
            f"probes; {gallery_only} enrolled people have no image left to search with and stay in the "
            "gallery as people nobody searches for")
    return IdentSet(root.name, "folder", root, gallery, probes, tuple(sorted(held)), note)


def read_ident_csv(path: Path, *, images_root: Path | None = None) -> IdentSet:
    """A CSV with header ``path,person,role`` (role: enrol or probe); relative paths from the CSV's folder."""
    root = images_root if images_root is not None else path.parent
    rows = read_rows(path, ("path", "person", "role"), lambda line, row: _csv_row(path, line, row, root),
                     IdentSetError, "a CSV with path,person,role")
    return _csv_set(path, rows, root)


def _csv_row(path: Path, line: int, row: Row, root: Path) -> tuple[int, Path, str, bool]:
    image, person, role = (str(row.get(key) or "").strip() for key in ("path", "person", "role"))
    if not image or not person:
        raise IdentSetError(f"{path} line {line}: path and person must both be given")
    if role.lower() not in ENROL_ROLES | PROBE_ROLES:
        raise IdentSetError(f"{path} line {line}: role must be 'enrol' or 'probe', got {role!r}")
    return line, root / image, person, role.lower() in ENROL_ROLES


def _csv_set(path: Path, rows: list[tuple[int, Path, str, bool]], root: Path) -> IdentSet:
    gallery: dict[str, list[Path]] = {}
    for _, image, person, enrolled in rows:
        if enrolled:
            gallery.setdefault(person, []).append(image)
    enrolled_images = {image: person for person, images in gallery.items() for image in images}
    probes = []
    for line, image, person, enrolled in rows:
        if enrolled:
            continue
        if image in enrolled_images:
            raise IdentSetError(f"{path} line {line}: {image} is also an enrolment image; a probe searched "
                                "with its own enrolment photo would be found trivially")
        probes.append(Probe(image, person, person in gallery))
    if not gallery:
        raise IdentSetError(f"{path}: no row has role 'enrol', so the gallery is empty")
    if not any(p.mated for p in probes):
        raise IdentSetError(f"{path}: no probe is of an enrolled person, so there is nothing to find")
    non_mated = sum(not p.mated for p in probes)
    note = (f"CSV of {len(gallery)} enrolled people, {len(probes)} probes ({non_mated} of people not "
            f"enrolled), paths relative to {root}")
    return IdentSet(path.stem, "csv", path, {p: tuple(gallery[p]) for p in sorted(gallery)}, tuple(probes),
                    (), note)

"""Labelled image pairs: read LFW pairs.txt, CSV lists, or build them from a folder per person.

Every reader returns a ``PairList``; every problem with the input is a
``PairsError`` whose message names the file (and line) and what was wrong.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from facetrail.eval.csv_table import Row, read_rows
from facetrail.vision.types import IntArray

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
SourceKind = Literal["lfw", "csv", "folder"]


class PairsError(ValueError):
    """A pair list that cannot be read; the message is one line for the user."""


@dataclass(frozen=True)
class Pair:
    """Two images and whether they show the same person."""

    first: Path
    second: Path
    same: bool


@dataclass(frozen=True)
class PairList:
    """Pairs read from one source, in source order. ``note`` says how they were made."""

    name: str
    kind: SourceKind
    source: Path
    pairs: tuple[Pair, ...]
    note: str = ""

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def genuine(self) -> int:
        """Number of same-person pairs."""
        return sum(p.same for p in self.pairs)

    @property
    def impostors(self) -> int:
        """Number of different-person pairs."""
        return len(self.pairs) - self.genuine

    def images(self) -> list[Path]:
        """Distinct images, in order of first use."""
        return list(dict.fromkeys(path for p in self.pairs for path in (p.first, p.second)))

    def labels(self) -> npt.NDArray[np.bool_]:
        """Same-person flags, one per pair."""
        return np.array([p.same for p in self.pairs], dtype=bool)


def read_pairs(source: Path, *, images_root: Path | None = None,
               impostors_per_person: int | None = None, seed: int = 0) -> PairList:
    """Pairs from ``source``, whose format is detected: folder tree, CSV, or LFW pairs.txt."""
    if source.is_dir():
        return folder_pairs(source, impostors_per_person=impostors_per_person, seed=seed)
    if not source.exists():
        raise PairsError(f"{source}: no such file or folder")
    if source.suffix.lower() == ".csv" or "file_x" in _first_line(source):
        return read_csv_pairs(source, images_root=images_root)
    return read_lfw_pairs(source, images_root=images_root)


def _first_line(path: Path) -> str:
    for line in _read_lines(path):
        if line.strip():
            return line
    raise PairsError(f"{path}: the file is empty")


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise PairsError(f"{path}: not a text file (expected LFW pairs.txt or CSV)") from None
    except OSError as exc:
        raise PairsError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def lfw_image(root: Path, name: str, number: int) -> Path:
    """Where LFW keeps image ``number`` of ``name``: ``root/name/name_NNNN.jpg``."""
    return root / name / f"{name}_{number:04d}.jpg"


def read_lfw_pairs(path: Path, *, images_root: Path | None = None) -> PairList:
    """An LFW pairs file: a header ``N`` or ``FOLDS N``, then ``name n1 n2`` / ``name1 n1 name2 n2``.

    Images are looked up under ``images_root`` (default: ``images/`` beside the file).
    """
    root = images_root if images_root is not None else path.parent / "images"
    lines = [(number, line.split()) for number, line in enumerate(_read_lines(path), start=1)
             if line.strip()]
    if not lines:
        raise PairsError(f"{path}: the file is empty")
    header_line, header = lines[0]
    if not 1 <= len(header) <= 2 or not all(_is_count(token) for token in header):
        raise PairsError(f"{path} line {header_line}: expected a header 'N' or 'FOLDS N' "
                         f"(pairs per class), got {' '.join(header)!r}")
    folds, per_class = (1, int(header[0])) if len(header) == 1 else (int(header[0]), int(header[1]))
    pairs = [_lfw_pair(path, number, tokens, root) for number, tokens in lines[1:]]
    expected = 2 * folds * per_class
    if len(pairs) != expected:
        raise PairsError(f"{path}: the header promises {expected} pairs "
                         f"({folds} x {per_class} same + {per_class} different), found {len(pairs)}")
    return PairList(path.stem, "lfw", path, tuple(pairs), note=f"LFW pairs, images under {root}")


def _is_count(token: str) -> bool:
    return token.isdigit() and int(token) > 0


def _lfw_pair(path: Path, number: int, tokens: list[str], root: Path) -> Pair:
    if len(tokens) == 3 and _is_count(tokens[1]) and _is_count(tokens[2]):
        name = tokens[0]
        return Pair(lfw_image(root, name, int(tokens[1])), lfw_image(root, name, int(tokens[2])), True)
    if len(tokens) == 4 and _is_count(tokens[1]) and _is_count(tokens[3]):
        return Pair(lfw_image(root, tokens[0], int(tokens[1])),
                    lfw_image(root, tokens[2], int(tokens[3])), False)
    raise PairsError(f"{path} line {number}: expected 'name n1 n2' or 'name1 n1 name2 n2', "
                     f"got {' '.join(tokens)!r}")


_TRUE = {"1", "true", "yes", "same"}
_FALSE = {"0", "false", "no", "different"}


def read_csv_pairs(path: Path, *, images_root: Path | None = None) -> PairList:
    """A CSV with header ``file_x,file_y,same``; relative paths are relative to the CSV's folder."""
    root = images_root if images_root is not None else path.parent
    pairs = read_rows(path, ("file_x", "file_y", "same"), lambda line, row: _csv_pair(path, line, row, root),
                      PairsError, "a CSV with file_x,file_y,same")
    if not pairs:
        raise PairsError(f"{path}: no pairs after the header")
    return PairList(path.stem, "csv", path, tuple(pairs), note=f"CSV pairs, relative to {root}")


def _csv_pair(path: Path, line: int, row: Row, root: Path) -> Pair:
    first, second, same = (str(row.get(key) or "").strip() for key in ("file_x", "file_y", "same"))
    if not first or not second:
        raise PairsError(f"{path} line {line}: file_x and file_y must both be given")
    if same.lower() not in _TRUE | _FALSE:
        raise PairsError(f"{path} line {line}: 'same' must be 1/0/true/false, got {same!r}")
    return Pair(root / first, root / second, same.lower() in _TRUE)


def folder_pairs(root: Path, *, impostors_per_person: int | None = None, seed: int = 0) -> PairList:
    """Every same-person pair of ``root/<person>/*.jpg|jpeg|png`` plus seeded different-person pairs.

    By default as many different-person pairs as same-person pairs are drawn at
    random (without replacement) from all cross-person pairs; with
    ``impostors_per_person`` = N, N are drawn for each person instead.
    """
    people = [(folder.name, images) for folder in sorted(p for p in root.iterdir() if p.is_dir())
              if (images := sorted(f for f in folder.iterdir()
                                   if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES))]
    if not people:
        raise PairsError(f"{root}: no person folders with {'/'.join(IMAGE_SUFFIXES)} images "
                         "(expected DIR/<person>/<image>)")
    if len(people) < 2:
        raise PairsError(f"{root}: only one person folder; different-person pairs need at least two")
    genuine = [Pair(a, b, True) for _, images in people for a, b in itertools.combinations(images, 2)]
    if not genuine:
        raise PairsError(f"{root}: every person has a single image, so there are no same-person pairs")
    files = [image for _, images in people for image in images]
    owner = np.concatenate([np.full(len(images), i) for i, (_, images) in enumerate(people)])
    rng = np.random.default_rng(seed)
    if impostors_per_person is None:
        chosen = _sample_cross_pairs(owner, len(genuine), rng)
        how = f"{len(chosen)} different-person pairs sampled at random (seed {seed})"
    else:
        chosen = _sample_per_person(owner, impostors_per_person, rng)
        how = f"up to {impostors_per_person} different-person pairs per person (seed {seed})"
    impostors = [Pair(files[i], files[j], False) for i, j in chosen]
    note = f"folder tree of {len(people)} people: all {len(genuine)} same-person pairs, {how}"
    return PairList(root.name, "folder", root, tuple(genuine + impostors), note=note)


def _all_cross_pairs(owner: IntArray) -> list[tuple[int, int]]:
    return [(i, j) for i, j in itertools.combinations(range(len(owner)), 2) if owner[i] != owner[j]]


def _sample_cross_pairs(owner: IntArray, count: int,
                        rng: np.random.Generator) -> list[tuple[int, int]]:
    """``count`` distinct index pairs (i < j) of images of different people, sorted."""
    n = len(owner)
    sizes = np.bincount(owner)
    total = (n * n - int((sizes ** 2).sum())) // 2
    if count >= total / 2:  # dense: enumerate and choose
        every = _all_cross_pairs(owner)
        picked = rng.choice(len(every), size=min(count, total), replace=False)
        return sorted(every[int(k)] for k in picked)
    chosen: set[tuple[int, int]] = set()
    while len(chosen) < count:  # sparse: rejection sampling terminates quickly
        i, j = (int(v) for v in rng.integers(0, n, size=2))
        if owner[i] != owner[j]:
            chosen.add((min(i, j), max(i, j)))
    return sorted(chosen)


def _sample_per_person(owner: IntArray, per_person: int,
                       rng: np.random.Generator) -> list[tuple[int, int]]:
    """For each person, ``per_person`` pairs of one of their images with someone else's."""
    if per_person < 0:
        raise PairsError("--impostors-per-person must be 0 or more")
    chosen: set[tuple[int, int]] = set()
    for person in range(int(owner.max()) + 1):
        mine, others = np.flatnonzero(owner == person), np.flatnonzero(owner != person)
        candidates = len(mine) * len(others)
        for k in rng.choice(candidates, size=min(per_person, candidates), replace=False):
            i, j = int(mine[k // len(others)]), int(others[k % len(others)])
            chosen.add((min(i, j), max(i, j)))
    return sorted(chosen)

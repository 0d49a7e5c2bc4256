"""Error rates per group of people, as NIST's demographic report (NISTIR 8280) gives them.

The groups come only from a CSV the user supplies (``person,group``):
facetrail infers no group of any kind from a face or an image, and stores
none. For each group label, at the operating threshold:

* FNMR: share of the group's mated probes whose score against their own
  mate (best template) is below the threshold (1:1; a probe with no face,
  or a mate with no template, is a non-match);
* FMR: share of comparisons of the group's probes with enrolled people *of
  the same group* (other than themselves) scoring at or above the
  threshold, the same-group impostors NIST uses (a probe with no face
  makes no comparison);
* FNIR and FPIR (1:N, rank 1) of the group's mated and non-mated probes;
* FNIR at a fixed FPIR, with the threshold set on the group's own
  non-mated probes, where the group has enough of them.

The ratio of the highest to the lowest group value of each rate shows how
unevenly the errors fall; it is undefined when the lowest is 0.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facetrail.eval.ident_metrics import FnirAtFpir, Ranked, fnir_at_fpir_levels, rates_at
from facetrail.eval.metrics import Float64Array

GROUP_NOTE = ("group labels come only from the file the user supplied; facetrail infers no group of "
              "any kind from faces or images and stores none")
RATE_NAMES = ("fmr", "fnmr", "fpir", "fnir")


class GroupsError(ValueError):
    """A groups file that cannot be read; the message is one line for the user."""


@dataclass(frozen=True)
class Groups:
    """Each person's group label, as the user's file gives it, and the labels in sorted order."""

    source: Path
    of_person: dict[str, str]

    @property
    def labels(self) -> list[str]:
        """The distinct group labels of the file, sorted."""
        return sorted(set(self.of_person.values()))


def read_groups(path: Path) -> Groups:
    """A CSV with header ``person,group``: one row per person, any label the user chooses."""
    of_person: dict[str, str] = {}
    try:
        with path.open(newline="", encoding="utf-8") as stream:
            reader = csv.DictReader(stream)
            columns = [c.strip() for c in reader.fieldnames or []]
            missing = {"person", "group"} - set(columns)
            if missing:
                raise GroupsError(f"{path} line 1: the header needs the columns person,group "
                                  f"(missing {','.join(sorted(missing))})")
            reader.fieldnames = columns
            for row in reader:
                person, group = (str(row.get(key) or "").strip() for key in ("person", "group"))
                if not person or not group:
                    raise GroupsError(f"{path} line {reader.line_num}: person and group must both be given")
                if of_person.get(person, group) != group:
                    raise GroupsError(f"{path} line {reader.line_num}: {person!r} is already in group "
                                      f"{of_person[person]!r}; give each person one group")
                of_person[person] = group
    except FileNotFoundError:
        raise GroupsError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise GroupsError(f"{path}: not a text file (expected a CSV with person,group)") from None
    except csv.Error as exc:
        raise GroupsError(f"{path}: not valid CSV ({exc})") from None
    except OSError as exc:
        raise GroupsError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not of_person:
        raise GroupsError(f"{path}: no rows after the header")
    return Groups(path, of_person)


@dataclass(frozen=True)
class GroupRates:
    """The rates of one group at the operating threshold (None where the group has no such probe)."""

    group: str
    persons: int
    mated: int
    non_mated: int
    impostor_comparisons: int
    fnmr: float | None
    fmr: float | None
    fnir: float | None
    fpir: float | None
    fnir_at_fpir: list[FnirAtFpir]

    def rate(self, name: str) -> float | None:
        """One of ``RATE_NAMES`` by name."""
        value: float | None = getattr(self, name)
        return value


@dataclass(frozen=True)
class Spread:
    """Highest and lowest group value of one rate, and their ratio (None when undefined)."""

    rate: str
    highest: tuple[str, float] | None
    lowest: tuple[str, float] | None
    ratio: float | None
    reason: str | None = None


@dataclass(frozen=True)
class GroupReport:
    """Per-group rates, the spread of each rate, and who the file left out or named in vain."""

    threshold: float
    groups: list[GroupRates]
    spreads: list[Spread]
    ungrouped: list[str]  # people of the evaluation the file gives no group
    unknown: list[str]  # people of the file the evaluation does not have
    source: Path
    note: str = GROUP_NOTE


def group_report(groups: Groups, *, probe_persons: Sequence[str], gallery_persons: Sequence[str],
                 scores: Float64Array, ranked: Ranked, threshold: float,
                 fpir_levels: Sequence[float], all_persons: Sequence[str]) -> GroupReport:
    """Rates per group label of ``groups`` (every label of the file, in sorted order)."""
    probe_group = np.array([groups.of_person.get(p, "") for p in probe_persons], dtype=object)
    column_group = np.array([groups.of_person.get(p, "") for p in gallery_persons], dtype=object)
    code = {person: i for i, person in enumerate(dict.fromkeys([*probe_persons, *gallery_persons]))}
    same_person = (np.array([code[p] for p in probe_persons])[:, None]
                   == np.array([code[p] for p in gallery_persons], dtype=np.int64)[None, :])
    rows = [_one_group(label, groups, probe_group == label, column_group == label, same_person, scores,
                       ranked, threshold, fpir_levels, all_persons) for label in groups.labels]
    present = set(all_persons)
    return GroupReport(
        threshold=float(threshold), groups=rows, spreads=[_spread(name, rows) for name in RATE_NAMES],
        ungrouped=sorted(p for p in present if p not in groups.of_person),
        unknown=sorted(p for p in groups.of_person if p not in present), source=groups.source)


def _one_group(label: str, groups: Groups, probes: np.ndarray, columns: np.ndarray, same_person: np.ndarray,
               scores: Float64Array, ranked: Ranked, threshold: float, fpir_levels: Sequence[float],
               all_persons: Sequence[str]) -> GroupRates:
    mine = ranked.select(probes.astype(bool))
    mated_scores = np.nan_to_num(mine.mate_score[mine.mated], nan=-np.inf)
    fnmr = float(np.mean(mated_scores < threshold)) if mated_scores.size else None
    impostor = probes.astype(bool)[:, None] & ~ranked.failed[:, None] & columns.astype(bool)[None, :] & ~same_person
    comparisons = int(impostor.sum())
    fmr = float(np.mean(scores[impostor] >= threshold)) if comparisons else None
    rates = rates_at(mine, threshold)
    at_fpir = fnir_at_fpir_levels(mine, fpir_levels) if mine.mated.any() else []
    return GroupRates(label, sum(groups.of_person.get(p) == label for p in all_persons), rates.mated,
                      rates.non_mated, comparisons, fnmr, fmr, rates.fnir, rates.fpir, at_fpir)


def _spread(name: str, rows: list[GroupRates]) -> Spread:
    values = [(row.group, value) for row in rows if (value := row.rate(name)) is not None]
    if len(values) < 2:
        return Spread(name, None, None, None, "needs the rate for at least two groups")
    highest = max(values, key=lambda item: item[1])
    lowest = min(values, key=lambda item: item[1])
    if lowest[1] == 0:
        reason = "all groups are at 0" if highest[1] == 0 else f"the lowest ({lowest[0]}) is 0"
        return Spread(name, highest, lowest, None, reason)
    return Spread(name, highest, lowest, highest[1] / lowest[1])
